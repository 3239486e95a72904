package ctl

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/snoopd/snoopd/ctl/format"
	"github.com/snoopd/snoopd/ctl/stats"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
	"github.com/snoopd/snoopd/internal/apijson"
)

// summary counts what tail and read showed, for the lines they end with:
// the events and drops, the rate over the time they cover, and the
// transactions by operation and result.
type summary struct {
	col         *stats.Collector
	first, last time.Time // event times seen (read's rate runs over them)
	// facts holds what was read of an event written from its wire form;
	// addFacts carries it to add in these reused messages.
	facts             apijson.Facts
	one               snoopv1.WatchEventsResponse
	ev                snoopv1.Event
	tx                snoopv1.Transaction
	time, end         timestamppb.Timestamp
	latency           durationpb.Duration
	lastProxy, lastRs string
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

// addFacts counts the event whose facts (what a summary counts) are in
// s.facts: an event written from its wire form, never decoded whole.
func (s *summary) addFacts() {
	f := &s.facts
	ev := &s.ev
	ev.Kind, ev.Time, ev.EndTime, ev.Transaction = f.Kind, nil, nil, nil
	ev.Proxy = reuse(&s.lastProxy, f.Proxy)
	if f.Time.Has {
		s.time.Seconds, s.time.Nanos = f.Time.Secs, f.Time.Nanos
		ev.Time = &s.time
	}
	if f.EndTime.Has {
		s.end.Seconds, s.end.Nanos = f.EndTime.Secs, f.EndTime.Nanos
		ev.EndTime = &s.end
	}
	if f.Tx {
		s.tx.Op, s.tx.Result, s.tx.Latency = f.Op, reuse(&s.lastRs, f.Result), nil
		if f.Latency.Has {
			s.latency.Seconds, s.latency.Nanos = f.Latency.Secs, f.Latency.Nanos
			s.tx.Latency = &s.latency
		}
		ev.Transaction = &s.tx
	}
	s.one.Event = ev
	s.add(&s.one)
}

// reuse returns b as a string: *last if equal, which in a stream of one
// proxy's events it nearly always is, else a new one kept in *last.
func reuse(last *string, b []byte) string {
	if string(b) != *last {
		*last = string(b)
	}
	return *last
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
