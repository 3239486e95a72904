package daemon

import (
	"context"
	"testing"
	"time"

	"github.com/snoopd/snoopd/distcache"
	"github.com/snoopd/snoopd/distcache/loadgen"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
	"github.com/snoopd/snoopd/internal/apiconv"
)

// Histograms come only when asked for, per proxy and per operation, and
// count what the counters count.
func TestHistogramsOnRequest(t *testing.T) {
	a := startAPI(t, Config{}, ServerOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := a.proxy.CreateProxy(ctx, &snoopv1.CreateProxyRequest{Spec: spec("h", startCache(t).String())})
	if err != nil {
		t.Fatal(err)
	}
	c, err := loadgen.Dial(ctx, distcache.MustParseAddr(res.GetProxy().GetListenAddress()), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.Add([]byte("abc"), []byte("data"), time.Minute)
	for range 5 {
		c.Get([]byte("abc"))
	}
	c.Close()
	plain, err := a.proxy.GetProxy(ctx, &snoopv1.GetProxyRequest{Name: "h"})
	if err != nil {
		t.Fatal(err)
	}
	if plain.GetProxy().GetCounters().GetHistogram() != nil {
		t.Fatal("a histogram nobody asked for")
	}
	for _, oc := range plain.GetProxy().GetCounters().GetOps() {
		if oc.GetLatency().GetCount() != oc.GetCount() {
			t.Errorf("%v: latency summary of %d for %d transactions", oc.GetOp(), oc.GetLatency().GetCount(), oc.GetCount())
		}
	}
	list, err := a.proxy.ListProxies(ctx, &snoopv1.ListProxiesRequest{IncludeHistograms: true})
	if err != nil {
		t.Fatal(err)
	}
	pc := list.GetProxies()[0].GetCounters()
	if h := apiconv.HistogramFromAPI(pc.GetHistogram()); h.Count != 6 {
		t.Fatalf("proxy histogram counts %d, want 6", h.Count)
	}
	for _, oc := range pc.GetOps() {
		want := map[snoopv1.Op]uint64{snoopv1.Op_OP_ADD: 1, snoopv1.Op_OP_GET: 5}[oc.GetOp()]
		if got := oc.GetHistogram().GetCount(); got != want {
			t.Errorf("%v: histogram counts %d, want %d", oc.GetOp(), got, want)
		}
	}
}
