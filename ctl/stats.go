package ctl

import (
	"fmt"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/snoopd/snoopd/ctl/format"
	"github.com/snoopd/snoopd/ctl/stats"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
)

// statsWindow is how long stats collects when nothing says when to stop.
const statsWindow = 5 * time.Second

func (e *env) statsCommand() *cli.Command {
	flags := append(filterFlags(), stopFlags()...)
	flags = append(flags,
		&cli.BoolFlag{Name: "watch", Aliases: []string{"w"}, Usage: "redraw the statistics every --interval until Ctrl-C, --count or --for"},
		&cli.DurationFlag{Name: "interval", Value: 2 * time.Second, Usage: "how often --watch redraws"},
	)
	flags = append(flags, natsFlags(true)...)
	return &cli.Command{
		Name:      "stats",
		Usage:     "per proxy and operation: counts, GET hit ratio, results, latency, errors, drops",
		ArgsUsage: "[PROXY...]",
		Description: "stats counts the events of the live stream, with the same filters as tail:\n" +
			"by default for 5 seconds (--for, --count and --history change that), and with\n" +
			"--watch until Ctrl-C, redrawing as it goes. The numbers are totals since stats\n" +
			"started. Latency percentiles are within about 3%. If the daemon dropped events\n" +
			"for stats, the last line says how many the numbers miss. For totals since a\n" +
			"proxy was created, see 'snoopctl show'.\n\n" +
			"-o json prints one object per refresh: {\"time\", \"elapsed\", \"events\",\n" +
			"\"dropped\", \"ops\": [{\"proxy\", \"op_counters\" (snoop.v1.OpCounters),\n" +
			"\"hit_ratio\", \"errors\", \"latency\" (snoop.v1.LatencySummary)}], \"proxies\":\n" +
			"[{\"proxy\", \"opened\", \"closed\", \"connect_failed\", \"refused\",\n" +
			"\"protocol_errors\"}]}.\n\n" + filterHelp + fleetHelp + " Proxies are named DAEMON/PROXY.",
		Flags:  flags,
		Action: e.stats,
	}
}

func (e *env) stats(cCtx *cli.Context) error {
	req, _, err := watchFromFlags(cCtx, cCtx.Args().Slice())
	if err != nil {
		return err
	}
	watch := cCtx.Bool("watch")
	interval := cCtx.Duration("interval")
	if interval <= 0 {
		return usagef("--interval %v: must be positive", interval)
	}
	dur := cCtx.Duration("for")
	if !watch && dur == 0 && cCtx.Int64("count") == 0 {
		dur = statsWindow
	}
	src, err := e.openEvents(cCtx, req)
	if err != nil {
		return err
	}
	defer src.Close()
	col := stats.New()
	start := time.Now()
	term := isTerminal(e.stdio.Out)
	draw := func(final bool) error {
		t := col.Table()
		elapsed := time.Since(start)
		if e.opts.json {
			b, err := format.StatsJSON(t, e.now(), elapsed)
			if err != nil {
				return failf("%v", err)
			}
			_, err = fmt.Fprintf(e.stdio.Out, "%s\n", b)
			return err
		}
		switch {
		case watch && term:
			// Redraw in place: home the cursor and clear the screen.
			fmt.Fprint(e.stdio.Out, "\x1b[H\x1b[2J")
		case watch && !final:
			fmt.Fprintf(e.stdio.Out, "-- %s\n", e.now().In(e.location()).Format(time.TimeOnly))
		}
		return format.WriteStats(e.stdio.Out, t, elapsed)
	}
	var drawErr error
	o := streamOptions{action: "stats", count: cCtx.Int64("count"), dur: dur}
	if watch {
		o.tick, o.onTick = interval, func() {
			if err := draw(false); err != nil && drawErr == nil {
				drawErr = err
			}
		}
	}
	_, err = src.stream(cCtx.Context, o, func(r *snoopv1.WatchEventsResponse) error {
		qualifyProxy(r)
		col.Add(r)
		return drawErr
	})
	if derr := draw(true); derr != nil && err == nil {
		err = derr
	}
	return err
}
