package daemon

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
)

// BenchmarkCreateProxiesStateDir creates b.N proxies with a state dir,
// from 16 concurrent callers, over real gRPC on a unix socket: what group
// commit is for (see docs/benchmarks.md, "State file"). Each
// proxy listens on a loopback port of its own and keeps no spare
// connections, so the figure is the control path and the state file, not
// dialling. Run it as
//
//	go test -run '^$' -bench CreateProxiesStateDir -benchtime 10000x ./daemon/
func BenchmarkCreateProxiesStateDir(b *testing.B) {
	dir := b.TempDir()
	d, err := New(Config{StateDir: dir})
	if err != nil {
		b.Fatal(err)
	}
	srv, _ := NewServer(d, ServerOptions{})
	sock := filepath.Join(dir, "ctl.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		b.Fatal(err)
	}
	go srv.Serve(l)
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	defer func() {
		conn.Close()
		d.Close(context.Background())
		srv.Stop()
	}()
	pc := snoopv1.NewProxyServiceClient(conn)
	ctx := context.Background()
	const workers = 16
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	b.ResetTimer()
	for range workers {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= int64(b.N) {
					return
				}
				_, err := pc.CreateProxy(ctx, &snoopv1.CreateProxyRequest{Spec: &snoopv1.ProxySpec{
					Name: fmt.Sprintf("p%06d", i), Listen: "IP:127.0.0.1:0", Server: "IP:127.0.0.1:9", SpareConnections: proto.Uint32(0),
				}})
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	if n := len(d.ListProxies()); n != b.N {
		b.Fatalf("%d proxies, want %d", n, b.N)
	}
}

// BenchmarkRestoreStateDir starts a daemon on a state dir holding 10,000
// saved proxies (each on a loopback port of its own, no spares): the
// loop check over the whole set, a listener per proxy, and the state
// file read and checked. Run it as
//
//	go test -run '^$' -bench RestoreStateDir -benchtime 3x ./daemon/
func BenchmarkRestoreStateDir(b *testing.B) {
	const saved = 10000
	dir := b.TempDir()
	d, err := New(Config{StateDir: dir})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	// Created from 16 callers, so group commit writes the file far fewer
	// than 10,000 times.
	var next atomic.Int64
	var failed atomic.Value
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for i := next.Add(1) - 1; i < saved; i = next.Add(1) - 1 {
				if _, err := d.CreateProxy(ctx, &snoopv1.ProxySpec{
					Name: fmt.Sprintf("p%06d", i), Listen: "IP:127.0.0.1:0", Server: "IP:127.0.0.1:9", SpareConnections: proto.Uint32(0),
				}); err != nil {
					failed.Store(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err, _ := failed.Load().(error); err != nil {
		b.Fatal(err)
	}
	if err := d.Close(ctx); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for range b.N {
		d, err := New(Config{StateDir: dir})
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if n := len(d.ListProxies()); n != saved {
			b.Fatalf("%d proxies restored, want %d", n, saved)
		}
		if err := d.Close(ctx); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}
