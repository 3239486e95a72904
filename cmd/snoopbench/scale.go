package main

import (
	"context"
	"fmt"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/snoopd/snoopd/daemon"
	"github.com/snoopd/snoopd/distcache"
	"github.com/snoopd/snoopd/distcache/loadgen"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
	"github.com/snoopd/snoopd/internal/listen"
)

// startDaemonChild serves the control API of an in-process daemon on a
// unix socket, for the scale benchmark.
func startDaemonChild(addr distcache.Addr) (distcache.Addr, func(), error) {
	d, err := daemon.New(daemon.Config{})
	if err != nil {
		return distcache.Addr{}, nil, err
	}
	s, _ := daemon.NewServer(d, daemon.ServerOptions{})
	ln, err := listen.Config{Mode: 0o600}.Listen(context.Background(), addr)
	if err != nil {
		d.Close(context.Background())
		return distcache.Addr{}, nil, err
	}
	go s.Serve(ln)
	stop := func() {
		d.Close(context.Background())
		s.Stop()
	}
	return addr, stop, nil
}

// benchScale creates n proxies in one daemon, opens watchers that read
// every event, drives a little traffic through every proxy, and compares
// the aggregate rate with the same load through a single proxy.
func benchScale(dir string, n, watchers int, opsPerProxy int64) error {
	cache, err := spawn("-kind", "cache", "-listen", "UNIX:"+filepath.Join(dir, "scale-cache.sock"))
	if err != nil {
		return err
	}
	defer cache.stop()
	dmn, err := spawn("-kind", "daemon", "-listen", "UNIX:"+filepath.Join(dir, "scale-ctl.sock"))
	if err != nil {
		return err
	}
	defer dmn.stop()
	conn, err := grpc.NewClient("unix://"+dmn.addr.Path(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	api := snoopv1.NewProxyServiceClient(conn)
	events := snoopv1.NewEventServiceClient(conn)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	base := dmn.stats()

	// Create n proxies, one call at a time, as a script would.
	var createLat []time.Duration
	addrs := make([]distcache.Addr, 0, n)
	for i := range n {
		start := time.Now()
		res, err := api.CreateProxy(ctx, &snoopv1.CreateProxyRequest{Spec: &snoopv1.ProxySpec{
			Name: fmt.Sprintf("p%04d", i), Listen: "IP:127.0.0.1:0", Server: cache.addr.String()}})
		if err != nil {
			return fmt.Errorf("create proxy %d: %w", i, err)
		}
		createLat = append(createLat, time.Since(start))
		addrs = append(addrs, distcache.MustParseAddr(res.GetProxy().GetListenAddress()))
	}
	var listLat []time.Duration
	for range 20 {
		start := time.Now()
		if _, err := api.ListProxies(ctx, &snoopv1.ListProxiesRequest{}); err != nil {
			return err
		}
		listLat = append(listLat, time.Since(start))
	}
	idle := dmn.stats()

	// Watchers that read everything.
	var seen, dropped atomic.Int64
	var wg sync.WaitGroup
	for range watchers {
		stream, err := events.WatchEvents(ctx, &snoopv1.WatchEventsRequest{})
		if err != nil {
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				r, err := stream.Recv()
				if err != nil {
					return
				}
				if r.GetEvent() != nil {
					seen.Add(1)
				}
				dropped.Add(int64(r.GetDropped()))
			}
		}()
	}
	time.Sleep(200 * time.Millisecond)

	// A little traffic through every proxy at once, then the same total
	// through one proxy.
	spread, err := loadOver(ctx, addrs, opsPerProxy)
	if err != nil {
		return err
	}
	single, err := loadOver(ctx, addrs[:1], opsPerProxy*int64(len(addrs)))
	if err != nil {
		return err
	}
	loaded := dmn.stats()
	time.Sleep(300 * time.Millisecond)
	cancel()
	wg.Wait()

	fmt.Printf("\nscale: %d proxies, %d watchers reading every event\n\n", n, watchers)
	fmt.Println("| measure | value |")
	fmt.Println("| --- | --- |")
	fmt.Printf("| create latency p50 / p99 / max | %s / %s / %s |\n", pct(createLat, 0.5), pct(createLat, 0.99), pct(createLat, 1))
	fmt.Printf("| list (%d proxies) latency p50 / max | %s / %s |\n", n, pct(listLat, 0.5), pct(listLat, 1))
	fmt.Printf("| daemon RSS: empty → %d proxies idle → under load | %d → %d → %d KiB |\n", n, base.RSSKiB, idle.RSSKiB, loaded.RSSKiB)
	fmt.Printf("| daemon goroutines with %d idle proxies | %d |\n", n, idle.Goroutines)
	fmt.Printf("| load over all %d proxies (1 connection each, %d ops each) | %.0f ops/s, %d errors |\n", n, opsPerProxy, spread.OpsPerSec, spread.Errors)
	fmt.Printf("| same total through 1 proxy (%d connections) | %.0f ops/s, %d errors |\n", min(len(addrs), 64), single.OpsPerSec, single.Errors)
	fmt.Printf("| events seen by the %d watchers / dropped | %d / %d |\n", watchers, seen.Load(), dropped.Load())
	return nil
}

// loadOver runs total ops split over the addresses, one persistent
// connection per address, at most 64 connections at a time.
func loadOver(ctx context.Context, addrs []distcache.Addr, opsEach int64) (loadgen.Report, error) {
	var mu sync.Mutex
	var total loadgen.Report
	var ops, errs int64
	start := time.Now()
	sem := make(chan struct{}, 64)
	var wg sync.WaitGroup
	conns := 1
	if len(addrs) == 1 {
		conns = 64
	}
	for i, a := range addrs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			rep, err := loadgen.Run(ctx, loadgen.Config{Addr: a, Conns: conns, Persistent: true, Ops: opsEach,
				Sessions: max(conns, 10), MinData: 50, MaxData: 512, Seed: uint64(i), IDPrefix: fmt.Sprintf("s%d-", i)})
			mu.Lock()
			defer mu.Unlock()
			if err == nil {
				ops += rep.Ops
				errs += rep.Errors
			} else {
				errs++
			}
		}()
	}
	wg.Wait()
	total.Ops, total.Errors = ops, errs
	total.Elapsed = time.Since(start)
	total.OpsPerSec = float64(ops) / total.Elapsed.Seconds()
	return total, nil
}

func pct(ds []time.Duration, q float64) string {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := min(int(q*float64(len(s))), len(s)-1)
	return fmt.Sprintf("%.2f ms", float64(s[i])/1e6)
}
