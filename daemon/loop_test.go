package daemon

import (
	"context"
	"errors"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	"github.com/snoopd/snoopd/distcache"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
	"github.com/snoopd/snoopd/internal/testutil"
)

// fakeLocal is a machine with one interface address besides loopback.
func fakeLocal(ip netip.Addr) bool {
	ip = ip.Unmap()
	return ip.IsLoopback() || ip.IsUnspecified() || ip == netip.MustParseAddr("10.1.2.3")
}

// TestLoopSetIndexIsExact holds the indexed loop check to a scan of
// every listener of the set: random sets drawn from addresses that
// differ only in how a host, path or port is written.
func TestLoopSetIndexIsExact(t *testing.T) {
	pool := []string{
		"IP:9001", "IP:127.0.0.1:9001", "IP:localhost:9001", "IP:LocalHost.:9001", "IP:[::1]:9001", "IP:0.0.0.0:9001",
		"IP:[::]:9002", "IP:10.1.2.3:9002", "IP:example.com:9002", "IP:EXAMPLE.com.:9002", "IP:127.0.0.1:0", "IP:9003",
		"IPv4:127.0.0.1:9001", "UNIX:/run/a.sock", "UNIX:/run//a.sock", "UNIX:/run/b/../a.sock", "UNIX:@a.sock", "UNIX:/run/b.sock",
	}
	addr := func(r *rand.Rand) distcache.Addr { return distcache.MustParseAddr(pool[r.IntN(len(pool))]) }
	scan := func(nodes []loopNode, server distcache.Addr, want func(int) bool) int {
		for j, n := range nodes {
			if want != nil && !want(j) {
				continue
			}
			for _, l := range n.listens {
				if reaches(server, l, fakeLocal) {
					return j
				}
			}
		}
		return -1
	}
	// chain follows node i's server by scanning, as the loop check did
	// before the index: the names up to the first node met twice, or to
	// the last one, whose server is no listener of the set.
	chain := func(nodes []loopNode, i int) string {
		names := []string{nodes[i].name}
		seen := map[int]bool{i: true}
		for cur := i; ; {
			next := scan(nodes, nodes[cur].server, nil)
			if next < 0 {
				return strings.Join(names, " → ")
			}
			names = append(names, nodes[next].name)
			if seen[next] {
				return strings.Join(names, " → ") + " (loop)"
			}
			seen[next] = true
			cur = next
		}
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 2000 {
		nodes := make([]loopNode, 1+r.IntN(6))
		for i := range nodes {
			listens := []distcache.Addr{addr(r)}
			if r.IntN(3) == 0 {
				listens = append(listens, addr(r))
			}
			nodes[i] = nodeFor(strconv.Itoa(i), addr(r), listens...)
		}
		set := newLoopSet(nodes, fakeLocal)
		odd := func(j int) bool { return j%2 == 1 }
		for i, n := range nodes {
			if got, want := set.target(n.server, nil), scan(nodes, n.server, nil); got != want {
				t.Fatalf("server %s in %+v: index found %d, a scan %d", n.server, nodes, got, want)
			}
			if got, want := set.target(n.server, odd), scan(nodes, n.server, odd); got != want {
				t.Fatalf("server %s in %+v, odd nodes only: index found %d, a scan %d", n.server, nodes, got, want)
			}
			names, _, loop := set.chain(i)
			got := strings.Join(names, " → ")
			if loop {
				got += " (loop)"
			}
			if want := chain(nodes, i); got != want {
				t.Fatalf("from node %d in %+v: chain %q, a scan %q", i, nodes, got, want)
			}
			if l := set.findLoop(i); (l != nil) != loop || (loop && strings.Join(l.chain, " → ") != strings.Join(names, " → ")) {
				t.Fatalf("from node %d in %+v: findLoop %v, chain %q", i, nodes, l, got)
			}
		}
	}
}

func TestReaches(t *testing.T) {
	for _, tc := range []struct {
		listen, server string
		want           bool
	}{
		// A wildcard listener is reached through every local address.
		{"IP:9001", "IP:127.0.0.1:9001", true},
		{"IP:9001", "IP:localhost:9001", true},
		{"IP:9001", "IP:LocalHost.:9001", true},
		{"IP:9001", "IP:[::1]:9001", true},
		{"IP:9001", "IP:10.1.2.3:9001", true},
		{"IP:9001", "IP:127.0.0.1:9002", false},
		{"IP:9001", "IP:10.9.9.9:9001", false},
		{"IP:9001", "IP:cache1:9001", false}, // names are not resolved
		{"IP:0.0.0.0:9001", "IP:127.0.0.1:9001", true},
		{"IP:0.0.0.0:9001", "IP:localhost:9001", true},
		{"IP:0.0.0.0:9001", "IP:[::1]:9001", true},
		{"IP:0.0.0.0:9001", "IP:10.1.2.3:9001", true},
		{"IP:[::]:9001", "IP:127.0.0.1:9001", true},
		{"IP:[::]:9001", "IP:10.9.9.9:9001", false},
		// A listener on one address is reached through that address only.
		{"IP:127.0.0.1:9001", "IP:127.0.0.1:9001", true},
		{"IP:127.0.0.1:9001", "IP:localhost:9001", true},
		{"IP:127.0.0.1:9001", "IP:[::ffff:127.0.0.1]:9001", true},
		{"IP:127.0.0.1:9001", "IP:0.0.0.0:9001", true}, // connecting to 0.0.0.0 lands on loopback
		{"IP:127.0.0.1:9001", "IP:127.0.0.2:9001", false},
		{"IP:127.0.0.1:9001", "IP:[::1]:9001", false},
		{"IP:127.0.0.1:9001", "IP:10.1.2.3:9001", false},
		{"IP:127.0.0.2:9001", "IP:localhost:9001", false},
		{"IP:[::1]:9001", "IP:localhost:9001", true},
		{"IP:localhost:9001", "IP:127.0.0.1:9001", true},
		{"IP:localhost:9001", "IP:[::1]:9001", true},
		{"IP:localhost:9001", "IP:localhost:9001", true},
		{"IP:localhost:9001", "IP:10.1.2.3:9001", false},
		{"IP:10.1.2.3:9001", "IP:10.1.2.3:9001", true},
		{"IP:cache1:9001", "IP:CACHE1:9001", true},
		{"IP:cache1:9001", "IP:cache2:9001", false},
		// Port 0 is no port yet.
		{"IP:127.0.0.1:0", "IP:127.0.0.1:1", false},
		// Unix paths compare cleaned; a TCP server never reaches a unix listener.
		{"UNIX:/run/a.sock", "UNIX:/run/a.sock", true},
		{"UNIX:/run/a.sock", "UNIX:/run/./x/../a.sock", true},
		{"UNIX:/run/a.sock", "unix:///run//a.sock", true},
		{"UNIX:/run/a.sock", "UNIX:/run/b.sock", false},
		{"UNIX:rel.sock", "UNIX:./rel.sock", true},
		{"UNIX:@abstract", "UNIX:@abstract", true},
		{"UNIX:/run/9001", "IP:127.0.0.1:9001", false},
	} {
		listen := distcache.MustParseAddr(tc.listen)
		server := distcache.MustParseAddr(tc.server)
		if got := reaches(server, listen, fakeLocal); got != tc.want {
			t.Errorf("reaches(server %s, listen %s) = %v, want %v", tc.server, tc.listen, got, tc.want)
		}
	}
}

// TestMachineIPs: the machine's own interface addresses count as local,
// and an address from the documentation range does not.
func TestMachineIPs(t *testing.T) {
	local := machineIPs()
	for _, ip := range []string{"127.0.0.1", "::1", "0.0.0.0", "127.8.9.10"} {
		if !local(netip.MustParseAddr(ip)) {
			t.Errorf("%s is not local", ip)
		}
	}
	if local(netip.MustParseAddr("192.0.2.77")) {
		t.Error("192.0.2.77 (TEST-NET-1) is local")
	}
}

func TestFindLoop(t *testing.T) {
	node := func(name, listen, server string) loopNode {
		return nodeFor(name, distcache.MustParseAddr(server), distcache.MustParseAddr(listen))
	}
	nodes := []loopNode{
		node("self", "IP:127.0.0.1:9001", "IP:localhost:9001"),
		node("a", "IP:127.0.0.1:9002", "IP:127.0.0.1:9003"),
		node("b", "IP:9003", "IP:127.0.0.1:9004"),
		node("c", "UNIX:/run/c.sock", "IP:127.0.0.1:9002"),
		node("chain", "IP:127.0.0.1:9005", "IP:127.0.0.1:9006"),
		node("end", "IP:127.0.0.1:9006", "IP:10.9.9.9:9000"),
		node("fine", "IP:127.0.0.1:9007", "IP:10.9.9.9:9000"),
	}
	nodes[2].listens = append(nodes[2].listens, distcache.MustParseAddr("UNIX:/run/never.sock"))
	nodes[2].server = distcache.MustParseAddr("UNIX:/run/c.sock")
	for i, want := range []string{
		"self → self",
		"a → b → c → a",
		"b → c → a → b",
		"c → a → b → c",
		"", // chain → end, which ends at a server that is not ours
		"",
		"",
	} {
		l := newLoopSet(nodes, fakeLocal).findLoop(i)
		got := ""
		if l != nil {
			got = strings.Join(l.chain, " → ")
		}
		if got != want {
			t.Errorf("from %s: %q, want %q", nodes[i].name, got, want)
		}
	}
	if r := newLoopSet(nodes, fakeLocal).findLoop(0).serverReason(); r != `server IP:localhost:9001 is the listen address of proxy "self" itself: a proxy loop self → self` {
		t.Errorf("self reason %q", r)
	}
	if r := newLoopSet(nodes, fakeLocal).findLoop(1).serverReason(); r != `server IP:127.0.0.1:9003 is the listen address of proxy "b" (this daemon): a proxy loop a → b → c → a` {
		t.Errorf("loop reason %q", r)
	}
	if names, end, loop := newLoopSet(nodes, fakeLocal).chain(4); strings.Join(names, " → ") != "chain → end" || nodes[end].name != "end" || loop {
		t.Errorf("chain from chain: %q, ends at %d, loop %v", names, end, loop)
	}
}

// violation returns the field of the one BadRequest field violation in
// err, which must be INVALID_ARGUMENT with a message containing each of
// contains.
func violation(t *testing.T, err error, contains ...string) string {
	t.Helper()
	st, _ := status.FromError(err)
	if st.Code() != codes.InvalidArgument {
		t.Fatalf("got %v %q, want InvalidArgument", st.Code(), st.Message())
	}
	for _, c := range contains {
		if !strings.Contains(st.Message(), c) {
			t.Errorf("message %q lacks %q", st.Message(), c)
		}
	}
	for _, d := range st.Details() {
		if br, ok := d.(*errdetails.BadRequest); ok && len(br.GetFieldViolations()) == 1 {
			return br.GetFieldViolations()[0].GetField()
		}
	}
	t.Fatalf("no BadRequest with one field violation in %v", st.Details())
	return ""
}

func TestLoopRefusedAtCreate(t *testing.T) {
	a := startAPI(t, Config{}, ServerOptions{})
	ctx := context.Background()
	create := func(s *snoopv1.ProxySpec) (*snoopv1.Proxy, error) {
		r, err := a.proxy.CreateProxy(ctx, &snoopv1.CreateProxyRequest{Spec: s})
		return r.GetProxy(), err
	}
	port := testutil.FreePort(t)
	// Its own address.
	_, err := create(&snoopv1.ProxySpec{Name: "self", Listen: "IP:127.0.0.1:" + port, Server: "localhost:" + port})
	if f := violation(t, err, `proxy "self" itself`, "a proxy loop self → self"); f != "spec.server" {
		t.Errorf("field %q", f)
	}
	// Another proxy's bound address, which port 0 chose, when that proxy
	// sends its traffic back.
	pa := testutil.FreePort(t)
	b, err := create(&snoopv1.ProxySpec{Name: "b", Listen: "IP:127.0.0.1:0", Server: "IP:127.0.0.1:" + pa})
	if err != nil {
		t.Fatal(err)
	}
	_, err = create(&snoopv1.ProxySpec{Name: "a", Listen: "IP:127.0.0.1:" + pa, Server: b.GetListenAddress()})
	if f := violation(t, err, "server "+b.GetListenAddress()+` is the listen address of proxy "b" (this daemon): a proxy loop a → b → a`); f != "spec.server" {
		t.Errorf("field %q", f)
	}
	// A wildcard listener is reached through loopback.
	px := testutil.FreePort(t)
	_, err = create(&snoopv1.ProxySpec{Name: "w", Listen: "IP:0.0.0.0:" + port, Server: "IP:127.0.0.1:" + px})
	if err != nil {
		t.Fatal(err)
	}
	_, err = create(&snoopv1.ProxySpec{Name: "x", Listen: "IP:127.0.0.1:" + px, Server: "IP:[::1]:" + port})
	violation(t, err, `proxy "w"`, "a proxy loop x → w → x")
	// A unix listener, written differently.
	dir := t.TempDir()
	py := testutil.FreePort(t)
	if _, err := create(&snoopv1.ProxySpec{Name: "u", Listen: "UNIX:" + filepath.Join(dir, "u.sock"), Server: "IP:127.0.0.1:" + py}); err != nil {
		t.Fatal(err)
	}
	_, err = create(&snoopv1.ProxySpec{Name: "y", Listen: "IP:127.0.0.1:" + py, Server: "UNIX:" + dir + "/./u.sock"})
	violation(t, err, "a proxy loop y → u → y")
	// A disabled proxy's address counts: enabling it would close the loop.
	pz := testutil.FreePort(t)
	if _, err := create(&snoopv1.ProxySpec{Name: "off", Listen: "IP:127.0.0.1:" + testutil.FreePort(t), Server: "IP:127.0.0.1:" + pz, Enabled: proto.Bool(false)}); err != nil {
		t.Fatal(err)
	}
	off, _ := a.d.GetProxy("off")
	_, err = create(&snoopv1.ProxySpec{Name: "z", Listen: "IP:127.0.0.1:" + pz, Server: off.GetSpec().GetListen()})
	violation(t, err, "a proxy loop z → off → z")
	// A chain that ends at a server that is not one of this daemon's is
	// no loop: a proxy in front of b, whose server is nobody's listener
	// now that a was refused.
	if _, err := create(&snoopv1.ProxySpec{Name: "front", Listen: "IP:127.0.0.1:0", Server: b.GetListenAddress()}); err != nil {
		t.Fatalf("a chain of two proxies: %v", err)
	}
	// Nothing refused was created, and the others still listen.
	for _, name := range []string{"self", "a", "x", "y", "z"} {
		if _, err := a.d.GetProxy(name); err == nil {
			t.Errorf("refused proxy %q exists", name)
		}
	}
	for _, name := range []string{"w", "front"} {
		if p, _ := a.d.GetProxy(name); p.GetState() != snoopv1.ProxyState_PROXY_STATE_LISTENING {
			t.Errorf("%s: %v", name, p)
		}
	}
}

func TestLoopRefusedAtUpdate(t *testing.T) {
	a := startAPI(t, Config{}, ServerOptions{})
	ctx := context.Background()
	var listens []string
	for _, name := range []string{"a", "b"} {
		r, err := a.proxy.CreateProxy(ctx, &snoopv1.CreateProxyRequest{Spec: spec(name, "IP:192.0.2.1:9000")})
		if err != nil {
			t.Fatal(err)
		}
		listens = append(listens, r.GetProxy().GetListenAddress())
	}
	update := func(name, server string) error {
		_, err := a.proxy.UpdateProxy(ctx, &snoopv1.UpdateProxyRequest{
			Spec: &snoopv1.ProxySpec{Name: name, Server: server}, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"server"}},
		})
		return err
	}
	if f := violation(t, update("a", listens[0]), `proxy "a" itself`, "a proxy loop a → a"); f != "spec.server" {
		t.Errorf("field %q", f)
	}
	// a → b is a chain, ending at b's server; b → a then closes the
	// cycle, which the message shows.
	if err := update("a", listens[1]); err != nil {
		t.Fatalf("a chain: %v", err)
	}
	violation(t, update("b", listens[0]), "a proxy loop b → a → b")
	p, _ := a.d.GetProxy("b")
	if p.GetSpec().GetServer() != "IP:192.0.2.1:9000" {
		t.Errorf("a refused update changed the server: %v", p.GetSpec())
	}
	// Any other change stays possible.
	if err := update("b", "IP:192.0.2.2:9000"); err != nil {
		t.Fatal(err)
	}
}

func TestLoopRefusedAtApply(t *testing.T) {
	a := startAPI(t, Config{}, ServerOptions{})
	ctx := context.Background()
	p1, p2, p3, p4 := testutil.FreePort(t), testutil.FreePort(t), testutil.FreePort(t), testutil.FreePort(t)
	cycle := []*snoopv1.ProxySpec{
		{Name: "a", Listen: "IP:127.0.0.1:" + p1, Server: "IP:127.0.0.1:" + p2},
		{Name: "b", Listen: "IP:127.0.0.1:" + p2, Server: "localhost:" + p3},
		{Name: "c", Listen: "IP:" + p3, Server: "IP:127.0.0.1:" + p1},
	}
	_, err := a.proxy.ApplyProxies(ctx, &snoopv1.ApplyProxiesRequest{Proxies: cycle})
	if f := violation(t, err, `is the listen address of proxy "b" (this daemon)`, "a proxy loop a → b → c → a"); f != "proxies[0].server" {
		t.Errorf("field %q", f)
	}
	// A dry run is refused the same way.
	_, err = a.proxy.ApplyProxies(ctx, &snoopv1.ApplyProxiesRequest{Proxies: cycle, DryRun: true})
	violation(t, err, "a proxy loop a → b → c → a")
	if n := len(a.d.ListProxies()); n != 0 {
		t.Fatalf("a refused apply left %d proxies", n)
	}

	// Against the proxies already there: "c" exists and sends its
	// traffic to where the set puts "d", which points back at "c".
	if _, err := a.proxy.CreateProxy(ctx, &snoopv1.CreateProxyRequest{Spec: &snoopv1.ProxySpec{
		Name: "c", Listen: "IP:" + p3, Server: "IP:127.0.0.1:" + p4}}); err != nil {
		t.Fatal(err)
	}
	set := []*snoopv1.ProxySpec{
		{Name: "ok", Listen: "IP:127.0.0.1:0", Server: "IP:192.0.2.1:9000"},
		{Name: "b", Listen: "IP:127.0.0.1:" + p2, Server: "IP:10.0.0.1:9000"},
		{Name: "d", Listen: "IP:127.0.0.1:" + p4, Server: "IP:127.0.0.1:" + p3},
	}
	_, err = a.proxy.ApplyProxies(ctx, &snoopv1.ApplyProxiesRequest{Proxies: set})
	if f := violation(t, err, "a proxy loop d → c → d"); f != "proxies[2].server" {
		t.Errorf("field %q", f)
	}
	// With prune, "c" goes away, and so does the loop.
	res, err := a.proxy.ApplyProxies(ctx, &snoopv1.ApplyProxiesRequest{Proxies: set, Prune: true})
	if err != nil {
		t.Fatalf("apply with prune: %v", err)
	}
	if len(res.GetResults()) != 4 {
		t.Errorf("results %v", res.GetResults())
	}
	// A declared proxy listening where an undeclared one sends traffic,
	// and sending its own back.
	e, err := a.proxy.CreateProxy(ctx, &snoopv1.CreateProxyRequest{Spec: &snoopv1.ProxySpec{
		Name: "e", Listen: "IP:127.0.0.1:0", Server: "IP:127.0.0.1:" + p1}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = a.proxy.ApplyProxies(ctx, &snoopv1.ApplyProxiesRequest{Proxies: []*snoopv1.ProxySpec{
		{Name: "f", Listen: "IP:127.0.0.1:" + p1, Server: e.GetProxy().GetListenAddress()},
	}})
	if f := violation(t, err, `is the listen address of proxy "e"`, "a proxy loop f → e → f"); f != "proxies[0].server" {
		t.Errorf("field %q", f)
	}
	// Without the way back, the same proxy is a chain, and welcome.
	if _, err := a.proxy.ApplyProxies(ctx, &snoopv1.ApplyProxiesRequest{Proxies: []*snoopv1.ProxySpec{
		{Name: "f", Listen: "IP:127.0.0.1:" + p1, Server: "IP:192.0.2.1:9000"},
	}}); err != nil {
		t.Fatalf("a chain e → f: %v", err)
	}
}

// TestLoopInStateFile: a state file holding proxies that form loops (one
// written before the check, or by hand) brings the daemon up, with the
// looping proxies failed and not listening or dialling, and the others
// running.
func TestLoopInStateFile(t *testing.T) {
	dir := t.TempDir()
	cache := startCache(t)
	p1, p2 := testutil.FreePort(t), testutil.FreePort(t)
	set := &snoopv1.ApplyProxiesRequest{Proxies: []*snoopv1.ProxySpec{
		{Name: "good", Listen: "IP:127.0.0.1:0", Server: cache.String()},
		{Name: "ping", Listen: "IP:127.0.0.1:" + p1, Server: "IP:127.0.0.1:" + p2},
		{Name: "pong", Listen: "IP:0.0.0.0:" + p2, Server: "localhost:" + p1},
		{Name: "self", Listen: "IP:127.0.0.1:0", Server: "IP:127.0.0.1:0"},
	}}
	set.Proxies[3].Server = "UNIX:" + filepath.Join(dir, "s.sock")
	set.Proxies[3].Listen = "UNIX:" + filepath.Join(dir, "s.sock")
	b, err := protojson.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, stateFileName), b, 0o600); err != nil {
		t.Fatal(err)
	}
	d, err := New(Config{StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close(context.Background())
	for name, want := range map[string]string{
		"ping": "a proxy loop ping → pong → ping",
		"pong": "a proxy loop pong → ping → pong",
		"self": `proxy "self" itself`,
	} {
		p, err := d.GetProxy(name)
		if err != nil {
			t.Fatal(err)
		}
		if p.GetState() != snoopv1.ProxyState_PROXY_STATE_FAILED || !strings.Contains(p.GetError(), want) {
			t.Errorf("%s: %v %q, want failed with %q", name, p.GetState(), p.GetError(), want)
		}
		if s := p.GetCounters(); s.GetConnectionsTotal() != 0 {
			t.Errorf("%s carried connections: %v", name, s)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "s.sock")); err == nil {
		t.Error("the looping unix proxy created its socket")
	}
	p, _ := d.GetProxy("good")
	if p.GetState() != snoopv1.ProxyState_PROXY_STATE_LISTENING {
		t.Errorf("good: %v", p)
	}
	// Enabling a looping proxy is refused; changing its server fixes it.
	_, err = d.UpdateProxy(context.Background(), &snoopv1.ProxySpec{Name: "ping", Enabled: proto.Bool(true)}, []string{"enabled"}, false)
	if Status(err) == nil || status.Code(Status(err)) != codes.InvalidArgument {
		t.Errorf("enable a looping proxy: %v", err)
	}
	p, err = d.UpdateProxy(context.Background(), &snoopv1.ProxySpec{Name: "ping", Server: cache.String()}, []string{"server"}, false)
	if err != nil || p.GetState() != snoopv1.ProxyState_PROXY_STATE_LISTENING {
		t.Errorf("ping with a real server: %v %v", p, err)
	}
}

// TestLoopInDeclaredSetAtStart: a --config set with a loop stops the
// start-up, as any invalid entry there does, naming the entry and the
// loop.
func TestLoopInDeclaredSetAtStart(t *testing.T) {
	port := testutil.FreePort(t)
	_, err := New(Config{Apply: []*snoopv1.ProxySpec{
		{Name: "ok", Listen: "IP:127.0.0.1:0", Server: "IP:192.0.2.1:9000"},
		{Name: "me", Listen: "IP:" + port, Server: "IP:127.0.0.1:" + port},
	}})
	if !errors.Is(err, ErrApplyAtStart) || !strings.Contains(err.Error(), "proxies[1].server") || !strings.Contains(err.Error(), "a proxy loop me → me") {
		t.Fatalf("New: %v", err)
	}
}
