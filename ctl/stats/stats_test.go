package stats

import (
	"math/rand/v2"
	"testing"
	"time"

	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
	"google.golang.org/protobuf/types/known/durationpb"
)

func tx(proxy string, op snoopv1.Op, result string, lat time.Duration) *snoopv1.WatchEventsResponse {
	t := &snoopv1.Transaction{Op: op, Result: result}
	if lat > 0 {
		t.Latency = durationpb.New(lat)
	}
	return &snoopv1.WatchEventsResponse{Event: &snoopv1.Event{Kind: snoopv1.EventKind_EVENT_KIND_TRANSACTION, Proxy: proxy, Transaction: t}}
}

func kind(proxy string, k snoopv1.EventKind) *snoopv1.WatchEventsResponse {
	return &snoopv1.WatchEventsResponse{Event: &snoopv1.Event{Kind: k, Proxy: proxy}}
}

func TestCollector(t *testing.T) {
	c := New()
	for i := 1; i <= 100; i++ {
		result := "hit"
		if i%4 == 0 {
			result = "miss"
		}
		c.Add(tx("b", snoopv1.Op_OP_GET, result, time.Duration(i)*time.Millisecond))
	}
	c.Add(tx("b", snoopv1.Op_OP_ADD, "exists", time.Millisecond))
	c.Add(tx("b", snoopv1.Op_OP_ADD, "unanswered", 0))
	c.Add(tx("a", snoopv1.Op_OP_HAVE, "notok", time.Millisecond))
	c.Add(kind("a", snoopv1.EventKind_EVENT_KIND_CONNECTION_OPENED))
	c.Add(kind("a", snoopv1.EventKind_EVENT_KIND_CONNECTION_CLOSED))
	c.Add(kind("b", snoopv1.EventKind_EVENT_KIND_PROTOCOL_ERROR))
	c.Add(kind("b", snoopv1.EventKind_EVENT_KIND_CONNECT_FAILED))
	c.Add(kind("b", snoopv1.EventKind_EVENT_KIND_CONNECTION_REFUSED))
	c.Add(&snoopv1.WatchEventsResponse{Dropped: 3})
	c.Add(&snoopv1.WatchEventsResponse{Dropped: 4})

	tb := c.Table()
	if tb.Events != 108 || tb.Dropped != 7 {
		t.Errorf("events %d dropped %d, want 108 7", tb.Events, tb.Dropped)
	}
	if len(tb.Ops) != 3 || tb.Ops[0].Proxy != "a" || tb.Ops[1].Op != snoopv1.Op_OP_ADD || tb.Ops[2].Op != snoopv1.Op_OP_GET {
		t.Fatalf("rows not sorted by proxy, then op: %+v", tb.Ops)
	}
	get := tb.Ops[2]
	if r, ok := get.HitRatio(); !ok || r != 0.75 || get.Count != 100 || get.Errors != 0 {
		t.Errorf("GET: ratio %v %v, count %d, errors %d", r, ok, get.Count, get.Errors)
	}
	// Percentiles are within the histogram's ~3%.
	for q, want := range map[string]time.Duration{"p50": 50 * time.Millisecond, "p99": 99 * time.Millisecond} {
		got := get.Latency.GetP50().AsDuration()
		if q == "p99" {
			got = get.Latency.GetP99().AsDuration()
		}
		if d := got - want; d < -want/25 || d > want/25 {
			t.Errorf("%s %v, want about %v", q, got, want)
		}
	}
	if get.Latency.GetMax().AsDuration() != 100*time.Millisecond || get.Latency.GetCount() != 100 {
		t.Errorf("latency %v", get.Latency)
	}
	add := tb.Ops[1]
	if add.Errors != 1 || add.Latency.GetCount() != 1 {
		t.Errorf("ADD: errors %d, latency samples %d; want 1 (exists is a normal answer, unanswered is not), 1 (unanswered has no latency)", add.Errors, add.Latency.GetCount())
	}
	if _, ok := add.HitRatio(); ok {
		t.Error("a hit ratio for ADD")
	}
	if len(tb.Proxies) != 2 {
		t.Fatalf("proxies %+v", tb.Proxies)
	}
	if a, b := tb.Proxies[0], tb.Proxies[1]; a.Opened != 1 || a.Closed != 1 || a.Errors() != 0 || b.Errors() != 3 || b.ProtocolErrors != 1 {
		t.Errorf("proxy rows %+v", tb.Proxies)
	}
	// The table is a copy: later events do not change it.
	c.Add(tx("b", snoopv1.Op_OP_GET, "hit", time.Millisecond))
	if tb.Ops[2].Count != 100 || tb.Ops[2].Results["hit"] != 75 {
		t.Error("Table shares state with the collector")
	}
}

func TestTotalsSince(t *testing.T) {
	mk := func(get, hit int64) []*snoopv1.Proxy {
		return []*snoopv1.Proxy{{Spec: &snoopv1.ProxySpec{Name: "p"}, Counters: &snoopv1.ProxyCounters{
			ConnectionsTotal: 3,
			Ops:              []*snoopv1.OpCounters{{Op: snoopv1.Op_OP_GET, Count: get, Results: map[string]int64{"hit": hit, "miss": get - hit}}},
		}}}
	}
	a, b := FromProxies(mk(10, 4)), FromProxies(mk(25, 10))
	if len(a.Ops) != 1 || a.Ops[0].Count != 10 || a.Proxies[0].Total != 3 {
		t.Fatalf("totals %+v", a)
	}
	d := b.Since(a)
	if len(d) != 1 || d[0].Count != 15 || d[0].Results["hit"] != 6 || d[0].Results["miss"] != 9 {
		t.Errorf("since: %+v", d)
	}
	if d := a.Since(a); len(d) != 0 {
		t.Errorf("nothing new: %+v", d)
	}
	if d := a.Since(b); len(d) != 1 || d[0].Count != 10 {
		t.Errorf("a recreated proxy counts from zero: %+v", d)
	}
}

// TestCollectorCountsInterleavedEvents: the collector remembers the rows
// of the event before; events that switch proxy, op and result at every
// turn are counted as a plain tally counts them.
func TestCollectorCountsInterleavedEvents(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	type key struct {
		proxy string
		op    snoopv1.Op
	}
	counts := map[key]map[string]int64{}
	errs := map[key]int64{}
	opened := map[string]int64{}
	c := New()
	for range 5000 {
		p := []string{"a", "b", "c"}[rng.IntN(3)]
		if rng.IntN(5) == 0 {
			c.Add(kind(p, snoopv1.EventKind_EVENT_KIND_CONNECTION_OPENED))
			opened[p]++
			continue
		}
		k := key{p, []snoopv1.Op{snoopv1.Op_OP_GET, snoopv1.Op_OP_ADD}[rng.IntN(2)]}
		res := []string{"hit", "miss", "", "unanswered", "ok"}[rng.IntN(5)]
		c.Add(tx(k.proxy, k.op, res, time.Millisecond))
		if counts[k] == nil {
			counts[k] = map[string]int64{}
		}
		counts[k][res]++
		if res == "" || res == "unanswered" {
			errs[k]++
		}
	}
	tb := c.Table()
	if len(tb.Ops) != len(counts) {
		t.Fatalf("%d rows, want %d", len(tb.Ops), len(counts))
	}
	for _, row := range tb.Ops {
		k := key{row.Proxy, row.Op}
		var n int64
		for res, want := range counts[k] {
			n += want
			if row.Results[res] != want {
				t.Errorf("%v %q: %d, want %d", k, res, row.Results[res], want)
			}
		}
		if row.Count != n || row.Errors != errs[k] {
			t.Errorf("%v: count %d errors %d, want %d %d", k, row.Count, row.Errors, n, errs[k])
		}
	}
	for _, p := range tb.Proxies {
		if p.Opened != opened[p.Proxy] {
			t.Errorf("proxy %s: opened %d, want %d", p.Proxy, p.Opened, opened[p.Proxy])
		}
	}
}
