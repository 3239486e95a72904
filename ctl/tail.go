package ctl

import (
	"io"

	"github.com/urfave/cli/v2"

	"github.com/snoopd/snoopd/ctl/format"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
	"github.com/snoopd/snoopd/internal/apijson"
)

func (e *env) tailCommand() *cli.Command {
	flags := append(filterFlags(), stopFlags()...)
	flags = append(flags, dataFlag(),
		&cli.BoolFlag{Name: "verbose", Aliases: []string{"v"}, Usage: "show connections opening and closing too (as --events all does)"})
	flags = append(flags, natsFlags(true)...)
	return &cli.Command{
		Name:      "tail",
		Usage:     "show the live stream of events, one line per transaction",
		ArgsUsage: "[PROXY...]",
		Description: "Each transaction is one line, like tcpdump:\n\n" +
			"  TIME PROXY conn=ID uid=UID OP id=SESSION… req=BYTES resp=BYTES [data=BYTES] RESULT LATENCY\n\n" +
			"SESSION is a printable session id as text (elided in the middle when long),\n" +
			"any other as the hex of its first 8 bytes; --session takes either form. TIME\n" +
			"is when the transaction ended, so lines never go back in time. Errors\n" +
			"(connect-failed, refused, protocol errors) have lines of their own; so do\n" +
			"connections opening and closing, with -v or --events conn. When snoopctl falls\n" +
			"behind, the daemon drops events for it and a plain line says how many.\n" +
			"Ctrl-C, --count or --for end tail with a summary on stderr: events, rate,\n" +
			"elapsed time, and the transactions by operation and result.\n" +
			"-o json prints one snoop.v1.WatchEventsResponse per line, which\n" +
			"'snoopctl read' reads back.\n\n" + filterHelp + fleetHelp,
		Flags:  flags,
		Action: e.tail,
	}
}

// dataFlag asks for captured session data, which is never shown unless
// asked for.
func dataFlag() *cli.BoolFlag {
	return &cli.BoolFlag{Name: "data", Usage: "include captured session data (hex in text output); it may hold TLS master secrets"}
}

func (e *env) tail(cCtx *cli.Context) error {
	req, _, err := watchFromFlags(cCtx, cCtx.Args().Slice())
	if err != nil {
		return err
	}
	src, err := e.openEvents(cCtx, req)
	if err != nil {
		return err
	}
	defer src.Close()
	out := e.eventPrinter(e.stdio.Out, false, cCtx.Bool("data"))
	sum := newSummary()
	o := streamOptions{
		action: "tail",
		count:  cCtx.Int64("count"),
		dur:    cCtx.Duration("for"),
		flush:  out.flush,
	}
	if out.json {
		// Each line straight from the event's wire form: decoding every
		// event of a busy daemon first cost the tail a fifth more CPU
		// (BenchmarkTailJSON).
		o.wire = func(ev []byte) error {
			if err := out.printWire(ev, &sum.facts); err != nil {
				return err
			}
			sum.addFacts()
			return nil
		}
	}
	res, err := src.stream(cCtx.Context, o, func(r *snoopv1.WatchEventsResponse) error {
		sum.add(r)
		return out.print(r)
	})
	sum.write(e.stdio.Err, "shown", res.elapsed)
	return err
}

// eventPrinter renders stream responses as text or JSON lines into a
// buffer that flush writes out.
type eventPrinter struct {
	w    io.Writer
	json bool
	text format.Text
	buf  []byte
}

// flushAt is the buffer size at which the printer writes without waiting
// for the stream to go quiet: about one batch of the daemon's JSON lines,
// so that a busy tail writes once a batch rather than every few events.
const flushAt = 256 << 10

func (e *env) eventPrinter(w io.Writer, withDate, data bool) *eventPrinter {
	return &eventPrinter{
		w:    w,
		json: e.opts.json,
		text: format.Text{Location: e.location(), Date: withDate, Color: !e.opts.json && e.useColor(), Data: data},
	}
}

func (p *eventPrinter) print(r *snoopv1.WatchEventsResponse) error {
	if p.json {
		var err error
		if p.buf, err = format.AppendResponseLine(p.buf, r); err != nil {
			return failf("%v", err)
		}
		p.buf = append(p.buf, '\n')
	} else {
		p.buf = p.text.AppendResponse(p.buf, r)
	}
	if len(p.buf) >= flushAt {
		return p.flush()
	}
	return nil
}

// printWire writes the JSON line of an event given in its wire form (the
// line print writes for it decoded), and reads into facts what a summary
// counts of it.
func (p *eventPrinter) printWire(ev []byte, facts *apijson.Facts) error {
	var err error
	if p.buf, err = format.AppendEventLineWire(p.buf, ev, facts); err != nil {
		return failf("tail: an event from snoopd: %v", err)
	}
	p.buf = append(p.buf, '\n')
	if len(p.buf) >= flushAt {
		return p.flush()
	}
	return nil
}

func (p *eventPrinter) flush() error {
	if len(p.buf) == 0 {
		return nil
	}
	_, err := p.w.Write(p.buf)
	p.buf = p.buf[:0]
	if err != nil {
		return failf("write output: %v", err)
	}
	return nil
}
