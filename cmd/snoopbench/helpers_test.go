package main

import (
	"math"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/snoopd/snoopd/distcache/loadgen"
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

func pathNames(ps []pathSpec) []string {
	var names []string
	for _, p := range ps {
		names = append(names, p.name)
	}
	return names
}

func TestSelectPaths(t *testing.T) {
	all := allPaths([]string{"epoll", "goroutines"}, nil)
	want := []string{"direct", "naive", "cselect", "snoop", "snoop-stalled",
		"snoopd-epoll", "snoopd-epoll+tail", "snoopd-epoll+tails4", "snoopd-epoll+export",
		"snoopd-goroutines", "snoopd-goroutines+tail", "snoopd-goroutines+tails4", "snoopd-goroutines+export"}
	if names := pathNames(all); !slices.Equal(names, want) {
		t.Errorf("allPaths = %v, want %v", names, want)
	}
	for _, p := range all {
		if p.name == "snoopd-epoll+tail" && (p.engine != "epoll" || p.tails != 1 || p.export || p.kind != kindSnoopd || p.loops != 0) {
			t.Errorf("snoopd-epoll+tail = %+v", p)
		}
		if p.name == "snoopd-epoll+tails4" && (p.engine != "epoll" || p.tails != 4 || p.export || p.kind != kindSnoopd) {
			t.Errorf("snoopd-epoll+tails4 = %+v", p)
		}
		if p.name == "snoopd-goroutines+export" && (p.engine != "goroutines" || p.tails != 0 || !p.export || p.kind != kindSnoopd) {
			t.Errorf("snoopd-goroutines+export = %+v", p)
		}
		if p.base != p.name {
			t.Errorf("%s: base %q without -loops", p.name, p.base)
		}
	}
	if got := pathNames(allPaths(nil, nil)); !slices.Equal(got[len(got)-4:], []string{"snoopd", "snoopd+tail", "snoopd+tails4", "snoopd+export"}) {
		t.Errorf("allPaths(nil, nil) ends with %v", got[len(got)-4:])
	}

	sel, err := selectPaths(all, " snoopd-epoll+tail,naive,naive")
	if err != nil {
		t.Fatal(err)
	}
	if got := pathNames(sel); !slices.Equal(got, []string{"direct", "snoopd-epoll+tail", "naive"}) {
		t.Errorf("selected %v", got)
	}
	if sel, err := selectPaths(all, "all"); err != nil || len(sel) != len(all) {
		t.Errorf("all: %d paths, %v", len(sel), err)
	}
	if _, err := selectPaths(all, "snoopd-iouring"); err == nil || !strings.Contains(err.Error(), "snoopd-epoll+tail") {
		t.Errorf("unknown path: %v, want an error listing the valid ones", err)
	}
}

func TestParseLoops(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []int
	}{
		{"", nil},
		{" , ", nil},
		{"1", []int{1}},
		{"1,2", []int{1, 2}},
		{" 2 , 1,", []int{2, 1}},
	} {
		got, err := parseLoops(tc.in)
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("parseLoops(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{"0", "-1", "x", "1,1", "2,1.5", "l2"} {
		if got, err := parseLoops(bad); err == nil || !strings.HasPrefix(err.Error(), "-loops: ") {
			t.Errorf("parseLoops(%q) = %v, %v; want a -loops error", bad, got, err)
		}
	}
}

func TestPathsWithLoops(t *testing.T) {
	all := allPaths([]string{"epoll", "goroutines"}, []int{1, 2})
	want := []string{"direct", "naive", "cselect", "snoop", "snoop-stalled",
		"snoopd-epoll/l1", "snoopd-epoll/l1+tail", "snoopd-epoll/l1+tails4", "snoopd-epoll/l1+export",
		"snoopd-epoll/l2", "snoopd-epoll/l2+tail", "snoopd-epoll/l2+tails4", "snoopd-epoll/l2+export",
		// The loops are the epoll engine's: the goroutine engine runs once.
		"snoopd-goroutines", "snoopd-goroutines+tail", "snoopd-goroutines+tails4", "snoopd-goroutines+export"}
	if names := pathNames(all); !slices.Equal(names, want) {
		t.Fatalf("allPaths = %v, want %v", names, want)
	}
	byName := map[string]pathSpec{}
	for _, p := range all {
		byName[p.name] = p
	}
	if p := byName["snoopd-epoll/l2+tail"]; p.loops != 2 || p.tails != 1 || p.engine != "epoll" || p.base != "snoopd-epoll+tail" {
		t.Errorf("snoopd-epoll/l2+tail = %+v", p)
	}
	if p := byName["snoopd-epoll/l1"]; p.loops != 1 || p.watched() || p.base != "snoopd-epoll" {
		t.Errorf("snoopd-epoll/l1 = %+v", p)
	}
	if p := byName["snoopd-goroutines+tails4"]; p.loops != 0 || p.tails != 4 {
		t.Errorf("snoopd-goroutines+tails4 = %+v", p)
	}

	// A name without the setting selects every setting, in -loops order;
	// a name with one selects that one.
	sel, err := selectPaths(all, "snoopd-epoll+tail,snoopd-epoll/l2+tails4,snoopd-epoll/l2+tail,cselect")
	if err != nil {
		t.Fatal(err)
	}
	if got := pathNames(sel); !slices.Equal(got, []string{"direct", "snoopd-epoll/l1+tail", "snoopd-epoll/l2+tail", "snoopd-epoll/l2+tails4", "cselect"}) {
		t.Errorf("selected %v", got)
	}
	for _, bad := range []string{"snoopd-epoll/l3", "snoopd-goroutines/l1", "snoopd-epoll/l2+tails"} {
		if _, err := selectPaths(all, bad); err == nil {
			t.Errorf("%q selected", bad)
		}
	}

	// Each watched path is compared with its own loops setting's
	// unwatched daemon, and only with a measured one.
	sel, err = selectPaths(all, "snoopd-epoll/l1+tails4,snoopd-epoll,snoopd-goroutines+export,naive")
	if err != nil {
		t.Fatal(err)
	}
	names := pathNames(sel) // direct, l1+tails4, l1, l2, goroutines+export, naive
	for _, tc := range []struct {
		path, want string
	}{
		{"snoopd-epoll/l1+tails4", "snoopd-epoll/l1"},
		{"snoopd-epoll/l1", ""},
		{"snoopd-goroutines+export", ""},
		{"naive", ""},
	} {
		u := unwatchedOf(sel, sel[slices.Index(names, tc.path)])
		got := ""
		if u >= 0 {
			got = sel[u].name
		}
		if got != tc.want {
			t.Errorf("unwatchedOf(%s) = %q, want %q", tc.path, got, tc.want)
		}
	}
}

func TestListenName(t *testing.T) {
	e := &runEnv{dir: "/tmp/sb", network: "unix"}
	got := e.listen("snoopd-epoll/l2+tails4")
	if !strings.HasPrefix(got, "UNIX:/tmp/sb/snoopd-epoll-l2-tails4-") || strings.Count(got, "/") != 3 {
		t.Errorf("listen = %q, want a socket directly in the run's dir", got)
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
	f := benchFlags{serialOps: 10, perOpOps: 5, concOps: 2, conc100Ops: 3, conc: 4, dataMin: 50, dataMax: 100}
	sel, err = selectScenarios(scenarios(f), "conc100")
	if err != nil || len(sel) != 1 {
		t.Fatalf("selected %+v, %v", sel, err)
	}
	if c := sel[0].cfg; c.Conns != 100 || !c.Persistent || c.Ops != 300 || sel[0].name != "100 clients, persistent" || c.Sessions < c.Conns {
		t.Errorf("conc100 = %+v", sel[0])
	}
	if all, _ := selectScenarios(scenarios(f), "all"); len(all) != len(scenarioKeys) {
		t.Errorf("all: %d scenarios, want %d", len(all), len(scenarioKeys))
	}
}

func TestTooMany(t *testing.T) {
	cs := allPaths(nil, nil)[2]
	if cs.name != "cselect" || cs.maxConns != 510 {
		t.Fatalf("cselect = %+v, want at most 510 connections", cs)
	}
	many := func(n int) scenario { return scenario{cfg: loadgen.Config{Conns: n}} }
	if tooMany(cs, many(100)) || tooMany(cs, many(510)) || !tooMany(cs, many(511)) {
		t.Error("cselect's limit misapplied")
	}
	if tooMany(allPaths(nil, nil)[1], many(5000)) {
		t.Error("naive has no limit")
	}
	r := row{Network: "tcp", Scenario: "600 clients, persistent", Path: "cselect", Skipped: "skipped: carries at most 510 connections"}
	md := r.markdown()
	if strings.Count(md, "|") != strings.Count(strings.SplitN(tableHeader, "\n", 2)[0], "|") || !strings.Contains(md, "| cselect | skipped: carries at most 510 connections |") {
		t.Errorf("skipped row = %s", md)
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

func TestCPUPerEvent(t *testing.T) {
	for _, tc := range []struct {
		watched, unwatched time.Duration
		events             int64
		want               float64 // µs
		ok                 bool
	}{
		// 1.2 s more CPU for 400,000 events: 3 µs each.
		{3200 * time.Millisecond, 2 * time.Second, 400_000, 3, true},
		// Four tails of 20,000 events each: 80,000 events, 0.2 s more.
		{1100 * time.Millisecond, 900 * time.Millisecond, 80_000, 2.5, true},
		// One 10 ms tick over 20,000 events.
		{510 * time.Millisecond, 500 * time.Millisecond, 20_000, 0.5, true},
		// Noise can make the watched run cheaper: shown as it is.
		{1900 * time.Millisecond, 2 * time.Second, 100_000, -1, true},
		{2 * time.Second, time.Second, 0, 0, false},
		{2 * time.Second, time.Second, -5, 0, false},
	} {
		got, ok := cpuPerEventUS(tc.watched, tc.unwatched, tc.events)
		if ok != tc.ok || math.Abs(got-tc.want) > 1e-9 {
			t.Errorf("cpuPerEventUS(%v, %v, %d) = %v, %v; want %v, %v", tc.watched, tc.unwatched, tc.events, got, ok, tc.want, tc.ok)
		}
	}
}

func TestLossPct(t *testing.T) {
	for _, tc := range []struct {
		watched, unwatched, want float64
		ok                       bool
	}{
		{38_000, 40_000, 5, true},
		{40_000, 40_000, 0, true},
		{42_000, 40_000, -5, true},
		{10_000, 0, 0, false},
	} {
		got, ok := lossPct(tc.watched, tc.unwatched)
		if ok != tc.ok || math.Abs(got-tc.want) > 1e-9 {
			t.Errorf("lossPct(%v, %v) = %v, %v; want %v, %v", tc.watched, tc.unwatched, got, ok, tc.want, tc.ok)
		}
	}
}

func TestCompareRounds(t *testing.T) {
	mk := func(ops float64, cpu time.Duration, streamed int64) result {
		r := result{cpu: cpu, cpuOK: true, streamed: streamed, streamedOK: streamed > 0}
		r.rep.OpsPerSec = ops
		return r
	}
	// Three rounds of a +tails4 path (4 × 20,000 events per round), the
	// same daemon without a watcher, and cselect.
	watched := []result{mk(9_500, 2200*time.Millisecond, 80_000), mk(9_000, 2400*time.Millisecond, 80_000), mk(10_200, 2100*time.Millisecond, 80_000)}
	unwatched := []result{mk(10_000, 2000*time.Millisecond, 0), mk(10_000, 2000*time.Millisecond, 0), mk(10_000, 2000*time.Millisecond, 0)}
	cselect := []result{mk(10_000, time.Second, 0), mk(9_000, time.Second, 0)} // one round short
	cmps := compareRounds(watched, unwatched, cselect)
	if len(cmps) != 3 {
		t.Fatalf("%d comparisons", len(cmps))
	}
	// Per round: loss 5%, 10%, -2%; CPU per event 200/400/100 ms over
	// 80,000 = 2.5, 5, 1.25 µs; vs cselect 0.95, 1.0, none.
	wantLoss, wantCPU := []float64{5, 10, -2}, []float64{2.5, 5, 1.25}
	for i, c := range cmps {
		if c.Loss == nil || math.Abs(*c.Loss-wantLoss[i]) > 1e-9 || c.CPUPerEvent == nil || math.Abs(*c.CPUPerEvent-wantCPU[i]) > 1e-9 {
			t.Errorf("round %d: %+v", i+1, c)
		}
	}
	if cmps[2].VsCSelect != nil || cmps[0].VsCSelect == nil || *cmps[0].VsCSelect != 0.95 || *cmps[1].VsCSelect != 1 {
		t.Errorf("vs cselect: %+v", cmps)
	}
	var r row
	r.addComparisons(cmps)
	near := func(p *float64, want float64) bool { return p != nil && math.Abs(*p-want) < 1e-9 }
	if !near(r.Loss, 5) || !near(r.CPUPerEvent, 2.5) || !near(r.VsCSelect, 0.975) {
		t.Errorf("medians: loss %v, cpu/event %v, vs cselect %v", deref(r.Loss), deref(r.CPUPerEvent), deref(r.VsCSelect))
	}
	if md := r.markdown(); !strings.HasSuffix(md, "| 0.97× | 5.0% | 2.50 µs |") && !strings.HasSuffix(md, "| 0.98× | 5.0% | 2.50 µs |") {
		t.Errorf("markdown = %s", md)
	}

	// Nothing to compare with: no figures, and blank cells.
	none := compareRounds(watched, nil, nil)
	var r2 row
	r2.addComparisons(none)
	if r2.Loss != nil || r2.CPUPerEvent != nil || r2.VsCSelect != nil || !strings.HasSuffix(r2.markdown(), "|  |  |  |") {
		t.Errorf("nothing to compare: %+v", r2)
	}
	// An unwatched path (no events streamed) gets a loss but no CPU per
	// event.
	c := compareRounds(unwatched[:1], unwatched[:1], nil)[0]
	if !near(c.Loss, 0) || c.CPUPerEvent != nil {
		t.Errorf("unwatched against itself: %+v", c)
	}
}

func TestTailEventsInRow(t *testing.T) {
	r1 := result{eventsOK: true, seen: 4 * 100, tailEvents: []tailCount{{100, 0}, {100, 0}, {100, 0}, {100, 0}}}
	r2 := result{eventsOK: true, seen: 4*100 - 3, dropped: 3, tailEvents: []tailCount{{100, 0}, {97, 3}, {100, 0}, {100, 0}}}
	r := summarize("unix", "s", "snoopd-epoll+tails4", []result{r1, r1}, nil)
	if len(r.TailEvents) != 4 || r.TailEvents[0] != (tailCount{200, 0}) || r.Seen != 800 {
		t.Errorf("row = %+v", r)
	}
	if md := r.markdown(); !strings.Contains(md, "| 200/0 ×4 |") {
		t.Errorf("markdown = %s", md)
	}
	r = summarize("unix", "s", "snoopd-epoll+tails4", []result{r1, r2}, nil)
	if md := r.markdown(); !strings.Contains(md, "| 200/0 · 197/3 · 200/0 · 200/0 |") || r.Seen != 797 || r.Dropped != 3 {
		t.Errorf("markdown = %s", md)
	}
	// One tail: the total, as before.
	one := result{eventsOK: true, seen: 50, dropped: 1, tailEvents: []tailCount{{50, 1}}}
	if md := summarize("unix", "s", "snoopd-epoll+tail", []result{one}, nil).markdown(); !strings.Contains(md, "| 50/1 |") {
		t.Errorf("markdown = %s", md)
	}
}

func deref(p *float64) any {
	if p == nil {
		return nil
	}
	return *p
}
