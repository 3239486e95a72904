package proxy

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/snoopd/snoopd/distcache"
)

// TestIdleProxyHoldsNoHistograms: a proxy that has carried no transaction
// holds no latency histogram (four would be 39 KB of it); the first
// sample of an op allocates that op's.
func TestIdleProxyHoldsNoHistograms(t *testing.T) {
	const n = 200
	ps := make([]*Proxy, n)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := range ps {
		p, err := New(Config{Name: fmt.Sprintf("p%d", i), Listen: distcache.MustParseAddr("IP:127.0.0.1:0"), Server: distcache.MustParseAddr("IP:127.0.0.1:1")}, nil)
		if err != nil {
			t.Fatal(err)
		}
		ps[i] = p
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	per := (int64(after.HeapAlloc) - int64(before.HeapAlloc)) / n
	t.Logf("an idle proxy holds %d bytes of heap", per)
	if per > 16<<10 {
		t.Errorf("an idle proxy holds %d bytes of heap: its histograms are allocated before any sample", per)
	}

	p := ps[0]
	p.stats.latency[distcache.OpGet].Record(3 * time.Millisecond)
	s := p.Stats()
	if s.LatencyOf[distcache.OpGet].Count != 1 || s.Latency.Count != 1 || s.LatencyOf[distcache.OpAdd].Count != 0 {
		t.Errorf("after one GET sample: get %d, add %d, all %d", s.LatencyOf[distcache.OpGet].Count, s.LatencyOf[distcache.OpAdd].Count, s.Latency.Count)
	}
	runtime.KeepAlive(ps)
}
