package ctl

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/urfave/cli/v2"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/snoopd/snoopd/ctl/format"
	"github.com/snoopd/snoopd/ctl/sessions"
	"github.com/snoopd/snoopd/ctl/top"
)

// topFilters are the event filters top --from takes; they narrow what is
// counted (proxies, operations and kinds become NATS subjects).
var topFilters = []string{"proxy", "op", "status", "min-latency", "errors", "events", "filter", "fault"}

func (e *env) topCommand() *cli.Command {
	flags := []cli.Flag{
		// -d and -n as in top(1); the long names are those of stats.
		secondsFlag(&cli.DurationFlag{Name: "interval", Aliases: []string{"d"}, Value: time.Second, Usage: "refresh every `INTERVAL` (a bare number is seconds: -d 2)"}),
		// The old name of --interval, kept for old command lines and
		// hidden: --delay is a fault's hold elsewhere.
		secondsFlag(&cli.DurationFlag{Name: "delay", Hidden: true, Usage: "old name of --interval"}),
		&cli.BoolFlag{Name: "batch", Aliases: []string{"b"}, Usage: "print snapshots as plain text (or -o json) instead of the live view"},
		&cli.Int64Flag{Name: "count", Aliases: []string{"n", "iterations"}, Usage: "batch mode: stop after `N` snapshots (0: until Ctrl-C)"},
		&cli.BoolFlag{Name: "sessions", Usage: "start in the sessions view (s switches): the busiest session ids by GETs"},
		&cli.IntFlag{Name: "top", Value: defaultTopSessions, Usage: "with --sessions in batch mode, print the `N` sessions with the most GETs"},
		niceFlag(),
	}
	for _, f := range filterFlags() {
		if slices.Contains(topFilters, f.Names()[0]) {
			flags = append(flags, f)
		}
	}
	flags = append(flags, natsFlags(true)...)
	return &cli.Command{
		Name:      "top",
		Usage:     "a live view of every proxy: state, connections, ops/s, hit ratio, errors/s, latency, bytes/s",
		ArgsUsage: "[--from nats://HOST:PORT [PROXY...]]",
		Description: "top polls the daemon's counters and latency histograms every --interval (the\n" +
			"proxies' view needs no event stream and puts nothing on the data path) and\n" +
			"shows, per proxy, the rates and percentiles of the last interval; the first\n" +
			"screen covers each proxy's life so far. Keys: arrows select, enter opens a\n" +
			"proxy (its operations and latency histogram), / filters by name, < > or a\n" +
			"column's letter sort (n t c o h e 5 9 u d), s shows the hot sessions, p\n" +
			"pauses, q quits, ? lists them all. With -a naming several daemons, top polls\n" +
			"each and shows one row per daemon and proxy, with a DAEMON column (\"daemon\"\n" +
			"in each JSON proxy), as list does.\n\n" +
			"With -b, -o json, or when stdout is not a terminal, top prints --count\n" +
			"snapshots (0: until Ctrl-C) as plain tables, or as one JSON object per line:\n" +
			"{\"time\", \"source\", \"version\", \"uptime\", \"interval\", \"totals\": {...},\n" +
			"\"proxies\": [{\"name\", \"state\", \"connections\", \"span\", \"ops\", \"errors\",\n" +
			"\"ops_per_sec\", \"errors_per_sec\", \"hit_ratio\", \"bytes_up_per_sec\",\n" +
			"\"bytes_down_per_sec\", \"samples\", \"p50\", \"p99\", \"p999\",\n" +
			"\"ops_detail\": [...]}]} (rates over span; durations as the API writes them,\n" +
			"\"0.000250s\"). NO_COLOR turns colour off.\n\n" +
			"From a fleet: with --from nats://HOST:PORT top counts the events the daemons\n" +
			"export to NATS (snoopd --export) instead of polling one daemon: one row per\n" +
			"daemon and proxy, with a DAEMON column (\"daemon\" in each JSON proxy, \"daemons\"\n" +
			"in the totals). The counts start when top subscribes: the first screen covers\n" +
			"the time since then (\"since\" in JSON), not the proxies' lives. What events\n" +
			"cannot tell is shown as such: STATE is \"-\"; CONNS counts the connections\n" +
			"seen (opened, or carrying a transaction) since then and still open, when the\n" +
			"stream carries connection events (0 without them); bytes are the\n" +
			"transactions' frames. --daemon, PROXY names, --op and --events become NATS\n" +
			"subjects; --status, --min-latency, --errors, --filter and --fault run here.\n" +
			"A lost NATS connection, or events lost on the way (\"dropped\"), are shown\n" +
			"above the table (\"notes\" in JSON) while top goes on.\n\n" +
			"Sessions: s (or starting with --sessions) switches to the hot sessions, as\n" +
			"mctop shows memcached's hot keys: the session ids with the most GETs in the\n" +
			"last interval, each as tail shows it, with its GET rate and count, hit ratio,\n" +
			"ADDs and bytes both ways; s or esc switches back. Sessions come from the event\n" +
			"stream: the first time the view is shown, top opens a watch of the daemons'\n" +
			"transactions (with --from, the events it already counts), which it keeps\n" +
			"until it ends. They are counted in 1,000 counters (a space-saving sketch): a\n" +
			"GET count may be up to N/1000 high for N GETs in the interval, and every\n" +
			"session with more than that is counted; the line above the table says the\n" +
			"bound. With -b, -o json, or when stdout is not a terminal, --sessions prints\n" +
			"the --top N sessions of each interval (as stats --by session does). Once the\n" +
			"sessions watch of a daemon on this machine opens, top runs at --nice (19\n" +
			"unless given), as tail does; the proxies' view alone keeps top's priority.\n\n" + filterHelp,
		Flags:  flags,
		Action: e.top,
	}
}

func (e *env) top(cCtx *cli.Context) error {
	from := cCtx.String("from")
	hi := 0 // PROXY names only with --from
	if from != "" {
		hi = -1
	}
	names, err := args(cCtx, 0, hi, "[-d INTERVAL] [-b] [-n COUNT] [--from nats://HOST:PORT [PROXY...]]")
	if err != nil {
		return err
	}
	delay := cCtx.Duration("interval")
	if cCtx.IsSet("delay") {
		if cCtx.IsSet("interval") {
			return usagef("--delay is the old name of --interval (-d): give one of them")
		}
		delay = cCtx.Duration("delay")
	}
	if delay <= 0 {
		return usagef("--interval %v: must be positive", delay)
	}
	n := cCtx.Int64("count")
	if n < 0 {
		return usagef("--count %d is negative", n)
	}
	showSessions := cCtx.Bool("sessions")
	if cCtx.IsSet("top") && !showSessions {
		return usagef("--top N is how many sessions --sessions prints; add --sessions")
	}
	if cCtx.Int("top") <= 0 {
		return usagef("--top %d: want a number of sessions above 0", cCtx.Int("top"))
	}
	if e.nice, err = niceFromFlags(cCtx); err != nil {
		return err
	}
	var sessSrc top.SessionSource
	var src top.Source
	if from != "" {
		req, _, err := watchFromFlags(cCtx, names)
		if err != nil {
			return err
		}
		t, err := e.openNATSTop(cCtx, from, req)
		if err != nil {
			return err
		}
		defer t.Close()
		src, sessSrc = t, t
	} else {
		for _, f := range append([]string{"daemon"}, topFilters...) {
			if cCtx.IsSet(f) {
				return usagef("--%s filters the events top --from nats://HOST:PORT counts; top without --from shows the daemon's own counters (filter rows by name with / in the live view)", f)
			}
		}
		if e.multi() {
			fleet, closeAll, err := e.topDaemons()
			if err != nil {
				return err
			}
			defer closeAll()
			src = fleet
		} else {
			c, err := e.dial()
			if err != nil {
				return err
			}
			defer c.Close()
			src = &top.APISource{Proxies: c.proxies, Daemon: c.daemon, Address: e.display()}
		}
		w := e.topSessionWatch(cCtx.Context)
		defer w.Close()
		sessSrc = w
	}
	if cCtx.Bool("batch") || e.opts.json || !isTerminal(e.stdio.Out) {
		if showSessions {
			return e.topSessionsBatch(cCtx.Context, sessSrc, delay, n, cCtx.Int("top"))
		}
		return e.topBatch(cCtx.Context, src, delay, n)
	}
	err = top.Run(cCtx.Context, src, top.Options{
		Delay: delay, Timeout: e.opts.timeout, NoColor: os.Getenv("NO_COLOR") != "",
		In: e.stdio.In, Out: e.stdio.Out,
		Sessions: sessSrc, ShowSessions: showSessions,
	})
	if err != nil {
		return e.rpcError(err, "top", "")
	}
	return nil
}

// topDaemons is top's source for several daemons (-a a,b): each polled
// through its API at every refresh, rows named by daemon as list names
// them (its --daemon-name, else its address). closeAll closes the
// connections.
func (e *env) topDaemons() (src top.Source, closeAll func(), err error) {
	first := e.opts.rawAddr
	defer e.useDaemon(first)
	var clients []*client
	closeAll = func() {
		for _, c := range clients {
			c.Close()
		}
	}
	fleet := &top.FleetSource{}
	for _, addr := range e.opts.addrs {
		e.useDaemon(addr)
		c, err := e.dial()
		if err != nil {
			closeAll()
			return nil, nil, err
		}
		clients = append(clients, c)
		api := &top.APISource{Proxies: c.proxies, Daemon: c.daemon, Address: e.display()}
		fleet.Sources = append(fleet.Sources, daemonTop{api, e.display()})
	}
	return fleet, closeAll, nil
}

// daemonTop names its daemon in its errors, as the merged view has
// several. (rpcError cannot: it names the daemon snoopctl talks to, and
// the daemons are polled at once.)
type daemonTop struct {
	top.Source
	addr string
}

func (d daemonTop) Snapshot(ctx context.Context) (*top.Snapshot, error) {
	snap, err := d.Source.Snapshot(ctx)
	if err == nil {
		return snap, nil
	}
	var se interface{ GRPCStatus() *status.Status }
	if errors.As(err, &se) {
		st := se.GRPCStatus()
		reason := oneLine(st.Message())
		if st.Code() == codes.Unavailable {
			reason, _ = plainReason(reason)
		}
		return nil, fmt.Errorf("snoopd at %s: %s (%s)", d.addr, reason, strings.ToLower(st.Code().String()))
	}
	return nil, fmt.Errorf("snoopd at %s: %w", d.addr, err)
}

// topBatch prints n frames (0: until ctx ends), one every delay.
func (e *env) topBatch(ctx context.Context, src top.Source, delay time.Duration, n int64) error {
	var prev *top.Snapshot
	for i := int64(0); n == 0 || i < n; i++ {
		if i > 0 {
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(delay):
			}
		}
		cctx, cancel := e.callContext(ctx, 0)
		snap, err := src.Snapshot(cctx)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return nil // Ctrl-C during a poll
			}
			return e.rpcError(err, "top", "")
		}
		f := top.NewFrame(prev, snap)
		prev = snap
		if e.opts.json {
			b, err := top.FrameJSON(f)
			if err != nil {
				return failf("%v", err)
			}
			if _, err := fmt.Fprintf(e.stdio.Out, "%s\n", b); err != nil {
				return err
			}
			continue
		}
		if err := top.WriteText(e.stdio.Out, f); err != nil {
			return err
		}
	}
	return nil
}

// topSessionsBatch prints the top sessions of n intervals (0: until ctx
// ends), one every delay, each covering the interval before it.
func (e *env) topSessionsBatch(ctx context.Context, src top.SessionSource, delay time.Duration, n int64, rows int) error {
	take := func() (*sessions.Table, error) {
		cctx, cancel := e.callContext(ctx, 0)
		defer cancel()
		return src.Sessions(cctx)
	}
	if _, err := take(); err != nil { // starts the count
		return e.rpcError(err, "top", "")
	}
	for i := int64(0); n == 0 || i < n; i++ {
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(delay):
		}
		t, err := take()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return e.rpcError(err, "top", "")
		}
		if e.opts.json {
			b, err := format.SessionsJSON(t, rows)
			if err != nil {
				return failf("%v", err)
			}
			if _, err := fmt.Fprintf(e.stdio.Out, "%s\n", b); err != nil {
				return err
			}
			continue
		}
		if i > 0 {
			fmt.Fprintln(e.stdio.Out)
		}
		if err := format.WriteSessions(e.stdio.Out, t, rows); err != nil {
			return err
		}
	}
	return nil
}
