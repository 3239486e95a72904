package format

import (
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/snoopd/snoopd/ctl/stats"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
)

// WriteTotals writes snoopctl stats' default view: the daemon's counters
// per proxy and operation with the operation's latency (percentiles and
// a sparkline of its histogram, as show draws them), and per proxy its
// connections and latency.
func WriteTotals(w io.Writer, t stats.Totals) error {
	tw := newTable(w)
	fmt.Fprintln(tw, "PROXY\tOP\tCOUNT\tHIT%\tP50\tP99\tLATENCY\tERRORS\tRESULTS")
	for _, r := range t.Ops {
		p50, p99 := "-", "-"
		if l := r.Latency; l.GetCount() > 0 {
			p50, p99 = Duration(l.GetP50().AsDuration()), Duration(l.GetP99().AsDuration())
		}
		spark := "-"
		if r.Histogram != nil && r.Histogram.Count > 0 {
			spark = Sparkline(r.Histogram)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\t%d\t%s\n", r.Proxy, OpName(r.Op), r.Count, hitRatio(r.Op, r.Results),
			p50, p99, spark, r.Errors, Results(r.Results))
	}
	if len(t.Ops) == 0 {
		fmt.Fprintln(tw, "(no transactions)")
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(t.Proxies) == 0 {
		_, err := fmt.Fprintln(w, "\nno proxies")
		return err
	}
	fmt.Fprintln(w)
	tw = newTable(w)
	fmt.Fprintln(tw, "PROXY\tCONNS\tTOTAL\tCONNECT-FAILED\tREFUSED\tPROTOCOL-ERRORS\tTIMED-OUT\tP50\tP90\tP99\tMAX")
	for _, p := range t.Proxies {
		p50, p90, p99, pmax := latencyCols(p.Latency)
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%d\t%s\t%s\t%s\t%s\n", p.Proxy, p.Active, p.Total, p.ConnectFailed,
			p.Refused, p.ProtocolErrors, p.Timeouts, p50, p90, p99, pmax)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintln(w, "\ntotals since each proxy was created; --for D samples the live stream, --watch shows rates")
	return err
}

func latencyCols(l *snoopv1.LatencySummary) (p50, p90, p99, pmax string) {
	if l.GetCount() == 0 {
		return "-", "-", "-", "-"
	}
	return Duration(l.GetP50().AsDuration()), Duration(l.GetP90().AsDuration()), Duration(l.GetP99().AsDuration()), Duration(l.GetMax().AsDuration())
}

// WriteRates writes one interval of stats --watch: per proxy and
// operation, what happened in the interval and its rate.
func WriteRates(w io.Writer, rows []stats.OpRow, at time.Time, interval time.Duration) error {
	fmt.Fprintf(w, "-- %s, the last %s\n", at.Format(time.TimeOnly), Duration(interval.Round(time.Millisecond)))
	tw := newTable(w)
	fmt.Fprintln(tw, "PROXY\tOP\tCOUNT\tRATE\tHIT%\tERRORS\tRESULTS")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s/s\t%s\t%d\t%s\n", r.Proxy, OpName(r.Op), r.Count, Rate(r.Count, interval),
			hitRatio(r.Op, r.Results), r.Errors, Results(r.Results))
	}
	if len(rows) == 0 {
		fmt.Fprintln(tw, "(no transactions)")
	}
	return tw.Flush()
}

// Rate is n per second over d, with one decimal below 100; "-" for no
// time.
func Rate(n int64, d time.Duration) string {
	if d <= 0 {
		return "-"
	}
	r := float64(n) / d.Seconds()
	if r < 100 {
		return fmt.Sprintf("%.1f", r)
	}
	return fmt.Sprintf("%.0f", r)
}

// TotalsJSON is stats -o json without sampling: {"time", "proxies":
// [snoop.v1.Proxy...]} as the daemon reported them, or with interval set
// (stats --watch) {"time", "interval", "ops": [{"proxy", "op_counters",
// "rate", "hit_ratio", "errors"}]}.
func TotalsJSON(ps []*snoopv1.Proxy, rows []stats.OpRow, now time.Time, interval time.Duration) ([]byte, error) {
	type opJSON struct {
		Proxy      string          `json:"proxy"`
		OpCounters json.RawMessage `json:"op_counters"`
		Rate       float64         `json:"rate"`
		HitRatio   *float64        `json:"hit_ratio,omitempty"`
		Errors     int64           `json:"errors"`
	}
	out := struct {
		Time     string            `json:"time"`
		Interval *JSONDuration     `json:"interval,omitempty"`
		Proxies  []json.RawMessage `json:"proxies,omitempty"`
		Ops      []opJSON          `json:"ops,omitempty"`
	}{Time: now.UTC().Format(time.RFC3339Nano)}
	if interval > 0 {
		iv := JSONDuration(interval)
		out.Interval = &iv
		out.Ops = []opJSON{}
		for _, r := range rows {
			oc, err := RawJSON(&snoopv1.OpCounters{Op: r.Op, Count: r.Count, Results: r.Results})
			if err != nil {
				return nil, err
			}
			row := opJSON{Proxy: r.Proxy, OpCounters: oc, Rate: float64(r.Count) / interval.Seconds(), Errors: r.Errors}
			if h, ok := r.HitRatio(); ok {
				row.HitRatio = &h
			}
			out.Ops = append(out.Ops, row)
		}
	} else {
		out.Proxies = []json.RawMessage{}
		for _, p := range ps {
			raw, err := RawJSON(p)
			if err != nil {
				return nil, err
			}
			out.Proxies = append(out.Proxies, raw)
		}
	}
	b, err := json.Marshal(out)
	if err != nil {
		return nil, fmt.Errorf("encode stats: %w", err)
	}
	return b, nil
}
