package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/snoopd/snoopd/daemon"
	"github.com/snoopd/snoopd/daemon/hub"
	"github.com/snoopd/snoopd/distcache"
	"github.com/snoopd/snoopd/distcache/cacheserver"
	"github.com/snoopd/snoopd/proxy"
)

// childStats is what a child process reports on SIGUSR1: cumulative
// figures the parent subtracts to get the cost of one scenario.
type childStats struct {
	UserNS       int64  `json:"user_ns"`
	SysNS        int64  `json:"sys_ns"`
	Mallocs      uint64 `json:"mallocs"`
	Goroutines   int    `json:"goroutines"`
	RSSKiB       int64  `json:"rss_kib"`
	FramesUp     int64  `json:"frames_up"`
	FramesDown   int64  `json:"frames_down"`
	Transactions int64  `json:"transactions"`
	Events       int64  `json:"events"`
	Dropped      int64  `json:"dropped"`
	ConnsActive  int64  `json:"conns_active"`
}

// runChild is the hidden "child" mode: serve a cache or a proxy until
// SIGTERM, printing "ready ADDR" once listening and one JSON stats line on
// every SIGUSR1.
func runChild(args []string) error {
	fs := flag.NewFlagSet("child", flag.ContinueOnError)
	kind := fs.String("kind", "", "cache, snoop, naive or daemon")
	listen := fs.String("listen", "", "listen address")
	server := fs.String("server", "", "server address (proxies)")
	sinkMode := fs.String("sink", "consume", "snoop event sink: consume or stall")
	if err := fs.Parse(args); err != nil {
		return err
	}
	// Listen for the parent's signals before saying "ready": a SIGUSR1
	// that came earlier would be lost and the parent would wait forever.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGUSR1, syscall.SIGTERM, syscall.SIGINT)
	la, err := distcache.ParseListenAddr(*listen)
	if err != nil {
		return err
	}
	var (
		ready  distcache.Addr
		stats  func() childStats
		closer func()
	)
	switch *kind {
	case "cache":
		s, err := cacheserver.Start(la, cacheserver.Config{MaxSessions: 1 << 20})
		if err != nil {
			return err
		}
		ready, closer, stats = s.Addr(), func() { s.Close() }, func() childStats { return childStats{} }
	case "snoop":
		sa, err := distcache.ParseConnectAddr(*server)
		if err != nil {
			return err
		}
		sink := newBenchSink(*sinkMode == "consume")
		// No engine given: proxy.New runs the product's default, as
		// snoopd does.
		p, err := proxy.New(proxy.Config{Name: "bench", Listen: la, Server: sa, Enabled: true}, sink)
		if err != nil {
			return err
		}
		if err := p.Start(); err != nil {
			return err
		}
		ready = p.Addr()
		closer = func() { p.Stop(context.Background()); sink.close() }
		stats = func() childStats {
			st := p.Stats()
			consumed, dropped := sink.counts()
			return childStats{FramesUp: st.FramesUp, FramesDown: st.FramesDown, Transactions: st.Transactions(),
				Events: consumed, Dropped: dropped, ConnsActive: st.ConnsActive}
		}
	case "daemon":
		a, stop, err := startDaemonChild(la)
		if err != nil {
			return err
		}
		ready, closer, stats = a, stop, func() childStats { return childStats{} }
	case "naive":
		n, err := startNaive(la, *server)
		if err != nil {
			return err
		}
		ready, closer, stats = n.addr, n.close, func() childStats { return childStats{} }
	default:
		return fmt.Errorf("unknown child kind %q", *kind)
	}
	if path := os.Getenv("SNOOPBENCH_CPUPROFILE"); path != "" && *kind != "cache" {
		// For finding where a proxy's time goes: one profile per child.
		f, err := os.Create(fmt.Sprintf("%s.%s.%d", path, *kind, os.Getpid()))
		if err != nil {
			return err
		}
		pprof.StartCPUProfile(f)
		defer func() { pprof.StopCPUProfile(); f.Close() }()
	}
	if path := os.Getenv("SNOOPBENCH_MEMPROFILE"); path != "" && *kind != "cache" {
		// Every allocation sampled, written at exit: for finding what
		// allocates per frame or per transaction.
		runtime.MemProfileRate = 1
		defer func() {
			if f, err := os.Create(fmt.Sprintf("%s.%s.%d", path, *kind, os.Getpid())); err == nil {
				pprof.Lookup("allocs").WriteTo(f, 0)
				f.Close()
			}
		}()
	}
	fmt.Printf("ready %s\n", ready)
	enc := json.NewEncoder(os.Stdout)
	for sig := range sigs {
		if sig != syscall.SIGUSR1 {
			break
		}
		s := stats()
		fillProcessStats(&s)
		enc.Encode(s)
	}
	closer()
	return nil
}

func fillProcessStats(s *childStats) {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	s.UserNS = ru.Utime.Nano()
	s.SysNS = ru.Stime.Nano()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	s.Mallocs = ms.Mallocs
	s.Goroutines = runtime.NumGoroutine()
	s.RSSKiB = readRSS()
}

// readRSS returns the process's resident set size from /proc.
func readRSS() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	var kib int64
	for _, line := range splitLines(string(b)) {
		if n, _ := fmt.Sscanf(line, "VmRSS: %d kB", &kib); n == 1 {
			return kib
		}
	}
	return 0
}

func splitLines(s string) []string {
	var out []string
	for len(s) > 0 {
		i := 0
		for i < len(s) && s[i] != '\n' {
			i++
		}
		out = append(out, s[:i])
		if i < len(s) {
			i++
		}
		s = s[i:]
	}
	return out
}

// benchSink is the daemon's event hub with one watcher: a consumer that
// reads every event (as snoopctl tail would), or one that never reads (a
// stuck watcher, whose queue fills and then drops).
type benchSink struct {
	*hub.Hub
	w        *hub.Watcher
	consumed atomic.Int64
	dropped  atomic.Int64
	cancel   context.CancelFunc
	wg       sync.WaitGroup
}

func newBenchSink(consume bool) *benchSink {
	s := &benchSink{Hub: hub.New(hub.Config{NewEncoder: daemon.NewEventEncoder})}
	s.w = s.Watch(hub.WatchOptions{})
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	if consume {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			for {
				b, err := s.w.Next(ctx)
				if err != nil {
					return
				}
				for i := range b.Records {
					_ = b.Records[i].View.Result.String() // what a watcher would format
				}
				s.consumed.Add(int64(len(b.Records)))
				s.dropped.Add(int64(b.Dropped))
			}
		}()
	}
	return s
}

// counts returns the events consumed and dropped; a stuck watcher's drops
// are read off its queue without consuming it.
func (s *benchSink) counts() (consumed, dropped int64) {
	_, backlog := s.w.Backlog()
	return s.consumed.Load(), s.dropped.Load() + int64(backlog)
}

func (s *benchSink) close() {
	s.cancel()
	s.wg.Wait()
	s.w.Close()
	s.Hub.Close()
}

// naive is the proxy most people write first: dial the server by name for
// every client, then two io.Copy. The benchmark runs it to show what the
// snoop proxy avoids.
type naive struct {
	addr distcache.Addr
	ln   net.Listener
	wg   sync.WaitGroup
}

func startNaive(listen distcache.Addr, server string) (*naive, error) {
	sa, err := distcache.ParseConnectAddr(server)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen(listen.Network().String(), listen.NetAddr())
	if err != nil {
		return nil, err
	}
	a, err := distcache.AddrFromNet(ln.Addr())
	if err != nil {
		return nil, err
	}
	n := &naive{addr: a, ln: ln}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				time.Sleep(time.Millisecond)
				continue
			}
			go func() {
				defer c.Close()
				s, err := net.Dial(sa.Network().String(), sa.NetAddr())
				if err != nil {
					return
				}
				defer s.Close()
				go func() {
					io.Copy(s, c)
					s.Close()
				}()
				io.Copy(c, s)
			}()
		}
	}()
	return n, nil
}

func (n *naive) close() {
	n.ln.Close()
	n.wg.Wait()
}
