package ctl

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/snoopd/snoopd/ctl/capture"
	"github.com/snoopd/snoopd/ctl/format"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
	"github.com/snoopd/snoopd/internal/size"
)

// saveTick is how often save flushes its file and redraws its progress
// line.
const saveTick = 500 * time.Millisecond

func (e *env) saveCommand() *cli.Command {
	flags := append(filterFlags(), stopFlags()...)
	flags = append(flags,
		&cli.BoolFlag{Name: "append", Usage: "add to FILE if it exists"},
		&cli.BoolFlag{Name: "force", Usage: "replace FILE if it exists"},
		&cli.StringFlag{Name: "rotate-size", Usage: "start a new file when FILE reaches `SIZE` (10M, 512K, 1.5G: powers of 1024; at least 64K)"},
		&cli.IntFlag{Name: "rotate-keep", Value: capture.DefaultRotateKeep, Usage: "with --rotate-size, keep the `N` newest rotated files and delete older ones (0: keep all)"},
		dataFlag(),
		&cli.StringFlag{Name: "format", Usage: "write FILE as `FORMAT`: jsonl (the capture 'snoopctl read' takes) or pcapng (for Wireshark); default: pcapng for a name ending in .pcapng, else jsonl"},
	)
	flags = append(flags, natsFlags(true)...)
	return &cli.Command{
		Name:      "save",
		Usage:     "write the live stream of events to a file, for 'snoopctl read' (or as pcapng, for Wireshark)",
		ArgsUsage: "FILE [PROXY...]",
		Description: "FILE gets JSON Lines: one snoop.v1.WatchEventsResponse per line (an event, or\n" +
			"a drop notice {\"dropped\":\"N\"}), as 'tail -o json' prints them. An existing\n" +
			"FILE is left alone unless --append or --force is given.\n\n" +
			"The file is written whole lines at a time, at least every half second, and\n" +
			"flushed on Ctrl-C, at --count or --for, and when the stream breaks, so it\n" +
			"never ends in a partial line. On a terminal a progress line on stderr shows\n" +
			"events, rate, drops and file size; at the end save says how many events it\n" +
			"wrote.\n\n" +
			"--rotate-size SIZE: when FILE would grow past SIZE it is rotated as logrotate\n" +
			"does: FILE.N becomes FILE.N+1, FILE becomes FILE.1, and a new FILE is started;\n" +
			"FILE.1 is the newest rotated file, and none is ever overwritten. 'snoopctl\n" +
			"read FILE*' reads them back in time order. SIZE takes K, M, G (also KB or\n" +
			"KiB, ...: powers of 1024, as every size snoopd and snoopctl take) and is at\n" +
			"least 64K.\n" +
			"--rotate-keep N (default 4, as logrotate.conf): a rotation deletes what it\n" +
			"would push past FILE.N, earlier captures' rotated files included, so FILE\n" +
			"and its rotations take at most N+1 times SIZE; 0 keeps every file.\n\n" +
			"FILE.pcapng (or --format pcapng) gets what the proxies carried as a pcapng\n" +
			"capture for Wireshark and tshark (contrib/wireshark/distcache.lua dissects it):\n" +
			"each connection a TCP stream from its client to its proxy's server, with a\n" +
			"handshake, data segments and a FIN at its close, each request and response\n" +
			"encoded again as distcache frames (same request_uid, operation, status and\n" +
			"sizes) at the times the events give. Session ids are written as the events\n" +
			"carry them (the first 64 bytes; they travel in clear in TLS handshakes\n" +
			"anyway); session data is zeros unless the proxy captures it (--capture-data)\n" +
			"and --data is given, so by default the file holds no TLS master secret.\n" +
			"A connection is written when it closes (those still open when save stops, at\n" +
			"the end, without a FIN), so packets are grouped by connection ('reordercap\n" +
			"FILE SORTED', from Wireshark, puts them in time order); protocol\n" +
			"errors are not in the file (the events do not carry the broken bytes).\n" +
			"Unix sockets have no IP addresses: a server on PATH becomes 127.A.B.C:9001\n" +
			"(A.B.C: the first 3 bytes of PATH's SHA-256); a client of a proxy listening\n" +
			"on PATH becomes 127.A.B.C:P, A.B.C being the first 3 bytes of the SHA-256 of\n" +
			"PATH, a zero byte and the connection id (8 bytes, big-endian), and P 49152\n" +
			"plus the next 2 bytes modulo 16384. A server host that does not resolve here\n" +
			"is made up as a path is, from its address as IP:host:port, with its own port;\n" +
			"the server of a proxy save does not know (created after save started, or\n" +
			"events from NATS or from several daemons) from the proxy's name, and so are\n" +
			"its unix socket clients. --append and --rotate-size do not apply to pcapng.\n\n" + filterHelp + fleetHelp,
		Flags:  flags,
		Action: e.save,
	}
}

func (e *env) save(cCtx *cli.Context) error {
	a, err := args(cCtx, 1, -1, "FILE [PROXY...]")
	if err != nil {
		return err
	}
	path, proxies := a[0], a[1:]
	if path == "-" {
		return usagef("save writes to a file; for standard output use 'snoopctl tail -o json'")
	}
	if fi, err := os.Stat(path); err == nil && fi.IsDir() {
		return usagef("save: %s is a directory; name a file in it, such as %s", path, filepath.Join(path, "capture.jsonl"))
	}
	format, err := saveFormat(cCtx, path)
	if err != nil {
		return err
	}
	if format == formatPcapng {
		return e.savePcapng(cCtx, path, proxies)
	}
	opts := capture.Options{Append: cCtx.Bool("append"), Force: cCtx.Bool("force")}
	if opts.Append && opts.Force {
		return usagef("--append and --force exclude each other: add to FILE, or replace it")
	}
	if s := cCtx.String("rotate-size"); s != "" {
		if opts.RotateSize, err = size.Parse(s); err != nil {
			return usagef("--rotate-size: %v", err)
		}
		if opts.RotateSize < capture.MinRotateSize {
			return usagef("--rotate-size %s is %d bytes; it must be at least %s (%d bytes): smaller, every few events would start a file", s, opts.RotateSize, size.Format(capture.MinRotateSize), capture.MinRotateSize)
		}
	}
	if opts.RotateKeep = cCtx.Int("rotate-keep"); opts.RotateKeep < 0 {
		return usagef("--rotate-keep %d is negative; 0 keeps every rotated file", opts.RotateKeep)
	}
	req, _, err := watchFromFlags(cCtx, proxies)
	if err != nil {
		return err
	}
	src, err := e.openEvents(cCtx, req)
	if err != nil {
		return err
	}
	defer src.Close()

	_, statErr := os.Stat(path)
	existed := statErr == nil
	w, err := capture.Create(path, opts)
	if err != nil {
		if errors.Is(err, capture.ErrExists) {
			return failf("save: %s already exists (use --append to add to it or --force to replace it)", path)
		}
		return failf("save: %v", err)
	}
	if n := w.Repaired(); n > 0 {
		e.warnf("%s ended in a partial line of %d bytes; cut it off before appending", path, n)
	}
	p := &saveProgress{e: e, w: w, on: isTerminal(e.stdio.Err), start: time.Now()}
	res, err := src.stream(cCtx.Context, streamOptions{
		action: "save",
		count:  cCtx.Int64("count"),
		dur:    cCtx.Duration("for"),
		tick:   saveTick,
		onTick: p.tick,
	}, func(r *snoopv1.WatchEventsResponse) error {
		if r.GetEvent() != nil {
			p.events++
		} else {
			p.dropped += r.GetDropped()
		}
		if err := w.WriteEvent(r); err != nil {
			return failf("save: %v", err)
		}
		return nil
	})
	p.clear()
	if cerr := w.Close(); cerr != nil && err == nil {
		err = failf("save: %v", cerr)
	}
	if res.events == 0 && res.dropped == 0 && !existed && err != nil {
		// Nothing was saved and the stream failed (the daemon is down):
		// leave no empty file behind to be mistaken for a capture.
		os.Remove(path)
		return err
	}
	if r := w.Rotated(); len(r) > 0 {
		files := strings.Join(r, ", ")
		if len(r) > 3 {
			files = r[0] + " … " + r[len(r)-1]
		}
		deleted := ""
		if n := w.Deleted(); n > 0 {
			deleted = fmt.Sprintf("; deleted %s beyond --rotate-keep %d", count(int64(n), "older rotated file", "older rotated files"), opts.RotateKeep)
		}
		fmt.Fprintf(e.stdio.Err, "wrote %s (%d dropped) to %s and %s, oldest first%s\n",
			count(res.events, "event", "events"), res.dropped, files, path, deleted)
		return err
	}
	fmt.Fprintf(e.stdio.Err, "wrote %s to %s (%d dropped)\n", count(res.events, "event", "events"), path, res.dropped)
	return err
}

// saveProgress keeps save's file flushed and, on a terminal, its progress
// line up to date.
type saveProgress struct {
	e       *env
	w       *capture.Writer
	on      bool
	start   time.Time
	events  int64
	dropped uint64
}

// tick flushes the file and redraws the progress line. A failed flush is
// not lost: the Writer keeps the error and returns it from the next write
// and from Close.
func (p *saveProgress) tick() {
	_ = p.w.Flush()
	if !p.on {
		return
	}
	secs := time.Since(p.start).Seconds()
	rate := 0.0
	if secs > 0 {
		rate = float64(p.events) / secs
	}
	fmt.Fprintf(p.e.stdio.Err, "\r\x1b[K%d events, %.0f/s, %d dropped, %s", p.events, rate, p.dropped, format.Bytes(p.w.Size()))
}

// clear removes the progress line before the final message.
func (p *saveProgress) clear() {
	if p.on {
		fmt.Fprint(p.e.stdio.Err, "\r\x1b[K")
	}
}
