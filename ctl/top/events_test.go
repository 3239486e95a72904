package top

import (
	"bytes"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/snoopd/snoopd/distcache"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
)

// fleetEvents builds events as a fleet exports them.
type fleetEvents struct{ daemon, proxy string }

func (f fleetEvents) ev(kind snoopv1.EventKind, conn uint64) *snoopv1.Event {
	return &snoopv1.Event{Kind: kind, Daemon: f.daemon, Proxy: f.proxy, ConnectionId: conn}
}

func (f fleetEvents) tx(conn uint64, op snoopv1.Op, result string, lat time.Duration) *snoopv1.Event {
	ev := f.ev(snoopv1.EventKind_EVENT_KIND_TRANSACTION, conn)
	ev.Transaction = &snoopv1.Transaction{Op: op, Result: result, Latency: durationpb.New(lat),
		RequestSize: 100, RequestFrames: 1, ResponseSize: 1000, ResponseFrames: 2}
	return ev
}

// TestEventCounter: events in, snapshot out, as a daemon would count
// them: per daemon and proxy (two daemons share a proxy name), op and
// result counts, errors, connections, bytes and the latency histogram's
// percentiles; and two snapshots make a frame of the interval.
func TestEventCounter(t *testing.T) {
	since := t0.Add(-10 * time.Second)
	c := NewEventCounter(since)
	w1, w2 := fleetEvents{"web-1", "sess"}, fleetEvents{"web-2", "sess"}
	get, add := snoopv1.Op_OP_GET, snoopv1.Op_OP_ADD
	const (
		opened = snoopv1.EventKind_EVENT_KIND_CONNECTION_OPENED
		closed = snoopv1.EventKind_EVENT_KIND_CONNECTION_CLOSED
	)
	// web-1: 90 GET hits at 1ms, 9 misses at 10ms, one at 100ms; 3
	// unanswered ADDs (errors, no latency); connections 1 and 2 opened, 1
	// closed, 7 seen only through a transaction; a refusal, a failed
	// connect and a protocol error.
	c.Add(w1.ev(opened, 1))
	c.Add(w1.ev(opened, 2))
	for i := range 90 {
		c.Add(w1.tx(uint64(1+i%2), get, "hit", time.Millisecond))
	}
	for range 9 {
		c.Add(w1.tx(2, get, "miss", 10*time.Millisecond))
	}
	c.Add(w1.tx(7, get, "miss", 100*time.Millisecond))
	for range 3 {
		c.Add(w1.tx(1, add, "unanswered", 0))
	}
	c.Add(w1.ev(closed, 1))
	// Batched export orders only within a subject: a transaction of a
	// closed connection after its close does not open it again.
	c.Add(w1.tx(1, get, "hit", time.Millisecond))
	c.Add(w1.ev(snoopv1.EventKind_EVENT_KIND_CONNECTION_REFUSED, 0))
	c.Add(w1.ev(snoopv1.EventKind_EVENT_KIND_CONNECT_FAILED, 0))
	c.Add(w1.ev(snoopv1.EventKind_EVENT_KIND_PROTOCOL_ERROR, 3))
	// web-2: 5 ADDs, and no connection events (a daemon that exports
	// transactions only): its connections are not known.
	for range 5 {
		c.Add(w2.tx(9, add, "ok", 2*time.Millisecond))
	}

	s := c.Snapshot(t0)
	if len(s.Proxies) != 2 || s.Daemons[0] != "web-1" || s.Daemons[1] != "web-2" || !s.Since.Equal(since) {
		t.Fatalf("snapshot: %d proxies, daemons %v, since %v", len(s.Proxies), s.Daemons, s.Since)
	}
	p := s.Proxies[0].GetCounters()
	if p.GetTransactions() != 104 || p.GetConnectionsTotal() != 2 || p.GetConnectionsActive() != 2 ||
		p.GetConnectionsRefused() != 1 || p.GetConnectFailures() != 1 || p.GetProtocolErrors() != 1 {
		t.Errorf("web-1 counters: %v", p)
	}
	if up, down := p.GetBytesUp(), p.GetBytesDown(); up != 104*(100+distcache.HeaderSize) || down != 104*(1000+2*distcache.HeaderSize) {
		t.Errorf("bytes up %d, down %d", up, down)
	}
	ops := p.GetOps()
	if len(ops) != 2 || ops[0].GetOp() != add || ops[1].GetOp() != get {
		t.Fatalf("ops %v", ops)
	}
	if g := ops[1]; g.GetCount() != 101 || g.GetResults()["hit"] != 91 || g.GetResults()["miss"] != 10 || g.GetHistogram().GetCount() != 101 {
		t.Errorf("GET: %v", g)
	}
	if a := ops[0]; a.GetCount() != 3 || a.GetResults()["unanswered"] != 3 || a.GetHistogram().GetCount() != 0 {
		t.Errorf("ADD: %v", a)
	}
	if p.GetHistogram().GetCount() != 101 {
		t.Errorf("proxy histogram has %d samples, want the 101 answered", p.GetHistogram().GetCount())
	}
	if s.Proxies[1].GetCounters().GetTransactions() != 5 || s.Proxies[1].GetCounters().GetConnectionsActive() != 0 {
		t.Errorf("web-2 counters: %v", s.Proxies[1].GetCounters())
	}

	// The first frame covers the time since counting began.
	f := NewFrame(nil, s)
	r := f.Rows[0]
	if r.Daemon != "web-1" || r.Name != "sess" || r.Key() != "web-1/sess" || r.State != "-" || r.Span != 10*time.Second {
		t.Fatalf("first row %+v", r)
	}
	// 3 unanswered, a refusal, a failed connect, a protocol error.
	if r.Ops != 104 || r.Errors != 6 || r.Hits != 91 || r.Misses != 10 || r.Conns != 2 {
		t.Errorf("first row: ops %d errors %d hits %d misses %d conns %d", r.Ops, r.Errors, r.Hits, r.Misses, r.Conns)
	}
	// Percentiles within the histogram's 3%: p50 1ms, p99 the tenth
	// slowest of 101 (a 10ms miss), max 100ms.
	near := func(got, want time.Duration) bool { return got >= want*97/100 && got <= want*103/100 }
	if l := r.Latency; l.Count != 101 || !near(l.P50, time.Millisecond) || !near(l.P99, 10*time.Millisecond) || !near(l.P999, 100*time.Millisecond) {
		t.Errorf("latency %+v", l)
	}
	if f.Totals.Daemons != 2 || f.Totals.Proxies != 2 || f.Totals.Transactions != 109 {
		t.Errorf("totals %+v", f.Totals)
	}

	// The next interval: 20 GETs at 50ms on web-1, none on web-2.
	for range 20 {
		c.Add(w1.tx(2, get, "hit", 50*time.Millisecond))
	}
	c.Add(w1.ev(closed, 2))
	f2 := NewFrame(s, c.Snapshot(t0.Add(2*time.Second)))
	r = f2.Rows[0]
	if f2.Interval != 2*time.Second || r.Span != 2*time.Second || r.Ops != 20 || r.Rate(r.Ops) != 10 || r.Errors != 0 || r.Conns != 1 {
		t.Errorf("second row %+v", r)
	}
	if l := r.Latency; l.Count != 20 || !near(l.P50, 50*time.Millisecond) {
		t.Errorf("second interval's latency %+v, want 20 samples at 50ms", l)
	}
	if r := f2.Rows[1]; r.Ops != 0 || r.Span != 2*time.Second {
		t.Errorf("idle web-2: %+v", r)
	}

	// Lost events: counted, and the open connections forgotten (their
	// closes may be among the lost).
	c.Dropped(4)
	s3 := c.Snapshot(t0.Add(3 * time.Second))
	if s3.Dropped != 4 || s3.Proxies[0].GetCounters().GetConnectionsActive() != 0 {
		t.Errorf("after a loss: dropped %d, active %d", s3.Dropped, s3.Proxies[0].GetCounters().GetConnectionsActive())
	}

	// Text and JSON name the daemon; the old fields stay.
	var buf bytes.Buffer
	if err := WriteText(&buf, NewFrame(s, s3)); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{"DAEMON  NAME", "web-1   sess  -", "2 proxies on 2 daemons", "4 events lost"} {
		if !strings.Contains(out, want) {
			t.Errorf("text lacks %q:\n%s", want, out)
		}
	}
	js, err := FrameJSON(f)
	if err != nil {
		t.Fatal(err)
	}
	var back struct {
		Since  string `json:"since"`
		Totals struct {
			Daemons int `json:"daemons"`
		} `json:"totals"`
		Proxies []struct {
			Daemon, Name, State string
			Ops                 int64 `json:"ops"`
		} `json:"proxies"`
	}
	if err := json.Unmarshal(js, &back); err != nil || back.Since == "" || back.Totals.Daemons != 2 || len(back.Proxies) != 2 ||
		back.Proxies[0].Daemon != "web-1" || back.Proxies[0].Name != "sess" || back.Proxies[0].State != "-" || back.Proxies[0].Ops != 104 {
		t.Errorf("json %s: %v", js, err)
	}
}

// TestEventCounterConcurrent: Add and Snapshot from different goroutines
// (the race detector checks them), each snapshot a consistent copy that
// later events do not change.
func TestEventCounterConcurrent(t *testing.T) {
	c := NewEventCounter(t0)
	w := fleetEvents{"d", "p"}
	const n = 2000
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := range n {
			c.Add(w.tx(uint64(i%8+1), snoopv1.Op_OP_GET, "hit", time.Millisecond))
		}
	})
	var prev int64
	for i := 0; i < 100 && prev < n; i++ {
		s := c.Snapshot(t0)
		if len(s.Proxies) == 0 {
			continue
		}
		pc := s.Proxies[0].GetCounters()
		got := pc.GetTransactions()
		if got < prev || pc.GetOps()[0].GetCount() != got || int64(pc.GetHistogram().GetCount()) != got {
			t.Fatalf("snapshot %d: transactions %d (before %d), GETs %d, samples %d", i, got, prev, pc.GetOps()[0].GetCount(), pc.GetHistogram().GetCount())
		}
		prev = got
	}
	wg.Wait()
	if got := c.Snapshot(t0).Proxies[0].GetCounters().GetTransactions(); got != n {
		t.Errorf("%d transactions, want %d", got, n)
	}
}

// What the counter remembers of connections is bounded, whatever the
// stream carries: transactions alone open nothing (no close would ever
// come); openings without closes are forgotten past maxOpen; closes are
// remembered closedKept deep, deep enough for a batched export's
// reordering.
func TestEventCounterConnectionsBounded(t *testing.T) {
	const (
		opened = snoopv1.EventKind_EVENT_KIND_CONNECTION_OPENED
		closed = snoopv1.EventKind_EVENT_KIND_CONNECTION_CLOSED
	)
	c := NewEventCounter(t0)
	txOnly, opensOnly, both := fleetEvents{"d", "tx-only"}, fleetEvents{"d", "opens-only"}, fleetEvents{"d", "both"}
	for id := uint64(1); id <= 3*maxOpen/2; id++ {
		c.Add(txOnly.tx(id, snoopv1.Op_OP_GET, "hit", time.Millisecond))
		c.Add(opensOnly.ev(opened, id))
	}
	// A connection per operation, each close sent before its opening and
	// transaction (different subjects, different batches).
	for id := uint64(1); id <= closedKept; id++ {
		c.Add(both.ev(closed, id))
	}
	for id := uint64(1); id <= closedKept; id++ {
		c.Add(both.ev(opened, id))
		c.Add(both.tx(id, snoopv1.Op_OP_GET, "hit", time.Millisecond))
	}
	active := map[string]int64{}
	for _, p := range c.Snapshot(t0).Proxies {
		active[p.GetSpec().GetName()] = p.GetCounters().GetConnectionsActive()
	}
	if active["tx-only"] != 0 || active["opens-only"] > maxOpen || active["opens-only"] == 0 || active["both"] != 0 {
		t.Fatalf("active connections %v; want tx-only 0, opens-only at most %d, both 0", active, maxOpen)
	}
	for _, p := range c.proxies {
		if len(p.closed.ids) > closedKept || len(p.closed.ring) > closedKept || len(p.open) > maxOpen {
			t.Fatalf("remembered %d closes (ring %d), %d open", len(p.closed.ids), len(p.closed.ring), len(p.open))
		}
	}
}
