package ctl

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/snoopd/snoopd/ctl/capture"
	"github.com/snoopd/snoopd/ctl/format"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
	"github.com/snoopd/snoopd/internal/testutil"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func at(ms int) *timestamppb.Timestamp {
	return timestamppb.New(testNow.Add(time.Duration(ms) * time.Millisecond))
}

func txEvent(ms int, proxy string, conn uint64, uid uint32, op snoopv1.Op, id []byte, result string, lat time.Duration) *snoopv1.WatchEventsResponse {
	return &snoopv1.WatchEventsResponse{Event: &snoopv1.Event{
		Kind: snoopv1.EventKind_EVENT_KIND_TRANSACTION, Time: at(ms), Proxy: proxy, ConnectionId: conn, Client: "127.0.0.1:5000",
		Transaction: &snoopv1.Transaction{Op: op, RequestUid: uid, SessionId: id, SessionIdLength: uint32(len(id)),
			RequestSize: 40, ResponseSize: 1, Result: result, Latency: durationpb.New(lat), Data: []byte("secret")},
	}}
}

// testEvents is the fake daemon's stream: two proxies, every kind, one
// drop notice.
func testEvents() []*snoopv1.WatchEventsResponse {
	id := []byte{0x0a, 0x1b, 0x2c, 0x3d, 0x4e, 0x5f, 0x60, 0x71, 0x82}
	ev := func(e *snoopv1.Event) *snoopv1.WatchEventsResponse { return &snoopv1.WatchEventsResponse{Event: e} }
	return []*snoopv1.WatchEventsResponse{
		ev(&snoopv1.Event{Kind: snoopv1.EventKind_EVENT_KIND_CONNECTION_OPENED, Time: at(0), Proxy: "web", ConnectionId: 1, Client: "127.0.0.1:5000"}),
		txEvent(1, "web", 1, 1, snoopv1.Op_OP_ADD, id, "ok", 300*time.Microsecond),
		txEvent(2, "web", 1, 2, snoopv1.Op_OP_GET, id, "hit", 3*time.Millisecond),
		txEvent(3, "web", 1, 3, snoopv1.Op_OP_GET, []byte{0xff}, "miss", 200*time.Microsecond),
		{Dropped: 5},
		txEvent(4, "api", 2, 1, snoopv1.Op_OP_ADD, id, "exists", 100*time.Microsecond),
		ev(&snoopv1.Event{Kind: snoopv1.EventKind_EVENT_KIND_PROTOCOL_ERROR, Time: at(5), Proxy: "api", ConnectionId: 2,
			ProtocolError: &snoopv1.ProtocolError{Rule: "version", Direction: "client->server", Message: "bad version"}}),
		ev(&snoopv1.Event{Kind: snoopv1.EventKind_EVENT_KIND_CONNECTION_CLOSED, Time: at(6), Proxy: "web", ConnectionId: 1, Client: "127.0.0.1:5000",
			Closed: &snoopv1.ConnectionClosed{Duration: durationpb.New(6 * time.Millisecond), Transactions: 3, Reason: "client closed"}}),
		ev(&snoopv1.Event{Kind: snoopv1.EventKind_EVENT_KIND_CONNECT_FAILED, Time: at(7), Proxy: "api", Client: "127.0.0.1:5001", Error: "connection refused"}),
	}
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		os.MkdirAll("testdata", 0o755)
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (go test -update creates it)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs (go test -update rewrites it)\n--- got\n%s--- want\n%s", name, got, want)
	}
}

func TestReorderArgs(t *testing.T) {
	app := (&env{}).newApp()
	tests := []struct {
		in, want string
	}{
		{"add demo --listen :0 --server IP:h:1", "add --listen :0 --server IP:h:1 -- demo"},
		{"list -o json", "-o json list"},
		{"-a unix:///x list --output=json", "-a unix:///x --output=json list"},
		{"tail web --op get,add api --errors", "tail --op get,add --errors -- web api"},
		{"read - --count 3", "read --count 3 -- -"},
		{"remove a -- --b", "remove -- a --b"},
		{"add x --disabled y", "add --disabled -- x y"},
		{"save f --bogus v", "save --bogus -- f v"},
		{"", ""},
		{"--help", "--help"},
		{"help add", "help add"},
		{"tail --generate-bash-completion", "tail --generate-bash-completion"},
	}
	for _, tc := range tests {
		got, err := reorderArgs(app, strings.Fields(tc.in))
		if err != nil || strings.Join(got, " ") != tc.want {
			t.Errorf("reorderArgs(%q) = %q, %v; want %q", tc.in, strings.Join(got, " "), err, tc.want)
		}
	}
}

// TestUsageErrors checks that every mistake on the command line exits 2
// with one line that says what is wrong, before any call to the daemon.
func TestUsageErrors(t *testing.T) {
	dir := t.TempDir()
	existing := filepath.Join(dir, "f")
	os.WriteFile(existing, nil, 0o600)
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"lsit"}, `unknown command "lsit": did you mean "list"?`},
		{[]string{"frobnicate"}, `unknown command "frobnicate"`},
		{[]string{"list", "--bogus"}, "unknown flag --bogus (see 'snoopctl list --help')"},
		{[]string{"list", "extra"}, "usage: snoopctl list"},
		{[]string{"-o", "yaml", "list"}, `-o "yaml": want text or json`},
		{[]string{"--timeout", "soon", "list"}, `--timeout "soon": want a duration with a unit, such as 500ms`},
		{[]string{"-a", "nowhere", "list"}, "bad --address (or SNOOPD_ADDRESS)"},
		{[]string{"-a", "IP:7000", "list"}, "it needs a host and a port"},
		{[]string{"add"}, "usage: snoopctl add NAME"},
		{[]string{"add", "x", "--listen", ":0"}, "add needs --listen ADDR and --server ADDR"},
		{[]string{"add", "x", "--listen", "nonsense", "--server", "IP:h:1"}, "--listen: invalid address"},
		{[]string{"add", "x", "--listen", ":0", "--server", "IP:0"}, "--server: invalid address"},
		{[]string{"add", "x", "--listen", ":0", "--server", "IP:h:1", "--on-corrupt", "ignore"}, `--on-corrupt "ignore"`},
		{[]string{"add", "x", "--listen", ":0", "--server", "IP:h:1", "--max-conns", "-1"}, `--max-connections "-1": want a whole number`},
		{[]string{"remove"}, "usage: snoopctl remove NAME..."},
		{[]string{"remove", "x", "--drain", "-1s"}, "--drain -1s is negative"},
		{[]string{"kill-conn", "web", "abc"}, `connection id "abc"`},
		{[]string{"apply"}, "apply needs -f FILE"},
		{[]string{"tail", "--op", "put"}, `--op "put"`},
		{[]string{"tail", "--status", "fine"}, `--status "fine"`},
		{[]string{"tail", "--events", "tx,bogus"}, `--events "bogus"`},
		{[]string{"tail", "--session", "0xyz"}, `--session "0xyz": not hex`},
		{[]string{"tail", "--session", "0xabc"}, "odd number of hex digits"},
		{[]string{"tail", "--session", "base64:!!"}, "not base64"},
		{[]string{"tail", "--min-latency", "fast"}, `--min-latency "fast": want a duration with a unit`},
		{[]string{"tail", "--count", "-3"}, "--count -3 is negative"},
		{[]string{"tail", "--errors", "--events", "conn"}, "selects nothing"},
		{[]string{"save"}, "usage: snoopctl save FILE"},
		{[]string{"save", "-"}, "save writes to a file"},
		{[]string{"save", existing, "--append", "--force"}, "--append and --force exclude each other"},
		{[]string{"save", dir, "--force"}, "save: " + dir + " is a directory; name a file in it, such as " + filepath.Join(dir, "capture.jsonl")},
		{[]string{"save", existing, "--rotate-size", "huge"}, "--rotate-size: size"},
		{[]string{"add", "p", "--listen", ":1", "--server", "127.0.0.1:2", "--capture-limit", "10 parsecs"}, `--capture-limit: size "10 parsecs": want a number with an optional unit K, M, G or T (powers of 1024)`},
		{[]string{"add", "p", "--listen", ":1", "--server", "127.0.0.1:2", "--capture-limit", "3G"}, "--capture-limit 3G: must be below 2G"},
		{[]string{"save", existing, "--rotate-size", "10"}, "--rotate-size 10 is 10 bytes; it must be at least 64K (65536 bytes)"},
		{[]string{"save", existing, "--rotate-size", "1MB", "--rotate-keep", "-1"}, "--rotate-keep -1 is negative"},
		{[]string{"read"}, "usage: snoopctl read FILE..."},
		{[]string{"read", existing, "--status", "nope"}, `--status "nope"`},
		{[]string{"stats", "--interval", "0s", "--watch"}, "--interval 0s: must be positive"},
		{[]string{"stats", "--interval", "1s"}, "--interval sets how often --watch shows; add --watch, or leave --interval out"},
		{[]string{"completion", "tcsh"}, `completion "tcsh"`},
		{[]string{"--tls-cert", "c.pem", "-a", "127.0.0.1:1", "list"}, "--tls-cert and --tls-key go together"},
		{[]string{"--tls-cert", "c.pem", "--tls-key", "k.pem", "-a", "127.0.0.1:1", "list"}, "--tls-cert needs --tls-ca"},
		{[]string{"--tls-ca", "ca.pem", "list"}, "TLS flags apply to TCP addresses"},
		{[]string{"help", "nosuch"}, "No help topic for 'nosuch'"},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			r := run(t, tc.args...)
			wantFail(t, r, ExitUsage, tc.want)
			if strings.Count(r.err, "\n") != 1 {
				t.Errorf("stderr has more than one line: %q", r.err)
			}
		})
	}
}

// TestDaemonDown covers the ways the daemon cannot be reached.
func TestDaemonDown(t *testing.T) {
	dir := testutil.SocketDir(t)
	missing := filepath.Join(dir, "none.sock")
	regular := filepath.Join(dir, "file")
	os.WriteFile(regular, nil, 0o600)
	stale := filepath.Join(dir, "stale.sock")
	l, err := net.Listen("unix", stale)
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	// A TCP port that nobody listens on, held so that nobody can.
	closedPort := testutil.RefusingAddr(t)

	tests := []struct {
		addr, want string
	}{
		{"unix://" + missing, "cannot reach snoopd at unix://" + missing + ": no such file (is snoopd running? set --address or SNOOPD_ADDRESS)"},
		{"UNIX:" + regular, "cannot reach snoopd at unix://" + regular + ": not a socket"},
		{"unix://" + stale, "cannot reach snoopd at unix://" + stale + ": connection refused (is snoopd running?"},
		{closedPort, "cannot reach snoopd at " + closedPort + ": connection refused (is snoopd running?"},
	}
	for _, tc := range tests {
		for _, cmd := range [][]string{{"list"}, {"tail"}, {"version"}, {"save", filepath.Join(dir, "out.jsonl")}} {
			t.Run(tc.addr+" "+cmd[0], func(t *testing.T) {
				r := run(t, append([]string{"-a", tc.addr}, cmd...)...)
				wantFail(t, r, ExitFailure, tc.want)
			})
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "out.jsonl")); err == nil {
		t.Error("save left a file behind although it saved nothing")
	}
	t.Run("env", func(t *testing.T) {
		t.Setenv("SNOOPD_ADDRESS", "unix://"+missing)
		wantFail(t, run(t, "list"), ExitFailure, "cannot reach snoopd at unix://"+missing+": no such file")
	})
}

func TestProxyCommands(t *testing.T) {
	f, addr := startFake(t)
	wantOK(t, run(t, "-a", addr, "add", "web", "--listen", "IP:127.0.0.1:0", "--server", "UNIX:/run/dc.sock", "--max-conns", "10", "--capture-data", "--capture-limit", "1MB"))
	r := run(t, "-a", addr, "add", "api", "--listen", "127.0.0.1:0", "--server", "IP:127.0.0.1:9001", "--disabled", "--on-corrupt", "passthrough", "--dial-timeout", "2s")
	wantOK(t, r)
	if r.out != "127.0.0.1:40001\n" {
		t.Errorf("add printed %q, want the real listen address", r.out)
	}
	f.mu.Lock()
	api := f.proxies["api"].GetSpec()
	if api.GetEnabled() || api.GetOnCorrupt() != snoopv1.CorruptPolicy_CORRUPT_POLICY_PASSTHROUGH || api.GetDialTimeout().AsDuration() != 2*time.Second {
		t.Errorf("add sent spec %v", api)
	}
	if web := f.proxies["web"].GetSpec(); !web.GetEnabled() || web.GetMaxConnections() != 10 || !web.GetCaptureData() || web.GetCaptureLimit() != 1<<20 {
		t.Errorf("add sent spec %v", web)
	}
	f.mu.Unlock()
	// Timeouts: unset flags stay unset (the daemon's defaults), 0 is sent
	// as an explicit zero (off), a negative one is a usage error.
	wantOK(t, run(t, "-a", addr, "add", "slow", "--listen", "IP:127.0.0.1:0", "--server", "UNIX:/run/dc.sock",
		"--idle-timeout", "0", "--response-timeout", "2s"))
	f.mu.Lock()
	slow := f.proxies["slow"].GetSpec()
	if slow.IdleTimeout == nil || slow.GetIdleTimeout().AsDuration() != 0 || slow.MessageTimeout != nil ||
		slow.GetResponseTimeout().AsDuration() != 2*time.Second {
		t.Errorf("add sent timeouts idle %v, message %v, response %v", slow.IdleTimeout, slow.MessageTimeout, slow.ResponseTimeout)
	}
	if web := f.proxies["web"].GetSpec(); web.IdleTimeout != nil || web.MessageTimeout != nil || web.ResponseTimeout != nil {
		t.Errorf("add without timeout flags sent %v", web)
	}
	delete(f.proxies, "slow")
	f.mu.Unlock()
	wantFail(t, run(t, "-a", addr, "add", "neg", "--listen", ":0", "--server", "IP:h:1", "--message-timeout", "-1s"), ExitUsage,
		"--message-timeout -1s: must not be negative")
	help := run(t, "add", "--help")
	wantOK(t, help)
	for _, want := range []string{"--idle-timeout value", "(default: 5m0s)", "--message-timeout value", "--response-timeout value"} {
		if !strings.Contains(help.out, want) {
			t.Errorf("add --help lacks %q:\n%s", want, help.out)
		}
	}
	if n := strings.Count(help.out, "(default: 30s)"); n != 2 {
		t.Errorf("add --help shows \"(default: 30s)\" %d times, want once each for the message and response timeouts:\n%s", n, help.out)
	}
	if strings.Contains(help.out, "default 5m") || strings.Contains(help.out, "default 30s") {
		t.Errorf("add --help states a timeout default twice:\n%s", help.out)
	}
	wantFail(t, run(t, "-a", addr, "add", "web", "--listen", ":0", "--server", "IP:h:1"), ExitFailure,
		`add web: proxy "web" already exists (pick another name`)

	f.mu.Lock()
	f.conns["web"] = []*snoopv1.Connection{
		{Id: 3, Client: "127.0.0.1:5000", OpenTime: timestamppb.New(testNow.Add(-time.Minute)), BytesUp: 100, BytesDown: 200, Transactions: 4},
		{Id: 4, Client: "127.0.0.1:5001", OpenTime: timestamppb.New(testNow.Add(-time.Second)), Pending: 1},
	}
	f.proxies["web"].Counters = &snoopv1.ProxyCounters{ConnectionsActive: 2, ConnectionsTotal: 9, Transactions: 12, ProtocolErrors: 1,
		Ops: []*snoopv1.OpCounters{{Op: snoopv1.Op_OP_GET, Count: 12, Results: map[string]int64{"hit": 9, "miss": 2, "orphan": 1}}},
		Latency: &snoopv1.LatencySummary{Count: 11, P50: durationpb.New(time.Millisecond), P90: durationpb.New(2 * time.Millisecond),
			P99: durationpb.New(5 * time.Millisecond), Max: durationpb.New(6 * time.Millisecond), Mean: durationpb.New(time.Millisecond)}}

	f.mu.Unlock()
	var b strings.Builder
	for _, args := range [][]string{{"list"}, {"show", "web"}, {"conns", "web"}, {"conns", "api"}, {"kill-conn", "web", "4"},
		{"disable", "web"}, {"disable", "web", "--close-connections"}, {"enable", "web"}, {"version"}} {
		r := run(t, append([]string{"-a", addr}, args...)...)
		wantOK(t, r)
		b.WriteString("$ snoopctl " + strings.Join(args, " ") + "\n" + strings.ReplaceAll(r.out, addr, "ADDR"))
	}
	// The client's version depends on the build; keep the golden file
	// about the daemon's line.
	out := b.String()
	i := strings.Index(out, "client: snoopctl ")
	j := strings.Index(out[i:], "\n")
	golden(t, "commands.txt", out[:i]+"client: snoopctl VERSION"+out[i+j:])

	f.mu.Lock()
	masks := [][]string{}
	for _, u := range f.updates {
		masks = append(masks, u.GetUpdateMask().GetPaths())
	}
	if len(f.updates) != 3 || !f.updates[1].GetCloseConnections() || f.updates[0].GetCloseConnections() || !slices.Equal(masks[2], []string{"enabled"}) {
		t.Errorf("updates %v", f.updates)
	}
	f.mu.Unlock()

	wantFail(t, run(t, "-a", addr, "show", "nosuch"), ExitFailure, `show nosuch: no proxy named "nosuch" (see 'snoopctl list')`)
	wantFail(t, run(t, "-a", addr, "conns", "nosuch"), ExitFailure, `no proxy named "nosuch"`)
	wantFail(t, run(t, "-a", addr, "enable", "nosuch"), ExitFailure, `enable nosuch: no proxy named "nosuch"`)
	wantFail(t, run(t, "-a", addr, "kill-conn", "web", "99"), ExitFailure, `kill-conn web 99: proxy "web" has no connection 99 (see 'snoopctl conns web')`)

	// remove tries every name and fails if any failed, reporting each.
	r = run(t, "-a", addr, "remove", "nosuch", "api", "other", "--drain", "1s")
	wantFail(t, r, ExitFailure, `remove other: no proxy named "other"`)
	if r.out != "removed api\n" || !strings.Contains(r.err, `remove nosuch: no proxy named "nosuch"`) {
		t.Errorf("remove: stdout %q stderr %q", r.out, r.err)
	}
	f.mu.Lock()
	if d := f.deletes[1]; d.GetName() != "api" || d.GetDrain().AsDuration() != time.Second {
		t.Errorf("delete request %v", d)
	}
	f.mu.Unlock()

	// JSON output is the API's protojson.
	r = run(t, "-a", addr, "-o", "json", "list")
	wantOK(t, r)
	lr := &snoopv1.ListProxiesResponse{}
	if err := protojson.Unmarshal([]byte(r.out), lr); err != nil || len(lr.GetProxies()) != 1 || strings.Count(r.out, "\n") != 1 {
		t.Errorf("list -o json: %q, %v", r.out, err)
	}
	r = run(t, "-a", addr, "show", "web", "-o", "json")
	wantOK(t, r)
	if !strings.HasPrefix(r.out, `{"proxy":{"spec":{"name":"web"`) || !strings.Contains(r.out, `"connections":[{"id":"3"`) {
		t.Errorf("show -o json: %s", r.out)
	}
	r = run(t, "-a", addr, "remove", "web", "-o", "json")
	wantOK(t, r)
	if r.out != `{"name":"web","action":"APPLY_ACTION_REMOVED"}`+"\n" {
		t.Errorf("remove -o json: %s", r.out)
	}
	r = run(t, "-a", addr, "list")
	if r.out != "no proxies (create one with 'snoopctl add NAME --listen ADDR --server ADDR')\n" {
		t.Errorf("empty list: %q", r.out)
	}
}

func TestApply(t *testing.T) {
	f, addr := startFake(t)
	dir := t.TempDir()
	decl := filepath.Join(dir, "proxies.json")
	os.WriteFile(decl, []byte(`[
	  {"name": "a", "listen": "IP:127.0.0.1:9101", "server": "UNIX:/run/dc.sock"},
	  {"name": "b", "listen": "IP:127.0.0.1:9102", "server": "UNIX:/run/dc.sock", "max_connections": 5}
	]`), 0o600)
	wantOK(t, run(t, "-a", addr, "add", "old", "--listen", ":0", "--server", "IP:h:1"))

	first := run(t, "-a", addr, "apply", "-f", decl, "--prune")
	wantOK(t, first)
	second := run(t, "-a", addr, "apply", "-f", decl, "--prune")
	wantOK(t, second)
	dry := runCtl(context.Background(), `{"proxies": [{"name": "a", "listen": "IP:127.0.0.1:9199", "server": "UNIX:/x"}]}`,
		"-a", addr, "apply", "-f", "-", "--dry-run")
	wantOK(t, dry)
	golden(t, "apply.txt", first.out+"--- again\n"+second.out+"--- dry run from stdin\n"+dry.out)
	f.mu.Lock()
	_, ok := f.proxies["old"]
	f.mu.Unlock()
	if ok {
		t.Error("--prune left the undeclared proxy")
	}

	bad := filepath.Join(dir, "bad.json")
	os.WriteFile(bad, []byte(`[{"name": "a", "listn": "x"}]`), 0o600)
	wantFail(t, run(t, "-a", addr, "apply", "-f", bad), ExitFailure, "is not a proxy declaration")
	os.WriteFile(bad, []byte(`{"proxies": [], "prune": true}`), 0o600)
	wantFail(t, run(t, "-a", addr, "apply", "-f", bad), ExitFailure, "use --prune or --dry-run on the command line")
	wantFail(t, run(t, "-a", addr, "apply", "-f", filepath.Join(dir, "none.json")), ExitFailure, "apply: no such file")
}

func TestAuth(t *testing.T) {
	f, addr := startFake(t)
	f.mu.Lock()
	f.token = "s3cret"
	f.mu.Unlock()
	wantFail(t, run(t, "-a", addr, "list"), ExitFailure, "list: the daemon wants a token: set --token-file or SNOOPD_TOKEN_FILE")
	dir := t.TempDir()
	tok := filepath.Join(dir, "token")
	os.WriteFile(tok, []byte("  s3cret\n"), 0o600)
	wantOK(t, run(t, "-a", addr, "--token-file", tok, "list"))
	t.Setenv("SNOOPD_TOKEN_FILE", tok)
	wantOK(t, run(t, "-a", addr, "tail", "--count", "0", "--for", "10ms"))
	f.mu.Lock()
	auth := slices.Clone(f.auth)
	f.mu.Unlock()
	if !slices.Contains(auth, "Bearer s3cret") {
		t.Errorf("authorization headers seen: %q", auth)
	}
	os.WriteFile(tok, []byte("wrong"), 0o600)
	wantFail(t, run(t, "-a", addr, "list"), ExitFailure, "the daemon refused the token in "+tok)
	os.WriteFile(tok, []byte("\n"), 0o600)
	wantFail(t, run(t, "-a", addr, "list"), ExitFailure, "is empty")
	// A token never travels in clear text to another machine.
	os.WriteFile(tok, []byte("s3cret"), 0o600)
	wantFail(t, run(t, "-a", "192.0.2.1:7443", "list"), ExitUsage, "refusing to send the token in clear text")
}

// TestRPCErrorWords checks that each gRPC code becomes plain words.
func TestRPCErrorWords(t *testing.T) {
	e := &env{opts: globalOptions{rawAddr: "unix:///run/s.sock", timeout: 3 * time.Second}}
	tests := []struct {
		err  error
		want string
	}{
		{status.Error(codes.Unavailable, `connection error: desc = "transport: Error while dialing: dial unix /run/s.sock: connect: connection refused"`),
			"cannot reach snoopd at unix:///run/s.sock: connection refused (is snoopd running? set --address or SNOOPD_ADDRESS)"},
		{status.Error(codes.Unavailable, `connection error: desc = "transport: authentication handshake failed: tls: failed to verify certificate: x509: certificate signed by unknown authority"`),
			"TLS handshake failed: tls: failed to verify certificate: x509: certificate signed by unknown authority (check --tls-ca"},
		{status.Error(codes.DeadlineExceeded, "context deadline exceeded"), "did not answer within 3s"},
		{status.Error(codes.NotFound, "whatever"), `x: no proxy named "p" (see 'snoopctl list')`},
		{status.Error(codes.InvalidArgument, "spec.listen: bad\naddress"), "x: spec.listen: bad address"},
		{status.Error(codes.FailedPrecondition, "proxy is failed"), "x: proxy is failed"},
		{status.Error(codes.PermissionDenied, "read-only token"), "x: the daemon refused: read-only token"},
		{status.Error(codes.Unimplemented, "unknown method"), "does not offer this"},
		{status.Error(codes.ResourceExhausted, "too many watchers"), "snoopd is at a limit: too many watchers"},
		{status.Error(codes.Internal, "boom"), "x: snoopd failed: boom (internal)"},
	}
	for _, tc := range tests {
		got := e.rpcError(tc.err, "x", `no proxy named "p"`)
		if !strings.Contains(got.Error(), tc.want) || exitCode(got) != ExitFailure {
			t.Errorf("%v:\n got %q\nwant %q", tc.err, got, tc.want)
		}
	}
}

func TestTail(t *testing.T) {
	f, addr := startFake(t)
	f.setEvents(testEvents(), errEOF)

	// Every filter, evaluated by the (fake) daemon from the request that
	// snoopctl built; the stream ends by itself (EOF), which tail reports.
	var b strings.Builder
	for _, args := range [][]string{
		{},
		{"web", "--wait"},
		{"--op", "get"},
		{"--status", "hit,exists"},
		{"--session", "0a1b"},
		{"--min-latency", "1ms"},
		{"--conn", "2"},
		{"--events", "conn,connect-failed"},
		{"--errors"},
		{"api", "--wait", "--errors", "--events", "protocol"},
		{"--op", "get", "--data"},
	} {
		r := run(t, append([]string{"-a", addr, "tail"}, args...)...)
		wantFail(t, r, ExitFailure, "tail: snoopd ended the event stream (is it shutting down?)")
		b.WriteString("$ snoopctl tail " + strings.Join(args, " ") + "\n" + r.out + maskSummary(r.err))
	}
	golden(t, "tail.txt", b.String())
	if req := f.lastWatch(); !req.GetIncludeData() || !slices.Equal(req.GetOps(), []snoopv1.Op{snoopv1.Op_OP_GET}) {
		t.Errorf("last request %v", req)
	}

	// JSON: one WatchEventsResponse per line.
	r := run(t, "-a", addr, "tail", "-v", "-o", "json", "--count", "3", "--history", "100")
	wantOK(t, r)
	// --events all shows what -v shows, as -v's help says.
	if all := run(t, "-a", addr, "tail", "--events", "all", "-o", "json", "--count", "3", "--history", "100"); all.out != r.out {
		t.Errorf("tail --events all:\n%s%s\nwant what tail -v shows:\n%s", all.out, all.err, r.out)
	}
	lines := strings.Split(strings.TrimSuffix(r.out, "\n"), "\n")
	if len(lines) != 3 || !strings.HasPrefix(r.err, "3 events shown, 0 dropped, over ") {
		t.Fatalf("--count 3: %d lines, stderr %q", len(lines), r.err)
	}
	for i, l := range lines {
		got := &snoopv1.WatchEventsResponse{}
		if err := protojson.Unmarshal([]byte(l), got); err != nil {
			t.Fatal(err)
		}
		want := proto.Clone(testEvents()[i]).(*snoopv1.WatchEventsResponse)
		if want.GetEvent().GetTransaction() != nil {
			want.Event.Transaction.Data = nil // not asked for
		}
		if !proto.Equal(got, want) {
			t.Errorf("line %d: %s", i, l)
		}
	}
	if h := f.lastWatch().GetHistory(); h != 100 {
		t.Errorf("history %d, want 100", h)
	}
}

// TestTailStops checks the ways tail ends cleanly: --for, Ctrl-C (the
// context) and a broken stream.
func TestTailStops(t *testing.T) {
	f, addr := startFake(t)
	f.setEvents(testEvents(), nil) // the stream stays open

	start := time.Now()
	r := run(t, "-a", addr, "tail", "--for", "200ms", "--op", "add")
	wantOK(t, r)
	if d := time.Since(start); d < 200*time.Millisecond || d > 10*time.Second {
		t.Errorf("--for 200ms took %v", d)
	}
	if !strings.HasPrefix(r.err, "2 events shown, 5 dropped, over ") || !strings.HasSuffix(r.err, "\n  ADD 2: ok=1 exists=1\n") || strings.Count(r.out, "\n") != 3 {
		t.Errorf("stdout %q stderr %q", r.out, r.err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan result)
	// Ctrl-C once every line is out: the summary counts what was shown.
	out := &lineWaiter{want: 9, reached: make(chan struct{})}
	go func() {
		var errb bytes.Buffer
		e := &env{stdio: Stdio{In: strings.NewReader(""), Out: out, Err: &errb}, now: func() time.Time { return testNow }}
		code := e.run(ctx, []string{"--utc", "-a", addr, "tail", "-v"})
		done <- result{out.String(), errb.String(), code}
	}()
	select {
	case <-out.reached:
	case <-time.After(10 * time.Second):
		t.Fatalf("tail did not show the events: %q", out.String())
	}
	cancel() // Ctrl-C
	select {
	case r = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("tail did not end on Ctrl-C")
	}
	wantOK(t, r)
	if !strings.HasPrefix(r.err, "8 events shown, 5 dropped, over ") || !strings.Contains(r.err, "\n  connections: 1 opened, 1 closed\n") || strings.Count(r.out, "\n") != 9 {
		t.Errorf("after Ctrl-C: stdout %q stderr %q", r.out, r.err)
	}

	f.setEvents(testEvents()[:2], status.Error(codes.Unavailable, "connection error: desc = \"transport: error reading from server: EOF\""))
	r = run(t, "-a", addr, "tail", "--verbose")
	wantFail(t, r, ExitFailure, "tail: the event stream from snoopd at "+addr+" broke")
	if !strings.HasPrefix(r.err, "2 events shown, 0 dropped, over ") {
		t.Errorf("summary missing: %q", r.err)
	}
	f.setEvents(nil, status.Error(codes.InvalidArgument, "results[0]: unknown result"))
	wantFail(t, run(t, "-a", addr, "tail"), ExitFailure, "tail: results[0]: unknown result")
}

// lineWaiter is an output that closes reached once it has want lines.
type lineWaiter struct {
	mu      sync.Mutex
	b       bytes.Buffer
	want    int
	reached chan struct{}
}

func (w *lineWaiter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	before := bytes.Count(w.b.Bytes(), []byte("\n"))
	w.b.Write(p)
	if n := before + bytes.Count(p, []byte("\n")); before < w.want && n >= w.want {
		close(w.reached)
	}
	return len(p), nil
}

func (w *lineWaiter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

// TestSaveRead saves the stream and reads it back: the same events in the
// same order, and read's filters agree with the daemon's.
func TestSaveRead(t *testing.T) {
	f, addr := startFake(t)
	f.setEvents(testEvents(), errEOF)
	dir := t.TempDir()
	file := filepath.Join(dir, "cap.jsonl")

	r := run(t, "-a", addr, "save", file)
	wantFail(t, r, ExitFailure, "save: snoopd ended the event stream")
	if !strings.HasPrefix(r.err, "wrote 8 events to "+file+" (5 dropped)\n") {
		t.Errorf("save said %q", r.err)
	}
	data, _ := os.ReadFile(file)
	var want strings.Builder
	for _, e := range testEvents() {
		c := proto.Clone(e).(*snoopv1.WatchEventsResponse)
		if c.GetEvent().GetTransaction() != nil {
			c.Event.Transaction.Data = nil
		}
		b, _ := protojson.MarshalOptions{UseProtoNames: true}.Marshal(c)
		var compact bytes.Buffer
		if err := json.Compact(&compact, b); err != nil {
			t.Fatal(err)
		}
		want.Write(compact.Bytes())
		want.WriteByte('\n')
	}
	if string(data) != want.String() {
		t.Fatalf("saved file:\n%s\nwant:\n%s", data, want.String())
	}

	// An existing file is refused; --append adds, --force replaces.
	wantFail(t, run(t, "-a", addr, "save", file), ExitFailure, "save: "+file+" already exists (use --append to add to it or --force to replace it)")
	if b, _ := os.ReadFile(file); string(b) != string(data) {
		t.Fatal("a refused save changed the file")
	}
	run(t, "-a", addr, "save", file, "--append", "--op", "get")
	run(t, "-a", addr, "save", file+".2", "--force", "web")

	// read -o json gives back exactly what was saved.
	r = run(t, "read", "-o", "json", file)
	wantOK(t, r)
	if !strings.HasPrefix(r.out, string(data)) || strings.Count(r.out, "\n") != strings.Count(string(data), "\n")+3 {
		t.Errorf("read -o json:\n%s", r.out)
	}

	// read with each filter (on the client) equals tail with the same
	// filter (in the daemon).
	for _, args := range [][]string{{"--op", "get"}, {"--status", "exists,miss"}, {"--errors"}, {"--events", "conn"},
		{"--session", "0a"}, {"--conn", "1"}, {"--min-latency", "250us"}, {"--errors", "--op", "add"}} {
		read := run(t, append([]string{"read", "-o", "json", file + ".2"}, args...)...)
		tail := run(t, append([]string{"-a", addr, "tail", "-o", "json", "web"}, args...)...)
		if read.out != tail.out {
			t.Errorf("%v: read gives\n%s\ntail gives\n%s", args, read.out, tail.out)
		}
	}

	// read takes gzip and stdin, and --proxy, --count; text lines carry the date.
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(data)
	zw.Close()
	os.WriteFile(file+".gz", gz.Bytes(), 0o600)
	var b strings.Builder
	for _, args := range [][]string{{file + ".gz"}, {file, "--proxy", "api"}, {file, "--count", "2"}} {
		r := run(t, append([]string{"read"}, args...)...)
		wantOK(t, r)
		b.WriteString(strings.ReplaceAll("$ snoopctl read "+strings.Join(args, " ")+"\n"+r.out+r.err, dir, "DIR"))
	}
	stdin := runCtl(context.Background(), string(data), "read", "-", "--errors")
	wantOK(t, stdin)
	b.WriteString("$ snoopctl read - --errors\n" + stdin.out + stdin.err)

	// A truncated last line is a warning; a bad line in the middle fails.
	cut := filepath.Join(dir, "cut.jsonl")
	os.WriteFile(cut, data[:len(data)-20], 0o600)
	r = run(t, "read", cut)
	wantOK(t, r)
	b.WriteString("$ snoopctl read cut.jsonl\n" + strings.ReplaceAll(r.out+r.err, dir, "DIR"))
	golden(t, "read.txt", b.String())

	bad := filepath.Join(dir, "bad.jsonl")
	os.WriteFile(bad, []byte("{\"dropped\":\"1\"}\nnot json\n{\"dropped\":\"1\"}\n"), 0o600)
	wantFail(t, run(t, "read", bad), ExitFailure, "read "+bad+":2: not a snoop event")
	wantFail(t, run(t, "read", filepath.Join(dir, "none")), ExitFailure, "read "+filepath.Join(dir, "none")+": no such file")
}

// TestSaveInterrupted stops save with Ctrl-C while the stream is open: the
// file is complete and parses line by line.
func TestSaveInterrupted(t *testing.T) {
	f, addr := startFake(t)
	f.setEvents(testEvents(), nil)
	file := filepath.Join(t.TempDir(), "cap.jsonl")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan result)
	go func() { done <- runCtl(ctx, "", "-a", addr, "save", file, "--rotate-size", "64KiB") }()
	select {
	case <-f.watching:
	case <-time.After(10 * time.Second):
		t.Fatal("save did not start watching")
	}
	time.Sleep(50 * time.Millisecond)
	cancel()
	var r result
	select {
	case r = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("save did not end on Ctrl-C")
	}
	wantOK(t, r)
	if r.err != "wrote 8 events to "+file+" (5 dropped)\n" {
		t.Errorf("save said %q", r.err)
	}
	n := 0
	names := []string{}
	for i := 1; i < 20; i++ {
		if _, err := os.Stat(fmt.Sprintf("%s.%d", file, i)); err == nil {
			names = append(names, fmt.Sprintf("%s.%d", file, i))
		}
	}
	for _, name := range append(names, file) {
		rd, err := capture.Open(name, nil)
		if err != nil {
			t.Fatal(err)
		}
		for range 100 {
			if _, err = rd.Next(); err != nil {
				break
			}
			n++
		}
		rd.Close()
		if err.Error() != "EOF" {
			t.Errorf("%s: %v", name, err)
		}
	}
	if n != 9 {
		t.Errorf("read %d lines back, want 9", n)
	}
}

func TestStats(t *testing.T) {
	f, addr := startFake(t)
	f.setEvents(testEvents(), nil)
	r := run(t, "-a", addr, "stats", "--count", "8")
	wantOK(t, r)
	i := strings.LastIndex(r.out, "\n8 events in ")
	if i < 0 || !strings.HasSuffix(r.out, ", 5 dropped (these numbers miss the dropped events)\n") {
		t.Fatalf("stats:\n%s", r.out)
	}
	golden(t, "stats.txt", r.out[:i])

	r = run(t, "-a", addr, "stats", "-o", "json", "--count", "100", "--for", "300ms", "--watch", "--interval", "100ms", "--wait", "web")
	wantOK(t, r)
	lines := strings.Split(strings.TrimSuffix(r.out, "\n"), "\n")
	if len(lines) < 2 || !strings.Contains(lines[len(lines)-1], `"events":5,"dropped":5`) {
		t.Errorf("stats --watch -o json:\n%s", r.out)
	}
}

// TestSaysWhatItDoes covers commands whose output alone would leave what
// they do unclear: stats with a filter and no end counts the live stream
// until Ctrl-C, and tail --data on a proxy that captures no data shows
// none.
func TestSaysWhatItDoes(t *testing.T) {
	f, addr := startFake(t)
	f.setEvents(testEvents(), nil)
	f.mu.Lock()
	f.proxies["web"] = &snoopv1.Proxy{Spec: &snoopv1.ProxySpec{Name: "web"}}
	f.proxies["api"] = &snoopv1.Proxy{Spec: &snoopv1.ProxySpec{Name: "api", CaptureData: true}}
	f.mu.Unlock()

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan result)
	go func() { done <- runCtl(ctx, "", "-a", addr, "stats", "--op", "get") }()
	select {
	case <-f.watching:
	case <-time.After(10 * time.Second):
		t.Fatal("stats did not start watching")
	}
	cancel()
	r := <-done
	if !strings.HasPrefix(r.err, "snoopctl: note: stats is counting the live stream's matching events (the daemon's totals take no filters) and prints them at Ctrl-C") {
		t.Errorf("stats --op get said %q", r.err)
	}
	if r := run(t, "-a", addr, "stats", "--op", "get", "--count", "1"); strings.Contains(r.err, "note:") {
		t.Errorf("stats with an end gave a note: %q", r.err)
	}

	r = run(t, "-a", addr, "tail", "--data", "--count", "1", "web")
	if want := "snoopctl: warning: --data: proxy web captures no session data (it was created without --capture-data), so its transactions come without it\n"; !strings.HasPrefix(r.err, want) {
		t.Errorf("tail --data web: stderr %q, want it to start %q", r.err, want)
	}
	r = run(t, "-a", addr, "tail", "--data", "--count", "1")
	if !strings.Contains(r.err, "--data: proxy web captures no session data") {
		t.Errorf("tail --data (all proxies): stderr %q", r.err)
	}
	if r := run(t, "-a", addr, "tail", "--data", "--count", "1", "api"); strings.Contains(r.err, "warning") {
		t.Errorf("tail --data api, which captures: %q", r.err)
	}
}

func TestCompletion(t *testing.T) {
	for _, sh := range []string{"bash", "zsh", "fish"} {
		r := run(t, "completion", sh)
		wantOK(t, r)
		if !strings.Contains(r.out, "snoopctl") {
			t.Errorf("%s completion: %q", sh, r.out)
		}
	}
	// What the scripts run: the words so far, then the hidden flag.
	// urfave/cli looks at os.Args for the word before it, so set them as
	// a shell would.
	defer func(args []string) { os.Args = args }(os.Args)
	os.Args = []string{"snoopctl", "--generate-bash-completion"}
	var out bytes.Buffer
	e := &env{stdio: Stdio{In: strings.NewReader(""), Out: &out, Err: &out}, now: time.Now}
	if code := e.run(context.Background(), []string{"--generate-bash-completion"}); code != 0 {
		t.Fatalf("exit %d: %s", code, out.String())
	}
	if !strings.Contains(out.String(), "tail\n") || !strings.Contains(out.String(), "kill-conn\n") {
		t.Errorf("completion candidates: %q", out.String())
	}
}

func TestHelp(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"tail", "--help"}, {"help", "save"}} {
		r := run(t, args...)
		wantOK(t, r)
		if !strings.Contains(r.out, "USAGE") {
			t.Errorf("%v: %q", args, r.out)
		}
	}
	r := run(t, "tail", "--help")
	for _, s := range []string{"--errors", "protocol errors, failed connects", "--session", "--history", "--count", "--for"} {
		if !strings.Contains(r.out, s) {
			t.Errorf("tail --help lacks %q", s)
		}
	}
}

// TestBatchedStreamSameOutput runs tail, save and stats against a daemon
// that batches events and one that predates batching: the output is the
// same, line for line, and snoopctl asks for batches.
func TestBatchedStreamSameOutput(t *testing.T) {
	outputs := func(batch bool) []string {
		f, addr := startFake(t)
		f.batch = batch
		f.setEvents(testEvents(), errEOF)
		var outs []string
		for _, args := range [][]string{
			{"tail"},
			{"tail", "-o", "json"},
			{"tail", "--op", "get", "--data"},
			{"tail", "-o", "json", "--count", "4"},
			{"tail", "--count", "2"},
			{"stats", "-o", "json", "--for", "10s"},
		} {
			r := run(t, append([]string{"-a", addr}, args...)...)
			if args[0] == "stats" {
				// Only the counts: the rest depends on the elapsed time.
				i := strings.Index(r.out, `"events":`)
				if i < 0 {
					t.Fatalf("stats: %q", r.out)
				}
				r.out = r.out[i:]
				r.out = r.out[:strings.IndexByte(r.out, '}')]
			}
			outs = append(outs, strings.Join(args, " ")+"\n"+r.out+maskSummary(r.err))
		}
		file := filepath.Join(t.TempDir(), "cap.jsonl")
		r := run(t, "-a", addr, "save", file)
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		outs = append(outs, "save\n"+string(data)+strings.ReplaceAll(r.err, file, "FILE"))
		if req := f.lastWatch(); req.GetMaxBatch() != watchBatch {
			t.Errorf("max_batch %d, want %d", req.GetMaxBatch(), watchBatch)
		}
		return outs
	}
	old, batched := outputs(false), outputs(true)
	for i := range old {
		if old[i] != batched[i] {
			t.Errorf("one event per response:\n%s\nbatched:\n%s", old[i], batched[i])
		}
	}
	if !strings.Contains(old[3], "4 events shown") || !strings.Contains(old[4], "2 events shown") {
		t.Errorf("--count: %q, %q", old[3], old[4])
	}
}

// summaryTimes is the part of tail's summary that depends on timing.
var summaryTimes = regexp.MustCompile(`, over [^ ]+ \([^)]+ events/s\)`)

// maskSummary hides the elapsed time and rate of tail's summary.
func maskSummary(s string) string {
	return summaryTimes.ReplaceAllString(s, ", over TIME (RATE events/s)")
}

// TestTailJSONFromWireIsTheDecodedOutput: tail -o json writes a daemon's
// events straight from their wire form; its lines and its summary are
// what the decoded events give, byte for byte, for batches, single events
// and notices alike, captured data included.
func TestTailJSONFromWireIsTheDecodedOutput(t *testing.T) {
	evs := testEvents()
	withData := txEvent(8, "web", 3, 9, snoopv1.Op_OP_ADD, []byte("sid"), "ok", 50*time.Microsecond)
	withData.Event.Transaction.Data, withData.Event.Transaction.DataTruncated = []byte("master secret"), true
	odd := txEvent(9, "we\"b\n\u00e9", 3, 10, snoopv1.Op_OP_GET, nil, "miss", 0)
	odd.Event.Transaction.Fault = "delay\t1ms"
	evs = append(evs, withData, odd, &snoopv1.WatchEventsResponse{Dropped: 2})
	for _, batch := range []bool{false, true} {
		f, addr := startFake(t)
		f.batch = batch
		f.setEvents(evs, errEOF)
		r := run(t, "-a", addr, "tail", "--events", "all", "--data", "-o", "json")
		wantFail(t, r, ExitFailure, "tail: snoopd ended the event stream")

		var want []byte
		sum := newSummary()
		for _, resp := range evs {
			var err error
			if ev := resp.GetEvent(); ev != nil {
				want, err = format.AppendEventLine(want, ev)
				sum.add(&snoopv1.WatchEventsResponse{Event: ev})
			} else {
				want, err = format.AppendResponseLine(want, resp)
				sum.add(resp)
			}
			if err != nil {
				t.Fatal(err)
			}
			want = append(want, '\n')
		}
		if r.out != string(want) {
			t.Errorf("batch %v: tail -o json\n%s\nwant\n%s", batch, r.out, want)
		}
		var b strings.Builder
		sum.write(&b, "shown", 0)
		if got, want := maskSummary(r.err), maskSummary(b.String()); !strings.HasPrefix(got, want) {
			t.Errorf("batch %v: summary\n%s\nwant\n%s", batch, got, want)
		}
	}
}

// TestTailJSONOfSeveralDaemonsNamesEach: with several daemons, tail -o
// json writes each event with its daemon's name (events that come in
// their wire form are not written as they came), and stops at --count
// across them.
func TestTailJSONOfSeveralDaemonsNamesEach(t *testing.T) {
	a, addrA := startFake(t)
	b, addrB := startFake(t)
	for _, f := range []*fakeDaemon{a, b} {
		f.batch = true
		f.setEvents(testEvents(), nil)
	}
	r := run(t, "-a", addrA, "-a", addrB, "tail", "--events", "all", "-o", "json", "--count", "10")
	wantOK(t, r)
	lines := strings.Split(strings.TrimSuffix(r.out, "\n"), "\n")
	events := 0
	for _, l := range lines {
		got := &snoopv1.WatchEventsResponse{}
		if err := protojson.Unmarshal([]byte(l), got); err != nil {
			t.Fatalf("%q: %v", l, err)
		}
		if ev := got.GetEvent(); ev != nil {
			events++
			if ev.GetDaemon() == "" {
				t.Errorf("an event without its daemon: %s", l)
			}
		}
	}
	if events != 10 {
		t.Errorf("%d events, want 10 (--count)", events)
	}
}
