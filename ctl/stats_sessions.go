package ctl

import (
	"io"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/snoopd/snoopd/ctl/format"
	"github.com/snoopd/snoopd/ctl/sessions"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
)

// bySession is stats --by session: the hot sessions instead of the
// counts per proxy and operation.
const bySession = "session"

// defaultTopSessions is how many sessions stats --by session shows.
const defaultTopSessions = 10

const sessionsHelp = "--by session counts the live stream's transactions per session id instead\n" +
	"(as mctop counts memcached's keys) and prints the --top N sessions with the most\n" +
	"GETs: their GET rate and count, hit ratio, ADDs and bytes both ways, each id as\n" +
	"tail shows it. The counts are kept in 1,000 counters (a space-saving sketch), so\n" +
	"a GET count may be up to N/1000 high for N GETs counted, and every session with\n" +
	"more than that is counted; the first line says the bound. It stops as sampling\n" +
	"does (--for, --count, Ctrl-C; --watch prints every --interval). -o json prints\n" +
	"one object per table: {\"time\", \"elapsed\", \"gets\", \"counters\", \"bound\",\n" +
	"\"dropped\", \"sessions\": [{\"session_id\" (base64), \"session\", \"gets\",\n" +
	"\"gets_error\", \"gets_per_sec\", \"hits\", \"misses\", \"hit_ratio\", \"adds\",\n" +
	"\"bytes\"}]}.\n\n"

// statsBy reads --by and checks --top against it.
func statsBy(cCtx *cli.Context) (string, error) {
	by := cCtx.String("by")
	switch {
	case by != "" && by != bySession:
		return "", usagef("--by %q: stats counts by session only (--by session); without --by it counts per proxy and operation", by)
	case by == "" && cCtx.IsSet("top"):
		return "", usagef("--top N is how many sessions --by session shows; add --by session")
	case cCtx.Int("top") <= 0:
		return "", usagef("--top %d: want a number of sessions above 0", cCtx.Int("top"))
	}
	return by, nil
}

// statsSessions is stats --by session: the live stream's transactions
// counted per session id, the --top busiest printed at the end (and every
// interval with watch).
func (e *env) statsSessions(cCtx *cli.Context, req *snoopv1.WatchEventsRequest, watch bool, interval, dur time.Duration) error {
	if len(req.GetKinds()) == 0 {
		// Only transactions carry a session: the daemon (or NATS, as a
		// subject) leaves the rest out.
		req.Kinds = []snoopv1.EventKind{snoopv1.EventKind_EVENT_KIND_TRANSACTION}
	}
	if !watch && dur == 0 && cCtx.Int64("count") == 0 {
		e.notef("stats --by session is counting the live stream's transactions and prints the hot sessions at Ctrl-C; --for D or --count N stops by itself, --watch shows them every --interval")
	}
	src, err := e.openEvents(cCtx, req)
	if err != nil {
		return err
	}
	defer src.Close()
	n := cCtx.Int("top")
	counter := sessions.NewCounter(sessions.DefaultCounters, time.Now())
	o := streamOptions{action: "stats", count: cCtx.Int64("count"), dur: dur}
	return e.sampleLive(cCtx.Context, src, o, watch, interval,
		func(r *snoopv1.WatchEventsResponse) {
			if ev := r.GetEvent(); ev != nil {
				counter.Add(ev)
			} else {
				counter.Dropped(r.GetDropped())
			}
		},
		func() ([]byte, error) { return format.SessionsJSON(counter.Table(time.Now()), n) },
		func(w io.Writer) error { return format.WriteSessions(w, counter.Table(time.Now()), n) })
}
