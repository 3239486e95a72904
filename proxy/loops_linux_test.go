package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/snoopd/snoopd/distcache"
)

// The tests of one proxy over several loops run their own epoll engine
// with three loops (more than this machine's two cores, so loops also
// take turns on a core), whatever engine the rest of the suite uses.

// Concurrent clients on every loop: the counters, the connection ids and
// each connection's order of transactions come out exact.
func TestSeveralLoopsExactCounters(t *testing.T) {
	for _, network := range []string{"tcp", "unix"} {
		t.Run(network, func(t *testing.T) {
			eng := newEpollForTest(t, 3)
			rec := newRecorder()
			p := startProxyOn(t, eng, network, startCache(t, "unix"), Options{}, rec)
			const clients, connsEach, opsEach = 8, 10, 4
			var (
				wg              sync.WaitGroup
				mu              sync.Mutex
				sent, received  int64
				adds, gets, has int64
			)
			for i := range clients {
				wg.Go(func() {
					for j := range connsEach {
						c := newClient(t, p.Addr())
						id := []byte(fmt.Sprintf("c%d-%d", i, j))
						var up, down int64
						for k := range opsEach {
							var op distcache.Op
							var payload []byte
							switch k % 3 {
							case 0:
								op, payload = distcache.OpAdd, distcache.AppendAddRequest(nil, 60000, id, bytes.Repeat([]byte{'v'}, 100+k))
							case 1:
								op, payload = distcache.OpGet, id
							default:
								op, payload = distcache.OpHave, id
							}
							m := c.do(op, payload)
							up += int64(len(distcache.AppendMessage(nil, false, 0, op, payload)))
							down += int64(len(distcache.AppendMessage(nil, true, 0, op, m.Payload)))
							mu.Lock()
							switch op {
							case distcache.OpAdd:
								adds++
							case distcache.OpGet:
								gets++
							default:
								has++
							}
							mu.Unlock()
						}
						c.c.Close()
						mu.Lock()
						sent, received = sent+up, received+down
						mu.Unlock()
					}
				})
			}
			wg.Wait()
			const conns = clients * connsEach
			rec.waitKind(t, KindConnClosed, conns)
			st := p.Stats()
			if st.ConnsTotal != conns || st.ConnsActive != 0 || st.Transactions() != conns*opsEach {
				t.Fatalf("%d connections (%d active), %d transactions; want %d, 0, %d", st.ConnsTotal, st.ConnsActive, st.Transactions(), conns, conns*opsEach)
			}
			if st.BytesUp != sent || st.BytesDown != received {
				t.Fatalf("bytes up %d down %d, want %d and %d", st.BytesUp, st.BytesDown, sent, received)
			}
			// Each connection adds its id, then adds it again.
			if ok, exists := st.Results[distcache.OpAdd]["ok"], st.Results[distcache.OpAdd]["exists"]; ok != conns || ok+exists != adds {
				t.Fatalf("%d adds ok and %d exists, want %d of %d ok (%v)", ok, exists, conns, adds, st.Results)
			}
			if got := st.Results[distcache.OpGet]["hit"]; got != gets {
				t.Fatalf("%d gets hit, want %d (%v)", got, gets, st.Results)
			}
			if got := st.Results[distcache.OpHave]["hit"] + st.Results[distcache.OpHave]["ok"]; got != has {
				t.Fatalf("%d haves answered, want %d (%v)", got, has, st.Results)
			}
			used := 0
			for _, k := range admittedPerLoop(eng) {
				if k > 0 {
					used++
				}
			}
			if used < 2 {
				t.Fatalf("%d connections on %d loop(s): %v", conns, used, admittedPerLoop(eng))
			}
			checkConnEvents(t, rec, conns)
			// Each connection's transactions are reported in the order
			// its client sent them, before its close.
			last := map[uint64]uint32{}
			closed := map[uint64]bool{}
			for _, e := range rec.all() {
				switch e.Kind {
				case KindTransaction:
					if closed[e.ConnID] {
						t.Fatalf("connection %d: transaction after the close", e.ConnID)
					}
					if uid := e.Tx.RequestUID; uid != last[e.ConnID]+1 {
						t.Fatalf("connection %d: request %d after %d", e.ConnID, uid, last[e.ConnID])
					}
					last[e.ConnID] = e.Tx.RequestUID
				case KindConnClosed:
					closed[e.ConnID] = true
				}
			}
			for id, uid := range last {
				if uid != opsEach {
					t.Fatalf("connection %d: %d transactions, want %d", id, uid, opsEach)
				}
			}
		})
	}
}

// Port 0: the first listener picks the port and the others share it; a
// proxy re-enabled keeps it. While the proxy listens, its port is taken
// for anyone else, including another proxy that would join the port with
// SO_REUSEPORT of its own.
func TestSeveralLoopsPortZero(t *testing.T) {
	eng := newEpollForTest(t, 3)
	server := startCache(t, "tcp")
	p := startProxyOn(t, eng, "tcp", server, Options{}, nil)
	addr := p.Addr()
	if addr.Port() == 0 {
		t.Fatal("port 0 after bind")
	}
	spread := func() {
		t.Helper()
		before := admittedPerLoop(eng)
		for range 30 {
			c := newClient(t, addr)
			c.do(distcache.OpHave, []byte("x"))
			c.c.Close()
		}
		used := 0
		for i, k := range admittedPerLoop(eng) {
			if k > before[i] {
				used++
			}
		}
		if used < 2 {
			t.Fatalf("30 clients of port %d on %d loop(s)", addr.Port(), used)
		}
	}
	spread()
	other, err := New(Config{Name: "other", Listen: addr, Server: server, Enabled: true, Engine: eng}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := other.Start(); !errors.Is(err, ErrAddrInUse) {
		t.Fatalf("a second proxy on %s: %v, want ErrAddrInUse", addr, err)
	}
	other.Stop(context.Background())
	if ln, err := net.Listen("tcp", addr.NetAddr()); err == nil {
		ln.Close()
		t.Fatalf("%s could be bound while the proxy listens on it", addr)
	}
	p.Disable(false)
	if p.Listening() {
		t.Fatal("listening after Disable")
	}
	if err := p.Enable(); err != nil {
		t.Fatal(err)
	}
	if p.Addr() != addr {
		t.Fatalf("re-enabled on %s, was %s", p.Addr(), addr)
	}
	spread()
	if st := p.Stats(); st.ConnsTotal != 60 {
		t.Fatalf("%d connections, want 60", st.ConnsTotal)
	}
}

// An operator's close of one connection, of all of them (disable), and a
// drain reach connections on every loop.
func TestSeveralLoopsCloseAndDrain(t *testing.T) {
	for _, network := range []string{"tcp", "unix"} {
		t.Run(network, func(t *testing.T) {
			eng := newEpollForTest(t, 3)
			rec := newRecorder()
			p := startProxyOn(t, eng, network, startCache(t, "tcp"), Options{}, rec)
			open := func(n int) []*client {
				var cs []*client
				for range n {
					c := newClient(t, p.Addr())
					c.do(distcache.OpHave, []byte("x"))
					cs = append(cs, c)
				}
				return cs
			}
			gone := func(c *client) {
				t.Helper()
				c.c.SetReadDeadline(time.Now().Add(5 * time.Second))
				if _, err := c.c.Read(make([]byte, 1)); err == nil {
					t.Fatal("a closed connection answered")
				}
			}
			cs := open(9)
			loopOf := connLoops(eng)
			if len(loopOf) != 9 {
				t.Fatalf("%d connections found on the loops, want 9", len(loopOf))
			}
			if network == "unix" && len(distinct(loopOf)) != 3 {
				t.Fatalf("9 clients handed to %d loops, want 3", len(distinct(loopOf)))
			}
			// One by one, on every loop there is.
			infos := p.Conns()
			if len(infos) != 9 {
				t.Fatalf("%d connections listed, want 9", len(infos))
			}
			killed := map[*loop]bool{}
			for _, ci := range infos[:6] {
				if !p.CloseConn(ci.ID) {
					t.Fatalf("connection %d not found", ci.ID)
				}
				killed[loopOf[ci.ID]] = true
			}
			for _, c := range cs[:6] {
				gone(c)
			}
			if len(killed) < 2 {
				t.Fatalf("closed connections on %d loop(s) only: %v", len(killed), killed)
			}
			closed := rec.waitKind(t, KindConnClosed, 6)
			for _, e := range closed {
				if e.Closed.Reason != "closed by operator" {
					t.Fatalf("closed because %q", e.Closed.Reason)
				}
			}
			// The rest at once.
			p.Disable(true)
			for _, c := range cs[6:] {
				gone(c)
			}
			rec.waitKind(t, KindConnClosed, 9)
			if n := len(p.Conns()); n != 0 {
				t.Fatalf("%d connections left after disable", n)
			}
			// Enabled again, then drained while clients on several loops
			// finish on their own.
			if err := p.Enable(); err != nil {
				t.Fatal(err)
			}
			cs = open(6)
			drained := make(chan error, 1)
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				drained <- p.Drain(ctx)
			}()
			rec.waitFor(t, "the drain to stop listening", func([]*Event) bool { return !p.Listening() })
			for _, c := range cs {
				c.do(distcache.OpHave, []byte("y"))
				c.c.Close()
			}
			if err := <-drained; err != nil {
				t.Fatal(err)
			}
			for _, e := range rec.waitKind(t, KindConnClosed, 15)[9:] {
				if e.Closed.Reason != "client closed" {
					t.Fatalf("drained connection closed because %q", e.Closed.Reason)
				}
			}
		})
	}
}

// connLoops returns the loop of every open connection of eng, asking each
// loop on its own thread which connections' sockets it holds.
func connLoops(eng *epollEngine) map[uint64]*loop {
	out := map[uint64]*loop{}
	for _, l := range eng.loops {
		ids := make(chan []uint64)
		l.post(func() {
			var mine []uint64
			for _, s := range l.slots {
				if sd, ok := s.h.(*lside); ok && sd.idx == 0 {
					mine = append(mine, sd.lc.id)
				}
			}
			ids <- mine
		})
		for _, id := range <-ids {
			out[id] = l
		}
	}
	return out
}

func distinct(m map[uint64]*loop) map[*loop]bool {
	out := map[*loop]bool{}
	for _, l := range m {
		out[l] = true
	}
	return out
}

// The connection limit holds exactly while several loops admit clients at
// once.
func TestSeveralLoopsConnectionLimit(t *testing.T) {
	eng := newEpollForTest(t, 3)
	rec := newRecorder()
	p := startProxyOn(t, eng, "unix", startCache(t, "tcp"), Options{MaxConns: 3}, rec)
	const n = 12
	var wg sync.WaitGroup
	conns := make([]net.Conn, n)
	for i := range n {
		wg.Go(func() { conns[i] = dial(t, p.Addr()) })
	}
	wg.Wait()
	rec.waitFor(t, "every client admitted or refused", func([]*Event) bool {
		st := p.Stats()
		return st.ConnsTotal+st.ConnsRefused >= n
	})
	if st := p.Stats(); st.ConnsTotal != 3 || st.ConnsRefused != n-3 || st.ConnsActive != 3 {
		t.Fatalf("%d admitted (%d active), %d refused; want 3, 3, %d", st.ConnsTotal, st.ConnsActive, st.ConnsRefused, n-3)
	}
}

// A proxy's spares are split over the loops, at least one each, and a
// client on any loop takes one of its own loop's.
func TestSeveralLoopsSpares(t *testing.T) {
	for _, tc := range []struct{ n, loops, i, want int }{
		{2, 1, 0, 2}, {4, 3, 0, 2}, {4, 3, 1, 1}, {4, 3, 2, 1}, {1, 3, 2, 1}, {6, 2, 1, 3}, {0, 2, 0, 0}, {-1, 2, 0, 0},
	} {
		if got := spareShare(tc.n, tc.loops, tc.i); got != tc.want {
			t.Errorf("spareShare(%d, %d, %d) = %d, want %d", tc.n, tc.loops, tc.i, got, tc.want)
		}
	}
	eng := newEpollForTest(t, 3)
	server := startCache(t, "unix")
	for _, tc := range []struct{ spares, total int64 }{{4, 4}, {1, 3}} {
		rec := newRecorder()
		p := startProxyOn(t, eng, "unix", server, Options{Spares: int(tc.spares)}, rec)
		rec.waitFor(t, "the spares", func([]*Event) bool { return p.Stats().SparesDialled >= tc.total })
		// Three clients, one per loop, each on a spare of its loop's pool.
		for range 3 {
			c := newClient(t, p.Addr())
			c.do(distcache.OpHave, []byte("x"))
			c.c.Close()
		}
		rec.waitFor(t, "the pools refilled", func([]*Event) bool { return p.Stats().SparesDialled >= tc.total+3 })
		if st := p.Stats(); st.ConnectFailed != 0 || st.SpareFailures != 0 || st.Transactions() != 3 {
			t.Fatalf("spares %d: %d connect failures, %d spare failures, %d transactions", tc.spares, st.ConnectFailed, st.SpareFailures, st.Transactions())
		}
		p.Disable(true)
	}
}

// A fault's budget is exact, and its counters too, while connections on
// several loops draw from it at once.
func TestSeveralLoopsFaultBudget(t *testing.T) {
	eng := newEpollForTest(t, 3)
	cache := startCache(t, "tcp")
	seed := newClient(t, cache)
	if m := seed.do(distcache.OpAdd, distcache.AppendAddRequest(nil, 60000, []byte("s"), []byte("data"))); m.Payload[0] != 0 {
		t.Fatalf("seeding the cache: status %d", m.Payload[0])
	}
	p := startProxyOn(t, eng, "unix", cache, Options{}, nil)
	if err := p.SetFaults([]FaultSpec{
		{Name: "ten", Type: FaultMiss, Budget: 10, Probability: 1},
		{Name: "half", Type: FaultMiss, Probability: 0.5, Seed: 1},
	}); err != nil {
		t.Fatal(err)
	}
	const clients, each = 6, 20
	var wg sync.WaitGroup
	var mu sync.Mutex
	misses := 0
	for range clients {
		wg.Go(func() {
			c := dial(t, p.Addr())
			for i := 1; i <= each; i++ {
				got := rawResponse(t, c, uint32(i), distcache.OpGet, []byte("s"))
				if len(got) == distcache.HeaderSize+1 {
					mu.Lock()
					misses++
					mu.Unlock()
				}
			}
			c.Close()
		})
	}
	wg.Wait()
	fs := p.Stats().Faults
	if fs[0].Matched != 10 || fs[0].Applied != 10 {
		t.Fatalf("budget 10: %+v", fs[0])
	}
	if fs[1].Matched != clients*each-10 {
		t.Fatalf("the second fault matched %d, want %d", fs[1].Matched, clients*each-10)
	}
	if int64(misses) != fs[0].Applied+fs[1].Applied {
		t.Fatalf("%d misses, faults applied %d", misses, fs[0].Applied+fs[1].Applied)
	}
}
