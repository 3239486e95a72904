package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/snoopd/snoopd/distcache"
	"github.com/snoopd/snoopd/distcache/loadgen"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
)

// TestDemo: --demo alone gives a watcher live, verified transactions
// within seconds, and the demo proxy is not saved in the state dir.
func TestDemo(t *testing.T) {
	dir := tempDir(t)
	sock := filepath.Join(dir, "ctl.sock")
	stateDir := filepath.Join(dir, "state")
	sd := startSnoopd(t, "--control", "unix://"+sock, "--demo", "--demo-rate", "100", "--state-dir", stateDir)
	ctx := withTimeout(t)
	conn := dial(t, unixTarget(sock))

	p, err := snoopv1.NewProxyServiceClient(conn).GetProxy(ctx, &snoopv1.GetProxyRequest{Name: "demo"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(p.GetProxy().GetListenAddress(), "IP:127.0.0.1:") || p.GetProxy().GetState() != snoopv1.ProxyState_PROXY_STATE_LISTENING {
		t.Fatalf("demo proxy: %v", p.GetProxy())
	}
	if rec := sd.findLog("demo running: a cache server, and proxy demo in front of it with a gentle load"); rec["listen"] != p.GetProxy().GetListenAddress() {
		t.Errorf("demo log names %v, proxy listens on %s", rec["listen"], p.GetProxy().GetListenAddress())
	}

	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	stream, err := snoopv1.NewEventServiceClient(conn).WatchEvents(wctx, &snoopv1.WatchEventsRequest{
		Proxies: []string{"demo"}, Kinds: []snoopv1.EventKind{snoopv1.EventKind_EVENT_KIND_TRANSACTION},
	})
	if err != nil {
		t.Fatal(err)
	}
	for n := 0; n < 20; n++ {
		resp, err := stream.Recv()
		if err != nil {
			t.Fatalf("after %d demo transactions: %v", n, err)
		}
		if tx := resp.GetEvent().GetTransaction(); tx == nil || !strings.HasPrefix(string(tx.GetSessionId()), "demo-") {
			t.Fatalf("not a demo transaction: %v", resp)
		}
	}
	cancel()

	if code := sd.stop(); code != 0 {
		t.Fatalf("exit code %d:\n%s", code, sd.stderr)
	}
	rec := sd.findLog("demo load stopped")
	if rec == nil {
		t.Fatalf("no demo summary:\n%s", sd.stderr)
	}
	if rec["errors"] != float64(0) || rec["ops"].(float64) < 20 {
		t.Errorf("demo load: %v", rec)
	}
	state, err := os.ReadFile(filepath.Join(stateDir, "proxies.json"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(state), "demo") {
		t.Errorf("the ephemeral demo proxy was saved:\n%s", state)
	}
}

// TestDemoNameTaken: a saved proxy named demo conflicts with --demo.
func TestDemoNameTaken(t *testing.T) {
	dir := tempDir(t)
	stateDir := filepath.Join(dir, "state")
	if err := os.Mkdir(stateDir, 0o700); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(stateDir, "proxies.json"),
		`{"proxies": [{"name": "demo", "listen": "IP:127.0.0.1:0", "server": "IP:127.0.0.1:1"}]}`, 0o600)
	code, _, stderr := runToExit(t, "--control", "unix://"+filepath.Join(dir, "ctl.sock"), "--state-dir", stateDir, "--demo")
	if msg := failureLine(t, stderr); code != 1 || !strings.Contains(msg, "--demo") || !strings.Contains(msg, "exists already") {
		t.Fatalf("exit code %d: %s", code, msg)
	}
}

// TestMetricsEndpoint: /metrics serves per-proxy counters that match the
// load, over TCP and over a unix socket.
func TestMetricsEndpoint(t *testing.T) {
	for _, network := range []string{"tcp", "unix"} {
		t.Run(network, func(t *testing.T) {
			dir := tempDir(t)
			cache := startCache(t, dir)
			sock := filepath.Join(dir, "ctl.sock")
			listen := "IP:127.0.0.1:0"
			if network == "unix" {
				listen = "UNIX:" + filepath.Join(dir, "metrics.sock")
			}
			sd := startSnoopd(t, "--control", "unix://"+sock, "--metrics-listen", listen)
			addr, err := distcache.ParseAddr(sd.findLog("metrics listening")["addr"].(string))
			if err != nil {
				t.Fatal(err)
			}
			client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
				DisableKeepAlives: true,
				DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
					var d net.Dialer
					return d.DialContext(ctx, addr.Network().String(), addr.NetAddr())
				},
			}}

			ctx := withTimeout(t)
			p, err := snoopv1.NewProxyServiceClient(dial(t, unixTarget(sock))).CreateProxy(ctx, &snoopv1.CreateProxyRequest{Spec: &snoopv1.ProxySpec{
				Name: "m", Listen: "IP:127.0.0.1:0", Server: cache.Addr().String(),
			}})
			if err != nil {
				t.Fatal(err)
			}
			rep, err := loadgen.Run(ctx, loadgen.Config{
				Addr: distcache.MustParseAddr(p.GetProxy().GetListenAddress()), Conns: 2, Ops: 200, Verify: true, MaxData: 128,
			})
			if err != nil || rep.Errors != 0 {
				t.Fatalf("load: %v, %d errors", err, rep.Errors)
			}
			want := map[string]float64{
				`snoopd_proxy_connections_total{proxy="m"}`: float64(rep.Dials),
				`snoopd_proxies`: 1,
			}
			for _, op := range rep.ByOp {
				for result, n := range op.Results {
					want[fmt.Sprintf(`snoopd_proxy_transactions_total{op="%s",proxy="m",result="%s"}`, strings.ToLower(op.Op), result)] = float64(n)
				}
			}
			// The proxy counts a transaction as its answer passes, a
			// moment after the client may have it: poll, bounded.
			var body string
			deadline := time.Now().Add(testTimeout)
			for {
				body = scrape(t, client)
				if missing := compareMetrics(body, want); missing == "" {
					break
				} else if time.Now().After(deadline) {
					t.Fatalf("%s\nin:\n%s", missing, body)
				}
				time.Sleep(20 * time.Millisecond)
			}
			for _, name := range []string{"snoopd_proxy_latency_seconds_count{", "snoopd_proxy_bytes_total{direction=\"up\"", "go_goroutines"} {
				if !strings.Contains(body, name) {
					t.Errorf("scrape lacks %s", name)
				}
			}
			if network == "unix" {
				if fi, err := os.Lstat(addr.Path()); err != nil || fi.Mode().Perm() != 0o600 {
					t.Errorf("metrics socket: %v, %v; want mode 0600", fi.Mode(), err)
				}
			}
			if code := sd.stop(); code != 0 {
				t.Fatalf("exit code %d", code)
			}
			if _, err := client.Get("http://snoopd/metrics"); err == nil {
				t.Error("metrics still served after shutdown")
			}
		})
	}
}

func scrape(t *testing.T, client *http.Client) string {
	t.Helper()
	resp, err := client.Get("http://snoopd/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s: %s", resp.Status, b)
	}
	return string(b)
}

var sampleLine = regexp.MustCompile(`(?m)^(\S+) (\S+)$`)

// compareMetrics says which of want's samples the exposition text lacks
// or has another value for; "" when all match.
func compareMetrics(body string, want map[string]float64) string {
	got := map[string]float64{}
	for _, m := range sampleLine.FindAllStringSubmatch(body, -1) {
		if v, err := strconv.ParseFloat(m[2], 64); err == nil {
			got[m[1]] = v
		}
	}
	var diffs []string
	for k, v := range want {
		if g, ok := got[k]; !ok || g != v {
			diffs = append(diffs, fmt.Sprintf("%s: got %v (present %v), want %v", k, g, ok, v))
		}
	}
	return strings.Join(diffs, "\n")
}
