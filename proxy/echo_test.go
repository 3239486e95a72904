package proxy

import (
	"context"
	"io"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/snoopd/snoopd/distcache"
)

// countingServer accepts connections on loopback, counts them and keeps
// them open without a word, until the test ends.
type countingServer struct {
	ln       net.Listener
	accepted atomic.Int64
}

func startCountingServer(t *testing.T) *countingServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &countingServer{ln: ln}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.accepted.Add(1)
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return s
}

func (s *countingServer) addr() distcache.Addr {
	return distcache.MustParseAddr("IP:" + s.ln.Addr().String())
}

// A client that never speaks costs the proxy no dial: not a server of
// its own, nor the replacement of the spare it took. That is what keeps
// two daemons whose proxies lead to each other from filling each other
// with spares that are each other's clients. A client that speaks gets
// its server, and the pool its refill.
func TestSilentClientsCostNoDial(t *testing.T) {
	srv := startCountingServer(t)
	rec := newRecorder()
	base := DataFDs()
	p := startProxy(t, "tcp", srv.addr(), Options{}, rec)
	// The whole pool: DefaultSpares, and at least one per event loop.
	// Waiting for the first spare only, the next could land among the
	// silent clients and be counted as theirs.
	full := int64(max(DefaultSpares, testEngine.Loops()))
	rec.waitFor(t, "the pool filled", func([]*Event) bool {
		st := p.Stats()
		return st.SparesDialled >= full && srv.accepted.Load() == st.SparesDialled
	})
	pool := srv.accepted.Load()
	const silent = 10
	var silents []net.Conn
	for range silent {
		silents = append(silents, dial(t, p.Addr()))
	}
	rec.waitFor(t, "the silent clients admitted", func([]*Event) bool { return p.Stats().ConnsTotal == silent })
	// The dials the old behaviour made for them start as they are
	// admitted; give them time to land before counting what arrived.
	time.Sleep(300 * time.Millisecond)
	if n := srv.accepted.Load(); n != pool {
		t.Fatalf("%d silent clients made the server accept %d connections beyond the pool of %d", silent, n-pool, pool)
	}
	c := dialAndAsk(t, p.Addr())
	rec.waitFor(t, "a dial for the client that spoke", func([]*Event) bool { return srv.accepted.Load() > pool })
	c.Close()
	// What the silent clients held, and held for a server, comes back.
	for _, s := range silents {
		s.Close()
	}
	if err := p.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
	if n := DataFDs(); n != base {
		t.Fatalf("the data path counts %d descriptors after the proxy stopped, %d before it started", n, base)
	}
}

// relay forwards every connection it accepts to dst, byte for byte, in
// both directions: a forwarding hop this process's proxies cannot see. It
// takes at most max connections and closes the ones after, so a loop
// through it stays bounded whatever the proxy does. The test's cleanup
// ends it, its dials in progress included, and waits for its goroutines.
func startRelay(t *testing.T, dst func() string, max int64) (addr string, accepted *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	accepted = new(atomic.Int64)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	closed := false
	// track keeps c to close at the end, or closes it if the end has
	// come: a dial can complete after the cleanup.
	track := func(c net.Conn) {
		mu.Lock()
		defer mu.Unlock()
		if closed {
			c.Close()
			return
		}
		conns = append(conns, c)
	}
	dialer := net.Dialer{Timeout: 5 * time.Second}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if accepted.Add(1) > max {
				c.Close()
				continue
			}
			track(c)
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				// A dial the loop's proxy cannot accept yet (its backlog
				// full) would otherwise outlive the test by its timeout.
				up, err := dialer.DialContext(ctx, "tcp", dst())
				if err != nil {
					return
				}
				track(up)
				defer up.Close()
				wg.Add(1)
				go func() {
					defer wg.Done()
					io.Copy(up, c)
					up.Close()
				}()
				io.Copy(c, up)
			}()
		}
	}()
	t.Cleanup(func() {
		cancel()
		ln.Close()
		mu.Lock()
		closed = true
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String(), accepted
}

// A proxy whose server leads back to it through a hop it cannot see
// (another daemon's proxy; here a plain relay) does not feed the loop
// until something runs out: the request that comes back unanswered as a
// new client, lap after lap, is closed once it is loopDepth laps deep;
// the client gets an end of stream, the proxy names the condition, and
// the loop's connections stay a handful.
func TestLoopThroughAnotherHopIsClosed(t *testing.T) {
	rec := newRecorder()
	var proxyAddr atomic.Value
	const relayMax = 200
	// The proxy's spares reach the relay before the proxy's address is
	// known: their dials fail, and they are replaced.
	relay, accepted := startRelay(t, func() string { a, _ := proxyAddr.Load().(string); return a }, relayMax)
	var logged atomic.Int64
	p, err := New(Config{Name: "t", Listen: distcache.MustParseAddr("IP:127.0.0.1:0"), Server: distcache.MustParseAddr("IP:" + relay),
		Enabled: true, Engine: testEngine, Logf: func(string, ...any) { logged.Add(1) }}, rec)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Stop(t.Context()) })
	proxyAddr.Store(p.Addr().NetAddr())
	c := dial(t, p.Addr())
	if _, err := c.Write(distcache.AppendMessage(nil, false, 7, distcache.OpGet, []byte("a session id"))); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := c.Read(make([]byte, 64)); err == nil {
		t.Fatalf("a request around the loop got %d bytes of answer", n)
	}
	st := p.Stats()
	if st.LoopEchoes == 0 || !slices.Contains(p.Conditions(time.Now()), ConditionForwardingLoop) {
		t.Fatalf("%d echoes closed, conditions %v: want the loop named", st.LoopEchoes, p.Conditions(time.Now()))
	}
	if n := accepted.Load(); n >= relayMax {
		t.Fatalf("the loop took %d connections through the relay, its whole budget", n)
	}
	if logged.Load() == 0 {
		t.Fatal("the loop was not logged")
	}
	if conds := p.Conditions(time.Now().Add(loopConditionFor)); len(conds) != 0 {
		t.Fatalf("conditions a minute after the last echo: %v", conds)
	}
}

// Clients that send the same first request at the same moment are not a
// loop: a burst of them is as deep as it is wide, and real bursts are
// narrower than loopDepth.
func TestIdenticalConcurrentRequestsAreNoLoop(t *testing.T) {
	p := startProxy(t, "tcp", startCache(t, "tcp"), Options{}, nil)
	const clients = 3 * loopDepth / 4
	var cs []*client
	for range clients {
		cs = append(cs, newClient(t, p.Addr()))
	}
	for deadline := time.Now().Add(10 * time.Second); p.Stats().ConnsTotal < clients; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d clients accepted", p.Stats().ConnsTotal, clients)
		}
	}
	var wg sync.WaitGroup
	for _, c := range cs {
		wg.Go(func() { c.send(distcache.OpGet, []byte("the same id")) })
	}
	wg.Wait()
	for _, c := range cs {
		c.c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.r.ReadMessage(); err != nil {
			t.Errorf("read response: %v", err)
		}
	}
	if st := p.Stats(); st.LoopEchoes != 0 {
		t.Fatalf("%d identical requests of separate clients: %d closed as a loop", clients, st.LoopEchoes)
	}
}

// The refill bound lets a burst through, then one dial per interval.
func TestRefillBucket(t *testing.T) {
	var b dialBucket
	now := time.Now().UnixNano()
	for i := range refillBurst {
		if w := b.take(now); w != 0 {
			t.Fatalf("take %d of the burst waits %v", i, w)
		}
	}
	w := b.take(now)
	if w <= 0 || w > time.Second/refillRate {
		t.Fatalf("after the burst: wait %v, want (0, %v]", w, time.Second/refillRate)
	}
	if w := b.take(now + int64(time.Second/refillRate)); w != 0 {
		t.Fatalf("a token later: wait %v", w)
	}
}
