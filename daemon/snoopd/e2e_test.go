package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/snoopd/snoopd/distcache"
	"github.com/snoopd/snoopd/distcache/loadgen"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
)

// resultStatus is the status byte each result name stands for, as far as
// the load generator's traffic produces them.
var resultStatus = map[string]distcache.Status{
	"ok":     distcache.StatusOK,
	"hit":    distcache.StatusOK,
	"notok":  distcache.StatusNotOK,
	"miss":   distcache.StatusNotOK,
	"exists": distcache.StatusAddExists,
}

// TestEndToEnd creates a proxy through the control socket, drives verified
// load through it, and checks that a watcher gets exactly one transaction
// per operation, with the operation, session id and result the client
// saw; then stops the daemon and checks the stream's final status.
func TestEndToEnd(t *testing.T) {
	dir := tempDir(t)
	cache := startCache(t, dir)
	sock := filepath.Join(dir, "ctl.sock")
	sd := startSnoopd(t, "--control", "unix://"+sock)
	if eps := sd.endpoints(); len(eps) != 1 || eps[0] != "unix://"+sock {
		t.Fatalf("logged endpoints %q, want [unix://%s]", eps, sock)
	}
	if rec := sd.findLog("control API listening"); rec["try"] != "snoopctl -a unix://"+sock+" list" {
		t.Errorf("start-up hint %q", rec["try"])
	}
	ctx := withTimeout(t)
	conn := dial(t, unixTarget(sock))

	info, err := snoopv1.NewDaemonServiceClient(conn).GetDaemonInfo(ctx, &snoopv1.GetDaemonInfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if eps := info.GetControlEndpoints(); len(eps) != 1 || eps[0] != "unix://"+sock {
		t.Errorf("GetDaemonInfo endpoints %q", eps)
	}

	pc := snoopv1.NewProxyServiceClient(conn)
	created, err := pc.CreateProxy(ctx, &snoopv1.CreateProxyRequest{Spec: &snoopv1.ProxySpec{
		Name: "e2e", Listen: "UNIX:" + filepath.Join(dir, "p.sock"), Server: cache.Addr().String(),
	}})
	if err != nil {
		t.Fatal(err)
	}

	stream, err := snoopv1.NewEventServiceClient(conn).WatchEvents(ctx, &snoopv1.WatchEventsRequest{
		Proxies: []string{"e2e"}, Kinds: []snoopv1.EventKind{snoopv1.EventKind_EVENT_KIND_TRANSACTION},
	})
	if err != nil {
		t.Fatal(err)
	}
	waitWatchers(t, ctx, conn, 1)

	const ops = 2000
	// The watcher keeps up: it reads while the load runs, as tail does.
	type received struct {
		resp *snoopv1.WatchEventsResponse
		err  error
	}
	recvd := make(chan received, ops)
	go func() {
		for n := 0; n < ops; n++ {
			resp, err := stream.Recv()
			recvd <- received{resp, err}
			if err != nil {
				return
			}
		}
	}()
	rep, err := loadgen.Run(ctx, loadgen.Config{
		Addr: distcache.MustParseAddr(created.GetProxy().GetListenAddress()),
		// A connection per operation, as real clients of the cache do.
		Conns: 4, Ops: ops, Verify: true, IDPrefix: "e2e-", MaxData: 512,
	})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Ops != ops || rep.Errors != 0 || rep.Unanswered != 0 {
		t.Fatalf("load: %d ops, %d errors, %d unanswered: %v", rep.Ops, rep.Errors, rep.Unanswered, rep.ErrorSamples)
	}

	got := map[snoopv1.Op]map[string]int64{}
	for n := 0; n < ops; n++ {
		r := <-recvd
		resp, err := r.resp, r.err
		if err != nil {
			t.Fatalf("after %d transactions: %v", n, err)
		}
		if resp.GetDropped() != 0 {
			t.Fatalf("a watcher that keeps up was told it dropped %d events", resp.GetDropped())
		}
		checkTransaction(t, resp.GetEvent())
		tx := resp.GetEvent().GetTransaction()
		if got[tx.GetOp()] == nil {
			got[tx.GetOp()] = map[string]int64{}
		}
		got[tx.GetOp()][tx.GetResult()]++
	}
	for _, or := range rep.ByOp {
		op := snoopv1.Op(snoopv1.Op_value["OP_"+or.Op])
		for result, n := range or.Results {
			if got[op][result] != n {
				t.Errorf("%s %s: watcher saw %d, client %d", or.Op, result, got[op][result], n)
			}
			delete(got[op], result)
		}
		for result, n := range got[op] {
			t.Errorf("%s %s: watcher saw %d, client none", or.Op, result, n)
		}
	}

	p, err := pc.GetProxy(ctx, &snoopv1.GetProxyRequest{Name: "e2e"})
	if err != nil {
		t.Fatal(err)
	}
	if c := p.GetProxy().GetCounters(); c.GetTransactions() != ops || c.GetConnectionsTotal() != rep.Dials {
		t.Errorf("counters: %d transactions, %d connections; want %d and %d", c.GetTransactions(), c.GetConnectionsTotal(), ops, rep.Dials)
	}

	// No transaction beyond those: the stream's next message is its end,
	// when the daemon shuts down.
	if code := sd.stop(); code != 0 {
		t.Fatalf("exit code %d:\n%s", code, sd.stderr)
	}
	resp, err := stream.Recv()
	if err == nil {
		t.Fatalf("after the load and the shutdown, the stream still carried %v", resp)
	}
	if st := status.Convert(err); st.Code() != codes.Unavailable {
		t.Fatalf("stream ended with %v, want UNAVAILABLE", err)
	}
	for _, path := range []string{sock, filepath.Join(dir, "p.sock")} {
		if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("socket %s still exists after shutdown (%v)", path, err)
		}
	}
	if sd.findLog("stopped") == nil {
		t.Error("no final \"stopped\" log")
	}
}

// checkTransaction checks one transaction event of the load generator's
// traffic for consistency.
func checkTransaction(t *testing.T, e *snoopv1.Event) {
	t.Helper()
	tx := e.GetTransaction()
	switch {
	case e.GetKind() != snoopv1.EventKind_EVENT_KIND_TRANSACTION || tx == nil:
		t.Fatalf("not a transaction: %v", e)
	case e.GetProxy() != "e2e" || e.GetConnectionId() == 0:
		t.Fatalf("proxy %q, connection %d", e.GetProxy(), e.GetConnectionId())
	case tx.GetOp() < snoopv1.Op_OP_ADD || tx.GetOp() > snoopv1.Op_OP_HAVE:
		t.Fatalf("op %v", tx.GetOp())
	case !bytes.HasPrefix(tx.GetSessionId(), []byte("e2e-")) || int(tx.GetSessionIdLength()) != len(tx.GetSessionId()):
		t.Fatalf("session id %q (length %d)", tx.GetSessionId(), tx.GetSessionIdLength())
	}
	want, ok := resultStatus[tx.GetResult()]
	if !ok {
		t.Fatalf("%v: unexpected result %q", tx.GetOp(), tx.GetResult())
	}
	if tx.GetStatus() != uint32(want) {
		t.Fatalf("%v %s: status %d, want %d", tx.GetOp(), tx.GetResult(), tx.GetStatus(), want)
	}
	if tx.GetLatency().AsDuration() <= 0 {
		t.Fatalf("latency %v", tx.GetLatency().AsDuration())
	}
}

// TestSlowWatcherDropNotice: a watcher that does not read while load runs
// loses events, and only it; once it reads, what it receives plus the
// drop notices add up to every transaction.
func TestSlowWatcherDropNotice(t *testing.T) {
	dir := tempDir(t)
	cache := startCache(t, dir)
	sock := filepath.Join(dir, "ctl.sock")
	startSnoopd(t, "--control", "unix://"+sock, "--watch-queue", "16")
	ctx := withTimeout(t)
	// A fixed 64 KiB window (which also turns off window growth) keeps
	// what the transport buffers for the idle reader small.
	conn := dial(t, unixTarget(sock), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
	created, err := snoopv1.NewProxyServiceClient(conn).CreateProxy(ctx, &snoopv1.CreateProxyRequest{Spec: &snoopv1.ProxySpec{
		Name: "slow", Listen: "UNIX:" + filepath.Join(dir, "p.sock"), Server: cache.Addr().String(),
	}})
	if err != nil {
		t.Fatal(err)
	}
	stream, err := snoopv1.NewEventServiceClient(conn).WatchEvents(ctx, &snoopv1.WatchEventsRequest{
		Kinds: []snoopv1.EventKind{snoopv1.EventKind_EVENT_KIND_TRANSACTION},
	})
	if err != nil {
		t.Fatal(err)
	}
	waitWatchers(t, ctx, conn, 1)

	const ops = 6000
	rep, err := loadgen.Run(ctx, loadgen.Config{
		Addr:  distcache.MustParseAddr(created.GetProxy().GetListenAddress()),
		Conns: 2, Persistent: true, Ops: ops, Verify: true, MaxData: 256,
	})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Ops != ops || rep.Errors != 0 {
		t.Fatalf("load: %d ops, %d errors: %v", rep.Ops, rep.Errors, rep.ErrorSamples)
	}

	var events, dropped, notices uint64
	for events+dropped < ops {
		resp, err := stream.Recv()
		if err != nil {
			t.Fatalf("after %d events and %d dropped: %v", events, dropped, err)
		}
		if resp.GetEvent() != nil {
			events++
		} else {
			dropped += resp.GetDropped()
			notices++
		}
	}
	if dropped == 0 || notices == 0 {
		t.Fatalf("the idle watcher received all %d events; the test did not make it fall behind", events)
	}
	if events+dropped != ops {
		t.Fatalf("received %d + dropped %d = %d, want %d", events, dropped, events+dropped, ops)
	}
	t.Logf("received %d, dropped %d in %d notices", events, dropped, notices)
}

// TestShutdownEndsStreams checks the shutdown sequence from a client's
// view: the health watch turns NOT_SERVING, an event stream ends with
// UNAVAILABLE, the socket goes, and run returns 0.
func TestShutdownEndsStreams(t *testing.T) {
	// Besides the check at the end of all tests: this run leaves nothing.
	before := goleak.IgnoreCurrent()
	dir := tempDir(t)
	sock := filepath.Join(dir, "ctl.sock")
	sd := startSnoopd(t, "--control", "unix://"+sock)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	conn, err := grpc.NewClient(unixTarget(sock), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	hctx, hcancel := context.WithCancel(ctx)
	defer hcancel()
	hw, err := healthpb.NewHealthClient(conn).Watch(hctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if r, err := hw.Recv(); err != nil || r.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health: %v, %v; want SERVING", r, err)
	}
	ev, err := snoopv1.NewEventServiceClient(conn).WatchEvents(ctx, &snoopv1.WatchEventsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	waitWatchers(t, ctx, conn, 1)

	code := make(chan int, 1)
	go func() { code <- sd.stop() }()

	if r, err := hw.Recv(); err != nil || r.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("health during shutdown: %v, %v; want NOT_SERVING", r, err)
	}
	// A health watch never ends by itself (grpc-go's health server keeps
	// it open after Shutdown), so a client that has seen NOT_SERVING
	// goes; otherwise it would hold the graceful stop to its timeout.
	hcancel()
	_, err = ev.Recv()
	if st := status.Convert(err); st.Code() != codes.Unavailable || st.Message() != "snoopd is shutting down" {
		t.Errorf("event stream ended with %v, want UNAVAILABLE \"snoopd is shutting down\"", err)
	}
	if c := <-code; c != 0 {
		t.Fatalf("exit code %d:\n%s", c, sd.stderr)
	}
	if _, err := os.Lstat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("control socket still exists after shutdown (%v)", err)
	}
	if sd.findLog("control calls still running after the shutdown timeout; cutting them") != nil {
		t.Error("an event stream held the graceful stop until its timeout")
	}
	for _, step := range []string{
		"shutdown: health is NOT_SERVING",
		"shutdown: proxies stopped, event streams ended, state saved",
		"shutdown: control API stopped, sockets removed",
		"stopped",
	} {
		if sd.findLog(step) == nil {
			t.Errorf("no log %q", step)
		}
	}
	conn.Close()
	cancel()
	goleak.VerifyNone(t, before)
}

// TestShutdownStuckWatcher: a client that stops reading an event stream
// cannot hold the shutdown beyond --shutdown-timeout.
func TestShutdownStuckWatcher(t *testing.T) {
	dir := tempDir(t)
	cache := startCache(t, dir)
	sock := filepath.Join(dir, "ctl.sock")
	sd := startSnoopd(t, "--control", "unix://"+sock, "--shutdown-timeout", "300ms")
	ctx := withTimeout(t)
	conn := dial(t, unixTarget(sock), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
	created, err := snoopv1.NewProxyServiceClient(conn).CreateProxy(ctx, &snoopv1.CreateProxyRequest{Spec: &snoopv1.ProxySpec{
		Name: "stuck", Listen: "UNIX:" + filepath.Join(dir, "p.sock"), Server: cache.Addr().String(),
	}})
	if err != nil {
		t.Fatal(err)
	}
	// Never read: the server's sends block once the window is full.
	if _, err := snoopv1.NewEventServiceClient(conn).WatchEvents(ctx, &snoopv1.WatchEventsRequest{}); err != nil {
		t.Fatal(err)
	}
	waitWatchers(t, ctx, conn, 1)
	if _, err := loadgen.Run(ctx, loadgen.Config{
		Addr:  distcache.MustParseAddr(created.GetProxy().GetListenAddress()),
		Conns: 2, Persistent: true, Ops: 4000, MaxData: 64,
	}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if code := sd.stop(); code != 0 {
		t.Fatalf("exit code %d:\n%s", code, sd.stderr)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("shutdown took %v with a stuck watcher", d)
	}
	if sd.findLog("control calls still running after the shutdown timeout; cutting them") == nil {
		t.Errorf("the graceful stop did not have to cut the stuck stream; the test did not make it stick:\n%s", sd.stderr)
	}
}
