package format

import (
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/snoopd/snoopd/ctl/stats"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
)

// WriteStats writes snoopctl stats' tables: one row per proxy and
// operation (with its latency distribution drawn as a sparkline on 1-2-5
// log buckets beside the percentiles), one row per proxy for connection
// events, and a line with the event and drop totals over the elapsed
// time.
func WriteStats(w io.Writer, t stats.Table, elapsed time.Duration) error {
	tw := newTable(w)
	fmt.Fprintln(tw, "PROXY\tOP\tCOUNT\tHIT%\tP50\tP90\tP99\tLATENCY\tERRORS\tRESULTS")
	for _, r := range t.Ops {
		l := r.Latency
		p50, p90, p99 := "-", "-", "-"
		if l.GetCount() > 0 {
			p50, p90, p99 = Duration(l.GetP50().AsDuration()), Duration(l.GetP90().AsDuration()), Duration(l.GetP99().AsDuration())
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%d\t%s\n", r.Proxy, OpName(r.Op), r.Count,
			hitRatio(r.Op, r.Results), p50, p90, p99, Sparkline(r.Histogram), r.Errors, Results(r.Results))
	}
	if len(t.Ops) == 0 {
		fmt.Fprintln(tw, "(no transactions)")
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(t.Proxies) > 0 {
		fmt.Fprintln(w)
		tw = newTable(w)
		fmt.Fprintln(tw, "PROXY\tOPENED\tCLOSED\tCONNECT-FAILED\tREFUSED\tPROTOCOL-ERRORS")
		for _, p := range t.Proxies {
			fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\n", p.Proxy, p.Opened, p.Closed, p.ConnectFailed, p.Refused, p.ProtocolErrors)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	fmt.Fprintf(w, "\n%d events in %s, %d dropped", t.Events, Duration(elapsed.Round(time.Millisecond)), t.Dropped)
	if t.Dropped > 0 {
		fmt.Fprint(w, " (these numbers miss the dropped events)")
	}
	_, err := fmt.Fprintln(w)
	return err
}

// statsJSON is snoopctl stats -o json: one object per refresh. The
// counters and latency are the API's own messages, in protojson.
type statsJSON struct {
	Time    string          `json:"time"`
	Elapsed JSONDuration    `json:"elapsed"`
	Events  int64           `json:"events"`
	Dropped uint64          `json:"dropped"`
	Ops     []statsOpJSON   `json:"ops"`
	Proxies []statsConnJSON `json:"proxies"`
}

type statsOpJSON struct {
	Proxy      string          `json:"proxy"`
	OpCounters json.RawMessage `json:"op_counters"`
	HitRatio   *float64        `json:"hit_ratio,omitempty"`
	Errors     int64           `json:"errors"`
	Latency    json.RawMessage `json:"latency"`
}

type statsConnJSON struct {
	Proxy          string `json:"proxy"`
	Opened         int64  `json:"opened"`
	Closed         int64  `json:"closed"`
	ConnectFailed  int64  `json:"connect_failed"`
	Refused        int64  `json:"refused"`
	ProtocolErrors int64  `json:"protocol_errors"`
}

// StatsJSON returns the statistics as one line of JSON:
//
//	{"time":..., "elapsed":"1.500s", "events":N, "dropped":N,
//	 "ops":[{"proxy":..., "op_counters":<snoop.v1.OpCounters>, "hit_ratio":0.9,
//	         "errors":N, "latency":<snoop.v1.LatencySummary>}],
//	 "proxies":[{"proxy":..., "opened":N, "closed":N, "connect_failed":N,
//	             "refused":N, "protocol_errors":N}]}
func StatsJSON(t stats.Table, now time.Time, elapsed time.Duration) ([]byte, error) {
	out := statsJSON{
		Time:    now.UTC().Format(time.RFC3339Nano),
		Elapsed: JSONDuration(elapsed),
		Events:  t.Events,
		Dropped: t.Dropped,
		Ops:     []statsOpJSON{},
		Proxies: []statsConnJSON{},
	}
	for _, r := range t.Ops {
		oc, err := RawJSON(&snoopv1.OpCounters{Op: r.Op, Count: r.Count, Results: r.Results})
		if err != nil {
			return nil, err
		}
		lat, err := RawJSON(r.Latency)
		if err != nil {
			return nil, err
		}
		row := statsOpJSON{Proxy: r.Proxy, OpCounters: oc, Errors: r.Errors, Latency: lat}
		if h, ok := r.HitRatio(); ok {
			row.HitRatio = &h
		}
		out.Ops = append(out.Ops, row)
	}
	for _, p := range t.Proxies {
		out.Proxies = append(out.Proxies, statsConnJSON(p))
	}
	b, err := json.Marshal(out)
	if err != nil {
		return nil, fmt.Errorf("encode stats: %w", err)
	}
	return b, nil
}
