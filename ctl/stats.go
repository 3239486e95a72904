package ctl

import (
	"context"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/snoopd/snoopd/ctl/format"
	"github.com/snoopd/snoopd/ctl/stats"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
)

func (e *env) statsCommand() *cli.Command {
	flags := append(filterFlags(), stopFlags()...)
	flags = append(flags,
		&cli.BoolFlag{Name: "watch", Aliases: []string{"w"}, Usage: "every --interval, show what each proxy did in it and its rate, until Ctrl-C or --for"},
		secondsFlag(&cli.DurationFlag{Name: "interval", Value: 2 * time.Second, Usage: "with --watch, show every `INTERVAL` (a bare number is seconds: --interval 5)"}),
		&cli.StringFlag{Name: "by", Usage: "count by `WHAT`: session (the hot sessions of the live stream, busiest first)"},
		&cli.IntFlag{Name: "top", Value: defaultTopSessions, Usage: "with --by session, show the `N` sessions with the most GETs"},
	)
	flags = append(flags, natsFlags(true)...)
	return &cli.Command{
		Name:      "stats",
		Usage:     "per proxy and operation: counts, GET hit ratio, results, latency, errors, drops",
		ArgsUsage: "[PROXY...]",
		Description: "By default stats prints the daemon's totals at once: per proxy and operation\n" +
			"since the proxy was created, with the operation's p50, p99 and a sparkline of\n" +
			"its latency histogram, and per proxy its connections and latency.\n" +
			"-o json prints {\"time\", \"proxies\": [snoop.v1.Proxy]}.\n\n" +
			"--watch asks the daemon every --interval and shows, per proxy and operation,\n" +
			"what happened in that interval and its rate, until Ctrl-C or --for. -o json\n" +
			"prints one object per interval: {\"time\", \"interval\", \"ops\": [{\"proxy\",\n" +
			"\"op_counters\", \"rate\", \"hit_ratio\", \"errors\"}]}. Durations in JSON are\n" +
			"written as the API writes them (\"interval\": \"2s\", \"elapsed\": \"1.500s\").\n\n" +
			"Sampling: --for D, --count N, --history N or any filter counts the events of\n" +
			"the live stream instead, with the same filters as tail, and prints the numbers\n" +
			"at the end (with --watch also every --interval). Latency percentiles are\n" +
			"within about 3%. If the daemon dropped events for stats, the last line says\n" +
			"how many the numbers miss.\n" +
			"-o json prints one object per refresh: {\"time\", \"elapsed\", \"events\",\n" +
			"\"dropped\", \"ops\": [{\"proxy\", \"op_counters\" (snoop.v1.OpCounters),\n" +
			"\"hit_ratio\", \"errors\", \"latency\" (snoop.v1.LatencySummary)}], \"proxies\":\n" +
			"[{\"proxy\", \"opened\", \"closed\", \"connect_failed\", \"refused\",\n" +
			"\"protocol_errors\"}]}.\n\n" + sessionsHelp + filterHelp + fleetHelp + " Proxies are named DAEMON/PROXY.",
		Flags:  flags,
		Action: e.stats,
	}
}

func (e *env) stats(cCtx *cli.Context) error {
	req, _, err := watchFromFlags(cCtx, cCtx.Args().Slice())
	if err != nil {
		return err
	}
	by, err := statsBy(cCtx)
	if err != nil {
		return err
	}
	watch := cCtx.Bool("watch")
	interval := cCtx.Duration("interval")
	if interval <= 0 {
		return usagef("--interval %v: must be positive", interval)
	}
	if cCtx.IsSet("interval") && !watch {
		return usagef("--interval sets how often --watch shows; add --watch, or leave --interval out")
	}
	dur := cCtx.Duration("for")
	if by == bySession {
		return e.statsSessions(cCtx, req, watch, interval, dur)
	}
	if !sampling(cCtx) {
		if e.multi() {
			if watch {
				return usagef("stats --watch follows one daemon's totals, not the %d named by -a; 'snoopctl top' shows every daemon's proxies live", len(e.opts.addrs))
			}
			return e.eachDaemon(cCtx, "stats", func(cCtx *cli.Context) error {
				return e.statsTotals(cCtx, req.GetProxies(), false, interval, dur)
			})
		}
		return e.statsTotals(cCtx, req.GetProxies(), watch, interval, dur)
	}
	if !watch && dur == 0 && cCtx.Int64("count") == 0 {
		// The totals have no filters, so a filter means counting the
		// live stream, and with no end given nothing shows until Ctrl-C.
		e.notef("stats is counting the live stream's matching events (the daemon's totals take no filters) and prints them at Ctrl-C; --for D or --count N stops by itself, --watch shows them every --interval")
	}
	src, err := e.openEvents(cCtx, req)
	if err != nil {
		return err
	}
	defer src.Close()
	col := stats.New()
	start := time.Now()
	o := streamOptions{action: "stats", count: cCtx.Int64("count"), dur: dur}
	return e.sampleLive(cCtx.Context, src, o, watch, interval,
		func(r *snoopv1.WatchEventsResponse) {
			qualifyProxy(r)
			col.Add(r)
		},
		func() ([]byte, error) { return format.StatsJSON(col.Table(), e.now(), time.Since(start)) },
		func(w io.Writer) error { return format.WriteStats(w, col.Table(), time.Since(start)) })
}

// sampling reports whether stats counts the live stream rather than
// reading the daemon's totals: --for alone (without --watch), --count,
// --history or any filter asks for it.
func sampling(cCtx *cli.Context) bool {
	if cCtx.IsSet("for") && !cCtx.Bool("watch") {
		return true
	}
	for _, f := range []string{"count", "history", "op", "status", "session", "min-latency", "conn", "errors", "events", "filter"} {
		if cCtx.IsSet(f) {
			return true
		}
	}
	return false
}

// statsTotals prints the daemon's counters at once, or with watch what
// changed every interval, until Ctrl-C or dur.
func (e *env) statsTotals(cCtx *cli.Context, names []string, watch bool, interval, dur time.Duration) error {
	c, err := e.dial()
	if err != nil {
		return err
	}
	defer c.Close()
	return e.statsTotalsFrom(cCtx, c, names, watch, interval, dur)
}

// statsTotalsFrom is statsTotals over an open connection.
func (e *env) statsTotalsFrom(cCtx *cli.Context, c *client, names []string, watch bool, interval, dur time.Duration) error {
	if err := e.checkProxies(cCtx, c, "stats", names); err != nil {
		return err
	}
	// The text of the totals draws each operation's latency histogram;
	// JSON and --watch do not need the histograms.
	histograms := !watch && !e.opts.json
	fetch := func() ([]*snoopv1.Proxy, error) {
		ctx, cancel := e.callContext(cCtx.Context, 0)
		defer cancel()
		list, err := c.proxies.ListProxies(ctx, &snoopv1.ListProxiesRequest{IncludeHistograms: histograms})
		if err != nil {
			return nil, e.rpcError(err, "stats", "")
		}
		ps := list.GetProxies()
		if len(names) > 0 {
			ps = slices.DeleteFunc(slices.Clone(ps), func(p *snoopv1.Proxy) bool { return !slices.Contains(names, p.GetSpec().GetName()) })
		}
		return ps, nil
	}
	ps, err := fetch()
	if err != nil {
		return err
	}
	if !watch {
		if e.opts.json {
			b, err := format.TotalsJSON(ps, nil, e.now(), 0)
			if err != nil {
				return failf("%v", err)
			}
			_, err = fmt.Fprintf(e.stdio.Out, "%s\n", b)
			return err
		}
		return format.WriteTotals(e.stdio.Out, stats.FromProxies(ps))
	}
	var stop <-chan time.Time
	if dur > 0 {
		t := time.NewTimer(dur)
		defer t.Stop()
		stop = t.C
	}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	prev, last := stats.FromProxies(ps), time.Now()
	for {
		select {
		case <-cCtx.Context.Done():
			return nil
		case <-stop:
			return nil
		case <-tick.C:
		}
		if ps, err = fetch(); err != nil {
			return err
		}
		cur, now := stats.FromProxies(ps), time.Now()
		rows, took := cur.Since(prev), now.Sub(last)
		prev, last = cur, now
		if e.opts.json {
			b, err := format.TotalsJSON(nil, rows, e.now(), took)
			if err != nil {
				return failf("%v", err)
			}
			if _, err := fmt.Fprintf(e.stdio.Out, "%s\n", b); err != nil {
				return err
			}
			continue
		}
		if err := format.WriteRates(e.stdio.Out, rows, e.now().In(e.location()), took); err != nil {
			return err
		}
	}
}

// sampleLive streams src's events into add until the stream ends (--for,
// --count, Ctrl-C) and shows what was counted: every interval with watch,
// and once at the end. jsonOf gives the picture for -o json, write draws
// it as text: in place on a terminal, else under a line with the time.
func (e *env) sampleLive(ctx context.Context, src eventSource, o streamOptions, watch bool, interval time.Duration,
	add func(*snoopv1.WatchEventsResponse), jsonOf func() ([]byte, error), write func(io.Writer) error) error {
	term := isTerminal(e.stdio.Out)
	draw := func(final bool) error {
		if e.opts.json {
			b, err := jsonOf()
			if err != nil {
				return failf("%v", err)
			}
			_, err = fmt.Fprintf(e.stdio.Out, "%s\n", b)
			return err
		}
		switch {
		case watch && term:
			fmt.Fprint(e.stdio.Out, "\x1b[H\x1b[2J") // home the cursor, clear the screen
		case watch && !final:
			fmt.Fprintf(e.stdio.Out, "-- %s\n", e.now().In(e.location()).Format(time.TimeOnly))
		}
		return write(e.stdio.Out)
	}
	var drawErr error
	if watch {
		o.tick, o.onTick = interval, func() {
			if err := draw(false); err != nil && drawErr == nil {
				drawErr = err
			}
		}
	}
	_, err := src.stream(ctx, o, func(r *snoopv1.WatchEventsResponse) error {
		add(r)
		return drawErr
	})
	if derr := draw(true); derr != nil && err == nil {
		err = derr
	}
	return err
}
