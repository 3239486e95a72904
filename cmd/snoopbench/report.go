package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
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
		if x.engine != "" {
			r.Engine = x.engine
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
const tableHeader = `| network | scenario | path | ops/s | vs direct best/median | p50 | p99 | added p50 | added p99 | proxy CPU/tx | tail CPU/tx | allocs/frame | events seen/dropped | errors |
| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |`

// markdown renders the row for the table.
func (r row) markdown() string {
	f1 := func(v float64) string { return fmt.Sprintf("%.1f µs", v) }
	vs, a50, a99, cpu, tail, allocs, events := "", "", "", "", "", "", ""
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
	}
	return fmt.Sprintf("| %s | %s | %s | %.0f | %s | %s | %s | %s | %s | %s | %s | %s | %s | %d |",
		r.Network, r.Scenario, r.Path, r.OpsPerS, vs, f1(r.P50), f1(r.P99), a50, a99, cpu, tail, allocs, events, r.Errors)
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

func (rep *report) addRun(network string, sc scenario, p pathSpec, round int, r result) {
	rep.Runs = append(rep.Runs, runRecord{
		Network: network, Scenario: sc.name, Path: p.name, Round: round + 1,
		Ops: r.rep.Ops, Elapsed: r.rep.Elapsed.Seconds(), OpsPerS: r.rep.OpsPerSec,
		P50: us(r.p50), P99: us(r.p99), CPU: us(r.cpuPerTx), TailCPU: us(r.tailCPUPerTx),
		Seen: r.seen, Dropped: r.dropped, Errors: r.rep.Errors, Engine: r.engine,
	})
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
