package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"
)

// row is the summary of one path in one scenario over the rounds: the
// ratio to direct as the best and the median of the rounds (each round's
// run against that round's direct run), everything else the median.
type row struct {
	Network  string  `json:"network"`
	Scenario string  `json:"scenario"`
	Path     string  `json:"path"`
	Rounds   int     `json:"rounds"`
	Ops      int64   `json:"ops_per_round"`
	OpsPerS  float64 `json:"ops_per_sec"`
	RatioOK  bool    `json:"-"`
	Best     float64 `json:"ratio_best,omitempty"`
	Median   float64 `json:"ratio_median,omitempty"`
	P50      float64 `json:"p50_us"`
	P99      float64 `json:"p99_us"`
	Added50  float64 `json:"added_p50_us,omitempty"`
	Added99  float64 `json:"added_p99_us,omitempty"`
	CPUOK    bool    `json:"-"`
	CPU      float64 `json:"proxy_cpu_us_per_tx,omitempty"`
	TailOK   bool    `json:"-"`
	TailCPU  float64 `json:"tail_cpu_us_per_tx,omitempty"`
	AllocsOK bool    `json:"-"`
	Allocs   float64 `json:"allocs_per_frame,omitempty"`
	EventsOK bool    `json:"-"`
	Seen     int64   `json:"events_seen,omitempty"`
	Dropped  int64   `json:"events_dropped,omitempty"`
	Errors   int64   `json:"errors"`
	Engine   string  `json:"engine_reported,omitempty"`
	Loops    uint32  `json:"loops_reported,omitempty"`
	// TailEvents are what each tail showed and was told were dropped,
	// summed over the rounds (Seen and Dropped are their sums).
	TailEvents []tailCount `json:"tail_events,omitempty"`
	// The medians of the rounds' comparisons (nil when not measured):
	// the ratio of ops/s to the same round's cselect run; the loss of
	// ops/s against the same round's run of the same snoopd with no
	// watcher, in %; and the daemon's CPU per event streamed, in µs.
	VsCSelect   *float64 `json:"ratio_cselect_median,omitempty"`
	Loss        *float64 `json:"loss_vs_unwatched_pct,omitempty"`
	CPUPerEvent *float64 `json:"daemon_cpu_us_per_event,omitempty"`
	// Skipped says why the path did not run in the scenario.
	Skipped string `json:"skipped,omitempty"`
}

// versus are one run's comparisons with other runs of its round (nil
// where there is nothing to compare with).
type versus struct {
	VsCSelect   *float64 `json:"ratio_cselect,omitempty"`
	Loss        *float64 `json:"loss_vs_unwatched_pct,omitempty"`
	CPUPerEvent *float64 `json:"daemon_cpu_us_per_event,omitempty"`
}

// cpuPerEventUS is the daemon's CPU per event streamed to its watchers,
// in µs: the CPU of the watched run less that of the unwatched run of
// the same scenario and round, over the events streamed to all the
// watchers together. false when no event was streamed.
func cpuPerEventUS(watched, unwatched time.Duration, events int64) (float64, bool) {
	if events <= 0 {
		return 0, false
	}
	return float64(watched-unwatched) / 1e3 / float64(events), true
}

// lossPct is how much lower watched throughput is than unwatched, in %
// (negative when it is higher). false without an unwatched figure.
func lossPct(watched, unwatched float64) (float64, bool) {
	if unwatched <= 0 {
		return 0, false
	}
	return 100 * (1 - watched/unwatched), true
}

// compareRounds compares each run with the run of the same round in
// unwatched (the same snoopd without a watcher) and in cselect; either
// may be nil or shorter, when that path was not measured.
func compareRounds(runs, unwatched, cselect []result) []versus {
	out := make([]versus, len(runs))
	for i, x := range runs {
		if i < len(cselect) {
			if c := cselect[i].rep.OpsPerSec; c > 0 {
				out[i].VsCSelect = ptr(x.rep.OpsPerSec / c)
			}
		}
		if i >= len(unwatched) {
			continue
		}
		u := unwatched[i]
		if l, ok := lossPct(x.rep.OpsPerSec, u.rep.OpsPerSec); ok {
			out[i].Loss = ptr(l)
		}
		if x.streamedOK && x.cpuOK && u.cpuOK {
			if c, ok := cpuPerEventUS(x.cpu, u.cpu, x.streamed); ok {
				out[i].CPUPerEvent = ptr(c)
			}
		}
	}
	return out
}

func ptr(v float64) *float64 { return &v }

// addComparisons sets the row's comparisons to the medians of the
// rounds'.
func (r *row) addComparisons(cmps []versus) {
	med := func(get func(versus) *float64) *float64 {
		var xs []float64
		for _, c := range cmps {
			if v := get(c); v != nil {
				xs = append(xs, *v)
			}
		}
		if len(xs) == 0 {
			return nil
		}
		return ptr(median(xs))
	}
	r.VsCSelect = med(func(c versus) *float64 { return c.VsCSelect })
	r.Loss = med(func(c versus) *float64 { return c.Loss })
	r.CPUPerEvent = med(func(c versus) *float64 { return c.CPUPerEvent })
}

// median of xs (the mean of the middle two for an even count); 0 for
// none.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

func us(d time.Duration) float64 { return float64(d) / 1e3 }

// summarize folds the rounds of one path into a row; direct holds the
// direct runs of the same rounds (runs itself when path is direct).
func summarize(network, scenario, path string, runs, direct []result) row {
	r := row{Network: network, Scenario: scenario, Path: path, Rounds: len(runs)}
	var ops, ratios, p50, p99, add50, add99, cpu, tail, allocs []float64
	for i, x := range runs {
		ops = append(ops, x.rep.OpsPerSec)
		p50 = append(p50, us(x.p50))
		p99 = append(p99, us(x.p99))
		r.Ops = x.rep.Ops
		r.Errors += x.rep.Errors
		if path != "direct" && i < len(direct) {
			if d := direct[i]; d.rep.OpsPerSec > 0 {
				ratios = append(ratios, x.rep.OpsPerSec/d.rep.OpsPerSec)
				add50 = append(add50, us(x.p50-d.p50))
				add99 = append(add99, us(x.p99-d.p99))
			}
		}
		if x.cpuOK {
			cpu = append(cpu, us(x.cpuPerTx))
		}
		if x.tailOK {
			tail = append(tail, us(x.tailCPUPerTx))
		}
		if x.allocsOK {
			allocs = append(allocs, x.allocs)
		}
		if x.eventsOK {
			r.EventsOK = true
			r.Seen += x.seen
			r.Dropped += x.dropped
		}
		for i, t := range x.tailEvents {
			if i == len(r.TailEvents) {
				r.TailEvents = append(r.TailEvents, tailCount{})
			}
			r.TailEvents[i].Seen += t.Seen
			r.TailEvents[i].Dropped += t.Dropped
		}
		if x.engine != "" {
			r.Engine, r.Loops = x.engine, x.loops
		}
	}
	r.OpsPerS, r.P50, r.P99 = median(ops), median(p50), median(p99)
	if len(ratios) > 0 {
		r.RatioOK = true
		r.Best, r.Median = slices.Max(ratios), median(ratios)
		r.Added50, r.Added99 = median(add50), median(add99)
	}
	r.CPUOK, r.CPU = len(cpu) > 0, median(cpu)
	r.TailOK, r.TailCPU = len(tail) > 0, median(tail)
	r.AllocsOK, r.Allocs = len(allocs) > 0, median(allocs)
	return r
}

// tableHeader is the markdown header of the comparison.
const tableHeader = `| network | scenario | path | ops/s | vs direct best/median | p50 | p99 | added p50 | added p99 | proxy CPU/tx | tail CPU/tx | allocs/frame | events seen/dropped | errors | vs cselect | loss vs unwatched | daemon CPU/event |
| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |`

// markdown renders the row for the table.
func (r row) markdown() string {
	if r.Skipped != "" {
		return fmt.Sprintf("| %s | %s | %s | %s |  |  |  |  |  |  |  |  |  |  |  |  |  |", r.Network, r.Scenario, r.Path, r.Skipped)
	}
	f1 := func(v float64) string { return fmt.Sprintf("%.1f µs", v) }
	vs, a50, a99, cpu, tail, allocs, events := "", "", "", "", "", "", ""
	vsC, loss, perEvent := "", "", ""
	if r.RatioOK {
		vs = fmt.Sprintf("%.2f/%.2f×", r.Best, r.Median)
		a50, a99 = f1(r.Added50), f1(r.Added99)
	}
	if r.CPUOK {
		cpu = f1(r.CPU)
	}
	if r.TailOK {
		tail = f1(r.TailCPU)
	}
	if r.AllocsOK {
		allocs = fmt.Sprintf("%.3f", r.Allocs)
	}
	if r.EventsOK {
		events = fmt.Sprintf("%d/%d", r.Seen, r.Dropped)
		if len(r.TailEvents) > 1 {
			events = tailEventsText(r.TailEvents)
		}
	}
	if r.VsCSelect != nil {
		vsC = fmt.Sprintf("%.2f×", *r.VsCSelect)
	}
	if r.Loss != nil {
		loss = fmt.Sprintf("%.1f%%", *r.Loss)
	}
	if r.CPUPerEvent != nil {
		perEvent = fmt.Sprintf("%.2f µs", *r.CPUPerEvent)
	}
	return fmt.Sprintf("| %s | %s | %s | %.0f | %s | %s | %s | %s | %s | %s | %s | %s | %s | %d | %s | %s | %s |",
		r.Network, r.Scenario, r.Path, r.OpsPerS, vs, f1(r.P50), f1(r.P99), a50, a99, cpu, tail, allocs, events, r.Errors, vsC, loss, perEvent)
}

// tailEventsText shows several tails' events seen/dropped: "N/M ×4" when
// every tail saw the same, else each tail's in turn.
func tailEventsText(ts []tailCount) string {
	same := true
	for _, t := range ts {
		same = same && t == ts[0]
	}
	if same {
		return fmt.Sprintf("%d/%d ×%d", ts[0].Seen, ts[0].Dropped, len(ts))
	}
	parts := make([]string, len(ts))
	for i, t := range ts {
		parts[i] = fmt.Sprintf("%d/%d", t.Seen, t.Dropped)
	}
	return strings.Join(parts, " · ")
}

// runRecord is one run, as -json writes it.
type runRecord struct {
	Network  string  `json:"network"`
	Scenario string  `json:"scenario"`
	Path     string  `json:"path"`
	Round    int     `json:"round"`
	Ops      int64   `json:"ops"`
	Elapsed  float64 `json:"elapsed_s"`
	OpsPerS  float64 `json:"ops_per_sec"`
	P50      float64 `json:"p50_us"`
	P99      float64 `json:"p99_us"`
	CPU      float64 `json:"proxy_cpu_us_per_tx,omitempty"`
	TailCPU  float64 `json:"tail_cpu_us_per_tx,omitempty"`
	Seen     int64   `json:"events_seen,omitempty"`
	Dropped  int64   `json:"events_dropped,omitempty"`
	Errors   int64   `json:"errors"`
	Engine   string  `json:"engine_reported,omitempty"`
	Loops    uint32  `json:"loops_reported,omitempty"`
	// ProxyCPUms is the proxy's CPU over the scenario; Streamed the
	// events the daemon delivered to its watchers over it, all of them
	// together.
	ProxyCPUms float64     `json:"proxy_cpu_ms,omitempty"`
	TailEvents []tailCount `json:"tail_events,omitempty"`
	Streamed   *int64      `json:"events_streamed,omitempty"`
	versus
}

// report collects the runs and rows; rows are printed as they come.
type report struct {
	out     io.Writer
	Machine machineInfo `json:"machine"`
	Args    []string    `json:"args"`
	Runs    []runRecord `json:"runs"`
	Rows    []row       `json:"rows"`
	header  bool
}

// addRun records a run and returns its index in rep.Runs.
func (rep *report) addRun(network string, sc scenario, p pathSpec, round int, r result) int {
	rec := runRecord{
		Network: network, Scenario: sc.name, Path: p.name, Round: round + 1,
		Ops: r.rep.Ops, Elapsed: r.rep.Elapsed.Seconds(), OpsPerS: r.rep.OpsPerSec,
		P50: us(r.p50), P99: us(r.p99), CPU: us(r.cpuPerTx), TailCPU: us(r.tailCPUPerTx),
		Seen: r.seen, Dropped: r.dropped, Errors: r.rep.Errors, Engine: r.engine, Loops: r.loops,
		ProxyCPUms: float64(r.cpu) / 1e6, TailEvents: r.tailEvents,
	}
	if r.streamedOK {
		rec.Streamed = &r.streamed
	}
	rep.Runs = append(rep.Runs, rec)
	return len(rep.Runs) - 1
}

func (rep *report) addRow(r row) {
	if !rep.header {
		fmt.Fprintln(rep.out, tableHeader)
		rep.header = true
	}
	fmt.Fprintln(rep.out, r.markdown())
	rep.Rows = append(rep.Rows, r)
}

// writeJSON writes the whole report to path ("-" for standard output).
func (rep *report) writeJSON(path string) error {
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	b = append(b, '\n')
	if path == "-" {
		_, err = os.Stdout.Write(b)
		return err
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return fmt.Errorf("-json: %w", err)
	}
	return nil
}
