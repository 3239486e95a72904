package top

import (
	"context"
	"strings"

	"github.com/snoopd/snoopd/ctl/format"
	"github.com/snoopd/snoopd/ctl/sessions"
)

// SessionSource gives top's sessions view its tables: the hot sessions
// of an event stream (a daemon's watch, or a fleet's events from NATS).
// A source may start its stream at the first call, so that top without
// the view costs the daemon no watcher.
type SessionSource interface {
	// Sessions returns the sessions counted since the previous call (the
	// first call's table is empty, starting the count) and begins the
	// next interval. It is called from one goroutine at a time.
	Sessions(ctx context.Context) (*sessions.Table, error)
}

// sessionLines lays out a sessions table for the live view: its summary,
// then the header and the sessions, most GETs first, as many as max (all
// for max <= 0).
func sessionLines(t *sessions.Table, max int) (summary, header string, rows []string) {
	var b strings.Builder
	tw := newTabwriter(&b)
	tw.Write([]byte("SESSION\tGET/S\tGETS\tHIT%\tADDS\tBYTES\n"))
	for _, r := range t.Top(max) {
		tw.Write([]byte(format.SessionLine(t, r) + "\n"))
	}
	tw.Flush()
	lines := strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
	return format.SessionsSummary(t), lines[0], lines[1:]
}
