package ctl

import (
	"sync"

	"github.com/urfave/cli/v2"
)

// defaultNice is the niceness snoopctl takes while it streams events from
// a daemon on its own machine. Watching competes for the CPU with the
// traffic it watches: beside 100 clients on two cores, a JSON tail at
// niceness 0 cost the proxy 10.0–10.3% of its transactions, at 19
// 4.5–7.4%, and saw every one both ways (docs/benchmarks.md, "A watcher
// that yields").
const defaultNice = 19

// niceFlag is --nice of the commands that stream events from a daemon.
func niceFlag() cli.Flag {
	return &cli.IntFlag{Name: "nice", Value: defaultNice,
		Usage: "while streaming from a daemon on this machine (a unix socket or a loopback address), run at this scheduling niceness `N` (0 to 19), so that watching yields the CPU to the traffic it watches; 0 keeps snoopctl's own. A snoopctl that falls behind loses events, which its summary counts"}
}

// niceFromFlags checks --nice; commands without it get 0.
func niceFromFlags(cCtx *cli.Context) (int, error) {
	n := cCtx.Int("nice")
	if n < 0 || n > 19 {
		return 0, usagef("--nice %d: want 0 (keep snoopctl's priority) to 19 (yield the most)", n)
	}
	return n, nil
}

// yielder lowers snoopctl's priority once, the first time a stream from a
// daemon on this machine starts.
type yielder struct {
	once sync.Once
	// lower sets every thread of the process to a niceness of at least
	// n; nil does nothing (tests that run commands in-process).
	lower func(n int) error
}

// yield lowers the priority to nice if local says the daemon shares the
// machine. Failing to is no reason to stop watching: the stream goes on
// at the priority it has.
func (y *yielder) yield(nice int, local bool) {
	if nice <= 0 || !local || y.lower == nil {
		return
	}
	y.once.Do(func() { _ = y.lower(nice) })
}
