package main

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/snoopd/snoopd/distcache"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
	"github.com/snoopd/snoopd/internal/skip"
)

func TestMetricsOffThisMachineNeedTLS(t *testing.T) {
	dir := tempDir(t)
	sock := "unix://" + filepath.Join(dir, "ctl.sock")
	p := newPKI(t)
	for _, tc := range []struct {
		args    []string
		err     string // a usage error containing this, or ""
		withTLS bool
	}{
		{args: []string{"--metrics-listen", "IP:0.0.0.0:9464"}, err: "need TLS (--tls-cert and --tls-key) or an explicit --metrics-insecure"},
		{args: []string{"--metrics-listen", "IP:9464"}, err: "--metrics-insecure"},
		{args: []string{"--metrics-listen", "IP:192.0.2.1:9464"}, err: "--metrics-insecure"},
		{args: []string{"--metrics-listen", "IP:0.0.0.0:9464", "--metrics-insecure"}},
		{args: []string{"--metrics-listen", "IP:0.0.0.0:9464", "--tls-cert", p.srvCert, "--tls-key", p.srvKey}, withTLS: true},
		{args: []string{"--metrics-listen", "IP:127.0.0.1:9464"}},
		{args: []string{"--metrics-listen", "IP:localhost:9464"}},
		{args: []string{"--metrics-listen", "UNIX:" + filepath.Join(dir, "m.sock")}},
		{args: []string{"--metrics-listen", "IP:127.0.0.1:9464", "--tls-cert", p.srvCert, "--tls-key", p.srvKey}},
	} {
		args := append([]string{"--control", sock}, tc.args...)
		o, err := parseArgs(args)
		switch {
		case tc.err != "":
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: %v, want an error containing %q", tc.args, err, tc.err)
			}
			continue
		case err != nil:
			t.Errorf("%q: %v", tc.args, err)
			continue
		}
		if o.metricsTLS != tc.withTLS {
			t.Errorf("%q: metrics TLS %v, want %v", tc.args, o.metricsTLS, tc.withTLS)
		}
	}
	// The real start-up refuses it with one line and exit status 2, and
	// binds nothing.
	code, _, stderr := runToExit(t, "--control", sock, "--metrics-listen", "IP:0.0.0.0:0")
	if code != 2 || strings.Count(strings.TrimSpace(stderr), "\n") != 0 || !strings.Contains(stderr, "--metrics-insecure") {
		t.Fatalf("exit %d: %s", code, stderr)
	}
}

func TestMetricsServedWithTLS(t *testing.T) {
	// Served as they would be off this machine, but on loopback, since
	// tests listen on nothing else.
	dir := tempDir(t)
	p := newPKI(t)
	o, err := parseArgs([]string{"--control", "unix://" + filepath.Join(dir, "ctl.sock"), "--metrics-listen", "IP:127.0.0.1:0",
		"--tls-cert", p.srvCert, "--tls-key", p.srvKey, "--log-level", "error"})
	if err != nil {
		t.Fatal(err)
	}
	o.metricsTLS = true
	ctx, cancel := context.WithCancel(context.Background())
	inst, err := start(ctx, o, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan int)
	go func() { done <- inst.serve(ctx) }()
	defer func() {
		cancel()
		<-done
	}()
	addr := distcache.MustParseAddr(inst.metrics.display)
	get := func(cfg *tls.Config, scheme string) (*http.Response, error) {
		c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg, DisableKeepAlives: true}}
		return c.Get(scheme + "://" + addr.NetAddr() + "/metrics")
	}
	resp, err := get(&tls.Config{RootCAs: p.ca, MinVersion: tls.VersionTLS12}, "https")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), "snoopd_") {
		t.Fatalf("GET over TLS: %s\n%.200s", resp.Status, b)
	}
	if resp, err := get(nil, "http"); err == nil && resp.StatusCode == http.StatusOK {
		resp.Body.Close()
		t.Fatal("plain HTTP answered on a TLS metrics endpoint")
	} else if err == nil {
		resp.Body.Close()
	}
}

// readNotify reads one datagram from c.
func readNotify(t *testing.T, c *net.UnixConn) string {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(testTimeout))
	b := make([]byte, 4096)
	n, err := c.Read(b)
	if err != nil {
		t.Fatalf("waiting for a notification: %v", err)
	}
	return string(b[:n])
}

// TestSystemdNotify runs the real snoopd as systemd would run a
// Type=notify service: it must send READY=1 only once it answers on its
// control socket, and STOPPING=1 when SIGTERM stops it.
func TestSystemdNotify(t *testing.T) {
	if testing.Short() {
		skip.ByDesign(t, "-short: builds and runs the binaries")
	}
	bin, _ := buildBinaries(t)
	dir := tempDir(t)
	notifyPath := filepath.Join(dir, "notify")
	nc, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: notifyPath, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	sock := filepath.Join(dir, "ctl.sock")
	stateDir := filepath.Join(dir, "state")
	cmd := exec.Command(bin, "--control", "unix://"+sock, "--state-dir", stateDir, "--log-level", "warn")
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+notifyPath)
	stderr := &syncBuffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		cmd.Process.Kill()
		<-exited
	}()

	msg := readNotify(t, nc)
	if !strings.HasPrefix(msg, "READY=1\n") || !strings.Contains(msg, "STATUS=serving 0 proxies") {
		t.Fatalf("first notification %q", msg)
	}
	// Ready means ready: the control socket answers now, with no retry.
	conn := dial(t, unixTarget(sock))
	ctx := withTimeout(t)
	if _, err := snoopv1.NewDaemonServiceClient(conn).GetDaemonInfo(ctx, &snoopv1.GetDaemonInfoRequest{}); err != nil {
		t.Fatalf("after READY=1: %v", err)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if msg := readNotify(t, nc); msg != "STOPPING=1" {
		t.Fatalf("at SIGTERM: %q", msg)
	}
	select {
	case err := <-exited:
		exited <- err
		if err != nil {
			t.Fatalf("snoopd exited with %v:\n%s", err, stderr.String())
		}
	case <-time.After(testTimeout):
		t.Fatal("snoopd did not stop")
	}
}

// TestSystemdUnit checks contrib/snoopd.service: the directives a service
// must have, and, where systemd-analyze is installed, its own verdict.
func TestSystemdUnit(t *testing.T) {
	unit, err := os.ReadFile(filepath.Join("..", "..", "contrib", "snoopd.service"))
	if err != nil {
		t.Fatal(err)
	}
	text := string(unit)
	for _, want := range []string{
		"Type=notify", "RuntimeDirectory=snoopd", "StateDirectory=snoopd", "--control unix:///run/snoopd/snoopd.sock",
		"--state-dir /var/lib/snoopd", "NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes",
		"RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6", "LimitNOFILE=",
	} {
		if !strings.Contains(text, "\n"+want) && !strings.Contains(text, " "+want) {
			t.Errorf("contrib/snoopd.service lacks %q", want)
		}
	}
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		skip.Missing(t, "systemd-analyze is not installed, so the unit is not verified by systemd")
	}
	if testing.Short() {
		skip.ByDesign(t, "-short: builds the binary for systemd-analyze verify")
	}
	// verify checks that ExecStart's binary exists: point it at a build.
	bin, _ := buildBinaries(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "snoopd.service")
	writeFile(t, path, strings.ReplaceAll(text, "ExecStart=/usr/local/bin/snoopd ", "ExecStart="+bin+" "), 0o644)
	out, err := exec.Command(sa, "verify", path).CombinedOutput()
	var exitErr *exec.ExitError
	if err != nil && !errors.As(err, &exitErr) {
		t.Fatal(err)
	}
	// verify warns about unknown or misspelt directives without failing:
	// any line about the unit is a finding.
	if err != nil || strings.Contains(string(out), "snoopd.service") {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// TestHardeningEndToEnd drives the real snoopd at the edges of its
// control API: more watchers than allowed, a history asked for beyond
// what is held, a delete whose caller gives up during the drain, health
// checks that name a service and a lower-case bearer scheme.
func TestHardeningEndToEnd(t *testing.T) {
	if testing.Short() {
		skip.ByDesign(t, "-short: builds and runs the binaries")
	}
	bin, _ := buildBinaries(t)
	dir := tempDir(t)
	cache := startCache(t, dir)
	tokenFile := filepath.Join(dir, "token")
	writeFile(t, tokenFile, "tok\n", 0o600)
	sock := filepath.Join(dir, "ctl.sock")
	cmd := exec.Command(bin, "--control", "unix://"+sock, "--max-watchers", "2", "--token-file", tokenFile, "--log-level", "warn")
	stderr := &syncBuffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	}()
	conn := dial(t, unixTarget(sock))
	ctx := metadata.AppendToOutgoingContext(withTimeout(t), "authorization", "bearer tok")
	hc := healthpb.NewHealthClient(conn)
	for deadline := time.Now().Add(testTimeout); ; time.Sleep(10 * time.Millisecond) {
		r, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: "snoop.v1.ProxyService"})
		if err == nil && r.GetStatus() == healthpb.HealthCheckResponse_SERVING {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("health of snoop.v1.ProxyService: %v %v\n%s", r, err, stderr.String())
		}
	}
	pc := snoopv1.NewProxyServiceClient(conn)
	ec := snoopv1.NewEventServiceClient(conn)
	created, err := pc.CreateProxy(ctx, &snoopv1.CreateProxyRequest{Spec: &snoopv1.ProxySpec{
		Name: "h", Listen: "UNIX:" + filepath.Join(dir, "p.sock"), Server: cache.Addr().String(),
	}})
	if err != nil {
		t.Fatal(err)
	}

	// Two watchers that never read, then a third refused with the limit.
	for range 2 {
		s, err := ec.WatchEvents(ctx, &snoopv1.WatchEventsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Header(); err != nil {
			t.Fatalf("headers: %v", err)
		}
	}
	s, err := ec.WatchEvents(ctx, &snoopv1.WatchEventsRequest{History: 4294967295})
	if err == nil {
		_, err = s.Recv()
	}
	if st, _ := status.FromError(err); st.Code() != codes.ResourceExhausted || !strings.Contains(st.Message(), "--max-watchers") {
		t.Fatalf("a third watcher: %v", err)
	}

	// A client connection through the proxy, then a delete with an hour's
	// drain whose caller gives up: the proxy is gone all the same.
	pconn, err := net.Dial("unix", strings.TrimPrefix(created.GetProxy().GetListenAddress(), "UNIX:"))
	if err != nil {
		t.Fatal(err)
	}
	defer pconn.Close()
	for deadline := time.Now().Add(testTimeout); ; time.Sleep(10 * time.Millisecond) {
		r, err := pc.ListConnections(ctx, &snoopv1.ListConnectionsRequest{Proxy: "h"})
		if err == nil && len(r.GetConnections()) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("connection not listed: %v %v", r, err)
		}
	}
	dctx, cancel := context.WithCancel(ctx)
	deleted := make(chan error, 1)
	go func() {
		_, err := pc.DeleteProxy(dctx, &snoopv1.DeleteProxyRequest{Name: "h", Drain: durationpb.New(time.Hour)})
		deleted <- err
	}()
	for deadline := time.Now().Add(testTimeout); ; time.Sleep(10 * time.Millisecond) {
		r, err := pc.GetProxy(ctx, &snoopv1.GetProxyRequest{Name: "h"})
		if err == nil && strings.Contains(r.GetProxy().GetError(), "draining 1 connections") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not draining: %v %v", r, err)
		}
	}
	cancel()
	if err := <-deleted; status.Code(err) != codes.Canceled {
		t.Fatalf("the abandoned delete: %v", err)
	}
	for deadline := time.Now().Add(testTimeout); ; time.Sleep(10 * time.Millisecond) {
		_, err := pc.GetProxy(ctx, &snoopv1.GetProxyRequest{Name: "h"})
		if status.Code(err) == codes.NotFound {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("proxy still there after its delete was abandoned: %v", err)
		}
	}
	pconn.SetReadDeadline(time.Now().Add(testTimeout))
	if _, err := pconn.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("the connection left was not cut: %v", err)
	}
}
