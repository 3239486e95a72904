package ctl

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/snoopd/snoopd/ctl/format"
	"github.com/snoopd/snoopd/ctl/stats"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
)

// summary counts what tail and read showed, for the lines they end with:
// the events and drops, the rate over the time they cover, and the
// transactions by operation and result.
type summary struct {
	col         *stats.Collector
	first, last time.Time // event times seen (read's rate runs over them)
}

func newSummary() *summary { return &summary{col: stats.New()} }

func (s *summary) add(r *snoopv1.WatchEventsResponse) {
	s.col.Add(r)
	if ev := r.GetEvent(); ev != nil {
		if ts := format.EventTime(ev); ts != nil {
			t := ts.AsTime()
			if s.first.IsZero() || t.Before(s.first) {
				s.first = t
			}
			if t.After(s.last) {
				s.last = t
			}
		}
	}
}

// span is the time between the first and the last event seen.
func (s *summary) span() time.Duration { return s.last.Sub(s.first) }

// write prints the summary: "N events shown, M dropped, over D (R/s)",
// then one line per operation with its results, and lines for connection
// events and errors, if any.
func (s *summary) write(w io.Writer, verb string, over time.Duration) {
	t := s.col.Table()
	fmt.Fprintf(w, "%s %s, %d dropped, over %s (%s events/s)\n", count(t.Events, "event", "events"), verb, t.Dropped,
		format.Duration(over), format.Rate(t.Events, over))
	type opSum struct {
		n       int64
		results map[string]int64
	}
	ops := map[snoopv1.Op]*opSum{}
	for _, r := range t.Ops {
		o := ops[r.Op]
		if o == nil {
			o = &opSum{results: map[string]int64{}}
			ops[r.Op] = o
		}
		o.n += r.Count
		for k, v := range r.Results {
			o.results[k] += v
		}
	}
	for _, op := range slices.Sorted(maps.Keys(ops)) {
		o := ops[op]
		fmt.Fprintf(w, "  %s %d: %s\n", format.OpName(op), o.n, format.Results(o.results))
	}
	var conn stats.ProxyRow
	for _, p := range t.Proxies {
		conn.Opened += p.Opened
		conn.Closed += p.Closed
		conn.ConnectFailed += p.ConnectFailed
		conn.Refused += p.Refused
		conn.ProtocolErrors += p.ProtocolErrors
	}
	list := func(head string, items ...string) {
		var parts []string
		for i := 0; i+1 < len(items); i += 2 {
			if items[i] != "0" {
				parts = append(parts, items[i]+" "+items[i+1])
			}
		}
		if len(parts) > 0 {
			fmt.Fprintf(w, "  %s: %s\n", head, strings.Join(parts, ", "))
		}
	}
	n := func(k int64) string { return fmt.Sprint(k) }
	list("connections", n(conn.Opened), "opened", n(conn.Closed), "closed")
	perr := "protocol errors"
	if conn.ProtocolErrors == 1 {
		perr = "protocol error"
	}
	list("errors", n(conn.ConnectFailed), "connect-failed", n(conn.Refused), "refused", n(conn.ProtocolErrors), perr)
}
