package daemon

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"

	"github.com/snoopd/snoopd/distcache"
	"github.com/snoopd/snoopd/distcache/loadgen"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
	"github.com/snoopd/snoopd/internal/testutil"
	"github.com/snoopd/snoopd/proxy"
)

// startUnixAPI is startAPI over a real unix socket in a temporary
// directory.
func startUnixAPI(t *testing.T, cfg Config, opts ServerOptions) *api {
	t.Helper()
	d, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s, hs := NewServer(d, opts)
	path := filepath.Join(testutil.SocketDir(t), "snoopd.sock")
	lis, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{})
	go func() {
		defer close(served)
		s.Serve(lis)
	}()
	conn, err := grpc.NewClient("unix://"+path, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		d.Close(context.Background())
		s.Stop()
		<-served
	})
	return &api{d: d, proxy: snoopv1.NewProxyServiceClient(conn), events: snoopv1.NewEventServiceClient(conn),
		info: snoopv1.NewDaemonServiceClient(conn), health: healthpb.NewHealthClient(conn), conn: conn, srv: s, hs: hs}
}

// waitFor polls cond until it holds, failing the test after a while.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func TestMaxWatchers(t *testing.T) {
	a := startUnixAPI(t, Config{MaxWatchers: 2}, ServerOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	open := func(ctx context.Context) (grpc.ServerStreamingClient[snoopv1.WatchEventsResponse], error) {
		s, err := a.events.WatchEvents(ctx, &snoopv1.WatchEventsRequest{})
		if err != nil {
			return nil, err
		}
		// The headers come at once for a watch that is served.
		if _, err := s.Header(); err != nil {
			return nil, err
		}
		return s, nil
	}
	first, cancelFirst := context.WithCancel(ctx)
	if _, err := open(first); err != nil {
		t.Fatal(err)
	}
	if _, err := open(ctx); err != nil {
		t.Fatal(err)
	}
	s, err := a.events.WatchEvents(ctx, &snoopv1.WatchEventsRequest{})
	if err == nil {
		_, err = s.Recv()
	}
	wantCode(t, err, codes.ResourceExhausted, "at most 2 at once")
	wantCode(t, err, codes.ResourceExhausted, "--max-watchers")
	info, err := a.info.GetDaemonInfo(ctx, &snoopv1.GetDaemonInfoRequest{})
	if err != nil || info.GetMaxWatchers() != 2 || info.GetWatchers() != 2 {
		t.Fatalf("info: max %d, watchers %d, %v", info.GetMaxWatchers(), info.GetWatchers(), err)
	}
	// A stream that ends gives its place back.
	cancelFirst()
	waitFor(t, "the first stream's end", func() bool { return a.d.hub.Watchers() < 2 })
	waitFor(t, "its slot", func() bool {
		a.d.mu.Lock()
		defer a.d.mu.Unlock()
		return a.d.watching < 2
	})
	s, err = a.events.WatchEvents(ctx, &snoopv1.WatchEventsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Header(); err != nil {
		t.Fatalf("a watch after one ended: %v", err)
	}

	// The default.
	d := startUnixAPI(t, Config{}, ServerOptions{})
	if info, err := d.info.GetDaemonInfo(ctx, &snoopv1.GetDaemonInfoRequest{}); err != nil || info.GetMaxWatchers() != DefaultMaxWatchers {
		t.Fatalf("default max watchers: %d %v", info.GetMaxWatchers(), err)
	}
}

func TestWatchSendsHeadersAtOnce(t *testing.T) {
	a := startUnixAPI(t, Config{}, ServerOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// No history and no event: nothing to send but the headers, which
	// tell the client the watch is live.
	s, err := a.events.WatchEvents(ctx, &snoopv1.WatchEventsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	md, err := s.Header()
	if err != nil {
		t.Fatalf("headers of a live watch: %v", err)
	}
	if ct := md.Get("content-type"); len(ct) == 0 || !strings.HasPrefix(ct[0], "application/grpc") {
		t.Fatalf("headers: %v", md)
	}
	if a.d.hub.Watchers() != 1 {
		t.Fatalf("%d watchers registered once the headers came", a.d.hub.Watchers())
	}
}

// publish puts n transaction events of proxy "p" straight into the hub.
func publish(a *api, n int) {
	for i := 1; i <= n; i++ {
		tx := &proxy.Transaction{}
		tx.Op = distcache.OpGet
		a.d.hub.Publish(&proxy.Event{Kind: proxy.KindTransaction, Proxy: "p", ConnID: uint64(i), Tx: tx, Time: time.Now()})
	}
}

func TestHistoryIsNeverCutSilently(t *testing.T) {
	// A queue far smaller than the history asked for: the history is
	// streamed whole all the same, and what was not held is counted.
	a := startUnixAPI(t, Config{History: 1000, QueueSize: 16}, ServerOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	publish(a, 700)
	for _, batch := range []uint32{0, 256} {
		t.Run(fmt.Sprintf("max_batch=%d", batch), func(t *testing.T) {
			s, err := a.events.WatchEvents(ctx, &snoopv1.WatchEventsRequest{History: 4294967295, MaxBatch: batch})
			if err != nil {
				t.Fatal(err)
			}
			var ids []uint64
			for {
				r, err := s.Recv()
				if err != nil {
					t.Fatalf("after %d events: %v", len(ids), err)
				}
				if r.GetDropped() != 0 {
					t.Fatalf("dropped %d of the history", r.GetDropped())
				}
				if r.GetHistoryDone() {
					// 700 events, all held: none missing, the rest of the
					// request beyond what ever happened.
					if r.GetHistoryMissing() != 0 || r.GetHistoryBeyond() != 4294967295-700 {
						t.Fatalf("history_missing %d, history_beyond %d; want 0, %d", r.GetHistoryMissing(), r.GetHistoryBeyond(), 4294967295-700)
					}
					break
				}
				if r.GetHistoryMissing() != 0 {
					t.Fatalf("history_missing outside the notice: %v", r)
				}
				if e := r.GetEvent(); e != nil {
					ids = append(ids, e.GetConnectionId())
				}
				for _, e := range r.GetEvents() {
					ids = append(ids, e.GetConnectionId())
				}
			}
			if len(ids) != 700 || ids[0] != 1 || ids[699] != 700 {
				t.Fatalf("history of %d events (want 700, in order)", len(ids))
			}
		})
	}
	// A history fully held: nothing missing.
	s, err := a.events.WatchEvents(ctx, &snoopv1.WatchEventsRequest{History: 10, MaxBatch: 256})
	if err != nil {
		t.Fatal(err)
	}
	if r, err := s.Recv(); err != nil || len(r.GetEvents()) != 10 {
		t.Fatalf("first response: %v %v", r, err)
	}
	if r, err := s.Recv(); err != nil || !r.GetHistoryDone() || r.GetHistoryMissing() != 0 {
		t.Fatalf("notice: %v %v", r, err)
	}
}

var uuidForm = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

func TestRecreatedProxyHasItsOwnHistory(t *testing.T) {
	a := startUnixAPI(t, Config{}, ServerOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cache := startCache(t)
	// one creates proxy r and sends one transaction through it.
	one := func(id string) string {
		res, err := a.proxy.CreateProxy(ctx, &snoopv1.CreateProxyRequest{Spec: spec("r", cache.String())})
		if err != nil {
			t.Fatal(err)
		}
		c, err := loadgen.Dial(ctx, distcache.MustParseAddr(res.GetProxy().GetListenAddress()), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		c.Have([]byte(id))
		c.Close()
		got, err := a.proxy.GetProxy(ctx, &snoopv1.GetProxyRequest{Name: "r"})
		if err != nil || got.GetProxy().GetInstanceId() != res.GetProxy().GetInstanceId() {
			t.Fatalf("instance id not kept: %v %v", got, err)
		}
		return res.GetProxy().GetInstanceId()
	}
	before := a.d.hub.Published()
	old := one("old")
	waitFor(t, "the first proxy's events", func() bool { return a.d.hub.Published() >= before+3 })
	if _, err := a.proxy.DeleteProxy(ctx, &snoopv1.DeleteProxyRequest{Name: "r"}); err != nil {
		t.Fatal(err)
	}
	cur := one("new")
	waitFor(t, "the second proxy's events", func() bool { return a.d.hub.Published() >= before+6 })
	if old == cur || !uuidForm.MatchString(old) || !uuidForm.MatchString(cur) {
		t.Fatalf("instance ids %q and %q", old, cur)
	}
	txOnly := []snoopv1.EventKind{snoopv1.EventKind_EVENT_KIND_TRANSACTION}
	history := func(req *snoopv1.WatchEventsRequest) (ids, insts []string, missing uint32) {
		s, err := a.events.WatchEvents(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		for {
			r, err := s.Recv()
			if err != nil {
				t.Fatal(err)
			}
			if r.GetHistoryDone() {
				return ids, insts, uint32(r.GetHistoryBeyond())
			}
			ids = append(ids, string(r.GetEvent().GetTransaction().GetSessionId()))
			insts = append(insts, r.GetEvent().GetProxyInstance())
		}
	}
	// Naming the proxy: only the current one's history.
	ids, insts, missing := history(&snoopv1.WatchEventsRequest{Proxies: []string{"r"}, Kinds: txOnly, History: 10})
	if strings.Join(ids, ",") != "new" || insts[0] != cur || missing != 9 {
		t.Fatalf("history of r: %v %v, %d beyond", ids, insts, missing)
	}
	// Not naming it: both, each with its instance.
	ids, insts, _ = history(&snoopv1.WatchEventsRequest{Kinds: txOnly, History: 10})
	if strings.Join(ids, ",") != "old,new" || insts[0] != old || insts[1] != cur {
		t.Fatalf("history of all: %v %v", ids, insts)
	}
}

func TestHealthPerService(t *testing.T) {
	a := startUnixAPI(t, Config{}, ServerOptions{Token: "tok"})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	services := []string{"", "snoop.v1.ProxyService", "snoop.v1.EventService", "snoop.v1.DaemonService"}
	for _, svc := range services {
		r, err := a.health.Check(ctx, &healthpb.HealthCheckRequest{Service: svc})
		if err != nil || r.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("check %q: %v %v", svc, r, err)
		}
	}
	_, err := a.health.Check(ctx, &healthpb.HealthCheckRequest{Service: "snoop.v1.Nothing"})
	wantCode(t, err, codes.NotFound, "unknown service")

	// Watches of a service, of the server and of an unknown service all
	// get their final status and then end, once Shutdown is called.
	type watch struct {
		name  string
		s     grpc.ServerStreamingClient[healthpb.HealthCheckResponse]
		first healthpb.HealthCheckResponse_ServingStatus
		last  healthpb.HealthCheckResponse_ServingStatus
	}
	var ws []watch
	for _, w := range []watch{
		{name: "snoop.v1.EventService", first: healthpb.HealthCheckResponse_SERVING, last: healthpb.HealthCheckResponse_NOT_SERVING},
		{name: "", first: healthpb.HealthCheckResponse_SERVING, last: healthpb.HealthCheckResponse_NOT_SERVING},
		{name: "snoop.v1.Nothing", first: healthpb.HealthCheckResponse_SERVICE_UNKNOWN},
	} {
		s, err := a.health.Watch(ctx, &healthpb.HealthCheckRequest{Service: w.name})
		if err != nil {
			t.Fatal(err)
		}
		if r, err := s.Recv(); err != nil || r.GetStatus() != w.first {
			t.Fatalf("watch %q: first %v %v", w.name, r, err)
		}
		w.s = s
		ws = append(ws, w)
	}
	a.hs.Shutdown()
	for _, svc := range services {
		if r, err := a.health.Check(ctx, &healthpb.HealthCheckRequest{Service: svc}); err != nil || r.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
			t.Fatalf("check %q after shutdown: %v %v", svc, r, err)
		}
	}
	for _, w := range ws {
		if w.last != healthpb.HealthCheckResponse_UNKNOWN {
			if r, err := w.s.Recv(); err != nil || r.GetStatus() != w.last {
				t.Fatalf("watch %q after shutdown: %v %v", w.name, r, err)
			}
		}
		_, err := w.s.Recv()
		wantCode(t, err, codes.Unavailable, "shutting down")
	}
}

func TestBearerSchemeIsCaseInsensitive(t *testing.T) {
	a := startUnixAPI(t, Config{}, ServerOptions{Token: "s3cret"})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, h := range []string{"Bearer s3cret", "bearer s3cret", "BEARER s3cret", "bEaReR s3cret"} {
		c := metadata.AppendToOutgoingContext(ctx, "authorization", h)
		if _, err := a.proxy.ListProxies(c, &snoopv1.ListProxiesRequest{}); err != nil {
			t.Errorf("%q: %v", h, err)
		}
	}
	for _, h := range []string{"Basic s3cret", "bearer", "bearers3cret", "bearer nope", "s3cret", "bearer  s3cret"} {
		c := metadata.AppendToOutgoingContext(ctx, "authorization", h)
		_, err := a.proxy.ListProxies(c, &snoopv1.ListProxiesRequest{})
		wantCode(t, err, codes.Unauthenticated, "")
	}
}

// TestHistoryMissingIsWhatWasGone: through the API, history_missing counts
// the events asked for that existed and were gone, history_beyond those
// beyond all that ever happened; a fresh daemon asked for one event has
// lost nothing.
func TestHistoryMissingIsWhatWasGone(t *testing.T) {
	a := startUnixAPI(t, Config{History: 100}, ServerOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	end := func(history uint32) (events int, missing uint32, beyond uint64) {
		t.Helper()
		s, err := a.events.WatchEvents(ctx, &snoopv1.WatchEventsRequest{History: history, MaxBatch: 256})
		if err != nil {
			t.Fatal(err)
		}
		for {
			r, err := s.Recv()
			if err != nil {
				t.Fatal(err)
			}
			events += len(r.GetEvents())
			if r.GetEvent() != nil {
				events++
			}
			if r.GetHistoryDone() {
				return events, r.GetHistoryMissing(), r.GetHistoryBeyond()
			}
		}
	}
	if n, m, b := end(1); n != 0 || m != 0 || b != 1 {
		t.Errorf("history 1 of a fresh daemon: %d events, %d missing, %d beyond; want 0, 0, 1", n, m, b)
	}
	publish(a, 250)
	for _, c := range []struct {
		asked   uint32
		missing uint32
		beyond  uint64
	}{{50, 0, 0}, {200, 100, 0}, {4000000000, 150, 4000000000 - 250}} {
		if n, m, b := end(c.asked); n != min(int(c.asked), 100) || m != c.missing || b != c.beyond {
			t.Errorf("history %d: %d events, %d missing, %d beyond; want %d, %d, %d", c.asked, n, m, b, min(int(c.asked), 100), c.missing, c.beyond)
		}
	}
}
