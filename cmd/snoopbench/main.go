// Command snoopbench measures what the snoop proxy costs the traffic it
// carries. It runs the in-memory cache server and each proxy in child
// processes of its own (so their CPU time can be read apart), drives load
// with the load generator from the parent, and prints one markdown table
// comparing, side by side:
//
//   - direct: the load generator talks to the cache server;
//   - naive: a proxy with two io.Copy per connection that dials the server
//     by name for every client;
//   - snoop: this project's proxy, decoding everything, with a sink that
//     consumes every event;
//   - snoop-stalled: the same with a sink nobody reads (events are dropped
//     and counted, the traffic must not notice).
//
// Every scenario is bounded by an operation count. Usage:
//
//	snoopbench [-networks tcp,unix] [-serial-ops N] [-perop-ops N] [-conc-ops N] [-idle N] [-scale N -watchers M]
//
// -networks "" skips the proxy comparison, to run only -idle or -scale.
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
	"strings"
	"syscall"
	"time"

	"github.com/snoopd/snoopd/distcache"
	"github.com/snoopd/snoopd/distcache/loadgen"
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
	networks  string
	serialOps int64
	perOpOps  int64
	concOps   int64
	conc      int
	idle      int
	scale     int
	watchers  int
	scaleOps  int64
	dataMin   int
	dataMax   int
}

func runBench(args []string) error {
	var f benchFlags
	fs := flag.NewFlagSet("snoopbench", flag.ContinueOnError)
	fs.StringVar(&f.networks, "networks", "tcp,unix", "networks to measure: tcp, unix or both")
	fs.Int64Var(&f.serialOps, "serial-ops", 20000, "operations of the serial persistent scenario")
	fs.Int64Var(&f.perOpOps, "perop-ops", 5000, "operations of the serial connection-per-operation scenario")
	fs.Int64Var(&f.concOps, "conc-ops", 10000, "operations per client of the concurrent scenario")
	fs.IntVar(&f.conc, "conc", 8, "clients of the concurrent scenario")
	fs.IntVar(&f.idle, "idle", 0, "also open this many idle proxied connections and report RSS per connection (0: skip)")
	fs.IntVar(&f.scale, "scale", 0, "also run the scale benchmark with this many proxies in one daemon (0: skip)")
	fs.IntVar(&f.watchers, "watchers", 100, "watchers reading every event in the scale benchmark")
	fs.Int64Var(&f.scaleOps, "scale-ops", 20, "operations per proxy in the scale benchmark")
	fs.IntVar(&f.dataMin, "data-min", 50, "smallest session, bytes")
	fs.IntVar(&f.dataMax, "data-max", 1024, "largest session, bytes")
	if err := fs.Parse(args); err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "snoopbench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	fmt.Printf("snoopbench on %s, %d CPUs (GOMAXPROCS %d), %s\n\n", cpuModel(), runtime.NumCPU(), runtime.GOMAXPROCS(0), runtime.Version())
	fmt.Println("| network | scenario | path | ops | elapsed | ops/s | vs direct | p50 | p99 | added p50 | added p99 | proxy CPU/tx | allocs/frame | events seen/dropped | errors |")
	fmt.Println("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
	for _, network := range strings.Split(f.networks, ",") {
		if network == "" {
			continue
		}
		if err := benchNetwork(network, dir, f); err != nil {
			return err
		}
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
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	c := &child{cmd: cmd, out: bufio.NewScanner(stdout)}
	if !c.out.Scan() {
		cmd.Process.Kill()
		cmd.Wait()
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
	c.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		io.Copy(io.Discard, readerOf(c.out))
		c.cmd.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		c.cmd.Process.Kill()
		<-done
	}
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

type scenario struct {
	name string
	cfg  loadgen.Config
}

func scenarios(f benchFlags) []scenario {
	base := loadgen.Config{Sessions: 1000, MinData: f.dataMin, MaxData: f.dataMax, Verify: true, Seed: 1, IDPrefix: "bench-"}
	serial := base
	serial.Conns, serial.Persistent, serial.Ops = 1, true, f.serialOps
	perOp := base
	perOp.Conns, perOp.Persistent, perOp.Ops = 1, false, f.perOpOps
	conc := base
	conc.Conns, conc.Persistent, conc.Ops = f.conc, true, f.concOps*int64(f.conc)
	return []scenario{
		{"1 client, persistent", serial},
		{"1 client, conn per op", perOp},
		{fmt.Sprintf("%d clients, persistent", f.conc), conc},
	}
}

type result struct {
	rep           loadgen.Report
	perOp         time.Duration // elapsed per operation (includes connecting, per op)
	p50, p99      time.Duration
	cpuPerTx      time.Duration
	allocs        float64
	seen, dropped int64
	measured      bool
}

func benchNetwork(network, dir string, f benchFlags) error {
	listen := func(name string) string {
		if network == "unix" {
			return "UNIX:" + filepath.Join(dir, name+".sock")
		}
		return "IP:127.0.0.1:0"
	}
	cache, err := spawn("-kind", "cache", "-listen", listen("cache"))
	if err != nil {
		return err
	}
	defer cache.stop()
	// Proxies get the server the way an operator types it: by name over
	// TCP, so resolving it is part of the cost.
	server := cache.addr.String()
	if network == "tcp" {
		server = fmt.Sprintf("IP:localhost:%d", cache.addr.Port())
	}
	paths := []struct {
		name string
		args []string
	}{
		{"direct", nil},
		{"naive", []string{"-kind", "naive", "-listen", listen("naive"), "-server", server}},
		{"snoop", []string{"-kind", "snoop", "-listen", listen("snoop"), "-server", server, "-sink", "consume"}},
		{"snoop-stalled", []string{"-kind", "snoop", "-listen", listen("stalled"), "-server", server, "-sink", "stall"}},
	}
	for _, sc := range scenarios(f) {
		var direct result
		for _, path := range paths {
			res, err := runPath(sc, path.args, cache.addr)
			if err != nil {
				return fmt.Errorf("%s %s %s: %w", network, sc.name, path.name, err)
			}
			if path.name == "direct" {
				direct = res
			}
			printRow(network, sc.name, path.name, res, direct)
		}
	}
	return nil
}

func runPath(sc scenario, childArgs []string, cacheAddr distcache.Addr) (result, error) {
	target := cacheAddr
	var c *child
	if childArgs != nil {
		var err error
		if c, err = spawn(childArgs...); err != nil {
			return result{}, err
		}
		defer c.stop()
		target = c.addr
	}
	ctx := context.Background()
	// Warm up: connections, pools, the resolver's cache, the CPU clocks.
	warm := sc.cfg
	warm.Addr, warm.Ops, warm.IDPrefix, warm.Verify = target, 500, "warm-", false
	if _, err := loadgen.Run(ctx, warm); err != nil {
		return result{}, err
	}
	var before childStats
	if c != nil {
		before = c.stats()
	}
	cfg := sc.cfg
	cfg.Addr = target
	cfg.IDPrefix = fmt.Sprintf("%s%d-", cfg.IDPrefix, time.Now().UnixNano())
	rep, err := loadgen.Run(ctx, cfg)
	if err != nil {
		return result{}, err
	}
	res := result{rep: rep, p50: rep.Latency.P50, p99: rep.Latency.P99}
	if rep.Ops > 0 {
		res.perOp = rep.Elapsed / time.Duration(rep.Ops)
	}
	if !cfg.Persistent {
		// Per-operation connections: the client waits for the connect
		// as well as for the answer.
		res.p50 = rep.OpLatency.P50
		res.p99 = rep.OpLatency.P99
	}
	if c != nil {
		after := c.stats()
		if after.Transactions > before.Transactions || after.UserNS > before.UserNS {
			res.measured = after.Transactions > 0 || after.FramesUp > 0
			cpu := time.Duration(after.UserNS + after.SysNS - before.UserNS - before.SysNS)
			res.cpuPerTx = cpu / time.Duration(max(rep.Ops, 1))
			if frames := after.FramesUp + after.FramesDown - before.FramesUp - before.FramesDown; frames > 0 {
				res.allocs = float64(after.Mallocs-before.Mallocs) / float64(frames)
			}
			res.seen = after.Events - before.Events
			res.dropped = after.Dropped - before.Dropped
		} else {
			cpu := time.Duration(after.UserNS + after.SysNS - before.UserNS - before.SysNS)
			res.cpuPerTx = cpu / time.Duration(max(rep.Ops, 1))
		}
	}
	return res, nil
}

func printRow(network, sc, path string, r, direct result) {
	us := func(d time.Duration) string { return fmt.Sprintf("%.1f µs", float64(d)/1e3) }
	vs, added50, added99, cpu, allocs, events := "", "", "", "", "", ""
	if path != "direct" {
		if direct.rep.OpsPerSec > 0 {
			vs = fmt.Sprintf("%.2f×", r.rep.OpsPerSec/direct.rep.OpsPerSec)
		}
		added50, added99 = us(r.p50-direct.p50), us(r.p99-direct.p99)
		cpu = us(r.cpuPerTx)
	}
	if r.measured {
		allocs = fmt.Sprintf("%.3f", r.allocs)
		events = fmt.Sprintf("%d/%d", r.seen, r.dropped)
	}
	fmt.Printf("| %s | %s | %s | %d | %.2f s | %.0f | %s | %s | %s | %s | %s | %s | %s | %s | %d |\n",
		network, sc, path, r.rep.Ops, r.rep.Elapsed.Seconds(), r.rep.OpsPerSec, vs, us(r.p50), us(r.p99),
		added50, added99, cpu, allocs, events, r.rep.Errors)
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
