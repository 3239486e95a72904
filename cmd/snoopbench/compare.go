package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
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
var scenarioKeys = []string{"serial", "perop", "conc"}

func scenarios(f benchFlags) []scenario {
	base := loadgen.Config{Sessions: 1000, MinData: f.dataMin, MaxData: f.dataMax, Verify: true, Seed: 1, IDPrefix: "bench-"}
	serial := base
	serial.Conns, serial.Persistent, serial.Ops = 1, true, f.serialOps
	perOp := base
	perOp.Conns, perOp.Persistent, perOp.Ops = 1, false, f.perOpOps
	conc := base
	conc.Conns, conc.Persistent, conc.Ops = f.conc, true, f.concOps*int64(f.conc)
	return []scenario{
		{"serial", "1 client, persistent", serial},
		{"perop", "1 client, conn per op", perOp},
		{"conc", fmt.Sprintf("%d clients, persistent", f.conc), conc},
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
	name string
	kind pathKind
	// child are the child's -kind and -sink arguments (kindChild).
	child []string
	// engine is snoopd's --engine ("" to pass none), tail attaches a
	// `snoopctl tail -o json`, export exports every event to the run's
	// NATS server with JetStream (kindSnoopd).
	engine string
	tail   bool
	export bool
}

// allPaths lists every path, the real-binary ones once per engine.
func allPaths(engines []string) []pathSpec {
	ps := []pathSpec{
		{name: "direct", kind: kindDirect},
		{name: "naive", kind: kindChild, child: []string{"-kind", "naive"}},
		{name: "cselect", kind: kindCSelect},
		{name: "snoop", kind: kindChild, child: []string{"-kind", "snoop", "-sink", "consume"}},
		{name: "snoop-stalled", kind: kindChild, child: []string{"-kind", "snoop", "-sink", "stall"}},
	}
	if len(engines) == 0 {
		engines = []string{""}
	}
	for _, e := range engines {
		name := "snoopd"
		if e != "" {
			name += "-" + e
		}
		ps = append(ps,
			pathSpec{name: name, kind: kindSnoopd, engine: e},
			pathSpec{name: name + "+tail", kind: kindSnoopd, engine: e, tail: true},
			pathSpec{name: name + "+export", kind: kindSnoopd, engine: e, export: true})
	}
	return ps
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
	byName := map[string]pathSpec{}
	var valid []string
	for _, p := range all {
		byName[p.name] = p
		valid = append(valid, p.name)
	}
	out := []pathSpec{all[0]}
	seen := map[string]bool{all[0].name: true}
	for _, n := range names {
		p, ok := byName[n]
		if !ok {
			return nil, fmt.Errorf("-paths: unknown path %q (have: all, %s)", n, strings.Join(valid, ", "))
		}
		if !seen[n] {
			seen[n] = true
			out = append(out, p)
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
	// cpuPerTx is the proxy process's CPU per operation.
	cpuPerTx time.Duration
	cpuOK    bool
	// tailCPUPerTx is the tail process's CPU per operation.
	tailCPUPerTx time.Duration
	tailOK       bool
	// allocs per frame, from the in-process snoop child.
	allocs   float64
	allocsOK bool
	// Events a watcher saw and the ones dropped for it.
	seen, dropped int64
	eventsOK      bool
	// engine is what snoopd reported running.
	engine string
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
		return "UNIX:" + filepath.Join(e.dir, fmt.Sprintf("%s-%d.sock", strings.ReplaceAll(name, "+", "-"), runSeq.Add(1)))
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
	for round := range f.rounds {
		for si, sc := range scens {
			for _, pi := range rotation(len(paths), round) {
				p := paths[pi]
				res, err := e.run(sc, p)
				if err != nil {
					return fmt.Errorf("%s, %s, %s, round %d: %w", network, sc.name, p.name, round+1, err)
				}
				fmt.Fprintf(os.Stderr, "round %d/%d %s %s %s: %.0f ops/s, %d errors\n",
					round+1, f.rounds, network, sc.key, p.name, res.rep.OpsPerSec, res.rep.Errors)
				runs[si][pi] = append(runs[si][pi], res)
				rep.addRun(network, sc, p, round, res)
			}
		}
	}
	for si, sc := range scens {
		for pi, p := range paths {
			rep.addRow(summarize(network, sc.name, p.name, runs[si][pi], runs[si][0]))
		}
	}
	return nil
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
// created with snoopctl add, and with p.tail a snoopctl tail -o json.
func (e *runEnv) runSnoopd(sc scenario, p pathSpec) (result, error) {
	control := filepath.Join(e.dir, fmt.Sprintf("ctl-%d.sock", runSeq.Add(1)))
	var extra []string
	if p.export {
		// The defaults an operator gets, and a bound on the stream's
		// disk over the whole benchmark.
		extra = []string{"--export", e.nats, "--daemon-name", "bench", "--export-max-bytes", "256M"}
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
	var t *tailProc
	if p.tail {
		if t, err = d.startTail(); err != nil {
			return result{}, err
		}
		defer t.stop()
	}
	pids := []int{d.pid()}
	if t != nil {
		pids = append(pids, t.pid())
	}
	var before []time.Duration
	m := &meter{
		// Both reads wait for the processes to go quiet, so that the
		// events of the warm-up are not counted and those of the
		// scenario are, however far behind the tail is.
		before: func() (err error) {
			before, err = settleCPU(pids, settleLimit)
			return err
		},
		after: func(ops int64, res *result) error {
			after, err := settleCPU(pids, settleLimit)
			if err != nil {
				return err
			}
			n := time.Duration(max(ops, 1))
			res.cpuPerTx, res.cpuOK = (after[0]-before[0])/n, true
			if t != nil {
				res.tailCPUPerTx, res.tailOK = (after[1]-before[1])/n, true
				shown, dropped, err := t.stop()
				if err != nil {
					return err
				}
				res.seen, res.dropped, res.eventsOK = shown, dropped, true
			}
			if p.export {
				published, dropped, err := d.exported()
				if err != nil {
					return err
				}
				res.seen, res.dropped, res.eventsOK = published, dropped, true
			}
			res.engine = d.engine()
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
