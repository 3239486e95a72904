package daemon

import (
	"context"
	"maps"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"github.com/snoopd/snoopd/distcache"
	"github.com/snoopd/snoopd/distcache/loadgen"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
	"github.com/snoopd/snoopd/internal/skip"
)

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		skip.Missing(t, "root: a tap captures on lo through AF_PACKET, which needs CAP_NET_RAW")
	}
}

// tapEvents collects the events of the named proxies from a watch, by
// kind, result and connection id, until the test ends.
type tapEvents struct {
	mu      sync.Mutex
	results map[string]map[string]int64 // by proxy
	ids     map[string]map[uint64]bool  // connection ids by proxy
	closed  map[string]int              // ConnClosed by reason
	txs     int64
	dropped uint64
}

func (te *tapEvents) add(ev *snoopv1.Event) {
	p := ev.GetProxy()
	if te.ids[p] == nil {
		te.ids[p], te.results[p] = map[uint64]bool{}, map[string]int64{}
	}
	te.ids[p][ev.GetConnectionId()] = true
	switch ev.GetKind() {
	case snoopv1.EventKind_EVENT_KIND_TRANSACTION:
		te.results[p][ev.GetTransaction().GetResult()]++
		te.txs++
	case snoopv1.EventKind_EVENT_KIND_CONNECTION_CLOSED:
		te.closed[ev.GetClosed().GetReason()]++
	}
}

func watchTaps(t *testing.T, a *api, proxies ...string) *tapEvents {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s, err := a.events.WatchEvents(ctx, &snoopv1.WatchEventsRequest{Proxies: proxies})
	if err != nil {
		t.Fatal(err)
	}
	te := &tapEvents{results: map[string]map[string]int64{}, ids: map[string]map[uint64]bool{}, closed: map[string]int{}}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			r, err := s.Recv()
			if err != nil {
				return
			}
			evs := r.GetEvents()
			if r.GetEvent() != nil {
				evs = append(evs, r.GetEvent())
			}
			te.mu.Lock()
			te.dropped += r.GetDropped()
			for _, ev := range evs {
				te.add(ev)
			}
			te.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		if te.dropped != 0 {
			t.Errorf("the watch dropped %d events", te.dropped)
		}
	})
	return te
}

// waitCapture polls cond for up to 10 s: a tap sees packets a ring block's
// timeout after they were sent.
func waitCapture(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited 10 s for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (te *tapEvents) transactions() int64 {
	te.mu.Lock()
	defer te.mu.Unlock()
	return te.txs
}

// TestTapSeesWhatTheLoadDid creates a tap on lo watching a cache
// server's port beside a proxy in front of the same server, runs a load
// straight at the server, and checks that the tap's transactions are the
// load generator's answers, result by result; that its counters say so
// in GetProxy, ListProxies and EachProxy, with nothing dropped or
// missed; that it is listed as a tap; and that its connection ids and
// the proxy's, from one daemon counter, never meet.
func TestTapSeesWhatTheLoadDid(t *testing.T) {
	needRoot(t)
	a := startAPI(t, Config{}, ServerOptions{})
	ctx := context.Background()
	cache := startCache(t)
	te := watchTaps(t, a, "lo-tap", "front")
	res, err := a.proxy.CreateProxy(ctx, &snoopv1.CreateProxyRequest{Spec: tapSpec("lo-tap", cache.String())})
	if err != nil {
		t.Fatal(err)
	}
	if p := res.GetProxy(); p.GetKind() != snoopv1.ProxyKind_PROXY_KIND_TAP || p.GetState() != snoopv1.ProxyState_PROXY_STATE_LISTENING ||
		p.GetListenAddress() != "" || p.GetCounters().GetTap() == nil {
		t.Fatalf("created tap: %v", p)
	}
	// No spares: the tap would see them open, and wait for them to close.
	fs := spec("front", cache.String())
	fs.SpareConnections = proto.Uint32(0)
	front, err := a.proxy.CreateProxy(ctx, &snoopv1.CreateProxyRequest{Spec: fs})
	if err != nil {
		t.Fatal(err)
	}
	frontAddr := distcache.MustParseAddr(front.GetProxy().GetListenAddress())

	lctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	want := map[string]int64{}
	var ops int64
	for _, cfg := range []loadgen.Config{
		{Addr: cache, Conns: 2, Persistent: true, Pipeline: 4, Ops: 2000, Duration: 20 * time.Second},
		{Addr: cache, Conns: 2, Ops: 100, Duration: 20 * time.Second},
		// Through the proxy too: the tap sees the proxy's server side.
		{Addr: frontAddr, Conns: 1, Persistent: true, Ops: 100, Duration: 20 * time.Second},
	} {
		rep, err := loadgen.Run(lctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		if rep.Errors != 0 {
			t.Fatalf("load: %d errors: %v", rep.Errors, rep.ErrorSamples)
		}
		for k, v := range rep.Results {
			want[k] += v
		}
		ops += rep.Ops
	}
	const throughFront = 100
	waitCapture(t, "the tap's and the proxy's transactions", func() bool { return te.transactions() >= ops+throughFront })
	waitCapture(t, "the tap to see every connection close", func() bool {
		p, err := a.d.GetProxy("lo-tap")
		return err == nil && p.GetCounters().GetConnectionsActive() == 0
	})

	te.mu.Lock()
	got := maps.Clone(te.results["lo-tap"])
	tapIDs, frontIDs := te.ids["lo-tap"], te.ids["front"]
	for id := range tapIDs {
		if frontIDs[id] {
			t.Errorf("connection id %d is both the tap's and the proxy's", id)
		}
	}
	tapConns := len(tapIDs) // read under the lock: the watch goes on writing
	te.mu.Unlock()
	if !maps.Equal(got, want) {
		t.Errorf("the tap's results %v, the load generator's %v", got, want)
	}
	p, err := a.d.GetProxy("lo-tap")
	if err != nil {
		t.Fatal(err)
	}
	c, tc := p.GetCounters(), p.GetCounters().GetTap()
	if c.GetTransactions() != ops || tc.GetKernelPackets() == 0 || tc.GetKernelDrops() != 0 || tc.GetCaptureGaps() != 0 ||
		tc.GetResyncs() != 0 || tc.GetReadErrors() != 0 || c.GetConnectionsTotal() != int64(tapConns) {
		t.Errorf("tap counters after %d transactions on %d connections: %v", ops, tapConns, c)
	}
	for _, l := range a.d.ListProxies() {
		if want := map[string]snoopv1.ProxyKind{"lo-tap": snoopv1.ProxyKind_PROXY_KIND_TAP, "front": snoopv1.ProxyKind_PROXY_KIND_PROXY}[l.GetSpec().GetName()]; l.GetKind() != want {
			t.Errorf("%s listed as %v, want %v", l.GetSpec().GetName(), l.GetKind(), want)
		}
	}
	var seen bool
	a.d.EachProxy(false, func(ps *ProxyStats) bool {
		switch ps.Name {
		case "lo-tap":
			seen = ps.Tap != nil && ps.Tap.Interface == "lo" && ps.Tap.KernelPackets == tc.GetKernelPackets() && ps.Stats.Transactions() == ops
		case "front":
			if ps.Tap != nil {
				t.Errorf("the proxy has tap counters: %+v", ps.Tap)
			}
		}
		return true
	})
	if !seen {
		t.Error("EachProxy did not read the tap's counters")
	}
}

// TestFaultOnATapIsRefused: fault add (UpdateProxy of faults) on a tap
// is FAILED_PRECONDITION naming why, and leaves it as it was.
func TestFaultOnATapIsRefused(t *testing.T) {
	needRoot(t)
	a := startAPI(t, Config{}, ServerOptions{})
	ctx := context.Background()
	cache := startCache(t)
	if _, err := a.proxy.CreateProxy(ctx, &snoopv1.CreateProxyRequest{Spec: tapSpec("t", cache.String())}); err != nil {
		t.Fatal(err)
	}
	_, err := a.d.UpdateProxy(ctx, &snoopv1.ProxySpec{Name: "t", Faults: []*snoopv1.Fault{{Name: "m", Type: snoopv1.FaultType_FAULT_TYPE_MISS}}}, []string{"faults"}, false)
	wantCode(t, Status(err), codes.FailedPrecondition, "proxy \"t\" is a tap on lo: a tap forwards nothing: nothing passes through it for a fault to act on")
	p, _ := a.d.GetProxy("t")
	if len(p.GetSpec().GetFaults()) != 0 || p.GetState() != snoopv1.ProxyState_PROXY_STATE_LISTENING {
		t.Errorf("after the refused fault: %v", p)
	}
}

// TestRemovingATapStopsItsCapture deletes a tap while a client is
// connected: the connection is reported closed by the tap's stop, and
// traffic after the delete, which a second tap sees, reaches the
// deleted one no more.
func TestRemovingATapStopsItsCapture(t *testing.T) {
	needRoot(t)
	a := startAPI(t, Config{}, ServerOptions{})
	ctx := context.Background()
	cache := startCache(t)
	te := watchTaps(t, a, "gone")
	if _, err := a.d.CreateProxy(ctx, tapSpec("gone", cache.String())); err != nil {
		t.Fatal(err)
	}
	e := a.d.entry(t, "gone")
	c, err := loadgen.Dial(ctx, cache, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, _, err := c.Get([]byte("before")); err != nil {
		t.Fatal(err)
	}
	waitCapture(t, "the tap's first transaction", func() bool { return te.transactions() == 1 })
	if _, err := a.d.DeleteProxy(ctx, "gone", 0, false); err != nil {
		t.Fatal(err)
	}
	waitCapture(t, "the connection reported closed by the tap's stop", func() bool {
		te.mu.Lock()
		defer te.mu.Unlock()
		return te.closed["tap stopped"] == 1
	})
	if e.p.Listening() {
		t.Error("the deleted tap still captures")
	}
	before := e.p.Stats()

	if _, err := a.d.CreateProxy(ctx, tapSpec("after", cache.String())); err != nil {
		t.Fatal(err)
	}
	after := watchTaps(t, a, "after")
	c2, err := loadgen.Dial(ctx, cache, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if _, _, err := c2.Get([]byte("after")); err != nil {
		t.Fatal(err)
	}
	waitCapture(t, "the second tap's transaction", func() bool { return after.transactions() >= 1 })
	if got := e.p.Stats(); got.Transactions() != before.Transactions() || got.BytesUp != before.BytesUp || te.transactions() != 1 {
		t.Errorf("the deleted tap counted on: %d transactions, %d bytes up (%d, %d at the delete); events %d",
			got.Transactions(), got.BytesUp, before.Transactions(), before.BytesUp, te.transactions())
	}
}

// TestTapDisableAndEnableKeepItsCounters: a disabled tap captures
// nothing and says disabled; enabled again, it counts on from where it
// was.
func TestTapDisableAndEnableKeepItsCounters(t *testing.T) {
	needRoot(t)
	a := startAPI(t, Config{}, ServerOptions{})
	ctx := context.Background()
	cache := startCache(t)
	if _, err := a.d.CreateProxy(ctx, tapSpec("t", cache.String())); err != nil {
		t.Fatal(err)
	}
	get := func(id string) {
		t.Helper()
		c, err := loadgen.Dial(ctx, cache, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, _, err := c.Get([]byte(id)); err != nil {
			t.Fatal(err)
		}
	}
	txs := func() int64 {
		p, err := a.d.GetProxy("t")
		if err != nil {
			t.Fatal(err)
		}
		return p.GetCounters().GetTransactions()
	}
	get("one")
	waitCapture(t, "the first transaction", func() bool { return txs() == 1 })
	p, err := a.d.UpdateProxy(ctx, &snoopv1.ProxySpec{Name: "t", Enabled: proto.Bool(false)}, []string{"enabled"}, false)
	if err != nil || p.GetState() != snoopv1.ProxyState_PROXY_STATE_DISABLED {
		t.Fatalf("disabled: %v %v", p, err)
	}
	get("unseen")
	p, err = a.d.UpdateProxy(ctx, &snoopv1.ProxySpec{Name: "t", Enabled: proto.Bool(true)}, []string{"enabled"}, false)
	if err != nil || p.GetState() != snoopv1.ProxyState_PROXY_STATE_LISTENING {
		t.Fatalf("enabled: %v %v", p, err)
	}
	get("two")
	waitCapture(t, "the transaction after enabling", func() bool { return txs() == 2 })
	time.Sleep(100 * time.Millisecond) // a third would show by now
	if n := txs(); n != 2 {
		t.Errorf("%d transactions, want 2: the one while disabled was counted", n)
	}
}

// TestTapRestoredFromState: a tap in the state dir comes back after a
// restart as a tap, capturing.
func TestTapRestoredFromState(t *testing.T) {
	needRoot(t)
	dir := t.TempDir()
	cache := startCache(t)
	ctx := context.Background()
	d, err := New(Config{StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.CreateProxy(ctx, &snoopv1.ProxySpec{Name: "t", TapInterface: "lo", Server: strconv.Itoa(cache.Port()), Labels: map[string]string{"k": "v"}}); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(ctx); err != nil {
		t.Fatal(err)
	}
	d2, err := New(Config{StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer d2.Close(ctx)
	p, err := d2.GetProxy("t")
	if err != nil || p.GetKind() != snoopv1.ProxyKind_PROXY_KIND_TAP || p.GetState() != snoopv1.ProxyState_PROXY_STATE_LISTENING ||
		p.GetSpec().GetServer() != "IP:"+strconv.Itoa(cache.Port()) || p.GetSpec().GetTapInterface() != "lo" || p.GetSpec().GetLabels()["k"] != "v" {
		t.Fatalf("restored: %v %v", p, err)
	}
	c, err := loadgen.Dial(ctx, cache, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, _, err := c.Get([]byte("x")); err != nil {
		t.Fatal(err)
	}
	waitCapture(t, "the restored tap's transaction", func() bool {
		p, err := d2.GetProxy("t")
		return err == nil && p.GetCounters().GetTransactions() == 1
	})
}

// TestTapWithoutCapNetRawIsPermissionDenied creates a tap from a thread
// that has dropped CAP_NET_RAW: the refusal is PERMISSION_DENIED with
// the capture's one line, and nothing is registered.
func TestTapWithoutCapNetRawIsPermissionDenied(t *testing.T) {
	needRoot(t)
	a := startAPI(t, Config{}, ServerOptions{})
	cache := startCache(t)
	errc := make(chan error, 1)
	go func() {
		// Capabilities are a thread's: this one loses CAP_NET_RAW, and
		// is thrown away when the goroutine ends still locked to it.
		runtime.LockOSThread()
		hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
		var data [2]unix.CapUserData
		if err := unix.Capget(&hdr, &data[0]); err != nil {
			errc <- err
			return
		}
		data[0].Effective &^= 1 << unix.CAP_NET_RAW
		if err := unix.Capset(&hdr, &data[0]); err != nil {
			errc <- err
			return
		}
		_, err := a.d.CreateProxy(context.Background(), tapSpec("t", cache.String()))
		errc <- err
	}()
	err := <-errc
	wantCode(t, Status(err), codes.PermissionDenied, "spec.tap_interface: CAP_NET_RAW is needed to capture packets")
	if strings.Contains(err.Error(), "\n") {
		t.Errorf("the refusal is more than one line: %q", err)
	}
	if _, err := a.d.GetProxy("t"); err == nil {
		t.Error("the refused tap was registered")
	}
}

// TestApplyTreatsATapAsAProxy: apply creates a tap, keeps it when
// declared again, changes its server in place (its counters go on), and
// makes it again when its capture options change; prune removes it.
func TestApplyTreatsATapAsAProxy(t *testing.T) {
	needRoot(t)
	a := startAPI(t, Config{}, ServerOptions{})
	ctx := context.Background()
	cache, other := startCache(t), startCache(t)
	apply := func(s *snoopv1.ProxySpec) (snoopv1.ApplyAction, *snoopv1.Proxy) {
		t.Helper()
		var specs []*snoopv1.ProxySpec
		if s != nil {
			specs = append(specs, s)
		}
		res, err := a.d.ApplyProxies(ctx, specs, true, false)
		if err != nil || len(res) != 1 {
			t.Fatalf("apply %v: %v %v", s, res, err)
		}
		return res[0].GetAction(), res[0].GetProxy()
	}
	if act, p := apply(tapSpec("t", cache.String())); act != snoopv1.ApplyAction_APPLY_ACTION_CREATED || p.GetKind() != snoopv1.ProxyKind_PROXY_KIND_TAP {
		t.Fatalf("first apply: %v %v", act, p)
	}
	inst := a.d.entry(t, "t").instance
	if act, _ := apply(tapSpec("t", cache.String())); act != snoopv1.ApplyAction_APPLY_ACTION_UNCHANGED {
		t.Errorf("the same tap again: %v", act)
	}
	if act, p := apply(tapSpec("t", other.String())); act != snoopv1.ApplyAction_APPLY_ACTION_CHANGED || p.GetInstanceId() != inst ||
		p.GetState() != snoopv1.ProxyState_PROXY_STATE_LISTENING {
		t.Errorf("another server: %v %v", act, p)
	}
	c, err := loadgen.Dial(ctx, other, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, _, err := c.Get([]byte("x")); err != nil {
		t.Fatal(err)
	}
	waitCapture(t, "the tap to follow its new server", func() bool {
		p, err := a.d.GetProxy("t")
		return err == nil && p.GetCounters().GetTransactions() == 1
	})
	withData := tapSpec("t", other.String())
	withData.CaptureData = true
	if act, p := apply(withData); act != snoopv1.ApplyAction_APPLY_ACTION_CHANGED || p.GetInstanceId() == inst || !p.GetSpec().GetCaptureData() {
		t.Errorf("capture options changed: %v %v, want a new tap", act, p)
	}
	if act, _ := apply(nil); act != snoopv1.ApplyAction_APPLY_ACTION_REMOVED {
		t.Errorf("pruned: %v", act)
	}
}

// TestTapWhoseNewServerCannotBeCapturedSaysWhy: a tap moved to a server
// whose host name does not resolve stops capturing and is failed with
// the look-up's error, not a bare "not listening".
func TestTapWhoseNewServerCannotBeCapturedSaysWhy(t *testing.T) {
	needRoot(t)
	a := startAPI(t, Config{}, ServerOptions{})
	ctx := context.Background()
	cache := startCache(t)
	if _, err := a.d.CreateProxy(ctx, tapSpec("t", cache.String())); err != nil {
		t.Fatal(err)
	}
	p, err := a.d.UpdateProxy(ctx, &snoopv1.ProxySpec{Name: "t", Server: "IP:no-such-host.invalid:9000"}, []string{"server"}, false)
	if err != nil {
		t.Fatal(err)
	}
	if p.GetState() != snoopv1.ProxyState_PROXY_STATE_FAILED || !strings.Contains(p.GetError(), "server: server \"IP:no-such-host.invalid:9000\": look up no-such-host.invalid") {
		t.Errorf("a tap moved to a server that does not resolve: %v %q", p.GetState(), p.GetError())
	}
}
