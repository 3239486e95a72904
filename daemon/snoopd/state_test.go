package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/snoopd/snoopd/distcache"
	"github.com/snoopd/snoopd/distcache/loadgen"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
	"github.com/snoopd/snoopd/internal/testutil"
)

// TestRestartRestoresProxies: proxies created through the API come back
// after a restart with the same names and specs; a fixed address is the
// same address, and the proxies carry traffic again.
func TestRestartRestoresProxies(t *testing.T) {
	dir := tempDir(t)
	cache := startCache(t, dir)
	sock := filepath.Join(dir, "ctl.sock")
	stateDir := filepath.Join(dir, "state")
	fixedTCP := "IP:" + testutil.FreeAddr(t)
	specs := []*snoopv1.ProxySpec{
		{Name: "any-port", Listen: "IP:127.0.0.1:0", Server: cache.Addr().String()},
		{Name: "fixed-tcp", Listen: fixedTCP, Server: cache.Addr().String(), MaxConnections: 7},
		{Name: "fixed-unix", Listen: "UNIX:" + filepath.Join(dir, "fu.sock"), Server: cache.Addr().String()},
		{Name: "off", Listen: "IP:127.0.0.1:0", Server: cache.Addr().String(), Enabled: proto.Bool(false)},
	}

	first := startSnoopd(t, "--control", "unix://"+sock, "--state-dir", stateDir)
	ctx := withTimeout(t)
	pc := snoopv1.NewProxyServiceClient(dial(t, unixTarget(sock)))
	for _, s := range specs {
		if _, err := pc.CreateProxy(ctx, &snoopv1.CreateProxyRequest{Spec: s}); err != nil {
			t.Fatalf("create %s: %v", s.GetName(), err)
		}
	}
	before, err := pc.ListProxies(ctx, &snoopv1.ListProxiesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if code := first.stop(); code != 0 {
		t.Fatalf("first run: exit code %d:\n%s", code, first.stderr)
	}
	if _, err := os.Stat(filepath.Join(stateDir, "proxies.json")); err != nil {
		t.Fatalf("no state file after the first run: %v", err)
	}

	second := startSnoopd(t, "--control", "unix://"+sock, "--state-dir", stateDir)
	pc = snoopv1.NewProxyServiceClient(dial(t, unixTarget(sock)))
	after, err := pc.ListProxies(ctx, &snoopv1.ListProxiesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(after.GetProxies()) != len(specs) {
		t.Fatalf("after restart %d proxies, want %d: %v", len(after.GetProxies()), len(specs), after)
	}
	for i, p := range after.GetProxies() {
		old := before.GetProxies()[i]
		if !proto.Equal(p.GetSpec(), old.GetSpec()) {
			t.Errorf("%s: spec %v after restart, was %v", old.GetSpec().GetName(), p.GetSpec(), old.GetSpec())
		}
		if p.GetState() != old.GetState() {
			t.Errorf("%s: state %v after restart, was %v", p.GetSpec().GetName(), p.GetState(), old.GetState())
		}
		if name := p.GetSpec().GetName(); strings.HasPrefix(name, "fixed") && p.GetListenAddress() != old.GetListenAddress() {
			t.Errorf("%s: listens on %s after restart, was %s", name, p.GetListenAddress(), old.GetListenAddress())
		}
	}
	if got := after.GetProxies()[1].GetListenAddress(); got != fixedTCP {
		t.Errorf("fixed-tcp listens on %s, want %s", got, fixedTCP)
	}
	if st := after.GetProxies()[2].GetState(); st != snoopv1.ProxyState_PROXY_STATE_LISTENING {
		t.Errorf("fixed-unix: %v", st)
	}
	if st := after.GetProxies()[3].GetState(); st != snoopv1.ProxyState_PROXY_STATE_DISABLED {
		t.Errorf("off: %v", st)
	}

	for _, name := range []string{"fixed-tcp", "fixed-unix", "any-port"} {
		p, err := pc.GetProxy(ctx, &snoopv1.GetProxyRequest{Name: name})
		if err != nil {
			t.Fatal(err)
		}
		rep, err := loadgen.Run(ctx, loadgen.Config{
			Addr: distcache.MustParseAddr(p.GetProxy().GetListenAddress()), Ops: 50, Verify: true, MaxData: 128,
		})
		if err != nil || rep.Errors != 0 || rep.Ops != 50 {
			t.Errorf("%s after restart: %d ops, %d errors, %v: %v", name, rep.Ops, rep.Errors, err, rep.ErrorSamples)
		}
	}
	if code := second.stop(); code != 0 {
		t.Fatalf("second run: exit code %d:\n%s", code, second.stderr)
	}
}

// TestDamagedStateFile: a state file that does not parse, or holds an
// invalid entry, stops the start-up with a message that names the file
// and the problem, and the file is left as it was.
func TestDamagedStateFile(t *testing.T) {
	for _, tc := range []struct {
		name, content string
		want          []string
	}{
		{"garbage", "{\"proxies\": [", []string{"damaged", "not a proxy set"}},
		{"not-json", "proxies: []\n", []string{"damaged", "not a proxy set"}},
		{"invalid-entry", `{"proxies": [{"name": "ok", "listen": "IP:127.0.0.1:0", "server": "IP:127.0.0.1:1"},
			{"name": "bad name!", "listen": "IP:127.0.0.1:0", "server": "IP:127.0.0.1:1"}]}`, []string{"damaged", "entry 1", `"bad name!"`, "name"}},
		{"missing-server", `{"proxies": [{"name": "a", "listen": "IP:127.0.0.1:0"}]}`, []string{"entry 0", `"a"`, "server"}},
		{"duplicate", `{"proxies": [{"name": "a", "listen": "IP:127.0.0.1:0", "server": "IP:127.0.0.1:1"},
			{"name": "a", "listen": "IP:127.0.0.1:0", "server": "IP:127.0.0.1:1"}]}`, []string{"entry 1", "declared twice"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := tempDir(t)
			stateDir := filepath.Join(dir, "state")
			if err := os.Mkdir(stateDir, 0o700); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(stateDir, "proxies.json")
			writeFile(t, path, tc.content, 0o600)
			sock := filepath.Join(dir, "ctl.sock")

			code, _, stderr := runToExit(t, "--control", "unix://"+sock, "--state-dir", stateDir)
			if code != 1 {
				t.Fatalf("exit code %d, want 1:\n%s", code, stderr)
			}
			msg := failureLine(t, stderr)
			for _, want := range append([]string{path}, tc.want...) {
				if !strings.Contains(msg, want) {
					t.Errorf("message lacks %q: %s", want, msg)
				}
			}
			if b, err := os.ReadFile(path); err != nil || string(b) != tc.content {
				t.Errorf("state file changed: %q, %v", b, err)
			}
			if _, err := os.Lstat(sock); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("control socket left behind by the failed start (%v)", err)
			}
		})
	}
}

// TestConfigFile: --config applies a proxy set at start; a damaged one
// stops the start-up naming the file, the entry and the reason.
func TestConfigFile(t *testing.T) {
	dir := tempDir(t)
	cache := startCache(t, dir)
	cfg := filepath.Join(dir, "proxies.json")
	writeFile(t, cfg, fmt.Sprintf(`{"proxies": [
		{"name": "one", "listen": "UNIX:%s", "server": %q},
		{"name": "two", "listen": "IP:127.0.0.1:0", "server": %q, "enabled": false}
	]}`, filepath.Join(dir, "one.sock"), cache.Addr().String(), cache.Addr().String()), 0o644)
	sock := filepath.Join(dir, "ctl.sock")
	sd := startSnoopd(t, "--control", "unix://"+sock, "--config", cfg)
	ctx := withTimeout(t)
	list, err := snoopv1.NewProxyServiceClient(dial(t, unixTarget(sock))).ListProxies(ctx, &snoopv1.ListProxiesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if ps := list.GetProxies(); len(ps) != 2 || ps[0].GetSpec().GetName() != "one" ||
		ps[0].GetState() != snoopv1.ProxyState_PROXY_STATE_LISTENING || ps[1].GetState() != snoopv1.ProxyState_PROXY_STATE_DISABLED {
		t.Fatalf("proxies after --config: %v", ps)
	}
	rep, err := loadgen.Run(ctx, loadgen.Config{Addr: distcache.MustParseAddr(list.GetProxies()[0].GetListenAddress()), Ops: 20, Verify: true, MaxData: 64})
	if err != nil || rep.Errors != 0 {
		t.Fatalf("load through the configured proxy: %v, %d errors", err, rep.Errors)
	}
	if code := sd.stop(); code != 0 {
		t.Fatalf("exit code %d", code)
	}
}

func TestDamagedConfigFile(t *testing.T) {
	dir := tempDir(t)
	notSocket := filepath.Join(dir, "plain-file")
	writeFile(t, notSocket, "not a socket", 0o600)
	for _, tc := range []struct {
		name, content string
		want          []string
	}{
		{"garbage", "{{{", []string{"not a proxy set"}},
		{"unknown-field", `{"proxies": [{"name": "a", "colour": "red"}]}`, []string{"not a proxy set", "colour"}},
		{"missing-listen", `{"proxies": [{"name": "a", "listen": "IP:127.0.0.1:0", "server": "IP:127.0.0.1:1"},
			{"name": "b", "server": "IP:127.0.0.1:1"}]}`, []string{"entry 1", `"b"`, "listen"}},
		{"bad-server", `{"proxies": [{"name": "a", "listen": "IP:127.0.0.1:0", "server": "IP:127.0.0.1:99999"}]}`, []string{"entry 0", `"a"`, "server"}},
		{"duplicate", `{"proxies": [{"name": "a", "listen": "IP:127.0.0.1:0", "server": "IP:127.0.0.1:1"},
			{"name": "a", "listen": "IP:127.0.0.1:0", "server": "IP:127.0.0.1:1"}]}`, []string{"entry 1", "declared twice"}},
		// Valid, but the listen path holds a file that is not a socket:
		// the bind fails, naming the proxy and the path.
		{"cannot-bind", fmt.Sprintf(`{"proxies": [{"name": "blocked", "listen": "UNIX:%s", "server": "IP:127.0.0.1:1"}]}`, notSocket),
			[]string{`"blocked"`, notSocket, "not a socket"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := filepath.Join(dir, tc.name+".json")
			writeFile(t, cfg, tc.content, 0o644)
			sock := filepath.Join(dir, "ctl.sock")
			code, _, stderr := runToExit(t, "--control", "unix://"+sock, "--config", cfg)
			if code != 1 {
				t.Fatalf("exit code %d, want 1:\n%s", code, stderr)
			}
			msg := failureLine(t, stderr)
			for _, want := range append([]string{"--config", cfg}, tc.want...) {
				if !strings.Contains(msg, want) {
					t.Errorf("message lacks %q: %s", want, msg)
				}
			}
			if _, err := os.Lstat(sock); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("control socket left behind by the failed start (%v)", err)
			}
		})
	}
	t.Run("missing-file", func(t *testing.T) {
		missing := filepath.Join(dir, "nope.json")
		code, _, stderr := runToExit(t, "--control", "unix://"+filepath.Join(dir, "ctl.sock"), "--config", missing)
		if msg := failureLine(t, stderr); code != 1 || !strings.Contains(msg, missing) || !strings.Contains(msg, "no such file") {
			t.Fatalf("exit code %d: %s", code, msg)
		}
	})
}

// failureLine returns the "snoopd: ..." line a failed start prints.
func failureLine(t *testing.T, stderr string) string {
	t.Helper()
	for _, line := range strings.Split(stderr, "\n") {
		if strings.HasPrefix(line, "snoopd: ") {
			return line
		}
	}
	t.Fatalf("no \"snoopd: \" line in:\n%s", stderr)
	return ""
}
