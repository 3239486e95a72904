package loadgen

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/snoopd/snoopd/distcache"
	"github.com/snoopd/snoopd/internal/histogram"
	"github.com/snoopd/snoopd/vocab"
)

// Report is the outcome of a Run. It encodes to JSON with stable field
// names; durations are integer nanoseconds.
type Report struct {
	// The load, as run (with defaults applied).
	Addr       string `json:"addr"`
	Conns      int    `json:"conns"`
	Persistent bool   `json:"persistent"`
	Pipeline   int    `json:"pipeline"`
	Sessions   int    `json:"sessions"`
	MinData    int    `json:"min_data"`
	MaxData    int    `json:"max_data"`
	Mix        string `json:"mix"`
	Verify     bool   `json:"verify"`
	IDPrefix   string `json:"id_prefix"`
	Seed       uint64 `json:"seed"`

	// Interrupted is set when the run's context was cancelled.
	Interrupted bool `json:"interrupted,omitempty"`

	// Ops counts the operations the server answered.
	Ops int64 `json:"ops"`
	// Unanswered counts requests sent (or queued) that got no answer
	// because their connection failed or the run was cancelled.
	Unanswered int64 `json:"unanswered"`
	// Errors counts failed dials, failed connections, malformed answers
	// and, with Verify, wrong answers. A failed connection is one error
	// however many requests it had in flight.
	Errors int64 `json:"errors"`
	// ErrorCauses counts the errors by cause, most frequent first.
	ErrorCauses []ErrorCause `json:"error_causes,omitempty"`
	// ErrorSamples holds up to MaxErrorSamples error messages.
	ErrorSamples []string `json:"error_samples,omitempty"`

	// Results counts answers by outcome over all operations: "ok",
	// "notok", "exists" and the other status names, and "hit" and "miss"
	// for GET.
	Results map[string]int64 `json:"results"`
	// ByOp breaks the answers down by operation, in protocol order.
	ByOp []OpReport `json:"by_op"`

	Elapsed   time.Duration `json:"elapsed_ns"`
	OpsPerSec float64       `json:"ops_per_sec"`
	// Latency runs from the write of a request to the arrival of the last
	// byte of its answer (for pipelined requests, from each request's own
	// write). It is what the server (or proxy) costs per request, whatever
	// the connection handling.
	Latency LatencySummary `json:"latency"`
	// OpLatency is how long an application waits for one operation. With
	// connections per operation (Persistent false) it runs from the start
	// of the dial to the last byte of the answer: connect, request and
	// answer, which is what such a client pays and what a proxy's accept
	// path adds to. With persistent connections there is nothing before
	// the request, and it equals Latency.
	OpLatency LatencySummary `json:"op_latency"`
	// Dials counts the connections opened, DialLatency their set-up time.
	Dials       int64          `json:"dials"`
	DialLatency LatencySummary `json:"dial_latency"`
}

// OpReport is the share of one operation in a Report.
type OpReport struct {
	Op      string           `json:"op"`
	Count   int64            `json:"count"`
	Results map[string]int64 `json:"results"`
	Latency LatencySummary   `json:"latency"`
}

// ErrorCause counts the errors of one cause, such as "GET wrong-data",
// "dial refused" or "ADD timeout": where it happened (an operation, "dial",
// or "conn") and a stable word for what happened.
type ErrorCause struct {
	Cause   string `json:"cause"`
	Count   int64  `json:"count"`
	Example string `json:"example"`
}

// resultName names result index r of op.
func resultName(op distcache.Op, r int) string {
	switch {
	case r == resHit:
		return vocab.ResultHit.String()
	case op == distcache.OpGet && distcache.Status(r) == distcache.StatusNotOK:
		return vocab.ResultMiss.String()
	}
	return distcache.Status(r).String()
}

func newReport(cfg Config, elapsed time.Duration, workers []*worker) Report {
	rep := Report{
		Addr:       cfg.Addr.String(),
		Conns:      cfg.Conns,
		Persistent: cfg.Persistent,
		Pipeline:   cfg.Pipeline,
		Sessions:   cfg.Sessions,
		MinData:    cfg.MinData,
		MaxData:    cfg.MaxData,
		Mix:        cfg.Mix.String(),
		Verify:     cfg.Verify,
		IDPrefix:   cfg.IDPrefix,
		Seed:       cfg.Seed,
		Elapsed:    elapsed,
		Results:    map[string]int64{},
	}
	var all, dial, opLat histogram.Snapshot
	var lat [distcache.NumOps]histogram.Snapshot
	var results [distcache.NumOps][numResults]int64
	causes := map[string]*ErrorCause{}
	for _, w := range workers {
		st := &w.st
		rep.Ops += st.ops
		rep.Unanswered += st.unanswered
		rep.Errors += st.errors
		rep.Dials += st.dials
		dial.Merge(&st.dial)
		opLat.Merge(&st.opLat)
		for op := range lat {
			lat[op].Merge(&st.lat[op])
			for r, n := range st.results[op] {
				results[op][r] += n
			}
		}
		for _, name := range st.order {
			c := st.causes[name]
			if m := causes[name]; m != nil {
				m.Count += c.Count
			} else {
				cp := *c
				causes[name] = &cp
			}
		}
	}
	// Take samples round-robin, so one failing worker does not hide the
	// others' errors.
	for i := 0; len(rep.ErrorSamples) < MaxErrorSamples; i++ {
		took := false
		for _, w := range workers {
			if i < len(w.st.samples) && len(rep.ErrorSamples) < MaxErrorSamples {
				rep.ErrorSamples = append(rep.ErrorSamples, w.st.samples[i])
				took = true
			}
		}
		if !took {
			break
		}
	}
	for _, c := range causes {
		rep.ErrorCauses = append(rep.ErrorCauses, *c)
	}
	sort.Slice(rep.ErrorCauses, func(i, j int) bool {
		a, b := rep.ErrorCauses[i], rep.ErrorCauses[j]
		if a.Count != b.Count {
			return a.Count > b.Count
		}
		return a.Cause < b.Cause
	})
	for op := distcache.Op(0); op < distcache.NumOps; op++ {
		all.Merge(&lat[op])
		or := OpReport{Op: op.String(), Count: int64(lat[op].Count), Results: map[string]int64{}, Latency: summarize(&lat[op])}
		for r, n := range results[op] {
			if n > 0 {
				name := resultName(op, r)
				or.Results[name] += n
				rep.Results[name] += n
			}
		}
		rep.ByOp = append(rep.ByOp, or)
	}
	rep.Latency = summarize(&all)
	rep.OpLatency = summarize(&opLat)
	if cfg.Persistent {
		// No dial precedes a request, so the wait is the latency itself;
		// workers do not record it twice.
		rep.OpLatency = rep.Latency
	}
	rep.DialLatency = summarize(&dial)
	if elapsed > 0 {
		rep.OpsPerSec = float64(rep.Ops) / elapsed.Seconds()
	}
	return rep
}

// Write prints the report in a readable multi-line form.
func (r Report) Write(w io.Writer) error {
	var b strings.Builder
	mode := "persistent"
	if !r.Persistent {
		mode = "per-operation"
	}
	verify := "off"
	if r.Verify {
		verify = "on"
	}
	fmt.Fprintf(&b, "load:     %s, %d %s connections, pipeline %d, %d sessions of %d-%d bytes, mix %s, verify %s\n",
		r.Addr, r.Conns, mode, r.Pipeline, r.Sessions, r.MinData, r.MaxData, r.Mix, verify)
	if r.Interrupted {
		b.WriteString("          INTERRUPTED: partial results\n")
	}
	fmt.Fprintf(&b, "ops:      %d answered in %s, %.0f ops/s, %d unanswered\n",
		r.Ops, fmtDur(r.Elapsed), r.OpsPerSec, r.Unanswered)
	fmt.Fprintf(&b, "errors:   %d\n", r.Errors)
	fmt.Fprintf(&b, "latency:  %s\n", fmtLatency(r.Latency))
	fmt.Fprintf(&b, "connect:  %d connections, %s\n", r.Dials, fmtLatency(r.DialLatency))
	if !r.Persistent {
		// Only here does the wait differ from latency: each operation
		// pays its own connect.
		fmt.Fprintf(&b, "op wait:  %s (connect + request + answer)\n", fmtLatency(r.OpLatency))
	}

	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "op\tcount\tp50\tp99\tmax\tresults")
	for _, o := range r.ByOp {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\n", o.Op, o.Count,
			fmtDur(o.Latency.P50), fmtDur(o.Latency.P99), fmtDur(o.Latency.Max), fmtResults(o.Results))
	}
	tw.Flush()

	if len(r.ErrorCauses) > 0 {
		b.WriteString("errors by cause:\n")
		tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
		for _, c := range r.ErrorCauses {
			fmt.Fprintf(tw, "  %s\t%d\te.g. %s\n", c.Cause, c.Count, c.Example)
		}
		tw.Flush()
	}
	if len(r.ErrorSamples) > 0 {
		fmt.Fprintf(&b, "first errors (up to %d):\n", MaxErrorSamples)
		for _, s := range r.ErrorSamples {
			fmt.Fprintf(&b, "  %s\n", s)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// String returns what Write prints.
func (r Report) String() string {
	var b strings.Builder
	_ = r.Write(&b)
	return b.String()
}

// LatencySummary is the digest of a latency histogram. Durations encode in
// JSON as integer nanoseconds. Count, Min, Mean and Max are exact; the
// percentiles are within about 3% (see internal/histogram), ample for
// comparing a proxy against a direct connection.
type LatencySummary struct {
	Count int64         `json:"count"`
	Min   time.Duration `json:"min_ns"`
	Mean  time.Duration `json:"mean_ns"`
	P50   time.Duration `json:"p50_ns"`
	P90   time.Duration `json:"p90_ns"`
	P99   time.Duration `json:"p99_ns"`
	P999  time.Duration `json:"p999_ns"`
	Max   time.Duration `json:"max_ns"`
}

// summarize condenses s into the figures a report shows.
func summarize(s *histogram.Snapshot) LatencySummary {
	return LatencySummary{
		Count: int64(s.Count),
		Min:   s.Min,
		Mean:  s.Mean(),
		P50:   s.Quantile(0.50),
		P90:   s.Quantile(0.90),
		P99:   s.Quantile(0.99),
		P999:  s.Quantile(0.999),
		Max:   s.Max,
	}
}

func fmtLatency(l LatencySummary) string {
	if l.Count == 0 {
		return "none"
	}
	return fmt.Sprintf("min %s  p50 %s  p90 %s  p99 %s  p99.9 %s  max %s  mean %s",
		fmtDur(l.Min), fmtDur(l.P50), fmtDur(l.P90), fmtDur(l.P99), fmtDur(l.P999), fmtDur(l.Max), fmtDur(l.Mean))
}

// fmtResults lists result counts, largest first.
func fmtResults(m map[string]int64) string {
	if len(m) == 0 {
		return "-"
	}
	names := make([]string, 0, len(m))
	for k := range m {
		names = append(names, k)
	}
	sort.Slice(names, func(i, j int) bool {
		if m[names[i]] != m[names[j]] {
			return m[names[i]] > m[names[j]]
		}
		return names[i] < names[j]
	})
	parts := make([]string, len(names))
	for i, k := range names {
		parts[i] = fmt.Sprintf("%s %d", k, m[k])
	}
	return strings.Join(parts, ", ")
}

// fmtDur prints a duration with three or four significant digits, which is
// all a latency figure carries.
func fmtDur(d time.Duration) string {
	switch {
	case d < time.Microsecond:
		return fmt.Sprintf("%dns", d.Nanoseconds())
	case d < time.Millisecond:
		return fmt.Sprintf("%.1fµs", float64(d)/float64(time.Microsecond))
	case d < time.Second:
		return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond))
	}
	return fmt.Sprintf("%.3fs", d.Seconds())
}
