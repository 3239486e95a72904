package main

import (
	"context"
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

	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
	"github.com/snoopd/snoopd/internal/skip"
)

// TestStuckWatchersMemory measures what event streams that never read
// cost the real snoopd: RSS before and after SNOOPD_STUCK_WATCHERS streams
// (over 8 connections) have filled their queues from the demo load. It is
// a measurement for docs/benchmarks.md ("Watchers"), run by
// hand:
//
//	SNOOPD_STUCK_WATCHERS=1000 go test -run TestStuckWatchersMemory -v ./daemon/snoopd
//
// SNOOPD_STUCK_BATCH sets the streams' max_batch (default 0: one event
// per response; snoopctl asks for 256).
func TestStuckWatchersMemory(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("SNOOPD_STUCK_WATCHERS"))
	if n <= 0 {
		skip.ByDesign(t, "a measurement: set SNOOPD_STUCK_WATCHERS=N to run it")
	}
	batch, _ := strconv.Atoi(os.Getenv("SNOOPD_STUCK_BATCH"))
	bin, _ := buildBinaries(t)
	dir := tempDir(t)
	sock := filepath.Join(dir, "ctl.sock")
	cmd := exec.Command(bin, "--control", "unix://"+sock, "--demo", "--demo-rate", "3000",
		"--max-watchers", strconv.Itoa(n), "--log-level", "warn")
	stderr := &syncBuffer{}
	cmd.Stderr = stderr
	// The garbage collector's trace tells the live heap from the
	// collector's headroom, which RSS includes.
	cmd.Env = append(os.Environ(), "GODEBUG=gctrace=1")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	ctl := dial(t, unixTarget(sock))
	dc := snoopv1.NewDaemonServiceClient(ctl)
	published := func() uint64 {
		for deadline := time.Now().Add(testTimeout); ; time.Sleep(50 * time.Millisecond) {
			info, err := dc.GetDaemonInfo(ctx, &snoopv1.GetDaemonInfoRequest{})
			if err == nil {
				return info.GetEventsPublished()
			}
			if time.Now().After(deadline) {
				t.Fatalf("daemon info: %v\n%s", err, stderr.String())
			}
		}
	}
	// Warm up until the history ring is full, so the baseline holds it.
	for start := time.Now(); published() < 12000 && time.Since(start) < time.Minute; time.Sleep(200 * time.Millisecond) {
	}
	base := rss(t, cmd.Process.Pid)

	var conns []*grpc.ClientConn
	for range 8 {
		c, err := grpc.NewClient(unixTarget(sock), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		conns = append(conns, c)
	}
	for i := range n {
		s, err := snoopv1.NewEventServiceClient(conns[i%len(conns)]).WatchEvents(ctx, &snoopv1.WatchEventsRequest{MaxBatch: uint32(batch)})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Header(); err != nil {
			t.Fatalf("stream %d: %v", i, err)
		}
	}
	// Every queue fills once the queue's size in events (1,024) plus what
	// the transport takes has been published; wait for several times that.
	from := published()
	for start := time.Now(); published() < from+20000 && time.Since(start) < 2*time.Minute; time.Sleep(200 * time.Millisecond) {
	}
	after := rss(t, cmd.Process.Pid)
	t.Logf("%d stuck streams (max_batch %d): RSS %d MB before, %d MB after: %.0f KB per stream; live heap after the last collections: %s",
		n, batch, base>>20, after>>20, float64(after-base)/1024/float64(n), lastLive(stderr.String(), 3))
}

// rss reads a process's resident set size in bytes from /proc.
func rss(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	t.Fatal("no VmRSS in /proc status")
	return 0
}

// lastLive picks the live heap ("X->Y->Z MB": Z) of the last k garbage
// collections from a GODEBUG=gctrace=1 trace.
func lastLive(trace string, k int) string {
	var out []string
	for _, line := range strings.Split(trace, "\n") {
		if !strings.HasPrefix(line, "gc ") {
			continue
		}
		for _, f := range strings.Fields(line) {
			if strings.Count(f, "->") == 2 {
				out = append(out, f[strings.LastIndex(f, "->")+2:]+" MB")
			}
		}
	}
	if len(out) > k {
		out = out[len(out)-k:]
	}
	return strings.Join(out, ", ")
}
