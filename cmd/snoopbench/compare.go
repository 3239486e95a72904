package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/snoopd/snoopd/distcache"
	"github.com/snoopd/snoopd/distcache/loadgen"
	"github.com/snoopd/snoopd/internal/natstest"
)

// scenario is one load shape, run against every path.
type scenario struct {
	key  string // as -scenarios names it
	name string // as the table shows it
	cfg  loadgen.Config
}

// scenarioKeys are the scenarios -scenarios selects from, in table order.
var scenarioKeys = []string{"serial", "perop", "conc", "conc100"}

// manyClients is the number of persistent clients of the conc100
// scenario.
const manyClients = 100

func scenarios(f benchFlags) []scenario {
	base := loadgen.Config{Sessions: 1000, MinData: f.dataMin, MaxData: f.dataMax, Verify: true, Seed: 1, IDPrefix: "bench-"}
	serial := base
	serial.Conns, serial.Persistent, serial.Ops = 1, true, f.serialOps
	perOp := base
	perOp.Conns, perOp.Persistent, perOp.Ops = 1, false, f.perOpOps
	conc := base
	conc.Conns, conc.Persistent, conc.Ops = f.conc, true, f.concOps*int64(f.conc)
	many := base
	many.Conns, many.Persistent, many.Ops = manyClients, true, f.conc100Ops*manyClients
	return []scenario{
		{"serial", "1 client, persistent", serial},
		{"perop", "1 client, conn per op", perOp},
		{"conc", fmt.Sprintf("%d clients, persistent", f.conc), conc},
		{"conc100", fmt.Sprintf("%d clients, persistent", manyClients), many},
	}
}

// pathKind says how a path is set up.
type pathKind int

const (
	kindDirect  pathKind = iota // no proxy
	kindChild                   // a proxy in a snoopbench child process
	kindSnoopd                  // the real snoopd, configured with snoopctl
	kindCSelect                 // the C select-loop stand-in for dc_snoop
)

// pathSpec is one way from the load generator to the cache.
type pathSpec struct {
	// name is the path's name in the table; base is the same without
	// the loops setting ("snoopd-epoll+tail" for "snoopd-epoll/l2+tail"),
	// so that -paths can name every loops setting at once.
	name, base string
	kind       pathKind
	// child are the child's -kind and -sink arguments (kindChild).
	child []string
	// engine is snoopd's --engine ("" to pass none), loops its --loops
	// (0 to pass none), tails the number of `snoopctl tail -o json`
	// attached, export exports every event to the run's NATS server with
	// JetStream (kindSnoopd).
	engine string
	loops  int
	tails  int
	export bool
	// maxConns is the most connections the path can carry at once (0:
	// no known limit); scenarios with more clients skip it.
	maxConns int
}

// cselectMaxConns is the most connections the C select loop carries:
// select(2) watches descriptors below FD_SETSIZE (1024) only, each
// connection takes two, and standard input, output, error and the
// listener take the first four (cselect/cselect.c refuses the rest;
// descriptors it inherits beyond those take room too).
const cselectMaxConns = (1024 - 4) / 2

// watched reports whether a path has a watcher of the event stream: a
// tail or the export.
func (p pathSpec) watched() bool { return p.tails > 0 || p.export }

// snoopdName names a real-binary path: "snoopd", then "-ENGINE" when an
// engine is given, "/lN" when a loops setting is, and the watcher suffix
// ("", "+tail", "+tails4", "+export").
func snoopdName(engine string, loops int, suffix string) string {
	name := "snoopd"
	if engine != "" {
		name += "-" + engine
	}
	if loops > 0 {
		name += fmt.Sprintf("/l%d", loops)
	}
	return name + suffix
}

// allPaths lists every path, the real-binary ones once per engine and,
// for the epoll engine, once per loops setting (none: snoopd's default,
// no --loops passed).
func allPaths(engines []string, loops []int) []pathSpec {
	ps := []pathSpec{
		{name: "direct", kind: kindDirect},
		{name: "naive", kind: kindChild, child: []string{"-kind", "naive"}},
		{name: "cselect", kind: kindCSelect, maxConns: cselectMaxConns},
		{name: "snoop", kind: kindChild, child: []string{"-kind", "snoop", "-sink", "consume"}},
		{name: "snoop-stalled", kind: kindChild, child: []string{"-kind", "snoop", "-sink", "stall"}},
	}
	for i := range ps {
		ps[i].base = ps[i].name
	}
	if len(engines) == 0 {
		engines = []string{""}
	}
	for _, e := range engines {
		settings := []int{0}
		if e == "epoll" && len(loops) > 0 {
			settings = loops
		}
		for _, l := range settings {
			for _, w := range []struct {
				suffix string
				tails  int
				export bool
			}{{"", 0, false}, {"+tail", 1, false}, {"+tails4", 4, false}, {"+export", 0, true}} {
				ps = append(ps, pathSpec{name: snoopdName(e, l, w.suffix), base: snoopdName(e, 0, w.suffix),
					kind: kindSnoopd, engine: e, loops: l, tails: w.tails, export: w.export})
			}
		}
	}
	return ps
}

// parseLoops parses -loops: a list of event loop counts, each at least 1
// and named once; "" for none.
func parseLoops(s string) ([]int, error) {
	var out []int
	for _, v := range splitList(s) {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("-loops: %q is not a number of loops (want 1 or more)", v)
		}
		if slices.Contains(out, n) {
			return nil, fmt.Errorf("-loops: %d named twice", n)
		}
		out = append(out, n)
	}
	return out, nil
}

// unwatchedOf returns the index in paths of the path p's watcher is
// measured against: the same snoopd (engine and loops) with no watcher;
// -1 when p has no watcher or that path is not measured.
func unwatchedOf(paths []pathSpec, p pathSpec) int {
	if p.kind != kindSnoopd || !p.watched() {
		return -1
	}
	for i, q := range paths {
		if q.kind == kindSnoopd && !q.watched() && q.engine == p.engine && q.loops == p.loops {
			return i
		}
	}
	return -1
}

// splitList splits a comma-separated flag value, dropping empty items.
func splitList(s string) []string {
	var out []string
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}

// selectPaths picks the paths named in list ("all" or "" for every one).
// direct is always measured, first, since every ratio is against it.
func selectPaths(all []pathSpec, list string) ([]pathSpec, error) {
	names := splitList(list)
	if len(names) == 0 || (len(names) == 1 && names[0] == "all") {
		return all, nil
	}
	var valid []string
	for _, p := range all {
		valid = append(valid, p.name)
	}
	out := []pathSpec{all[0]}
	seen := map[string]bool{all[0].name: true}
	for _, n := range names {
		// A name without a loops setting names every loops setting of
		// that path, in the order of -loops.
		found := false
		for _, p := range all {
			if p.name != n && p.base != n {
				continue
			}
			found = true
			if !seen[p.name] {
				seen[p.name] = true
				out = append(out, p)
			}
		}
		if !found {
			return nil, fmt.Errorf("-paths: unknown path %q (have: all, %s)", n, strings.Join(valid, ", "))
		}
	}
	return out, nil
}

// selectScenarios picks the scenarios named in list ("all" or "" for
// every one).
func selectScenarios(all []scenario, list string) ([]scenario, error) {
	keys := splitList(list)
	if len(keys) == 0 || (len(keys) == 1 && keys[0] == "all") {
		return all, nil
	}
	var out []scenario
	for _, k := range keys {
		found := false
		for _, sc := range all {
			if sc.key == k {
				out, found = append(out, sc), true
			}
		}
		if !found {
			return nil, fmt.Errorf("-scenarios: unknown scenario %q (have: all, %s)", k, strings.Join(scenarioKeys, ", "))
		}
	}
	return out, nil
}

// rotation is the order of the paths in round r: each round starts one
// path later, so that no path always runs first (on a cold cache) or
// right after the same neighbour.
func rotation(n, r int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = (i + r) % n
	}
	return out
}

// result is one run of one path in one scenario.
type result struct {
	rep      loadgen.Report
	p50, p99 time.Duration
	// cpu is the proxy process's CPU over the scenario, cpuPerTx the
	// same per operation.
	cpu      time.Duration
	cpuPerTx time.Duration
	cpuOK    bool
	// tailCPUPerTx is a tail process's CPU per operation (with several
	// tails, the mean of theirs).
	tailCPUPerTx time.Duration
	tailOK       bool
	// tailEvents are what each tail showed and was told were dropped
	// (one per tail; the tails attach after the warm-up, so these are
	// the scenario's).
	tailEvents []tailCount
	// streamed counts the events the daemon delivered during the
	// scenario to all its watchers together: shown by the tails, or
	// published by the export.
	streamed   int64
	streamedOK bool
	// allocs per frame, from the in-process snoop child.
	allocs   float64
	allocsOK bool
	// Events a watcher saw and the ones dropped for it.
	seen, dropped int64
	eventsOK      bool
	// engine and loops are what snoopd reported running.
	engine string
	loops  uint32
}

// tailCount is what one tail showed and was told were dropped.
type tailCount struct {
	Seen    int64 `json:"seen"`
	Dropped int64 `json:"dropped"`
}

// runEnv is what every run of a network shares.
type runEnv struct {
	f       benchFlags
	dir     string
	network string
	cache   distcache.Addr
	server  string // the cache as the proxies are told it
	bins    binaries
	cselect string // the compiled C proxy
	nats    string // the URL of the NATS server the +export paths use
}

// runSeq numbers runs, for unique socket names.
var runSeq atomic.Int64

func (e *runEnv) listen(name string) string {
	if e.network == "unix" {
		name = strings.NewReplacer("+", "-", "/", "-").Replace(name)
		return "UNIX:" + filepath.Join(e.dir, fmt.Sprintf("%s-%d.sock", name, runSeq.Add(1)))
	}
	return "IP:127.0.0.1:0"
}

// benchNetwork runs every selected path in every selected scenario,
// f.rounds times, interleaved, and prints one table row per scenario and
// path.
func benchNetwork(network, dir string, f benchFlags, paths []pathSpec, scens []scenario, bins binaries, cselectBin string, rep *report) error {
	e := &runEnv{f: f, dir: dir, network: network, bins: bins, cselect: cselectBin}
	cache, err := spawn("-kind", "cache", "-listen", e.listen("cache"))
	if err != nil {
		return err
	}
	defer cache.stop()
	if hasExport(paths) {
		// A real NATS server with JetStream, run in this process from
		// its own module, as the fleet tests run it; its CPU is this
		// process's, beside the load generator's.
		srv, err := natstest.Run(filepath.Join(dir, "nats-"+network), natstest.FreePort)
		if err != nil {
			return err
		}
		defer func() {
			srv.Shutdown()
			srv.WaitForShutdown()
		}()
		e.nats = srv.ClientURL()
	}
	e.cache = cache.addr
	// Proxies get the server the way an operator types it: by name over
	// TCP, so resolving it is part of the cost.
	e.server = cache.addr.String()
	if network == "tcp" {
		e.server = fmt.Sprintf("IP:localhost:%d", cache.addr.Port())
	}
	runs := make([][][]result, len(scens))
	for si := range runs {
		runs[si] = make([][]result, len(paths))
	}
	// records[si][pi][round] is the run's index in rep.Runs, to add
	// the comparisons once every path of the round has run.
	records := make([][][]int, len(scens))
	for si := range records {
		records[si] = make([][]int, len(paths))
	}
	for round := range f.rounds {
		for si, sc := range scens {
			for _, pi := range rotation(len(paths), round) {
				p := paths[pi]
				if tooMany(p, sc) {
					continue
				}
				res, err := e.run(sc, p)
				if err != nil {
					return fmt.Errorf("%s, %s, %s, round %d: %w", network, sc.name, p.name, round+1, err)
				}
				fmt.Fprintf(os.Stderr, "round %d/%d %s %s %s: %.0f ops/s, %d errors\n",
					round+1, f.rounds, network, sc.key, p.name, res.rep.OpsPerSec, res.rep.Errors)
				runs[si][pi] = append(runs[si][pi], res)
				records[si][pi] = append(records[si][pi], rep.addRun(network, sc, p, round, res))
			}
		}
	}
	cs := slices.IndexFunc(paths, func(p pathSpec) bool { return p.kind == kindCSelect })
	for si, sc := range scens {
		for pi, p := range paths {
			if tooMany(p, sc) {
				rep.addRow(row{Network: network, Scenario: sc.name, Path: p.name,
					Skipped: fmt.Sprintf("skipped: carries at most %d connections", p.maxConns)})
				continue
			}
			r := summarize(network, sc.name, p.name, runs[si][pi], runs[si][0])
			var unwatched, cselect []result
			if u := unwatchedOf(paths, p); u >= 0 {
				unwatched = runs[si][u]
			}
			if cs >= 0 && pi != cs && p.kind != kindDirect {
				cselect = runs[si][cs]
			}
			cmps := compareRounds(runs[si][pi], unwatched, cselect)
			for round, c := range cmps {
				rep.Runs[records[si][pi][round]].versus = c
			}
			r.addComparisons(cmps)
			rep.addRow(r)
		}
	}
	return nil
}

// tooMany reports whether scenario sc has more clients than path p can
// carry at once.
func tooMany(p pathSpec, sc scenario) bool {
	return p.maxConns > 0 && sc.cfg.Conns > p.maxConns
}

// run measures one path once.
func (e *runEnv) run(sc scenario, p pathSpec) (result, error) {
	switch p.kind {
	case kindChild:
		c, err := spawn(append(p.child, "-listen", e.listen(p.name), "-server", e.server)...)
		if err != nil {
			return result{}, err
		}
		defer c.stop()
		return e.measure(sc, c.addr, childMeter(c))
	case kindSnoopd:
		return e.runSnoopd(sc, p)
	case kindCSelect:
		return e.runCSelect(sc, p)
	}
	return e.measure(sc, e.cache, nil)
}

// meter reads the proxy's cumulative costs before and after a scenario
// and turns them into per-operation figures.
type meter struct {
	before func() error
	after  func(ops int64, res *result) error
}

func childMeter(c *child) *meter {
	var before childStats
	return &meter{
		before: func() error { before = c.stats(); return nil },
		after: func(ops int64, res *result) error {
			after := c.stats()
			cpu := time.Duration(after.UserNS + after.SysNS - before.UserNS - before.SysNS)
			res.cpuPerTx, res.cpuOK = cpu/time.Duration(max(ops, 1)), true
			if after.Transactions > 0 || after.FramesUp > 0 {
				if frames := after.FramesUp + after.FramesDown - before.FramesUp - before.FramesDown; frames > 0 {
					res.allocs, res.allocsOK = float64(after.Mallocs-before.Mallocs)/float64(frames), true
				}
				res.seen, res.dropped, res.eventsOK = after.Events-before.Events, after.Dropped-before.Dropped, true
			}
			return nil
		},
	}
}

// runCSelect measures the C select-loop proxy, started fresh for the run
// like the child proxies, its CPU read from /proc like snoopd's.
func (e *runEnv) runCSelect(sc scenario, p pathSpec) (result, error) {
	c, err := startCSelect(e.cselect, e.listen(p.name), e.server)
	if err != nil {
		return result{}, err
	}
	defer c.stop()
	return e.measure(sc, c.addr, procMeter(c.pid()))
}

// procMeter reads a process's CPU from /proc/PID/stat around a scenario,
// each time once the process has gone quiet.
func procMeter(pid int) *meter {
	var before []time.Duration
	return &meter{
		before: func() (err error) {
			before, err = settleCPU([]int{pid}, settleLimit)
			return err
		},
		after: func(ops int64, res *result) error {
			after, err := settleCPU([]int{pid}, settleLimit)
			if err != nil {
				return err
			}
			res.cpuPerTx, res.cpuOK = (after[0]-before[0])/time.Duration(max(ops, 1)), true
			return nil
		},
	}
}

// runSnoopd measures the real daemon: a fresh snoopd per run, the proxy
// created with snoopctl add, and with p.tails that many snoopctl tail -o
// json.
func (e *runEnv) runSnoopd(sc scenario, p pathSpec) (result, error) {
	control := filepath.Join(e.dir, fmt.Sprintf("ctl-%d.sock", runSeq.Add(1)))
	var extra []string
	if p.loops > 0 {
		extra = append(extra, "--loops", strconv.Itoa(p.loops))
	}
	if p.export {
		// The defaults an operator gets, and a bound on the stream's
		// disk over the whole benchmark.
		extra = append(extra, "--export", e.nats, "--daemon-name", "bench", "--export-max-bytes", "256M")
	}
	d, err := startSnoopd(e.bins, control, p.engine, extra...)
	if err != nil {
		return result{}, err
	}
	defer d.stop()
	addr, err := d.addProxy(e.listen(p.name), e.server)
	if err != nil {
		return result{}, err
	}
	var tails []*tailProc
	defer func() {
		for _, t := range tails {
			t.stop()
		}
	}()
	pids := []int{d.pid()}
	var before []time.Duration
	var exported int64
	m := &meter{
		// The tails attach after the warm-up, so that what they show
		// is the scenario's events, all of them. Both reads wait for
		// the processes to go quiet, so that the tails' start is not
		// counted and the scenario's events are, however far behind
		// the tails are.
		before: func() (err error) {
			for i := range p.tails {
				t, err := d.startTail(i + 1)
				if err != nil {
					return err
				}
				tails = append(tails, t)
				pids = append(pids, t.pid())
			}
			if before, err = settleCPU(pids, settleLimit); err != nil {
				return err
			}
			if p.export {
				exported, _, err = d.exported()
			}
			return err
		},
		after: func(ops int64, res *result) error {
			after, err := settleCPU(pids, settleLimit)
			if err != nil {
				return err
			}
			n := time.Duration(max(ops, 1))
			res.cpu = after[0] - before[0]
			res.cpuPerTx, res.cpuOK = res.cpu/n, true
			if len(tails) > 0 {
				var tailCPU time.Duration
				for i := range tails {
					tailCPU += after[1+i] - before[1+i]
				}
				res.tailCPUPerTx, res.tailOK = tailCPU/time.Duration(len(tails))/n, true
				for _, t := range tails {
					shown, dropped, err := t.stop()
					if err != nil {
						return err
					}
					res.tailEvents = append(res.tailEvents, tailCount{shown, dropped})
					res.seen += shown
					res.dropped += dropped
				}
				res.eventsOK = true
				res.streamed, res.streamedOK = res.seen, true
			}
			if p.export {
				pub, dropped, err := d.exported()
				if err != nil {
					return err
				}
				res.seen, res.dropped, res.eventsOK = pub, dropped, true
				res.streamed, res.streamedOK = pub-exported, true
			}
			res.engine, res.loops = d.reported()
			return nil
		},
	}
	return e.measure(sc, addr, m)
}

// measure warms the path up, then runs the scenario through target,
// reading the meter (if any) around it.
func (e *runEnv) measure(sc scenario, target distcache.Addr, m *meter) (result, error) {
	ctx, cancel := context.WithTimeout(context.Background(), e.f.runTimeout+30*time.Second)
	defer cancel()
	// Warm up: connections, pools, the resolver's cache, the CPU clocks.
	warm := sc.cfg
	warm.Addr, warm.Ops, warm.IDPrefix, warm.Verify, warm.Duration = target, 500, "warm-", false, e.f.runTimeout
	if _, err := loadgen.Run(ctx, warm); err != nil {
		return result{}, fmt.Errorf("warm-up: %w", err)
	}
	if m != nil {
		if err := m.before(); err != nil {
			return result{}, err
		}
	}
	cfg := sc.cfg
	cfg.Addr, cfg.Duration = target, e.f.runTimeout
	cfg.IDPrefix = fmt.Sprintf("%s%d-", cfg.IDPrefix, time.Now().UnixNano())
	rep, err := loadgen.Run(ctx, cfg)
	if err != nil {
		return result{}, err
	}
	res := result{rep: rep, p50: rep.Latency.P50, p99: rep.Latency.P99}
	if !cfg.Persistent {
		// Per-operation connections: the client waits for the connect
		// as well as for the answer.
		res.p50, res.p99 = rep.OpLatency.P50, rep.OpLatency.P99
	}
	if m != nil {
		if err := m.after(rep.Ops, &res); err != nil {
			return result{}, err
		}
	}
	return res, nil
}
