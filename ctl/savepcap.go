package ctl

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/snoopd/snoopd/ctl/pcapout"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
	"github.com/snoopd/snoopd/internal/version"
)

// Save formats: the JSON-lines capture snoopctl read takes, and pcapng
// for Wireshark.
const (
	formatJSONL  = "jsonl"
	formatPcapng = "pcapng"
)

// saveFormat is the format save writes path in: --format if given, else
// pcapng for a name ending in .pcapng, else JSON Lines.
func saveFormat(cCtx *cli.Context, path string) (string, error) {
	switch f := strings.ToLower(cCtx.String("format")); f {
	case "":
		if strings.HasSuffix(strings.ToLower(path), ".pcapng") {
			return formatPcapng, nil
		}
		return formatJSONL, nil
	case formatJSONL, formatPcapng:
		return f, nil
	default:
		return "", usagef("--format %q: want jsonl (the capture 'snoopctl read' takes) or pcapng (for Wireshark)", cCtx.String("format"))
	}
}

// savePcapng writes the stream as a pcapng file (pcapout has the how).
func (e *env) savePcapng(cCtx *cli.Context, path string, proxies []string) error {
	for _, f := range []string{"append", "rotate-size"} {
		if cCtx.IsSet(f) {
			return usagef("--%s is for JSON-lines captures; a pcapng file is written whole, start to end", f)
		}
	}
	req, _, err := watchFromFlags(cCtx, proxies)
	if err != nil {
		return err
	}
	opts := pcapout.Options{Data: cCtx.Bool("data"), Application: "snoopctl " + version.Get().Version}
	if cCtx.String("from") == "" && !e.multi() {
		// The events name each connection's client; its server is the
		// proxy's, which only the daemon knows.
		list, err := unary(e, cCtx.Context, "list", "", func(ctx context.Context, c *client) (*snoopv1.ListProxiesResponse, error) {
			return c.proxies.ListProxies(ctx, &snoopv1.ListProxiesRequest{})
		})
		if err != nil {
			return err
		}
		// Server host names are resolved once, here, within add's
		// bound on a look-up; those that do not resolve in it get
		// made-up addresses.
		ctx, cancel := context.WithTimeout(cCtx.Context, resolveTimeout)
		opts.Proxies = make(map[string]pcapout.Proxy, len(list.GetProxies()))
		for _, p := range list.GetProxies() {
			opts.Proxies[p.GetSpec().GetName()] = pcapout.Describe(ctx, p)
		}
		cancel()
	}
	src, err := e.openEvents(cCtx, req)
	if err != nil {
		return err
	}
	defer src.Close()

	flags := os.O_WRONLY | os.O_CREATE | os.O_EXCL
	if cCtx.Bool("force") {
		flags = os.O_WRONLY | os.O_CREATE | os.O_TRUNC
	}
	f, err := os.OpenFile(path, flags, 0o600)
	if errors.Is(err, os.ErrExist) {
		return failf("save: %s already exists (use --force to replace it)", path)
	}
	if err != nil {
		return failf("save: %v", err)
	}
	bw := bufio.NewWriterSize(f, 64<<10)
	w, err := pcapout.NewWriter(bw, opts)
	if err != nil {
		f.Close()
		os.Remove(path)
		return failf("save: %s: %v", path, err)
	}
	p := &pcapProgress{e: e, w: w, bw: bw, on: isTerminal(e.stdio.Err), start: time.Now()}
	res, err := src.stream(cCtx.Context, streamOptions{
		action: "save",
		count:  cCtx.Int64("count"),
		dur:    cCtx.Duration("for"),
		tick:   saveTick,
		onTick: p.tick,
	}, func(r *snoopv1.WatchEventsResponse) error {
		p.events += int64(len(r.GetEvents()))
		if r.GetEvent() != nil {
			p.events++
		}
		p.dropped += r.GetDropped()
		if ev := r.GetEvent(); ev != nil {
			if err := w.WriteEvent(ev); err != nil {
				return failf("save: %s: %v", path, err)
			}
		}
		for _, ev := range r.GetEvents() {
			if err := w.WriteEvent(ev); err != nil {
				return failf("save: %s: %v", path, err)
			}
		}
		return nil
	})
	p.clear()
	cerr := w.Close()
	if cerr == nil {
		cerr = bw.Flush()
	}
	if ferr := f.Close(); cerr == nil {
		cerr = ferr
	}
	if cerr != nil && err == nil {
		err = failf("save: %s: %v", path, cerr)
	}
	if res.events == 0 && err != nil {
		// Nothing was saved and the stream failed: leave no empty
		// file behind to be mistaken for a capture.
		os.Remove(path)
		return err
	}
	fmt.Fprintf(e.stdio.Err, "wrote %s as %s to %s (%d dropped)\n",
		count(res.events, "event", "events"), count(w.Packets(), "packet", "packets"), path, res.dropped)
	return err
}

// pcapProgress keeps a pcapng save's file flushed (the connections
// written so far) and, on a terminal, its progress line up to date.
type pcapProgress struct {
	e       *env
	w       *pcapout.Writer
	bw      *bufio.Writer
	on      bool
	start   time.Time
	events  int64
	dropped uint64
}

// tick flushes what is written and redraws the progress line. A failed
// flush shows again at the end, from Close.
func (p *pcapProgress) tick() {
	if p.w.Flush() == nil {
		_ = p.bw.Flush()
	}
	if !p.on {
		return
	}
	rate := 0.0
	if secs := time.Since(p.start).Seconds(); secs > 0 {
		rate = float64(p.events) / secs
	}
	fmt.Fprintf(p.e.stdio.Err, "\r\x1b[K%d events, %.0f/s, %d dropped, %d packets", p.events, rate, p.dropped, p.w.Packets())
}

// clear removes the progress line before the final message.
func (p *pcapProgress) clear() {
	if p.on {
		fmt.Fprint(p.e.stdio.Err, "\r\x1b[K")
	}
}
