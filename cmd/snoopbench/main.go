// Command snoopbench measures what the snoop proxy costs the traffic it
// carries. It runs the in-memory cache server and each proxy in processes
// of their own (so their CPU time can be read apart), drives verified load
// with the load generator from the parent, and prints one markdown table
// comparing, side by side:
//
//   - direct: the load generator talks to the cache server;
//   - naive: a proxy with two io.Copy per connection that dials the server
//     by name for every client;
//   - cselect: a single-threaded C select(2) proxy shaped like distcache's
//     dc_snoop (a stand-in, not dc_snoop; see cselect/cselect.c), compiled
//     with cc once per run, skipped when there is no cc;
//   - snoop: this project's proxy package in a child process, decoding
//     everything, with an in-process sink that consumes every event (the
//     library, on the engine proxy.New picks: proxy.DefaultEngine, the
//     one snoopd runs);
//   - snoop-stalled: the same with a sink nobody reads (events are dropped
//     and counted, the traffic must not notice);
//   - snoopd-ENGINE: the real snoopd, built from this tree and started with
//     --engine ENGINE, its proxy created with the real `snoopctl add`;
//   - snoopd-ENGINE+tail: the same with a real `snoopctl tail -o json`
//     attached over the control socket once the warm-up is done, its
//     output going to /dev/null;
//   - snoopd-ENGINE+tails4: the same with four such tails attached;
//   - snoopd-ENGINE+export: the same exporting every event (`--export`,
//     the defaults otherwise) to a real NATS server with JetStream that
//     snoopbench runs in its own process from the nats-server module.
//
// With -loops N,M the epoll engine's paths are measured once per number of
// event loops, snoopd started with --loops N, the setting in the name
// (snoopd-epoll/lN, snoopd-epoll/lN+tail, ...); without it snoopd runs
// its default and the names carry none. A name without a setting given to
// -paths selects every setting.
//
// The scenarios: one client with a persistent connection (serial), one
// client with a connection per operation (perop), -conc persistent
// clients (conc) and 100 persistent clients (conc100); a path that cannot
// carry a scenario's clients at once (cselect: about 510 connections) is
// marked skipped in that scenario's row.
//
// Each scenario runs -rounds times, the paths in a rotating order each
// round; ratios to direct are shown as the best and the median of the
// rounds, everything else as the median. Watched snoopd paths (+tail,
// +tails4, +export) are also compared with the same round's run of the
// same snoopd without a watcher: the throughput lost, and the daemon's
// CPU per event streamed (its extra CPU over the events all its watchers
// were sent together); every path with cselect's ratio to it. Every run
// is bounded by an operation count and -run-timeout, and every child
// process (each in a process group of its own) is killed at the end, also
// after an error or Ctrl-C. Usage:
//
//	snoopbench [-networks tcp,unix] [-scenarios serial,perop,conc,conc100] [-paths all|NAME,...]
//	           [-engines epoll,goroutines] [-loops N,...] [-rounds N] [-serial-ops N] [-perop-ops N]
//	           [-conc-ops N] [-conc100-ops N] [-json FILE] [-idle N] [-scale N -watchers M]
//	snoopbench -syscalls
//
// -networks "" skips the proxy comparison, to run only -idle or -scale.
// -syscalls measures only this machine's floor: a system call and 64 bytes
// through a unix socket.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/snoopd/snoopd/distcache"
	"github.com/snoopd/snoopd/distcache/loadgen"
	"github.com/snoopd/snoopd/internal/duration"
)

func main() {
	var err error
	if len(os.Args) > 1 && os.Args[1] == "child" {
		err = runChild(os.Args[2:])
	} else {
		err = runBench(os.Args[1:])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "snoopbench:", err)
		os.Exit(1)
	}
}

type benchFlags struct {
	networks   string
	scenarios  string
	paths      string
	engines    string
	rounds     int
	runTimeout time.Duration
	serialOps  int64
	perOpOps   int64
	concOps    int64
	conc100Ops int64
	conc       int
	loops      string
	idle       int
	scale      int
	watchers   int
	scaleOps   int64
	dataMin    int
	dataMax    int
	jsonOut    string
	syscalls   bool
	src        string
	snoopd     string
	snoopctl   string
}

func runBench(args []string) (err error) {
	var f benchFlags
	fs := flag.NewFlagSet("snoopbench", flag.ContinueOnError)
	fs.StringVar(&f.networks, "networks", "tcp,unix", "networks to measure: tcp, unix or both")
	fs.StringVar(&f.scenarios, "scenarios", "all", "scenarios to run: all, or some of serial, perop, conc, conc100")
	fs.StringVar(&f.paths, "paths", "all", "paths to measure: all, or a list of names (direct is always measured; a snoopd-epoll name without /lN names every -loops setting); -paths help lists them")
	fs.StringVar(&f.engines, "engines", "epoll,goroutines", "snoopd engines: one snoopd-ENGINE, snoopd-ENGINE+tail, snoopd-ENGINE+tails4 and snoopd-ENGINE+export path each, started with --engine ENGINE; \"\" for one such set without --engine")
	fs.StringVar(&f.loops, "loops", "", "run the epoll engine's paths once per number of event loops in this list, snoopd started with --loops N and the paths named snoopd-epoll/lN, snoopd-epoll/lN+tail, ... (\"\": snoopd's default, no --loops, names without /lN)")
	fs.IntVar(&f.rounds, "rounds", 3, "rounds: each runs every path once per scenario, in a rotating order")
	duration.Var(fs, &f.runTimeout, "run-timeout", 2*time.Minute, "bound on the time of one run of one path")
	fs.Int64Var(&f.serialOps, "serial-ops", 20000, "operations of the serial persistent scenario")
	fs.Int64Var(&f.perOpOps, "perop-ops", 5000, "operations of the serial connection-per-operation scenario")
	fs.Int64Var(&f.concOps, "conc-ops", 10000, "operations per client of the concurrent scenario")
	fs.Int64Var(&f.conc100Ops, "conc100-ops", 1000, "operations per client of the 100-client scenario")
	fs.IntVar(&f.conc, "conc", 8, "clients of the concurrent scenario")
	fs.IntVar(&f.idle, "idle", 0, "also open this many idle proxied connections and report RSS per connection (0: skip)")
	fs.IntVar(&f.scale, "scale", 0, "also run the scale benchmark with this many proxies in one daemon (0: skip)")
	fs.IntVar(&f.watchers, "watchers", 100, "watchers reading every event in the scale benchmark")
	fs.Int64Var(&f.scaleOps, "scale-ops", 20, "operations per proxy in the scale benchmark")
	fs.IntVar(&f.dataMin, "data-min", 50, "smallest session, bytes")
	fs.IntVar(&f.dataMax, "data-max", 1024, "largest session, bytes")
	fs.StringVar(&f.jsonOut, "json", "", "also write every run and row as JSON to `FILE` (- for standard output, after the table)")
	fs.BoolVar(&f.syscalls, "syscalls", false, "measure only this machine's floor (a system call, 64 bytes through a unix socket) and exit")
	fs.StringVar(&f.src, "src", ".", "the module to build snoopd and snoopctl from")
	fs.StringVar(&f.snoopd, "snoopd", "", "run this snoopd binary instead of building one")
	fs.StringVar(&f.snoopctl, "snoopctl", "", "run this snoopctl binary instead of building one")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil // -help: the usage is printed
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q: snoopbench takes only flags", fs.Arg(0))
	}
	if f.syscalls {
		return runSyscalls(os.Stdout)
	}
	networks := splitList(f.networks)
	for _, n := range networks {
		if n != "tcp" && n != "unix" {
			return fmt.Errorf("-networks: unknown network %q (want tcp, unix or both)", n)
		}
	}
	switch {
	case f.rounds < 1:
		return fmt.Errorf("-rounds %d: want at least 1", f.rounds)
	case f.serialOps < 1 || f.perOpOps < 1 || f.concOps < 1 || f.conc100Ops < 1 || f.conc < 1:
		return errors.New("-serial-ops, -perop-ops, -conc-ops, -conc100-ops and -conc must be at least 1")
	case f.runTimeout <= 0:
		return fmt.Errorf("-run-timeout %v: must be positive", f.runTimeout)
	}
	loops, err := parseLoops(f.loops)
	if err != nil {
		return err
	}
	engines := splitList(f.engines)
	if len(loops) > 0 && !slices.Contains(engines, "epoll") {
		return fmt.Errorf("-loops %s: the loops are the epoll engine's; -engines %q has no epoll", f.loops, f.engines)
	}
	if f.paths == "help" {
		for _, p := range allPaths(engines, loops) {
			fmt.Println(p.name)
		}
		return nil
	}
	paths, err := selectPaths(allPaths(engines, loops), f.paths)
	if err != nil {
		return err
	}
	scens, err := selectScenarios(scenarios(f), f.scenarios)
	if err != nil {
		return err
	}

	dir, err := os.MkdirTemp("", "snoopbench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	defer killAll()
	defer killOnSignal(func() { os.RemoveAll(dir) })()

	rep := &report{out: os.Stdout, Machine: machine(), Args: args}
	if f.jsonOut != "" {
		// Whatever was measured is written, also when a later run fails.
		defer func() {
			if jerr := rep.writeJSON(f.jsonOut); err == nil {
				err = jerr
			}
		}()
	}
	m := rep.Machine
	fmt.Printf("snoopbench on %s, %d CPUs (GOMAXPROCS %d), %s\n", m.CPU, m.CPUs, m.GOMAXPROCS, m.Go)
	fmt.Printf("kernel: %s\n", m.Kernel)
	fmt.Printf("load average at the start: %s\n\n", m.LoadStart)
	start := time.Now()

	var bins binaries
	if len(networks) > 0 && hasSnoopd(paths) {
		if bins, err = buildBinaries(f.src, dir, f.snoopd, f.snoopctl); err != nil {
			return err
		}
		if f.engines != "" && !bins.engineFlag {
			return fmt.Errorf("%s has no --engine flag: measure its one engine with -engines \"\"", bins.snoopd)
		}
		if len(loops) > 0 && !bins.loopsFlag {
			return fmt.Errorf("%s has no --loops flag: measure its default with -loops \"\"", bins.snoopd)
		}
	}
	var cselectBin string
	if len(networks) > 0 && hasPath(paths, "cselect") {
		cselectBin, err = compileCSelect(dir)
		if errors.Is(err, errNoCC) {
			// Not an error: the C stand-in is an extra; say so once.
			fmt.Printf("cselect: skipped, no cc on PATH to compile the C select-loop proxy\n\n")
			paths = dropPath(paths, "cselect")
		} else if err != nil {
			return err
		}
	}
	for _, network := range networks {
		if err := benchNetwork(network, dir, f, paths, scens, bins, cselectBin, rep); err != nil {
			return err
		}
	}
	if len(networks) > 0 {
		rep.Machine.LoadEnd, rep.Machine.Elapsed = firstLine("/proc/loadavg"), time.Since(start).Seconds()
		printNotes(rep)
		fmt.Printf("load average at the end: %s; the comparison took %v\n", rep.Machine.LoadEnd, time.Since(start).Round(time.Second))
	}
	if f.idle > 0 {
		if err := benchIdle(dir, f.idle); err != nil {
			return err
		}
	}
	if f.scale > 0 {
		return benchScale(dir, f.scale, f.watchers, f.scaleOps)
	}
	return nil
}

func hasPath(paths []pathSpec, name string) bool {
	for _, p := range paths {
		if p.name == name {
			return true
		}
	}
	return false
}

func dropPath(paths []pathSpec, name string) []pathSpec {
	var out []pathSpec
	for _, p := range paths {
		if p.name != name {
			out = append(out, p)
		}
	}
	return out
}

func hasExport(paths []pathSpec) bool {
	for _, p := range paths {
		if p.export {
			return true
		}
	}
	return false
}

func hasSnoopd(paths []pathSpec) bool {
	for _, p := range paths {
		if p.kind == kindSnoopd {
			return true
		}
	}
	return false
}

// printNotes says how to read the table, and which engine (and number of
// loops) each snoopd path's daemon reported running (a daemon that does
// not report one is said so, rather than trusting the path's name).
func printNotes(rep *report) {
	fmt.Printf("\nOps/s, latencies and CPU are the median of the rounds; \"vs direct\" is the best/median of the rounds' ratios to the same round's direct run.\n")
	fmt.Printf("CPU per transaction is the process's utime+stime from /proc/PID/stat (resolution %v) over the scenario, divided by the operations; for +tails4, tail CPU/tx is per tail (the mean of the four).\n", tick)
	fmt.Printf("Events seen/dropped, summed over the rounds: for snoop, the in-process watcher's over the scenario; for +tail, what snoopctl tail (attached after the warm-up) showed and was told were dropped over the scenario: transactions and errors, as tail without -v asks for (for +tails4, each tail's: N/M ×4 when all four agree); for +export, the events the daemon published to NATS (acknowledged by JetStream) and dropped over its life, warm-up included.\n")
	fmt.Printf("vs cselect is the median of the rounds' ratios of ops/s to the same round's cselect run. For +tail, +tails4 and +export, loss vs unwatched is the median of the rounds' loss of ops/s against the same round's run of the same snoopd (engine and loops) with no watcher, and daemon CPU/event the median of the rounds' (snoopd CPU of the watched run - snoopd CPU of that unwatched run) / events streamed during the scenario to all the watchers together (the events the tails showed; for export, those published during the scenario).\n")
	seen := map[string]bool{}
	for _, r := range rep.Rows {
		if r.Path == "cselect" && !seen[r.Path] {
			seen[r.Path] = true
			fmt.Printf("cselect: a single-threaded C select(2) proxy shaped like dc_snoop (blocking connect per client, bytes forwarded unchanged, no decoding), compiled with cc; a stand-in, not dc_snoop; it carries at most %d connections at once (descriptors below FD_SETSIZE, two per connection) and is skipped in scenarios with more clients\n", cselectMaxConns)
		}
		if r.Skipped != "" {
			fmt.Printf("%s, %s, %s: %s\n", r.Network, r.Scenario, r.Path, r.Skipped)
		}
		if !strings.HasPrefix(r.Path, "snoopd") || seen[r.Path] || r.Skipped != "" {
			continue
		}
		seen[r.Path] = true
		switch {
		case r.Engine == "":
			fmt.Printf("%s: snoopd did not report its engine\n", r.Path)
		case r.Loops > 0:
			fmt.Printf("%s: snoopd reported engine %q with %d loops\n", r.Path, r.Engine, r.Loops)
		default:
			fmt.Printf("%s: snoopd reported engine %q\n", r.Path, r.Engine)
		}
	}
}

// child is a cache or proxy running in its own process.
type child struct {
	cmd  *exec.Cmd
	addr distcache.Addr
	out  *bufio.Scanner
}

func spawn(args ...string) (*child, error) {
	cmd := exec.Command(os.Args[0], append([]string{"child"}, args...)...)
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := startGroup(cmd); err != nil {
		return nil, err
	}
	c := &child{cmd: cmd, out: bufio.NewScanner(stdout)}
	if !c.out.Scan() {
		stopGroup(cmd, syscall.SIGKILL, time.Second, cmd.Wait)
		return nil, fmt.Errorf("child %v did not start", args)
	}
	line := c.out.Text()
	a, err := distcache.ParseAddr(strings.TrimPrefix(line, "ready "))
	if err != nil {
		c.stop()
		return nil, fmt.Errorf("child %v said %q: %w", args, line, err)
	}
	c.addr = a
	return c, nil
}

func (c *child) stats() childStats {
	var s childStats
	c.cmd.Process.Signal(syscall.SIGUSR1)
	if c.out.Scan() {
		json.Unmarshal(c.out.Bytes(), &s)
	}
	return s
}

func (c *child) stop() {
	stopGroup(c.cmd, syscall.SIGTERM, 10*time.Second, func() error {
		io.Copy(io.Discard, readerOf(c.out))
		return c.cmd.Wait()
	})
}

// readerOf drains the rest of a scanner's input.
func readerOf(s *bufio.Scanner) io.Reader {
	pr, pw := io.Pipe()
	go func() {
		for s.Scan() {
		}
		pw.Close()
	}()
	return pr
}

// benchIdle opens n proxied connections that each did one request and then
// sit idle, and reports the proxy's resident memory and goroutines per
// connection.
func benchIdle(dir string, n int) error {
	cache, err := spawn("-kind", "cache", "-listen", "UNIX:"+filepath.Join(dir, "idle-cache.sock"))
	if err != nil {
		return err
	}
	defer cache.stop()
	p, err := spawn("-kind", "snoop", "-listen", "IP:127.0.0.1:0", "-server", cache.addr.String(), "-sink", "consume")
	if err != nil {
		return err
	}
	defer p.stop()
	// One connection first, so the baseline includes a warmed-up proxy.
	warm, err := loadgen.Dial(context.Background(), p.addr, 5*time.Second)
	if err != nil {
		return err
	}
	warm.Have([]byte("warm"))
	warm.Close()
	time.Sleep(100 * time.Millisecond)
	runtime.GC()
	before := p.stats()
	clients := make([]*loadgen.Client, 0, n)
	defer func() {
		for _, c := range clients {
			c.Close()
		}
	}()
	for i := 0; i < n; i++ {
		c, err := loadgen.Dial(context.Background(), p.addr, 5*time.Second)
		if err != nil {
			return fmt.Errorf("idle connection %d: %w", i, err)
		}
		clients = append(clients, c)
		if _, err := c.Have([]byte("idle")); err != nil {
			return fmt.Errorf("idle connection %d: %w", i, err)
		}
	}
	time.Sleep(500 * time.Millisecond)
	after := p.stats()
	if after.ConnsActive != int64(n) {
		return errors.New("not every idle connection is proxied")
	}
	fmt.Printf("\nidle: %d proxied connections: proxy RSS %d → %d KiB, %.1f KiB per connection; goroutines %d → %d, %.2f per connection\n",
		n, before.RSSKiB, after.RSSKiB, float64(after.RSSKiB-before.RSSKiB)/float64(n),
		before.Goroutines, after.Goroutines, float64(after.Goroutines-before.Goroutines)/float64(n))
	return nil
}

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return runtime.GOARCH
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "model name") {
			if i := strings.Index(line, ":"); i >= 0 {
				return strings.TrimSpace(line[i+1:])
			}
		}
	}
	return runtime.GOARCH
}
