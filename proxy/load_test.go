package proxy

import (
	"context"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/snoopd/snoopd/distcache"
	"github.com/snoopd/snoopd/distcache/loadgen"
)

// TestTransactionsMatchVerifiedLoad drives verified load through a proxy
// and checks that the transactions it reports are, op by op and outcome by
// outcome, exactly what the load generator did.
func TestTransactionsMatchVerifiedLoad(t *testing.T) {
	for _, tc := range []struct {
		network    string
		persistent bool
		pipeline   int
		ops        int64
	}{
		{"tcp", true, 4, 6000},
		{"unix", true, 4, 6000},
		{"tcp", false, 1, 600},
		{"unix", false, 1, 600},
	} {
		name := tc.network + "/persistent"
		if !tc.persistent {
			name = tc.network + "/conn-per-op"
		}
		t.Run(name, func(t *testing.T) {
			rec := newRecorder()
			p := startProxy(t, tc.network, startCache(t, tc.network), Options{}, rec)
			rep, err := loadgen.Run(context.Background(), loadgen.Config{
				Addr: p.Addr(), Conns: 8, Persistent: tc.persistent, Pipeline: tc.pipeline,
				Sessions: 200, MinData: 50, MaxData: 5000, Ops: tc.ops, Verify: true, Seed: 7,
			})
			if err != nil {
				t.Fatal(err)
			}
			if rep.Errors != 0 || rep.Ops != tc.ops {
				t.Fatalf("load: %d ops, %d errors: %v", rep.Ops, rep.Errors, rep.ErrorSamples)
			}
			// Every transaction is counted before its response reaches
			// the client, so the counters are complete once Run returns.
			st := p.Stats()
			if got := st.Transactions(); got != rep.Ops {
				t.Errorf("proxy counted %d transactions, load generator did %d", got, rep.Ops)
			}
			for _, opr := range rep.ByOp {
				op, err := distcache.ParseOp(opr.Op)
				if err != nil {
					t.Fatal(err)
				}
				for result, n := range opr.Results {
					if got := st.Results[op][result]; got != n {
						t.Errorf("%s %s: proxy %d, load generator %d", op, result, got, n)
					}
				}
				var sum int64
				for _, n := range st.Results[op] {
					sum += n
				}
				if sum != opr.Count {
					t.Errorf("%s: proxy %d, load generator %d (%v vs %v)", op, sum, opr.Count, st.Results[op], opr.Results)
				}
			}
			// Events are published just after the bytes are forwarded.
			if n := len(rec.waitKind(t, KindTransaction, int(rep.Ops))); int64(n) != rep.Ops {
				t.Errorf("%d transaction events for %d operations", n, rep.Ops)
			}
			if st.ProtocolErrors != 0 || st.ConnectFailed != 0 {
				t.Errorf("protocol errors %d, connect failures %d", st.ProtocolErrors, st.ConnectFailed)
			}
		})
	}
}

// TestTwoGoroutinesPerConnection counts the goroutines running connection
// code while clients sit idle.
func TestTwoGoroutinesPerConnection(t *testing.T) {
	p := startProxy(t, "tcp", startCache(t, "unix"), Options{}, nil)
	const n = 40
	want := 2 * n
	if testEngine.Name() == EngineEpoll {
		want = 0 // the loop serves them all
	}
	for range n {
		c := newClient(t, p.Addr())
		c.do(distcache.OpHave, []byte("x"))
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := connGoroutines()
		if got == want && len(p.Conns()) == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d connection goroutines for %d connections (%d live), want %d", got, n, len(p.Conns()), want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func connGoroutines() int {
	buf := make([]byte, 1<<22)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "snoopd/proxy.(*gconn)") || strings.Contains(g, "snoopd/proxy.(*lconn)") {
			n++
		}
	}
	return n
}

// TestStuckWatcherCostsNothing runs verified load through a proxy whose
// sink feeds a queue nobody drains, as a daemon does for a watcher that
// stopped reading: the load runs clean, every transaction is still counted
// and offered to the sink, and the excess is dropped, not waited for.
func TestStuckWatcherCostsNothing(t *testing.T) {
	var mu sync.Mutex
	var offered, dropped, txs int64
	q := make(chan *Event, 1)
	sink := SinkFunc(func(e *Event) {
		mu.Lock()
		defer mu.Unlock()
		offered++
		if e.Kind == KindTransaction {
			txs++
		}
		select {
		case q <- e.Clone():
		default:
			dropped++
		}
	})
	p := startProxy(t, "unix", startCache(t, "unix"), Options{}, sink)
	rep, err := loadgen.Run(context.Background(), loadgen.Config{Addr: p.Addr(), Conns: 4, Persistent: true, Ops: 2000, Verify: true, Seed: 3})
	if err != nil || rep.Errors != 0 {
		t.Fatalf("load: %v %v", err, rep.ErrorSamples)
	}
	st := p.Stats()
	if st.Transactions() != 2000 {
		t.Errorf("transactions %d", st.Transactions())
	}
	// Events are published just after their bytes are forwarded.
	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		o, d, n := offered, dropped, txs
		mu.Unlock()
		if n == 2000 {
			if d != o-1 {
				t.Errorf("offered %d, dropped %d: the one queued slot should hold the rest back", o, d)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("sink saw %d of 2000 transactions", n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
