package main

import (
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestParseProcStatCPU(t *testing.T) {
	// Real layout: pid (comm) state ppid ... utime stime ...; the name may
	// hold spaces and parentheses.
	rest := " S 1 2 3 4 5 6 7 8 9 10 %s %s 0 0 20 0 4 0 100 200 300"
	for _, tc := range []struct {
		line string
		want time.Duration
	}{
		{"42 (snoopd)" + sprintf(rest, "150", "25"), 175 * tick},
		{"42 (a b) (c))" + sprintf(rest, "0", "3"), 3 * tick},
		{"7 ()" + sprintf(rest, "1", "0"), tick},
	} {
		got, err := parseProcStatCPU(tc.line)
		if err != nil || got != tc.want {
			t.Errorf("parseProcStatCPU(%q) = %v, %v; want %v", tc.line, got, err, tc.want)
		}
	}
	for _, bad := range []string{
		"",
		"42 snoopd S 1",
		"42 (snoopd) S 1 2 3",
		"42 (snoopd)" + sprintf(rest, "x", "1"),
		"42 (snoopd)" + sprintf(rest, "1", "-1"),
	} {
		if d, err := parseProcStatCPU(bad); err == nil {
			t.Errorf("parseProcStatCPU(%q) = %v, want an error", bad, d)
		}
	}
}

func sprintf(format string, a ...string) string {
	for _, s := range a {
		format = strings.Replace(format, "%s", s, 1)
	}
	return format
}

func TestProcessCPU(t *testing.T) {
	before, err := processCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	// Burn a little CPU, bounded in count, so the reading can only grow.
	x := 0
	for i := range 20_000_000 {
		x ^= i
	}
	after, err := processCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if after < before {
		t.Errorf("cpu went from %v to %v (x=%d)", before, after, x)
	}
	if _, err := processCPU(-1); err == nil {
		t.Error("processCPU(-1) succeeded")
	}
	got, err := settleCPU([]int{os.Getpid()}, 300*time.Millisecond)
	if err != nil || len(got) != 1 || got[0] < after {
		t.Errorf("settleCPU = %v, %v; want one reading ≥ %v", got, err, after)
	}
}

func TestParseTailSummary(t *testing.T) {
	for _, tc := range []struct {
		in             string
		shown, dropped int64
		ok             bool
	}{
		{"12 events shown, 3 dropped\n", 12, 3, true},
		{"warning: x\n5 events shown, 0 dropped\n7 events shown, 1 dropped\n", 7, 1, true},
		{"snoopctl: connection refused\n", 0, 0, false},
		{"", 0, 0, false},
		{"x12 events shown, 3 dropped\n", 0, 0, false},
		// As snoopctl tail prints it since it reports its rate and each
		// operation's results.
		{"20500 events shown, 0 dropped, over 2.68s (7655 events/s)\n  ADD 3537: ok=2003 exists=1534\n  GET 10037: hit=4191 miss=5846\n", 20500, 0, true},
		{"12 events shown, 3 droppedx\n", 0, 0, false},
	} {
		s, d, ok := parseTailSummary(tc.in)
		if s != tc.shown || d != tc.dropped || ok != tc.ok {
			t.Errorf("parseTailSummary(%q) = %d, %d, %v; want %d, %d, %v", tc.in, s, d, ok, tc.shown, tc.dropped, tc.ok)
		}
	}
}

func TestHasFlag(t *testing.T) {
	help := "Flags:\n  --engine NAME   the data path\n  --engines-x N  other\n"
	if !hasFlag(help, "engine") {
		t.Error("--engine not found")
	}
	if hasFlag(help, "loops") || hasFlag("  --engine-loops N", "engine") {
		t.Error("found a flag that is not there")
	}
}

func TestRotation(t *testing.T) {
	if got := rotation(4, 0); !slices.Equal(got, []int{0, 1, 2, 3}) {
		t.Errorf("rotation(4, 0) = %v", got)
	}
	if got := rotation(4, 5); !slices.Equal(got, []int{1, 2, 3, 0}) {
		t.Errorf("rotation(4, 5) = %v", got)
	}
	// Over n rounds every path runs first exactly once.
	first := map[int]int{}
	for r := range 3 {
		first[rotation(3, r)[0]]++
	}
	if len(first) != 3 {
		t.Errorf("first paths over 3 rounds: %v", first)
	}
}

func TestSelectPaths(t *testing.T) {
	all := allPaths([]string{"epoll", "goroutines"})
	var names []string
	for _, p := range all {
		names = append(names, p.name)
	}
	want := []string{"direct", "naive", "cselect", "snoop", "snoop-stalled", "snoopd-epoll", "snoopd-epoll+tail", "snoopd-epoll+export",
		"snoopd-goroutines", "snoopd-goroutines+tail", "snoopd-goroutines+export"}
	if !slices.Equal(names, want) {
		t.Errorf("allPaths = %v, want %v", names, want)
	}
	for _, p := range all {
		if p.name == "snoopd-epoll+tail" && (p.engine != "epoll" || !p.tail || p.export || p.kind != kindSnoopd) {
			t.Errorf("snoopd-epoll+tail = %+v", p)
		}
		if p.name == "snoopd-goroutines+export" && (p.engine != "goroutines" || p.tail || !p.export || p.kind != kindSnoopd) {
			t.Errorf("snoopd-goroutines+export = %+v", p)
		}
	}
	if got := allPaths(nil); got[len(got)-3].name != "snoopd" || got[len(got)-2].name != "snoopd+tail" || got[len(got)-1].name != "snoopd+export" || got[len(got)-1].engine != "" {
		t.Errorf("allPaths(nil) ends with %+v", got[len(got)-3:])
	}

	sel, err := selectPaths(all, " snoopd-epoll+tail,naive,naive")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range sel {
		got = append(got, p.name)
	}
	if !slices.Equal(got, []string{"direct", "snoopd-epoll+tail", "naive"}) {
		t.Errorf("selected %v", got)
	}
	if sel, err := selectPaths(all, "all"); err != nil || len(sel) != len(all) {
		t.Errorf("all: %d paths, %v", len(sel), err)
	}
	if _, err := selectPaths(all, "snoopd-iouring"); err == nil || !strings.Contains(err.Error(), "snoopd-epoll+tail") {
		t.Errorf("unknown path: %v, want an error listing the valid ones", err)
	}
}

func TestSelectScenarios(t *testing.T) {
	all := scenarios(benchFlags{serialOps: 10, perOpOps: 5, concOps: 2, conc: 4, dataMin: 50, dataMax: 100})
	sel, err := selectScenarios(all, "conc,serial")
	if err != nil || len(sel) != 2 || sel[0].key != "conc" || sel[1].key != "serial" {
		t.Fatalf("selected %+v, %v", sel, err)
	}
	if sel[0].cfg.Ops != 8 || sel[0].cfg.Conns != 4 || sel[0].name != "4 clients, persistent" {
		t.Errorf("conc = %+v", sel[0])
	}
	if _, err := selectScenarios(all, "serial,bogus"); err == nil {
		t.Error("unknown scenario accepted")
	}
}

func TestMedian(t *testing.T) {
	for _, tc := range []struct {
		in   []float64
		want float64
	}{
		{nil, 0},
		{[]float64{3}, 3},
		{[]float64{3, 1, 2}, 2},
		{[]float64{4, 1, 3, 2}, 2.5},
	} {
		in := slices.Clone(tc.in)
		if got := median(tc.in); got != tc.want {
			t.Errorf("median(%v) = %v, want %v", tc.in, got, tc.want)
		}
		if !slices.Equal(in, tc.in) {
			t.Errorf("median reordered its input: %v", tc.in)
		}
	}
}

func TestSummarize(t *testing.T) {
	mk := func(ops float64, p50, p99, cpu time.Duration) result {
		r := result{p50: p50, p99: p99, cpuPerTx: cpu, cpuOK: cpu > 0}
		r.rep.OpsPerSec, r.rep.Ops = ops, 100
		return r
	}
	direct := []result{mk(1000, 20*time.Microsecond, 50*time.Microsecond, 0), mk(2000, 10*time.Microsecond, 40*time.Microsecond, 0), mk(1000, 20*time.Microsecond, 50*time.Microsecond, 0)}
	runs := []result{mk(800, 30*time.Microsecond, 90*time.Microsecond, 10*time.Microsecond), mk(1000, 40*time.Microsecond, 60*time.Microsecond, 30*time.Microsecond), mk(500, 60*time.Microsecond, 100*time.Microsecond, 20*time.Microsecond)}
	runs[1].rep.Errors = 2
	runs[2].tailCPUPerTx, runs[2].tailOK = 7*time.Microsecond, true
	runs[2].seen, runs[2].dropped, runs[2].eventsOK = 5, 1, true
	runs[1].engine = "epoll"

	r := summarize("unix", "s", "snoopd-epoll+tail", runs, direct)
	// Ratios per round against that round's direct: 0.8, 0.5, 0.5.
	if !r.RatioOK || r.Best != 0.8 || r.Median != 0.5 {
		t.Errorf("ratio best/median = %v/%v, want 0.8/0.5", r.Best, r.Median)
	}
	// Added p50 per round: 10, 30, 40 µs; added p99: 40, 20, 50 µs.
	if r.Added50 != 30 || r.Added99 != 40 {
		t.Errorf("added p50/p99 = %v/%v, want 30/40", r.Added50, r.Added99)
	}
	if r.OpsPerS != 800 || r.P50 != 40 || r.CPU != 20 || !r.CPUOK {
		t.Errorf("medians: ops %v p50 %v cpu %v", r.OpsPerS, r.P50, r.CPU)
	}
	if !r.TailOK || r.TailCPU != 7 || r.Seen != 5 || r.Dropped != 1 || r.Errors != 2 || r.Engine != "epoll" || r.Rounds != 3 {
		t.Errorf("row = %+v", r)
	}
	if md := r.markdown(); !strings.Contains(md, "| 0.80/0.50× |") || !strings.Contains(md, "| 7.0 µs |") {
		t.Errorf("markdown = %s", md)
	}

	d := summarize("unix", "s", "direct", direct, direct)
	if d.RatioOK || d.CPUOK || d.TailOK || d.OpsPerS != 1000 {
		t.Errorf("direct row = %+v", d)
	}
	if md := d.markdown(); strings.Contains(md, "×") {
		t.Errorf("direct row shows a ratio: %s", md)
	}
}
