package daemon

import (
	"context"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
)

// drainSetup makes proxy "d" in front of a cache and opens n client
// connections through it, returning them once the proxy counts them all.
func drainSetup(t *testing.T, a *api, n int) []net.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := a.proxy.CreateProxy(ctx, &snoopv1.CreateProxyRequest{Spec: spec("d", startCache(t).String())})
	if err != nil {
		t.Fatal(err)
	}
	var conns []net.Conn
	for range n {
		c, err := net.Dial("tcp", strings.TrimPrefix(res.GetProxy().GetListenAddress(), "IP:"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		conns = append(conns, c)
	}
	waitFor(t, "the connections to be counted", func() bool { return liveConns(t, a) == n })
	return conns
}

func liveConns(t *testing.T, a *api) int {
	t.Helper()
	r, err := a.proxy.ListConnections(context.Background(), &snoopv1.ListConnectionsRequest{Proxy: "d"})
	if err != nil {
		t.Fatal(err)
	}
	return len(r.GetConnections())
}

// proxyError is GetProxy's state and error, or "gone".
func proxyError(a *api) string {
	r, err := a.proxy.GetProxy(context.Background(), &snoopv1.GetProxyRequest{Name: "d"})
	if err != nil {
		return "gone"
	}
	return r.GetProxy().GetState().String() + ": " + r.GetProxy().GetError()
}

// closedByProxy reports whether the proxy has closed c.
func closedByProxy(t *testing.T, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err != io.EOF && !strings.Contains(err.Error(), "reset") {
		t.Fatalf("a cut connection reads %v", err)
	}
}

func TestDeleteDrainEndsWithItsCall(t *testing.T) {
	a := startUnixAPI(t, Config{}, ServerOptions{})
	conns := drainSetup(t, a, 3)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type result struct {
		r   *snoopv1.DeleteProxyResponse
		err error
	}
	done := make(chan result, 1)
	go func() {
		r, err := a.proxy.DeleteProxy(ctx, &snoopv1.DeleteProxyRequest{Name: "d", Drain: durationpb.New(time.Hour)})
		done <- result{r, err}
	}()
	waitFor(t, "the drain", func() bool { return strings.Contains(proxyError(a), "draining 3 connections") })
	if got := proxyError(a); !strings.HasPrefix(got, "PROXY_STATE_DISABLED: being deleted") {
		t.Fatalf("a draining proxy shows %q", got)
	}
	// One client leaves on its own; the other two are still there when
	// the caller gives up.
	conns[0].Close()
	waitFor(t, "one connection to end", func() bool { return strings.Contains(proxyError(a), "draining 2 connections") })
	cancel()
	r := <-done
	wantCode(t, r.err, codes.Canceled, "")
	// The delete finished all the same: gone, and the rest cut.
	waitFor(t, "the delete to finish", func() bool { return proxyError(a) == "gone" })
	closedByProxy(t, conns[1])
	closedByProxy(t, conns[2])
	if _, err := a.proxy.CreateProxy(context.Background(), &snoopv1.CreateProxyRequest{Spec: spec("d", "IP:127.0.0.1:1")}); err != nil {
		t.Fatalf("the name is free again: %v", err)
	}
}

func TestDeleteReportsDrainedAndCut(t *testing.T) {
	a := startUnixAPI(t, Config{}, ServerOptions{})
	conns := drainSetup(t, a, 3)
	// The same as above, on the daemon, which tells the counts to a
	// caller that went away.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan DeleteResult, 1)
	go func() {
		res, err := a.d.DeleteProxy(ctx, "d", time.Hour, false)
		if err != nil {
			t.Error(err)
		}
		done <- res
	}()
	waitFor(t, "the drain", func() bool { return strings.Contains(proxyError(a), "draining 3 connections") })
	conns[0].Close()
	waitFor(t, "one connection to end", func() bool { return strings.Contains(proxyError(a), "draining 2 connections") })
	cancel()
	if res := <-done; res.Drained != 1 || res.Cut != 2 {
		t.Fatalf("drained %d, cut %d; want 1, 2", res.Drained, res.Cut)
	}

	// Every connection ends on its own: all drained, none cut.
	conns = drainSetup(t, a, 2)
	go func() {
		r, err := a.proxy.DeleteProxy(context.Background(), &snoopv1.DeleteProxyRequest{Name: "d", Drain: durationpb.New(time.Hour)})
		if err != nil {
			t.Error(err)
		}
		done <- DeleteResult{r.GetConnectionsDrained(), r.GetConnectionsCut()}
	}()
	waitFor(t, "the drain", func() bool { return strings.Contains(proxyError(a), "draining 2 connections") })
	conns[0].Close()
	conns[1].Close()
	if res := <-done; res.Drained != 2 || res.Cut != 0 {
		t.Fatalf("drained %d, cut %d; want 2, 0", res.Drained, res.Cut)
	}

	// No drain: every connection is cut at once.
	conns = drainSetup(t, a, 2)
	r, err := a.proxy.DeleteProxy(context.Background(), &snoopv1.DeleteProxyRequest{Name: "d"})
	if err != nil || r.GetConnectionsDrained() != 0 || r.GetConnectionsCut() != 2 {
		t.Fatalf("delete without drain: %v %v", r, err)
	}
	closedByProxy(t, conns[0])
}

func TestSecondDeleteForcesADrainingOne(t *testing.T) {
	a := startUnixAPI(t, Config{}, ServerOptions{})
	ctx := context.Background()
	conns := drainSetup(t, a, 2)
	first := make(chan *snoopv1.DeleteProxyResponse, 1)
	go func() {
		r, err := a.proxy.DeleteProxy(ctx, &snoopv1.DeleteProxyRequest{Name: "d", Drain: durationpb.New(time.Hour)})
		if err != nil {
			t.Error(err)
		}
		first <- r
	}()
	waitFor(t, "the drain", func() bool { return strings.Contains(proxyError(a), "draining 2 connections") })
	// Other changes are refused, saying why and what to do.
	_, err := a.proxy.UpdateProxy(ctx, &snoopv1.UpdateProxyRequest{Spec: &snoopv1.ProxySpec{Name: "d", Enabled: proto.Bool(true)},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"enabled"}}})
	wantCode(t, err, codes.FailedPrecondition, "being deleted")
	// A second delete cuts the drain and reports what the first does.
	r, err := a.proxy.DeleteProxy(ctx, &snoopv1.DeleteProxyRequest{Name: "d"})
	if err != nil || r.GetConnectionsCut() != 2 || r.GetConnectionsDrained() != 0 {
		t.Fatalf("second delete: %v %v", r, err)
	}
	if f := <-first; f.GetConnectionsCut() != 2 {
		t.Fatalf("first delete: %v", f)
	}
	closedByProxy(t, conns[0])
	if got := proxyError(a); got != "gone" {
		t.Fatalf("after both deletes: %s", got)
	}

	// force does it in one call, drain or not.
	drainSetup(t, a, 1)
	r, err = a.proxy.DeleteProxy(ctx, &snoopv1.DeleteProxyRequest{Name: "d", Drain: durationpb.New(time.Hour), Force: true})
	if err != nil || r.GetConnectionsCut() != 1 {
		t.Fatalf("forced delete: %v %v", r, err)
	}
}

func TestMaxDrainBoundsEveryDrain(t *testing.T) {
	a := startUnixAPI(t, Config{MaxDrain: 50 * time.Millisecond}, ServerOptions{})
	drainSetup(t, a, 2)
	// An hour asked for, the daemon's maximum given: the call returns
	// (it would otherwise hang the test) with both connections cut.
	r, err := a.proxy.DeleteProxy(context.Background(), &snoopv1.DeleteProxyRequest{Name: "d", Drain: durationpb.New(time.Hour)})
	if err != nil || r.GetConnectionsCut() != 2 {
		t.Fatalf("delete: %v %v", r, err)
	}
}
