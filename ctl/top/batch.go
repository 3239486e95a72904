package top

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/snoopd/snoopd/ctl/format"
)

// WriteText writes a frame as top -b does: the two header lines, the
// proxy table sorted by ops/s (busiest first), and a blank line.
func WriteText(w io.Writer, f *Frame) error {
	rows := append([]Row(nil), f.Rows...)
	SortRows(rows, defaultSort, true)
	header, lines := tableLines(rows, -1, false, f.fleet())
	if _, err := fmt.Fprintf(w, "%s\n\n%s\n", strings.Join(summary(f), "\n"), header); err != nil {
		return err
	}
	for _, l := range lines {
		if _, err := fmt.Fprintln(w, l); err != nil {
			return err
		}
	}
	for _, r := range rows {
		if r.Problem != "" {
			if _, err := fmt.Fprintf(w, "%s failed: %s\n", r.Key(), r.Problem); err != nil {
				return err
			}
		}
	}
	_, err := fmt.Fprintln(w)
	return err
}

// frameJSON is top -b -o json: one object per refresh. Durations are
// written as the API writes them ("0.000250s"), rates are per second; a rate or percentile that is not known
// (no interval yet, no samples) is left out.
type frameJSON struct {
	Time     string               `json:"time"`
	Source   string               `json:"source"`
	Version  string               `json:"version,omitempty"`
	Uptime   *format.JSONDuration `json:"uptime,omitempty"`
	Interval format.JSONDuration  `json:"interval"`
	// Since, Dropped and Notes are an event-counting source's (top
	// --from): when it began counting, the events it lost, its problems.
	Since   string      `json:"since,omitempty"`
	Dropped uint64      `json:"dropped,omitempty"`
	Notes   []string    `json:"notes,omitempty"`
	Totals  totalsJSON  `json:"totals"`
	Proxies []proxyJSON `json:"proxies"`
}

type totalsJSON struct {
	Proxies         int     `json:"proxies"`
	Daemons         int     `json:"daemons,omitempty"`
	Listening       int     `json:"listening"`
	Connections     int64   `json:"connections"`
	Transactions    int64   `json:"transactions"`
	Errors          int64   `json:"errors"`
	OpsPerSec       float64 `json:"ops_per_sec"`
	ErrorsPerSec    float64 `json:"errors_per_sec"`
	BytesUpPerSec   float64 `json:"bytes_up_per_sec"`
	BytesDownPerSec float64 `json:"bytes_down_per_sec"`
}

type proxyJSON struct {
	Daemon          string              `json:"daemon,omitempty"`
	Name            string              `json:"name"`
	State           string              `json:"state"`
	Error           string              `json:"error,omitempty"`
	Connections     int64               `json:"connections"`
	Span            format.JSONDuration `json:"span"`
	Ops             int64               `json:"ops"`
	Errors          int64               `json:"errors"`
	OpsPerSec       *float64            `json:"ops_per_sec,omitempty"`
	ErrorsPerSec    *float64            `json:"errors_per_sec,omitempty"`
	HitRatio        *float64            `json:"hit_ratio,omitempty"`
	BytesUpPerSec   *float64            `json:"bytes_up_per_sec,omitempty"`
	BytesDownPerSec *float64            `json:"bytes_down_per_sec,omitempty"`
	latencyJSON
	ByOp []opJSON `json:"ops_detail"`
}

type latencyJSON struct {
	Samples uint64               `json:"samples"`
	P50     *format.JSONDuration `json:"p50,omitempty"`
	P99     *format.JSONDuration `json:"p99,omitempty"`
	P999    *format.JSONDuration `json:"p999,omitempty"`
}

type opJSON struct {
	Op        string           `json:"op"`
	Count     int64            `json:"count"`
	Errors    int64            `json:"errors"`
	OpsPerSec *float64         `json:"ops_per_sec,omitempty"`
	Results   map[string]int64 `json:"results"`
	latencyJSON
}

func newLatencyJSON(l Latency) latencyJSON {
	out := latencyJSON{Samples: l.Count}
	if l.Count > 0 {
		p50, p99, p999 := format.JSONDuration(l.P50), format.JSONDuration(l.P99), format.JSONDuration(l.P999)
		out.P50, out.P99, out.P999 = &p50, &p99, &p999
	}
	return out
}

// FrameJSON returns a frame as one line of JSON (without the newline):
//
//	{"time", "source", "version", "uptime", "interval",
//	 "since", "dropped", "notes",
//	 "totals": {"proxies", "daemons", "listening", "connections", "transactions",
//	            "errors", "ops_per_sec", "errors_per_sec",
//	            "bytes_up_per_sec", "bytes_down_per_sec"},
//	 "proxies": [{"daemon", "name", "state", "error", "connections", "span", "ops",
//	              "errors", "ops_per_sec", "errors_per_sec", "hit_ratio",
//	              "bytes_up_per_sec", "bytes_down_per_sec", "samples",
//	              "p50", "p99", "p999",
//	              "ops_detail": [{"op", "count", "errors", "ops_per_sec",
//	                              "results", "samples", "p50", ...}]}]}
//
// Proxies are sorted by daemon and name; counts are over span (the
// interval, or the proxy's life for the first frame or a new proxy). A
// fleet's frame (top --from) has "daemon" in each proxy, "daemons" in the
// totals and "since", when counting began: its first frame's span is the
// time since then, and "state" is "-". "dropped" and "notes" say what the
// numbers miss.
func FrameJSON(f *Frame) ([]byte, error) {
	t := f.Totals
	out := frameJSON{
		Time: f.At.UTC().Format(time.RFC3339Nano), Source: f.Source, Version: f.Version,
		Interval: format.JSONDuration(f.Interval),
		Dropped:  f.Dropped, Notes: f.Notes,
		Totals: totalsJSON{t.Proxies, t.Daemons, t.Listening, t.Conns, t.Transactions, t.Errors,
			t.OpsPerSec, t.ErrorsPerSec, t.UpPerSec, t.DownPerSec},
		Proxies: []proxyJSON{},
	}
	if f.Uptime > 0 {
		up := format.JSONDuration(f.Uptime)
		out.Uptime = &up
	}
	if !f.Since.IsZero() {
		out.Since = f.Since.UTC().Format(time.RFC3339Nano)
	}
	rows := append([]Row(nil), f.Rows...)
	SortRows(rows, columnByKey("n"), false) // daemon, then name
	for i := range rows {
		r := &rows[i]
		rate := func(n int64) *float64 {
			if r.Span <= 0 {
				return nil
			}
			v := r.Rate(n)
			return &v
		}
		p := proxyJSON{
			Daemon: r.Daemon, Name: r.Name, State: r.State, Error: r.Problem, Connections: r.Conns, Span: format.JSONDuration(r.Span),
			Ops: r.Ops, Errors: r.Errors, OpsPerSec: rate(r.Ops), ErrorsPerSec: rate(r.Errors),
			BytesUpPerSec: rate(r.UpBytes), BytesDownPerSec: rate(r.DownBytes),
			latencyJSON: newLatencyJSON(r.Latency), ByOp: []opJSON{},
		}
		if h, ok := r.HitRatio(); ok {
			p.HitRatio = &h
		}
		for _, o := range r.ByOp {
			p.ByOp = append(p.ByOp, opJSON{Op: format.OpName(o.Op), Count: o.Count, Errors: o.Errors,
				OpsPerSec: rate(o.Count), Results: o.Results, latencyJSON: newLatencyJSON(o.Latency)})
		}
		out.Proxies = append(out.Proxies, p)
	}
	b, err := json.Marshal(out)
	if err != nil {
		return nil, fmt.Errorf("encode top frame: %w", err)
	}
	return b, nil
}
