package sessions

import (
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/snoopd/snoopd/distcache"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var t0 = time.Date(2026, 3, 14, 15, 9, 26, 0, time.UTC)

func tx(id string, op snoopv1.Op, result string, req, resp uint32) *snoopv1.Event {
	return &snoopv1.Event{Kind: snoopv1.EventKind_EVENT_KIND_TRANSACTION, Proxy: "p", Transaction: &snoopv1.Transaction{
		Op: op, SessionId: []byte(id), SessionIdLength: uint32(len(id)), Result: result,
		RequestSize: req, ResponseSize: resp, RequestFrames: 1, ResponseFrames: 1}}
}

func TestCounterCountsEachSessionsGetsHitsAddsAndBytes(t *testing.T) {
	c := NewCounter(10, t0)
	c.Add(tx("a", snoopv1.Op_OP_ADD, "ok", 100, 0))
	for range 3 {
		c.Add(tx("a", snoopv1.Op_OP_GET, "hit", 10, 100))
	}
	c.Add(tx("a", snoopv1.Op_OP_GET, "miss", 10, 0))
	c.Add(tx("b", snoopv1.Op_OP_GET, "miss", 10, 0))
	c.Add(tx("b", snoopv1.Op_OP_REMOVE, "ok", 10, 0))
	// Neither a transaction nor one with a session id counts.
	c.Add(&snoopv1.Event{Kind: snoopv1.EventKind_EVENT_KIND_CONNECTION_OPENED, Proxy: "p"})
	c.Add(tx("", snoopv1.Op_OP_GET, "hit", 10, 100))
	c.Dropped(2)

	tab := c.Table(t0.Add(2 * time.Second))
	if tab.Gets != 5 || tab.Counters != 10 || tab.Dropped != 2 || len(tab.Rows) != 2 || tab.Span() != 2*time.Second {
		t.Fatalf("table: %+v", tab)
	}
	a, b := tab.Rows[0], tab.Rows[1]
	h := int64(distcache.HeaderSize)
	if string(a.ID) != "a" || a.Gets != 4 || a.Hits != 3 || a.Misses != 1 || a.Adds != 1 || a.Bytes != 100+3*110+10+5*2*h {
		t.Errorf("session a: %+v", a)
	}
	if r, ok := a.HitRatio(); !ok || r != 0.75 {
		t.Errorf("a's hit ratio %v %v, want 0.75", r, ok)
	}
	if string(b.ID) != "b" || b.Gets != 1 || b.Misses != 1 || b.Adds != 0 || b.Bytes != 20+2*2*h {
		t.Errorf("session b: %+v", b)
	}
	if got := tab.Rate(a.Gets); got != 2 {
		t.Errorf("a's GET rate %v, want 4 GETs / 2 s", got)
	}
	if top := tab.Top(1); len(top) != 1 || string(top[0].ID) != "a" {
		t.Errorf("Top(1) = %+v", top)
	}
}

func TestTakeStartsANewInterval(t *testing.T) {
	c := NewCounter(10, t0)
	c.Add(tx("a", snoopv1.Op_OP_GET, "hit", 1, 1))
	c.Dropped(1)
	first := c.Take(t0.Add(time.Second))
	if first.Gets != 1 || first.Dropped != 1 || len(first.Rows) != 1 {
		t.Fatalf("first interval: %+v", first)
	}
	c.Add(tx("b", snoopv1.Op_OP_GET, "hit", 1, 1))
	second := c.Take(t0.Add(3 * time.Second))
	if second.Since != first.At || second.Gets != 1 || second.Dropped != 0 || len(second.Rows) != 1 || string(second.Rows[0].ID) != "b" {
		t.Fatalf("second interval: %+v", second)
	}
}

func TestHotSessionSurvivesManyColdOnes(t *testing.T) {
	c := NewCounter(20, t0)
	for i := range 5_000 {
		c.Add(tx(string(rune('A'+i%3))+"-hot", snoopv1.Op_OP_GET, "hit", 1, 1))
		c.Add(tx("cold-"+string(rune(i)), snoopv1.Op_OP_ADD, "ok", 1, 1))
		if i%10 == 0 {
			c.Add(tx("cold-"+string(rune(i)), snoopv1.Op_OP_GET, "miss", 1, 1))
		}
	}
	tab := c.Table(t0.Add(time.Second))
	if len(tab.Rows) != 20 {
		t.Fatalf("%d rows in 20 counters", len(tab.Rows))
	}
	for i, r := range tab.Top(3) {
		if len(r.ID) != 5 || string(r.ID[1:]) != "-hot" || r.Misses != 0 || r.Hits < 1666 {
			t.Errorf("rank %d: %q %+v, want one of the hot sessions with its hits", i, r.ID, r)
		}
	}
	if tab.Bound != tab.Gets/20 {
		t.Errorf("bound %d, want N/m = %d", tab.Bound, tab.Gets/20)
	}
}
