package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/snoopd/snoopd/distcache"
	"github.com/snoopd/snoopd/distcache/cacheserver"
	"github.com/snoopd/snoopd/distcache/loadgen"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
	"github.com/snoopd/snoopd/internal/testutil"
)

// cpuTicks is the CPU time (user + system, in clock ticks) process pid
// has used, from /proc/PID/stat.
func cpuTicks(tb testing.TB, pid int) int64 {
	tb.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		tb.Fatal(err)
	}
	// The fields after the command name (which may hold spaces) start
	// after the last ')': state is field 3, utime 14 and stime 15.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	u, _ := strconv.ParseInt(f[11], 10, 64)
	s, _ := strconv.ParseInt(f[12], 10, 64)
	return u + s
}

// ticksPerSecond is USER_HZ, 100 on Linux.
const ticksPerSecond = 100

// BenchmarkTopRefresh1000 measures what one refresh of snoopctl top costs
// a real snoopd with 1,000 proxies created through the API, each having
// carried some traffic (so every proxy and op has histogram buckets to
// send): the daemon's CPU per ListProxies with histograms (what top
// calls, with GetDaemonInfo, once per refresh) and the answer's size;
// without histograms, for comparison.
func BenchmarkTopRefresh1000(b *testing.B) {
	dir := testutil.SocketDir(b)
	sock := filepath.Join(dir, "s.sock")
	cmd := exec.Command(bins.snoopd, "--control", "UNIX:"+sock, "--log-level", "warn")
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	}()
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		if time.Now().After(deadline) {
			b.Fatal("snoopd did not start")
		}
	}
	cache, err := cacheserver.Start(distcache.MustParseAddr("IP:127.0.0.1:0"), cacheserver.Config{})
	if err != nil {
		b.Fatal(err)
	}
	defer cache.Close()
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	proxies := snoopv1.NewProxyServiceClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	const n = 1000
	for i := range n {
		r, err := proxies.CreateProxy(ctx, &snoopv1.CreateProxyRequest{Spec: &snoopv1.ProxySpec{
			Name: fmt.Sprintf("p%04d", i), Listen: "IP:127.0.0.1:0", Server: cache.Addr().String(), Enabled: proto.Bool(true),
			SpareConnections: proto.Uint32(0)}})
		if err != nil {
			b.Fatal(err)
		}
		addr, err := distcache.ParseConnectAddr(r.GetProxy().GetListenAddress())
		if err != nil {
			b.Fatal(err)
		}
		// 40 operations of every kind through each proxy, with some
		// spread in latency, so its histograms are not trivial.
		rep, err := loadgen.Run(ctx, loadgen.Config{Addr: addr, Conns: 1, Ops: 40, Persistent: true, MaxData: 512})
		if err != nil || rep.Errors != 0 {
			b.Fatalf("load through proxy %d: %v %v", i, err, rep.ErrorSamples)
		}
	}
	for _, hist := range []bool{true, false} {
		b.Run(fmt.Sprintf("histograms=%v", hist), func(b *testing.B) {
			req := &snoopv1.ListProxiesRequest{IncludeHistograms: hist}
			var size int
			before := cpuTicks(b, cmd.Process.Pid)
			calls := 0
			for b.Loop() {
				r, err := proxies.ListProxies(ctx, req)
				if err != nil {
					b.Fatal(err)
				}
				if len(r.GetProxies()) != n {
					b.Fatalf("%d proxies", len(r.GetProxies()))
				}
				size = proto.Size(r)
				calls++
			}
			ticks := cpuTicks(b, cmd.Process.Pid) - before
			b.ReportMetric(float64(ticks)*1e3/ticksPerSecond/float64(calls), "daemon-cpu-ms/call")
			b.ReportMetric(float64(size)/1024, "KiB/answer")
		})
	}
}
