package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/snoopd/snoopd/distcache"
	"github.com/snoopd/snoopd/distcache/loadgen"
	"github.com/snoopd/snoopd/internal/skip"
	"github.com/snoopd/snoopd/internal/testutil"
	"github.com/snoopd/snoopd/proxy"
)

// buildBinaries builds snoopd and snoopctl into a temporary directory.
func buildBinaries(t *testing.T) (snoopd, snoopctl string) {
	t.Helper()
	dir := t.TempDir()
	snoopd, snoopctl = filepath.Join(dir, "snoopd"), filepath.Join(dir, "snoopctl")
	for pkg, out := range map[string]string{"github.com/snoopd/snoopd/daemon/snoopd": snoopd, "github.com/snoopd/snoopd/ctl/snoopctl": snoopctl} {
		if b, err := exec.Command("go", "build", "-o", out, pkg).CombinedOutput(); err != nil {
			t.Fatalf("build %s: %v\n%s", pkg, err, b)
		}
	}
	return snoopd, snoopctl
}

// TestLowFDLimit runs the real snoopd under an open-file limit of 256
// (soft and hard, so it cannot raise it) with a proxy in front of the
// in-memory cache, and opens far more idle clients than the limit holds.
// The control API must still answer the real snoopctl, the clients over
// the data path's bound must be counted as refused, and the daemon must
// report the limit. Every wait is bounded; nothing is timed.
func TestLowFDLimit(t *testing.T) {
	if testing.Short() {
		skip.ByDesign(t, "-short: builds and runs the binaries")
	}
	snoopdBin, snoopctlBin := buildBinaries(t)
	for _, engine := range []string{proxy.EngineEpoll, proxy.EngineGoroutines} {
		t.Run(engine, func(t *testing.T) { testLowFDLimit(t, snoopdBin, snoopctlBin, engine) })
	}
}

func testLowFDLimit(t *testing.T, snoopdBin, snoopctlBin, engine string) {
	const (
		limit   = 256
		clients = 400 // two descriptors each in snoopd: far beyond the limit
	)
	dir := tempDir(t)
	cache := startCache(t, dir)
	sock := filepath.Join(dir, "ctl.sock")
	var logs testutil.SyncBuffer
	script := fmt.Sprintf("ulimit -Sn %d && ulimit -Hn %d && exec \"$0\" \"$@\"", limit, limit)
	cmd := exec.Command("sh", "-c", script, snoopdBin, "--control", "UNIX:"+sock, "--engine", engine, "--log-format", "json")
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(testTimeout):
			cmd.Process.Kill()
			<-done
			t.Errorf("snoopd did not stop on SIGTERM; log:\n%s", logs.String())
		}
	})
	for deadline := time.Now().Add(testTimeout); ; time.Sleep(10 * time.Millisecond) {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		select {
		case err := <-done:
			done <- err
			t.Fatalf("snoopd exited: %v\n%s", err, logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("snoopd did not create %s; log:\n%s", sock, logs.String())
		}
	}

	ctl := func(args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		defer cancel()
		c := exec.CommandContext(ctx, snoopctlBin, append([]string{"-a", "unix://" + sock, "--timeout", "20s"}, args...)...)
		c.Env = append(os.Environ(), "SNOOPD_ADDRESS=", "SNOOPD_TOKEN_FILE=")
		var out, errb bytes.Buffer
		c.Stdout, c.Stderr = &out, &errb
		if err := c.Run(); err != nil {
			return out.String(), fmt.Errorf("snoopctl %s: %v: %s", strings.Join(args, " "), err, errb.String())
		}
		return out.String(), nil
	}
	listen, err := ctl("add", "p", "--listen", "IP:127.0.0.1:0", "--server", cache.Addr().String(), "--idle-timeout", "0")
	if err != nil {
		t.Fatal(err)
	}
	out, err := ctl("version")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, fmt.Sprintf("open-file limit %d", limit)) {
		t.Errorf("snoopctl version does not report the limit of %d:\n%s", limit, out)
	}

	// The data path's share of the limit, as the daemon reports it.
	dataPath := 0
	for _, line := range strings.Split(logs.String(), "\n") {
		var rec struct {
			Msg      string `json:"msg"`
			DataPath int    `json:"data_path"`
		}
		if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "open-file limit" {
			dataPath = rec.DataPath
		}
	}
	if dataPath <= 0 || dataPath >= limit {
		t.Fatalf("snoopd did not log the data path's share of %d descriptors; log:\n%s", limit, logs.String())
	}

	// The idle clients. The kernel completes their connects whether or
	// not snoopd accepts them, so this loop does not depend on snoopd.
	addr := strings.TrimPrefix(strings.TrimSpace(listen), "IP:")
	var conns []net.Conn
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	for range clients {
		c, err := net.DialTimeout("tcp", addr, 10*time.Second)
		if err != nil {
			t.Fatalf("client %d: %v", len(conns), err)
		}
		conns = append(conns, c)
	}

	// snoopd has seen every client once accepted and refused ones add up
	// to all of them; the control API answers throughout.
	type counters struct {
		Active  string `json:"connections_active"`
		Total   string `json:"connections_total"`
		Refused string `json:"connections_refused"`
	}
	var last counters
	n := func(s string) int { v, _ := strconv.Atoi(s); return v }
	for deadline := time.Now().Add(testTimeout); ; time.Sleep(20 * time.Millisecond) {
		out, err := ctl("show", "p", "-o", "json")
		if err != nil {
			t.Fatalf("the control API did not answer with %d clients against a limit of %d: %v\nsnoopd log:\n%s", clients, limit, err, logs.String())
		}
		var shown struct {
			Proxy struct {
				Counters counters `json:"counters"`
			} `json:"proxy"`
		}
		if err := json.Unmarshal([]byte(out), &shown); err != nil {
			t.Fatalf("show -o json: %v: %s", err, out)
		}
		last = shown.Proxy.Counters
		if active := n(last.Active); 2*active > dataPath {
			t.Fatalf("%d live connections hold %d descriptors, over the data path's %d; the process is out of room for its control API", active, 2*active, dataPath)
		}
		if n(last.Total)+n(last.Refused) >= clients && n(last.Refused) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %+v; want the %d clients accepted or refused, some refused", testTimeout, last, clients)
		}
	}
	out, err = ctl("list")
	if err != nil {
		t.Fatalf("snoopctl list at the limit: %v", err)
	}
	if !strings.Contains(out, "p ") || !strings.Contains(out, "listening") {
		t.Errorf("snoopctl list at the limit:\n%s", out)
	}
	// Clients that leave make room again: new ones are proxied.
	for _, c := range conns {
		c.Close()
	}
	conns = nil
	for deadline := time.Now().Add(testTimeout); ; time.Sleep(20 * time.Millisecond) {
		out, err := ctl("show", "p", "-o", "json")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out, `"connections_active"`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("connections still active after the clients left: %s", out)
		}
	}
	rep, err := loadgen.Run(withTimeout(t), loadgen.Config{Addr: distcache.MustParseAddr(strings.TrimSpace(listen)), Ops: 20, Verify: true, MaxData: 64})
	if err != nil || rep.Ops != 20 || rep.Errors != 0 {
		t.Errorf("load after the clients left: %d ops, %d errors, %v", rep.Ops, rep.Errors, err)
	}
}
