package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	"github.com/snoopd/snoopd/distcache"
	"github.com/snoopd/snoopd/distcache/cacheserver"
	"github.com/snoopd/snoopd/distcache/loadgen"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
	"github.com/snoopd/snoopd/internal/testutil"
	"github.com/snoopd/snoopd/proxy"
)

// TestMain runs the package's tests on the engine New makes by default
// (the one snoopd runs), then once more on the goroutine engine, as the
// proxy package's tests do; DAEMON_ENGINE names one engine to run them on.
func TestMain(m *testing.M) {
	name := os.Getenv("DAEMON_ENGINE")
	if name != "" {
		newEngineName = name
	}
	code := m.Run()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
			code = 1
		}
	}
	if code == 0 && name == "" && newEngineName != proxy.EngineGoroutines {
		cmd := exec.Command(os.Args[0], os.Args[1:]...)
		cmd.Env = append(os.Environ(), "DAEMON_ENGINE="+proxy.EngineGoroutines)
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		fmt.Printf("== daemon tests again with the %s engine\n", proxy.EngineGoroutines)
		if err := cmd.Run(); err != nil {
			code = 1
		}
	}
	os.Exit(code)
}

// api is a daemon served over an in-process gRPC connection.
type api struct {
	d      *Daemon
	proxy  snoopv1.ProxyServiceClient
	events snoopv1.EventServiceClient
	info   snoopv1.DaemonServiceClient
	health healthpb.HealthClient
	// conn, srv and hs are for tests that need more than the clients.
	conn *grpc.ClientConn
	srv  *grpc.Server
	hs   *HealthServer
}

func startAPI(t *testing.T, cfg Config, opts ServerOptions) *api {
	t.Helper()
	d, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s, hs := NewServer(d, opts)
	lis := bufconn.Listen(1 << 20)
	go s.Serve(lis)
	conn, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		d.Close(context.Background())
		s.Stop()
	})
	return &api{d: d, proxy: snoopv1.NewProxyServiceClient(conn), events: snoopv1.NewEventServiceClient(conn),
		info: snoopv1.NewDaemonServiceClient(conn), health: healthpb.NewHealthClient(conn), conn: conn, srv: s, hs: hs}
}

func startCache(t *testing.T) distcache.Addr {
	t.Helper()
	s, err := cacheserver.Start(distcache.MustParseAddr("IP:127.0.0.1:0"), cacheserver.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s.Addr()
}

func spec(name, server string) *snoopv1.ProxySpec {
	return &snoopv1.ProxySpec{Name: name, Listen: "IP:127.0.0.1:0", Server: server}
}

func wantCode(t *testing.T, err error, code codes.Code, contains string) *status.Status {
	t.Helper()
	st, _ := status.FromError(err)
	if st.Code() != code || !strings.Contains(st.Message(), contains) {
		t.Fatalf("got %v %q, want %v containing %q", st.Code(), st.Message(), code, contains)
	}
	return st
}

func TestCreateGetListDelete(t *testing.T) {
	a := startAPI(t, Config{}, ServerOptions{})
	ctx := context.Background()
	cache := startCache(t)
	res, err := a.proxy.CreateProxy(ctx, &snoopv1.CreateProxyRequest{Spec: spec("one", "127.0.0.1:"+strconv.Itoa(cache.Port()))})
	if err != nil {
		t.Fatal(err)
	}
	p := res.GetProxy()
	if p.GetState() != snoopv1.ProxyState_PROXY_STATE_LISTENING || strings.HasSuffix(p.GetListenAddress(), ":0") ||
		p.GetSpec().GetServer() != "IP:127.0.0.1:"+strconv.Itoa(cache.Port()) || !p.GetEffectiveSpec().GetEnabled() {
		t.Fatalf("created: %v", p)
	}
	// spec is what was declared: enabled and on_corrupt were left out,
	// so they stay out; effective_spec has the defaults.
	if p.GetSpec().Enabled != nil || p.GetSpec().GetOnCorrupt() != 0 || p.GetEffectiveSpec().GetOnCorrupt() != snoopv1.CorruptPolicy_CORRUPT_POLICY_CLOSE {
		t.Errorf("created: spec %v, effective %v", p.GetSpec(), p.GetEffectiveSpec())
	}
	// Traffic through it shows in its counters.
	c, err := loadgen.Dial(ctx, distcache.MustParseAddr(p.GetListenAddress()), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.Add([]byte("id"), []byte("data"), time.Minute)
	c.Close()
	got, err := a.proxy.GetProxy(ctx, &snoopv1.GetProxyRequest{Name: "one"})
	if err != nil || got.GetProxy().GetCounters().GetTransactions() != 1 || got.GetProxy().GetCounters().GetOps()[0].GetResults()["ok"] != 1 {
		t.Fatalf("get: %v %v", got, err)
	}
	if _, err := a.proxy.CreateProxy(ctx, &snoopv1.CreateProxyRequest{Spec: spec("two", "IP:localhost:1")}); err != nil {
		t.Fatal(err)
	}
	list, _ := a.proxy.ListProxies(ctx, &snoopv1.ListProxiesRequest{})
	if len(list.GetProxies()) != 2 || list.GetProxies()[0].GetSpec().GetName() != "one" {
		t.Fatalf("list: %v", list)
	}
	if _, err := a.proxy.DeleteProxy(ctx, &snoopv1.DeleteProxyRequest{Name: "one"}); err != nil {
		t.Fatal(err)
	}
	_, err = a.proxy.GetProxy(ctx, &snoopv1.GetProxyRequest{Name: "one"})
	wantCode(t, err, codes.NotFound, `proxy "one"`)
	_, err = a.proxy.DeleteProxy(ctx, &snoopv1.DeleteProxyRequest{Name: "one"})
	wantCode(t, err, codes.NotFound, `proxy "one"`)
	info, err := a.info.GetDaemonInfo(ctx, &snoopv1.GetDaemonInfoRequest{})
	if err != nil || info.GetProxies() != 1 || info.GetVersion() == "" || info.GetHistorySize() != 10000 {
		t.Fatalf("info: %v %v", info, err)
	}
}

func TestErrorCodes(t *testing.T) {
	a := startAPI(t, Config{}, ServerOptions{})
	ctx := context.Background()
	create := func(s *snoopv1.ProxySpec) error {
		_, err := a.proxy.CreateProxy(ctx, &snoopv1.CreateProxyRequest{Spec: s})
		return err
	}
	// Bad input: InvalidArgument with the field and a reason.
	st := wantCode(t, create(&snoopv1.ProxySpec{Name: "x", Listen: "IP:99999", Server: "IP:127.0.0.1:1"}), codes.InvalidArgument, "out of range")
	var field string
	for _, d := range st.Details() {
		if br, ok := d.(*errdetails.BadRequest); ok {
			field = br.GetFieldViolations()[0].GetField()
		}
	}
	if field != "spec.listen" {
		t.Errorf("field violation names %q", field)
	}
	wantCode(t, create(&snoopv1.ProxySpec{Name: "x", Listen: "IP:0", Server: "IP:9001"}), codes.InvalidArgument, "can only be listened on")
	wantCode(t, create(&snoopv1.ProxySpec{Name: "bad name", Listen: "IP:0", Server: "IP:127.0.0.1:1"}), codes.InvalidArgument, "spec.name")
	wantCode(t, create(&snoopv1.ProxySpec{Name: "x", Server: "IP:127.0.0.1:1"}), codes.InvalidArgument, "spec.listen: missing")
	wantCode(t, create(nil), codes.InvalidArgument, "spec")
	// Duplicate name, address in use: AlreadyExists.
	if err := create(&snoopv1.ProxySpec{Name: "x", Listen: "IP:127.0.0.1:0", Server: "IP:127.0.0.1:1"}); err != nil {
		t.Fatal(err)
	}
	wantCode(t, create(&snoopv1.ProxySpec{Name: "x", Listen: "IP:127.0.0.1:0", Server: "IP:127.0.0.1:1"}), codes.AlreadyExists, `proxy "x"`)
	taken, _ := net.Listen("tcp", "127.0.0.1:0")
	defer taken.Close()
	wantCode(t, create(&snoopv1.ProxySpec{Name: "y", Listen: taken.Addr().String(), Server: "IP:127.0.0.1:1"}), codes.AlreadyExists, "address in use")
	if _, err := a.d.GetProxy("y"); err == nil {
		t.Error("a proxy that failed to bind was kept")
	}
	// Unknown names: NotFound.
	_, err := a.proxy.ListConnections(ctx, &snoopv1.ListConnectionsRequest{Proxy: "nope"})
	wantCode(t, err, codes.NotFound, "nope")
	_, err = a.proxy.CloseConnection(ctx, &snoopv1.CloseConnectionRequest{Proxy: "x", Id: 77})
	wantCode(t, err, codes.NotFound, "no live connection 77")
	// An update without a mask, or of a field that cannot change.
	_, err = a.proxy.UpdateProxy(ctx, &snoopv1.UpdateProxyRequest{Spec: &snoopv1.ProxySpec{Name: "x"}})
	wantCode(t, err, codes.InvalidArgument, "update_mask")
	_, err = a.proxy.UpdateProxy(ctx, &snoopv1.UpdateProxyRequest{Spec: &snoopv1.ProxySpec{Name: "x", Listen: "IP:1"},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"listen"}}})
	wantCode(t, err, codes.InvalidArgument, "cannot be updated")
	// Watch filters are checked too.
	stream, _ := a.events.WatchEvents(ctx, &snoopv1.WatchEventsRequest{Results: []string{"sometimes"}})
	_, err = stream.Recv()
	wantCode(t, err, codes.InvalidArgument, "unknown result")
}

func TestUpdate(t *testing.T) {
	a := startAPI(t, Config{}, ServerOptions{})
	ctx := context.Background()
	first, second := startCache(t), startCache(t)
	res, err := a.proxy.CreateProxy(ctx, &snoopv1.CreateProxyRequest{Spec: spec("u", first.String())})
	if err != nil {
		t.Fatal(err)
	}
	addr := distcache.MustParseAddr(res.GetProxy().GetListenAddress())
	old, err := loadgen.Dial(ctx, addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	old.Add([]byte("k"), []byte("vv"), time.Minute)

	// Server and options change for new connections; the old one stays.
	upd, err := a.proxy.UpdateProxy(ctx, &snoopv1.UpdateProxyRequest{
		Spec:       &snoopv1.ProxySpec{Name: "u", Server: second.String(), MaxConnections: 5, DialTimeout: durationpb.New(time.Second)},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"server", "max_connections", "dial_timeout"}},
	})
	if err != nil || upd.GetProxy().GetSpec().GetServer() != second.String() || upd.GetProxy().GetSpec().GetMaxConnections() != 5 {
		t.Fatalf("update: %v %v", upd, err)
	}
	fresh, err := loadgen.Dial(ctx, addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	if ok, _ := fresh.Have([]byte("k")); ok {
		t.Error("new connection went to the old server")
	}
	if ok, _ := old.Have([]byte("k")); !ok {
		t.Error("old connection moved")
	}
	// Disable with close_connections ends the old connection.
	upd, err = a.proxy.UpdateProxy(ctx, &snoopv1.UpdateProxyRequest{
		Spec: &snoopv1.ProxySpec{Name: "u", Enabled: proto.Bool(false)}, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"enabled"}},
		CloseConnections: true,
	})
	if err != nil || upd.GetProxy().GetState() != snoopv1.ProxyState_PROXY_STATE_DISABLED {
		t.Fatalf("disable: %v %v", upd, err)
	}
	if _, err := old.Have([]byte("k")); err == nil {
		t.Error("connection survived disable with close_connections")
	}
	upd, err = a.proxy.UpdateProxy(ctx, &snoopv1.UpdateProxyRequest{
		Spec: &snoopv1.ProxySpec{Name: "u", Enabled: proto.Bool(true)}, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"enabled"}},
	})
	if err != nil || upd.GetProxy().GetState() != snoopv1.ProxyState_PROXY_STATE_LISTENING || upd.GetProxy().GetListenAddress() != addr.String() {
		t.Fatalf("enable: %v %v", upd, err)
	}
}

func TestApply(t *testing.T) {
	a := startAPI(t, Config{}, ServerOptions{})
	ctx := context.Background()
	cache := startCache(t)
	set := []*snoopv1.ProxySpec{spec("a", cache.String()), spec("b", cache.String())}
	apply := func(specs []*snoopv1.ProxySpec, prune, dry bool) map[string]snoopv1.ApplyAction {
		t.Helper()
		res, err := a.proxy.ApplyProxies(ctx, &snoopv1.ApplyProxiesRequest{Proxies: specs, Prune: prune, DryRun: dry})
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]snoopv1.ApplyAction{}
		for _, r := range res.GetResults() {
			out[r.GetName()] = r.GetAction()
		}
		return out
	}
	if got := apply(set, false, false); got["a"] != snoopv1.ApplyAction_APPLY_ACTION_CREATED || got["b"] != snoopv1.ApplyAction_APPLY_ACTION_CREATED {
		t.Fatalf("first apply: %v", got)
	}
	pa, _ := a.d.GetProxy("a")
	conn, err := loadgen.Dial(ctx, distcache.MustParseAddr(pa.GetListenAddress()), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.Add([]byte("k"), []byte("vv"), time.Minute)
	// The same set again, written differently: nothing changes, and the
	// live connection survives.
	again := []*snoopv1.ProxySpec{
		{Name: "a", Listen: "127.0.0.1:0", Server: "tcp://" + cache.NetAddr(), Enabled: proto.Bool(true)},
		spec("b", cache.String()),
	}
	if got := apply(again, false, false); got["a"] != snoopv1.ApplyAction_APPLY_ACTION_UNCHANGED || got["b"] != snoopv1.ApplyAction_APPLY_ACTION_UNCHANGED {
		t.Fatalf("second apply: %v", got)
	}
	if ok, err := conn.Have([]byte("k")); !ok || err != nil {
		t.Fatalf("connection did not survive an unchanged apply: %v", err)
	}
	// Dry run of a change and a prune reports, changes nothing.
	changed := []*snoopv1.ProxySpec{{Name: "a", Listen: "IP:127.0.0.1:0", Server: cache.String(), MaxConnections: 3}}
	if got := apply(changed, true, true); got["a"] != snoopv1.ApplyAction_APPLY_ACTION_CHANGED || got["b"] != snoopv1.ApplyAction_APPLY_ACTION_REMOVED {
		t.Fatalf("dry run: %v", got)
	}
	if len(a.d.ListProxies()) != 2 {
		t.Fatal("dry run changed something")
	}
	if got := apply(changed, true, false); got["a"] != snoopv1.ApplyAction_APPLY_ACTION_CHANGED || got["b"] != snoopv1.ApplyAction_APPLY_ACTION_REMOVED {
		t.Fatalf("prune: %v", got)
	}
	if ok, err := conn.Have([]byte("k")); !ok || err != nil {
		t.Fatalf("an in-place change closed the connection: %v", err)
	}
	// Validation is all or nothing.
	_, err = a.proxy.ApplyProxies(ctx, &snoopv1.ApplyProxiesRequest{Proxies: []*snoopv1.ProxySpec{spec("c", cache.String()), {Name: "d", Listen: "IP:0", Server: "nowhere"}}})
	wantCode(t, err, codes.InvalidArgument, "proxies[1].server")
	_, err = a.proxy.ApplyProxies(ctx, &snoopv1.ApplyProxiesRequest{Proxies: []*snoopv1.ProxySpec{spec("c", cache.String()), spec("c", cache.String())}})
	wantCode(t, err, codes.InvalidArgument, "declared twice")
	if _, err := a.d.GetProxy("c"); err == nil {
		t.Error("an invalid apply created a proxy")
	}
}

func TestWatchFiltersAndHistory(t *testing.T) {
	a := startAPI(t, Config{}, ServerOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cache := startCache(t)
	res, err := a.proxy.CreateProxy(ctx, &snoopv1.CreateProxyRequest{Spec: spec("w", cache.String())})
	if err != nil {
		t.Fatal(err)
	}
	addr := distcache.MustParseAddr(res.GetProxy().GetListenAddress())
	// With history, an event published before the server has registered
	// the watcher still arrives: no sleep needed to avoid a race.
	gets, err := a.events.WatchEvents(ctx, &snoopv1.WatchEventsRequest{Ops: []snoopv1.Op{snoopv1.Op_OP_GET}, Results: []string{"hit"}, History: 100})
	if err != nil {
		t.Fatal(err)
	}
	before := a.d.hub.Published()
	c, err := loadgen.Dial(ctx, addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.Add([]byte("abc"), []byte("data"), time.Minute)
	c.Get([]byte("abc"))
	c.Get([]byte("zzz"))
	c.Close()
	// The proxy publishes a transaction after forwarding its answer: wait
	// for the opening and all three before reading history.
	waitFor(t, "the transactions' events", func() bool { return a.d.hub.Published() >= before+4 })
	r, err := gets.Recv()
	if err == nil && r.GetHistoryDone() { // nothing matched at the start
		r, err = gets.Recv()
	}
	if err != nil || r.GetEvent().GetTransaction().GetResult() != "hit" || string(r.GetEvent().GetTransaction().GetSessionId()) != "abc" ||
		len(r.GetEvent().GetTransaction().GetDataDigest()) != 8 || r.GetEvent().GetTransaction().GetData() != nil {
		t.Fatalf("filtered watch: %v %v", r, err)
	}
	// History: the last two transactions, then live.
	hist, err := a.events.WatchEvents(ctx, &snoopv1.WatchEventsRequest{History: 2, Kinds: []snoopv1.EventKind{snoopv1.EventKind_EVENT_KIND_TRANSACTION}})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"hit", "miss"} {
		r, err := hist.Recv()
		if err != nil || r.GetEvent().GetTransaction().GetResult() != want {
			t.Fatalf("history: want %s, got %v %v", want, r, err)
		}
	}
	// Prefix and connection filters, over history.
	pre, err := a.events.WatchEvents(ctx, &snoopv1.WatchEventsRequest{History: 100, SessionIdPrefix: []byte("zz")})
	if err != nil {
		t.Fatal(err)
	}
	if r, err := pre.Recv(); err != nil || string(r.GetEvent().GetTransaction().GetSessionId()) != "zzz" {
		t.Fatalf("prefix: %v %v", r, err)
	}
}

func TestTokenAuth(t *testing.T) {
	a := startAPI(t, Config{}, ServerOptions{Token: "s3cret"})
	ctx := context.Background()
	_, err := a.proxy.ListProxies(ctx, &snoopv1.ListProxiesRequest{})
	wantCode(t, err, codes.Unauthenticated, "requires a bearer token")
	bad := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer nope")
	_, err = a.proxy.ListProxies(bad, &snoopv1.ListProxiesRequest{})
	wantCode(t, err, codes.Unauthenticated, "wrong bearer token")
	stream, _ := a.events.WatchEvents(bad, &snoopv1.WatchEventsRequest{})
	_, err = stream.Recv()
	wantCode(t, err, codes.Unauthenticated, "wrong bearer token")
	good := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer s3cret")
	if _, err := a.proxy.ListProxies(good, &snoopv1.ListProxiesRequest{}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.health.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Errorf("health needs no token: %v", err)
	}
}

func TestStateDir(t *testing.T) {
	dir := t.TempDir()
	cache := startCache(t)
	fixed := testutil.FreeAddr(t)
	d, err := New(Config{StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := d.CreateProxy(ctx, &snoopv1.ProxySpec{Name: "kept", Listen: fixed, Server: cache.String()}); err != nil {
		t.Fatal(err)
	}
	if _, err := d.CreateEphemeralProxy(spec("demo", cache.String())); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(dir, stateFileName)); err != nil || fi.Mode().Perm()&0o077 != 0 {
		t.Fatalf("state file: %v %v", fi, err)
	}
	// A restart brings back the saved proxy, on the same port, and not the
	// ephemeral one.
	d2, err := New(Config{StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	p, err := d2.GetProxy("kept")
	if err != nil || p.GetState() != snoopv1.ProxyState_PROXY_STATE_LISTENING || p.GetListenAddress() != "IP:"+fixed {
		t.Fatalf("restored: %v %v", p, err)
	}
	if _, err := d2.GetProxy("demo"); err == nil {
		t.Error("ephemeral proxy was saved")
	}
	// A restart that finds the port taken keeps the proxy, failed, and
	// enabling it again once the port is free brings it back.
	d2.Close(ctx)
	taken, err := net.Listen("tcp", fixed)
	if err != nil {
		t.Fatalf("port %s was taken by someone else meanwhile: %v", fixed, err)
	}
	d3, err := New(Config{StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer d3.Close(ctx)
	p, _ = d3.GetProxy("kept")
	if p.GetState() != snoopv1.ProxyState_PROXY_STATE_FAILED || !strings.Contains(p.GetError(), "address in use") {
		t.Errorf("port taken at restart: %v", p)
	}
	taken.Close()
	p, err = d3.UpdateProxy(ctx, &snoopv1.ProxySpec{Name: "kept", Enabled: proto.Bool(true)}, []string{"enabled"}, false)
	if err != nil || p.GetState() != snoopv1.ProxyState_PROXY_STATE_LISTENING {
		t.Errorf("enable after the port came free: %v %v", p, err)
	}
}

func TestDamagedStateFile(t *testing.T) {
	for name, content := range map[string]string{
		"garbage":       "{not json",
		"invalid entry": `{"proxies": [{"name": "a", "listen": "IP:0", "server": "IP:9001"}]}`,
		"duplicate":     `{"proxies": [{"name": "a", "listen": "IP:0", "server": "IP:127.0.0.1:1"}, {"name": "a", "listen": "IP:0", "server": "IP:127.0.0.1:1"}]}`,
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, stateFileName)
			os.WriteFile(path, []byte(content), 0o600)
			_, err := New(Config{StateDir: dir})
			if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "damaged") {
				t.Fatalf("damaged state accepted or not named: %v", err)
			}
			if b, _ := os.ReadFile(path); string(b) != content {
				t.Error("damaged state file was changed")
			}
		})
	}
}

func TestConnectionsListAndClose(t *testing.T) {
	a := startAPI(t, Config{}, ServerOptions{})
	ctx := context.Background()
	res, err := a.proxy.CreateProxy(ctx, &snoopv1.CreateProxyRequest{Spec: spec("c", startCache(t).String())})
	if err != nil {
		t.Fatal(err)
	}
	c, err := loadgen.Dial(ctx, distcache.MustParseAddr(res.GetProxy().GetListenAddress()), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Have([]byte("x"))
	conns, err := a.proxy.ListConnections(ctx, &snoopv1.ListConnectionsRequest{Proxy: "c"})
	if err != nil || len(conns.GetConnections()) != 1 || conns.GetConnections()[0].GetTransactions() != 1 {
		t.Fatalf("conns: %v %v", conns, err)
	}
	if _, err := a.proxy.CloseConnection(ctx, &snoopv1.CloseConnectionRequest{Proxy: "c", Id: conns.GetConnections()[0].GetId()}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Have([]byte("x")); err == nil {
		t.Error("closed connection still works")
	}
}

func TestShutdownEndsWatchStreams(t *testing.T) {
	a := startAPI(t, Config{}, ServerOptions{})
	stream, err := a.events.WatchEvents(context.Background(), &snoopv1.WatchEventsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	a.d.Close(context.Background())
	_, err = stream.Recv()
	wantCode(t, err, codes.Unavailable, "shutting down")
}

func TestHealthWatchEndsAtShutdown(t *testing.T) {
	a := startAPI(t, Config{}, ServerOptions{})
	s, hs := a.srv, a.hs
	w, err := a.health.Watch(context.Background(), &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if r, err := w.Recv(); err != nil || r.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("first status: %v %v", r, err)
	}
	hs.Shutdown()
	if r, err := w.Recv(); err != nil || r.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("after shutdown: %v %v", r, err)
	}
	_, err = w.Recv()
	wantCode(t, err, codes.Unavailable, "shutting down")
	// The stream no longer holds a graceful stop.
	done := make(chan struct{})
	go func() { s.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("graceful stop held by a health watch")
	}
}

func TestFailedApplyAtStartLeavesStateAlone(t *testing.T) {
	dir := t.TempDir()
	cache := startCache(t)
	d, err := New(Config{StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.CreateProxy(context.Background(), spec("saved", cache.String())); err != nil {
		t.Fatal(err)
	}
	d.Close(context.Background())
	path := filepath.Join(dir, stateFileName)
	before, _ := os.ReadFile(path)
	taken, _ := net.Listen("tcp", "127.0.0.1:0")
	defer taken.Close()
	_, err = New(Config{StateDir: dir, Apply: []*snoopv1.ProxySpec{
		spec("fresh", cache.String()),
		{Name: "zz-clash", Listen: taken.Addr().String(), Server: cache.String()},
	}})
	if !errors.Is(err, ErrApplyAtStart) || !strings.Contains(err.Error(), "address in use") {
		t.Fatalf("apply at start: %v", err)
	}
	if after, _ := os.ReadFile(path); string(after) != string(before) {
		t.Errorf("a failed start changed the state file:\n%s\nto\n%s", before, after)
	}
}

func TestSpareConnections(t *testing.T) {
	a := startAPI(t, Config{}, ServerOptions{})
	ctx := context.Background()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	// Count connections the proxy opens to the "server" before any client.
	accepted := make(chan net.Conn, 16)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	defer func() {
		for len(accepted) > 0 {
			(<-accepted).Close()
		}
	}()
	s := spec("none", "IP:"+ln.Addr().String())
	s.SpareConnections = proto.Uint32(0)
	if _, err := a.proxy.CreateProxy(ctx, &snoopv1.CreateProxyRequest{Spec: s}); err != nil {
		t.Fatal(err)
	}
	select {
	case c := <-accepted:
		c.Close()
		t.Fatal("a proxy with spare_connections 0 dialled the server ahead of clients")
	case <-time.After(200 * time.Millisecond):
	}
	upd, err := a.proxy.UpdateProxy(ctx, &snoopv1.UpdateProxyRequest{
		Spec: &snoopv1.ProxySpec{Name: "none", SpareConnections: proto.Uint32(3)}, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"spare_connections"}}})
	if err != nil || upd.GetProxy().GetSpec().GetSpareConnections() != 3 {
		t.Fatalf("update: %v %v", upd, err)
	}
	for i := range 3 {
		select {
		case c := <-accepted:
			c.Close()
		case <-time.After(5 * time.Second):
			t.Fatalf("only %d of 3 spare connections were dialled", i)
		}
	}
	s.SpareConnections = proto.Uint32(65)
	s.Name = "toomany"
	_, err = a.proxy.CreateProxy(ctx, &snoopv1.CreateProxyRequest{Spec: s})
	wantCode(t, err, codes.InvalidArgument, "spare_connections")
}

func TestApplyIsAllOrNothingOnBindFailure(t *testing.T) {
	a := startAPI(t, Config{}, ServerOptions{})
	ctx := context.Background()
	cache := startCache(t)
	if _, err := a.proxy.ApplyProxies(ctx, &snoopv1.ApplyProxiesRequest{Proxies: []*snoopv1.ProxySpec{spec("keep", cache.String())}}); err != nil {
		t.Fatal(err)
	}
	before, _ := a.d.GetProxy("keep")
	taken, _ := net.Listen("tcp", "127.0.0.1:0")
	defer taken.Close()
	// A new proxy, a move of "keep", and one proxy whose port is taken,
	// with prune: the taken port fails it all, and nothing changes.
	_, err := a.proxy.ApplyProxies(ctx, &snoopv1.ApplyProxiesRequest{Prune: true, Proxies: []*snoopv1.ProxySpec{
		spec("aaa-new", cache.String()),
		{Name: "keep", Listen: "IP:127.0.0.1:0", Server: cache.String(), MaxConnections: 7},
		{Name: "zzz-clash", Listen: taken.Addr().String(), Server: cache.String()},
	}})
	wantCode(t, err, codes.AlreadyExists, "nothing changed")
	list := a.d.ListProxies()
	if len(list) != 1 || list[0].GetSpec().GetName() != "keep" || list[0].GetListenAddress() != before.GetListenAddress() ||
		list[0].GetSpec().GetMaxConnections() != 0 {
		t.Fatalf("after a failed apply: %v", list)
	}
	// A move onto the socket address the proxy's own old listener holds
	// (127.0.0.1:P written as localhost:P) binds after the old one stops.
	port := testutil.FreePort(t)
	if _, err := a.proxy.ApplyProxies(ctx, &snoopv1.ApplyProxiesRequest{Proxies: []*snoopv1.ProxySpec{
		{Name: "keep", Listen: "IP:127.0.0.1:" + port, Server: cache.String()}}}); err != nil {
		t.Fatal(err)
	}
	res, err := a.proxy.ApplyProxies(ctx, &snoopv1.ApplyProxiesRequest{Proxies: []*snoopv1.ProxySpec{
		{Name: "keep", Listen: "IP:localhost:" + port, Server: cache.String()}}})
	if err != nil || res.GetResults()[0].GetAction() != snoopv1.ApplyAction_APPLY_ACTION_CHANGED {
		t.Fatalf("move onto its own port: %v %v", res, err)
	}
	if p, _ := a.d.GetProxy("keep"); p.GetListenAddress() != "IP:localhost:"+port || p.GetState() != snoopv1.ProxyState_PROXY_STATE_LISTENING {
		t.Errorf("after the move: %v", p)
	}
}

// TestReflection lists the services and resolves a method's descriptor the
// way grpcurl does, so scripts can discover the API.
func TestReflection(t *testing.T) {
	conn := startAPI(t, Config{}, ServerOptions{}).conn
	stream, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer stream.CloseSend()
	stream.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}})
	r, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range r.GetListServicesResponse().GetService() {
		names = append(names, s.GetName())
	}
	for _, want := range []string{"snoop.v1.ProxyService", "snoop.v1.EventService", "snoop.v1.DaemonService", "grpc.health.v1.Health"} {
		if !slices.Contains(names, want) {
			t.Errorf("reflection lists %v, missing %s", names, want)
		}
	}
	stream.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_FileContainingSymbol{
		FileContainingSymbol: "snoop.v1.ProxyService.CreateProxy"}})
	r, err = stream.Recv()
	if err != nil || len(r.GetFileDescriptorResponse().GetFileDescriptorProto()) == 0 {
		t.Fatalf("descriptor of CreateProxy: %v %v", r, err)
	}
}

// TestHistoryDoneMarker checks where the end-of-history notice goes: after
// the history events, before live ones, and at once when history was asked
// for but nothing matched; never when history was not asked for.
func TestHistoryDoneMarker(t *testing.T) {
	a := startAPI(t, Config{}, ServerOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := a.proxy.CreateProxy(ctx, &snoopv1.CreateProxyRequest{Spec: spec("h", startCache(t).String())})
	if err != nil {
		t.Fatal(err)
	}
	addr := distcache.MustParseAddr(res.GetProxy().GetListenAddress())
	do := func(id string) {
		c, err := loadgen.Dial(ctx, addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Have([]byte(id))
	}
	txOnly := []snoopv1.EventKind{snoopv1.EventKind_EVENT_KIND_TRANSACTION}
	// Nothing matches yet: the notice comes first.
	empty, err := a.events.WatchEvents(ctx, &snoopv1.WatchEventsRequest{History: 5, Kinds: txOnly})
	if err != nil {
		t.Fatal(err)
	}
	if r, err := empty.Recv(); err != nil || !r.GetHistoryDone() {
		t.Fatalf("history asked, none matching: %v %v", r, err)
	}
	do("old-1")
	do("old-2")
	deadline := time.Now().Add(5 * time.Second)
	for a.d.hub.Published() < 6 && time.Now().Before(deadline) { // 2 x (opened, tx, closed)
		time.Sleep(5 * time.Millisecond)
	}
	hist, err := a.events.WatchEvents(ctx, &snoopv1.WatchEventsRequest{History: 5, Kinds: txOnly})
	if err != nil {
		t.Fatal(err)
	}
	plain, err := a.events.WatchEvents(ctx, &snoopv1.WatchEventsRequest{Kinds: txOnly})
	if err != nil {
		t.Fatal(err)
	}
	// The live event must find all three watchers registered.
	for deadline := time.Now().Add(5 * time.Second); a.d.hub.Watchers() < 3 && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	var got []string
	for len(got) < 3 {
		r, err := hist.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if r.GetHistoryDone() {
			got = append(got, "|")
			do("live")
			continue
		}
		got = append(got, string(r.GetEvent().GetTransaction().GetSessionId()))
	}
	if r, err := hist.Recv(); err != nil || string(r.GetEvent().GetTransaction().GetSessionId()) != "live" {
		t.Fatalf("after the notice: %v %v", r, err)
	}
	if strings.Join(got, " ") != "old-1 old-2 |" {
		t.Errorf("history stream: %v", got)
	}
	if r, err := plain.Recv(); err != nil || r.GetHistoryDone() || string(r.GetEvent().GetTransaction().GetSessionId()) != "live" {
		t.Errorf("a watch without history: %v %v", r, err)
	}
}
