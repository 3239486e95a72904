package proxy

import (
	"testing"
	"time"

	"github.com/snoopd/snoopd/distcache"
)

// A held answer's wait is in its transaction's latency and in the
// proxy's latency statistics, not in its server latency; an answer
// queued behind it waits too.
func TestHeldAnswersWaitIsInTheLatency(t *testing.T) {
	rec := newRecorder()
	const delay = 150 * time.Millisecond
	p, _ := faultProxy(t, rec, FaultSpec{Name: "slow", Type: FaultLatency, Ops: []distcache.Op{distcache.OpHave}, Delay: delay, Probability: 1})
	c := dial(t, p.Addr())
	var req []byte
	req = distcache.AppendMessage(req, false, 1, distcache.OpHave, []byte("s"))
	req = distcache.AppendMessage(req, false, 2, distcache.OpGet, []byte("s"))
	if _, err := c.Write(req); err != nil {
		t.Fatal(err)
	}
	r := distcache.NewReader(c, distcache.ServerToClient)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	for range 2 {
		if _, err := r.ReadMessage(); err != nil {
			t.Fatal(err)
		}
	}
	evs := rec.waitFor(t, "both transactions", func(evs []*Event) bool {
		n := 0
		for _, e := range evs {
			if e.Kind == KindTransaction {
				n++
			}
		}
		return n == 2
	})
	for _, e := range evs {
		if e.Kind != KindTransaction {
			continue
		}
		tx := e.Tx
		switch tx.Op {
		case distcache.OpHave:
			if tx.Latency < delay || tx.Latency-tx.ServerLatency < delay || tx.ServerLatency <= 0 {
				t.Errorf("held HAVE: latency %v, server latency %v; want the %v hold in the latency alone", tx.Latency, tx.ServerLatency, delay)
			}
		case distcache.OpGet:
			// It went after the HAVE: it waited behind the hold. Where
			// the wait shows depends on the reads: an answer read with
			// the HAVE's waits in the proxy's queue, counted apart from
			// the server's time; one still in the kernel when the hold
			// began stays there (a direction with held bytes is not
			// read), and the proxy, which cannot see when it arrived,
			// counts that wait as the server's.
			if tx.Latency < delay || tx.ServerLatency <= 0 || tx.ServerLatency > tx.Latency {
				t.Errorf("GET queued behind the held HAVE: latency %v, server latency %v; want the wait in the latency", tx.Latency, tx.ServerLatency)
			}
		}
	}
	st := p.Stats()
	if h := st.LatencyOf[distcache.OpHave]; h.Count != 1 || h.Mean() < delay {
		t.Errorf("HAVE's latency histogram: %d counted, mean %v; want the held one at %v or more", h.Count, h.Mean(), delay)
	}
}
