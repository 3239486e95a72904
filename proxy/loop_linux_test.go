package proxy

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/snoopd/snoopd/distcache"
	"github.com/snoopd/snoopd/internal/skip"
	"github.com/snoopd/snoopd/internal/testutil"
)

// With several loops, one proxy's connections are spread over all of
// them, in either wait mode and on either kind of socket: each loop has a
// TCP listener of its own on the proxy's port, while a unix socket's one
// listener places each client on the loop with the fewest open
// connections.
func TestEpollOneProxyOverSeveralLoops(t *testing.T) {
	for _, mode := range []string{"runtime", ""} {
		for _, network := range []string{"tcp", "unix"} {
			t.Run("wait="+mode+"/"+network, func(t *testing.T) {
				t.Setenv("SNOOPD_EPOLL_WAIT", mode)
				// A P beyond the loops, as snoopd leaves: the loops wait
				// raw unless told to wait through the runtime.
				defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(WantProcs(3)))
				eng := newEpollForTest(t, 3)
				if eng.Loops() != 3 {
					t.Fatalf("%d loops, want 3", eng.Loops())
				}
				for i, l := range eng.loops {
					if l.raw != (mode == "") {
						t.Fatalf("loop %d waits raw: %v, with SNOOPD_EPOLL_WAIT=%q", i, l.raw, mode)
					}
				}
				rec := newRecorder()
				p := startProxyOn(t, eng, network, startCache(t, "tcp"), Options{}, rec)
				const n = 30
				// Open together: each is admitted (its answer came)
				// before the next connects.
				clients := make([]*client, n)
				for i := range clients {
					clients[i] = newClient(t, p.Addr())
					clients[i].do(distcache.OpHave, []byte("x"))
				}
				per := admittedPerLoop(eng)
				for _, c := range clients {
					c.c.Close()
				}
				rec.waitKind(t, KindConnClosed, n)
				used := 0
				for _, k := range per {
					if k > 0 {
						used++
					}
				}
				switch network {
				case "unix":
					// Each to the loop with the fewest open: exactly even.
					for i, k := range per {
						if k != n/3 {
							t.Fatalf("loop %d took %d of %d clients, want %d (per loop: %v)", i, k, n, n/3, per)
						}
					}
				default:
					// The kernel hashes each client's port: 30 clients all
					// on one of 3 listeners would be a 1 in 10^13 draw.
					if used < 2 {
						t.Fatalf("%d clients on %d of 3 loops: %v", n, used, per)
					}
				}
				if st := p.Stats(); st.Transactions() != n || st.ConnsTotal != n {
					t.Fatalf("%d transactions on %d connections, want %d", st.Transactions(), st.ConnsTotal, n)
				}
				checkConnEvents(t, rec, n)
			})
		}
	}
}

// Several proxies share the loops: each spreads its own connections.
func TestEpollSeveralProxiesShareTheLoops(t *testing.T) {
	eng := newEpollForTest(t, 2)
	server := startCache(t, "unix")
	for i, network := range []string{"tcp", "unix", "unix"} {
		p := startProxyOn(t, eng, network, server, Options{}, nil)
		before := admittedPerLoop(eng)
		clients := make([]*client, 10)
		for j := range clients {
			clients[j] = newClient(t, p.Addr())
			clients[j].do(distcache.OpHave, []byte("x"))
		}
		after := admittedPerLoop(eng)
		for _, c := range clients {
			c.c.Close()
		}
		for l := range after {
			if network == "unix" && after[l]-before[l] != 5 {
				t.Fatalf("proxy %d: loop %d took %d of 10 clients, want 5", i, l, after[l]-before[l])
			}
		}
		if st := p.Stats(); st.Transactions() != 10 {
			t.Fatalf("proxy %d: %d transactions", i, st.Transactions())
		}
		// The next proxy starts from empty loops.
		waitLoopsEmpty(t, eng)
	}
}

// A client of a unix-socket proxy that opens one connection at a time
// (a connection per operation, each closed before the next) stays on the
// accepting loop: no other loop has fewer open connections, so none is
// woken for it. One held open on that loop sends the next elsewhere.
func TestEpollUnixClientOneAtATimeStaysOnItsLoop(t *testing.T) {
	eng := newEpollForTest(t, 3)
	rec := newRecorder()
	p := startProxyOn(t, eng, "unix", startCache(t, "unix"), Options{}, rec)
	before := admittedPerLoop(eng)
	const n = 20
	for i := range n {
		c := newClient(t, p.Addr())
		c.do(distcache.OpHave, []byte("x"))
		c.c.Close()
		rec.waitKind(t, KindConnClosed, i+1)
		waitLoopsEmpty(t, eng)
	}
	var home = -1
	for l, k := range admittedPerLoop(eng) {
		switch got := k - before[l]; {
		case got == n:
			home = l
		case got != 0:
			t.Fatalf("loop %d took %d of %d clients one at a time, want all on one loop (per loop: %v)", l, got, n, admittedPerLoop(eng))
		}
	}
	if home < 0 {
		t.Fatalf("no loop took all %d clients: %v", n, admittedPerLoop(eng))
	}
	held := newClient(t, p.Addr())
	held.do(distcache.OpHave, []byte("x"))
	defer held.c.Close()
	mid := admittedPerLoop(eng)
	c := newClient(t, p.Addr())
	c.do(distcache.OpHave, []byte("x"))
	c.c.Close()
	for l, k := range admittedPerLoop(eng) {
		if l == home && k != mid[l] {
			t.Fatalf("with a connection open on loop %d, the next client went there too (per loop: %v)", home, admittedPerLoop(eng))
		}
	}
}

// waitLoopsEmpty waits until no connection is open on eng's loops.
func waitLoopsEmpty(t *testing.T, eng *epollEngine) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		var open []int64
		for _, l := range eng.loops {
			if k := l.open.Load(); k != 0 {
				open = append(open, k)
			}
		}
		if open == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("connections still open on the loops after 5s: %v", open)
		}
		time.Sleep(time.Millisecond)
	}
}

// newEpollForTest runs an epoll engine of n loops for one test.
func newEpollForTest(t *testing.T, n int) *epollEngine {
	t.Helper()
	if testEngine.Name() != EngineEpoll {
		skip.ByDesign(t, "runs its own epoll engine: once, with the epoll suite")
	}
	eng, err := NewEngine(EngineEpoll, n)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { eng.Close() })
	return eng.(*epollEngine)
}

// admittedPerLoop returns how many clients each loop has taken on.
func admittedPerLoop(e *epollEngine) []uint64 {
	out := make([]uint64, len(e.loops))
	for i, l := range e.loops {
		out[i] = l.admitted.Load()
	}
	return out
}

// checkConnEvents checks that n connections were opened and closed with
// n distinct ids, each closed after it opened.
func checkConnEvents(t *testing.T, rec *recorder, n int) {
	t.Helper()
	opened := map[uint64]bool{}
	for _, e := range rec.all() {
		switch e.Kind {
		case KindConnOpened:
			if opened[e.ConnID] {
				t.Fatalf("connection id %d opened twice", e.ConnID)
			}
			opened[e.ConnID] = true
		case KindConnClosed:
			if !opened[e.ConnID] {
				t.Fatalf("connection %d closed before it opened", e.ConnID)
			}
		}
	}
	if len(opened) != n {
		t.Fatalf("%d distinct connection ids, want %d", len(opened), n)
	}
}

func TestNewEngineRejects(t *testing.T) {
	if _, err := NewEngine("fast", 0); err == nil {
		t.Fatal("unknown engine accepted")
	}
	if _, err := NewEngine(EngineEpoll, -1); err == nil {
		t.Fatal("negative loops accepted")
	}
}

// A raw loop with nothing to do waits through the runtime, instead of
// holding its P and being interrupted every 10 ms by the runtime's
// preemption signal; traffic makes it wait raw again.
func TestEpollIdleRawLoopWaitsThroughTheRuntime(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(WantProcs(1)))
	eng := newEpollForTest(t, 1)
	l := eng.loops[0]
	if !l.raw {
		t.Fatal("one loop with a spare P does not wait raw")
	}
	time.Sleep(300 * time.Millisecond)
	if n := l.rawWaits.Load(); n > 3 {
		t.Fatalf("%d raw waits in 300 ms of idleness: the idle loop keeps its P", n)
	}
	before := l.rawWaits.Load()
	p := startProxyOn(t, eng, "tcp", startCache(t, "tcp"), Options{}, nil)
	c := newClient(t, p.Addr())
	for range 50 {
		c.do(distcache.OpHave, []byte("x"))
	}
	c.c.Close()
	if l.rawWaits.Load() == before {
		t.Fatal("50 transactions and not one raw wait")
	}
}

// Raw waits, the default where a P is left for the rest of the process,
// serve as waits through the runtime do.
func TestEpollRawWait(t *testing.T) {
	eng, err := NewEngine(EngineEpoll, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	if want := runtime.GOMAXPROCS(0) > 1; eng.(*epollEngine).loops[0].raw != want {
		t.Fatalf("raw %v with GOMAXPROCS %d", !want, runtime.GOMAXPROCS(0))
	}
	p, err := New(Config{Name: "raw", Listen: distcache.MustParseAddr("IP:127.0.0.1:0"), Server: startCache(t, "unix"),
		Enabled: true, Engine: eng}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	defer p.Stop(t.Context())
	for range 20 {
		c := newClient(t, p.Addr())
		c.do(distcache.OpHave, []byte("x"))
		c.c.Close()
	}
}

// A client that sends its request and closes at once (a hang-up on a unix
// socket) while the server takes its time: the loop waits for the answer
// instead of being woken by the hang-up at every turn.
func TestHangUpWhileOwedDoesNotSpin(t *testing.T) {
	eng, err := NewEngine(EngineEpoll, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	answer := make(chan struct{})
	srv := startFake(t, func(c net.Conn, f *fakeServer) {
		buf := make([]byte, 4096)
		n, _ := c.Read(buf)
		<-answer
		m, _ := distcache.NewReader(bytes.NewReader(buf[:n]), distcache.ClientToServer).ReadMessage()
		c.Write(distcache.AppendMessage(nil, true, m.RequestUID, m.Op, []byte{0}))
		io.Copy(io.Discard, c)
	})
	rec := newRecorder()
	p, err := New(Config{Name: "hup", Listen: distcache.MustParseAddr("UNIX:" + filepath.Join(shortDir(t), "p.sock")),
		Server: srv.addr, Enabled: true, Options: Options{Spares: -1}, Engine: eng}, rec)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	defer p.Stop(t.Context())
	c := dial(t, p.Addr())
	c.Write(distcache.AppendMessage(nil, false, 1, distcache.OpHave, []byte("x")))
	c.Close()
	rec.waitFor(t, "the request", func([]*Event) bool { cs := p.Conns(); return len(cs) == 1 && cs[0].Pending == 1 })
	l := eng.(*epollEngine).loops[0]
	before := l.waits.Load()
	time.Sleep(300 * time.Millisecond)
	woken := l.waits.Load() - before
	close(answer)
	rec.waitKind(t, KindConnClosed, 1)
	// A spinning loop wakes hundreds of thousands of times in 300 ms; one
	// that waits, a handful (timers, the other connections of the test).
	if woken > 1000 {
		t.Fatalf("the loop woke %d times in 300 ms while the answer was owed: it spins", woken)
	}
}

// A server that is down when the proxy starts gets its spares once it is
// up, after the back-off, with no client to ask for them (both engines).
func TestSparesComeBackWithoutAClient(t *testing.T) {
	addr := testutil.FreeAddr(t)
	p := startProxy(t, "tcp", distcache.MustParseAddr("IP:"+addr), Options{Spares: 2}, newRecorder())
	rec := newRecorder()
	rec.waitFor(t, "the spares backing off after a refused dial", func([]*Event) bool { return sparesBackingOff(p) })
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var accepted atomic.Int32
	go func() {
		var held []net.Conn // kept open: live spares
		defer func() {
			for _, c := range held {
				c.Close()
			}
		}()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			held = append(held, c)
			accepted.Add(1)
		}
	}()
	// Back-offs double from 1 s: a machine slow to get here may have
	// failed a few more dials, so this waits longer than rec.waitFor.
	for deadline := time.Now().Add(40 * time.Second); accepted.Load() < 2; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d spares dialled once the server was up, want 2", accepted.Load())
		}
	}
	// The server's accept can come before the loop sees its connect
	// complete and counts the spare dialled.
	st := p.Stats()
	for deadline := time.Now().Add(10 * time.Second); st.SparesDialled < 2 && time.Now().Before(deadline); st = p.Stats() {
		time.Sleep(10 * time.Millisecond)
	}
	if st.SpareFailures < 1 || st.SparesDialled < 2 || st.SparesLost != 0 {
		t.Fatalf("spares: %d failed, %d dialled, %d lost; want at least 1 and 2, and none", st.SpareFailures, st.SparesDialled, st.SparesLost)
	}
}

// sparesBackingOff reports whether p's spare pool waits out a back-off
// after a failed dial. The epoll engine's pool is asked on its loop.
func sparesBackingOff(p *Proxy) bool {
	switch sp := p.current.Load().spares.(type) {
	case *spares:
		sp.mu.Lock()
		defer sp.mu.Unlock()
		return sp.retry > 0
	case *lsparesSet:
		// Every loop's pool dialled and failed.
		for _, sp := range sp.pools {
			answer := make(chan bool)
			sp.l.post(func() { answer <- sp.retry > 0 })
			if !<-answer {
				return false
			}
		}
		return true
	}
	return false
}

// Stop closes the spares still connecting, as it closes the ready ones:
// the data path counts none of them once Stop returns, however long their
// dials would take.
func TestStopClosesSparesStillConnecting(t *testing.T) {
	e := newEpollForTest(t, 1)
	server := stuckListener(t)
	base := DataFDs()
	p := startProxyOn(t, e, "tcp", server, Options{Spares: 2, DialTimeout: time.Minute}, newRecorder())
	for deadline := time.Now().Add(5 * time.Second); DataFDs() < base+2; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the data path counts %d descriptors, want the %d of two spares dialling", DataFDs(), base+2)
		}
	}
	if st := p.Stats(); st.SparesDialled != 0 {
		t.Fatalf("%d spares connected to a server that accepts nothing", st.SparesDialled)
	}
	if err := p.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
	if n := DataFDs(); n != base {
		t.Fatalf("the data path counts %d descriptors after Stop returned, %d before the proxy started", n, base)
	}
}

// stuckListener returns the address of a TCP listener on loopback that
// never accepts and whose backlog is full: a connect to it stays in
// progress.
func stuckListener(t *testing.T) distcache.Addr {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	to := sa.(*unix.SockaddrInet4)
	// A backlog of 0 holds one connection: a few more fill what the
	// kernel keeps beyond it.
	for range 4 {
		c, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { unix.Close(c) })
		unix.Connect(c, to)
	}
	time.Sleep(50 * time.Millisecond) // the handshakes that can complete do
	return distcache.MustParseAddr(fmt.Sprintf("IP:127.0.0.1:%d", to.Port))
}

// Every way a connection ends gives its place on its loop back: closes
// from either side, refusals over the connection limit, and servers that
// cannot be reached. Otherwise a loop would look busier than it is and
// the unix listener would stop placing clients on it.
func TestEpollLoopsCountEveryEnd(t *testing.T) {
	eng := newEpollForTest(t, 2)
	rec := newRecorder()
	p := startProxyOn(t, eng, "unix", startCache(t, "unix"), Options{MaxConns: 2}, rec)
	held := []*client{newClient(t, p.Addr()), newClient(t, p.Addr())}
	for _, c := range held {
		c.do(distcache.OpHave, []byte("x"))
	}
	// Over the limit: refused, and closed by the proxy.
	over := dial(t, p.Addr())
	rec.waitKind(t, KindConnRefused, 1)
	over.Close()
	for _, c := range held {
		c.c.Close()
	}
	rec.waitKind(t, KindConnClosed, 2)
	waitLoopsEmpty(t, eng)

	// A server that is not there: the connect fails.
	gone := distcache.MustParseAddr("UNIX:" + filepath.Join(shortDir(t), "nobody.sock"))
	q := startProxyOn(t, eng, "unix", gone, Options{}, rec)
	for range 4 {
		c := dial(t, q.Addr())
		c.Write(distcache.AppendMessage(nil, false, 1, distcache.OpHave, []byte("x")))
		io.Copy(io.Discard, c)
		c.Close()
	}
	rec.waitKind(t, KindConnectFailed, 4)
	waitLoopsEmpty(t, eng)
}

// An accepted peer's address reads as the goroutine engine's does (from
// net.Conn's RemoteAddr), for every family, at one allocation: it is
// formatted for every connection.
func TestSockaddrString(t *testing.T) {
	for _, want := range []string{"127.0.0.1:40000", "10.1.2.3:1", "[::1]:9001", "[2001:db8::7]:65535", "0.0.0.0:0"} {
		ap := netip.MustParseAddrPort(want)
		var raw unix.RawSockaddrAny
		if ap.Addr().Is4() {
			sa := (*unix.RawSockaddrInet4)(unsafe.Pointer(&raw))
			sa.Family, sa.Addr = unix.AF_INET, ap.Addr().As4()
			binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:], ap.Port())
		} else {
			sa := (*unix.RawSockaddrInet6)(unsafe.Pointer(&raw))
			sa.Family, sa.Addr = unix.AF_INET6, ap.Addr().As16()
			binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:], ap.Port())
		}
		if got := sockaddrString(&raw); got != want || got != net.TCPAddrFromAddrPort(ap).String() {
			t.Errorf("sockaddrString(%s) = %q", want, got)
		}
		if n := testing.AllocsPerRun(100, func() { sockaddrString(&raw) }); n > 1 {
			t.Errorf("sockaddrString(%s): %.0f allocations, want 1", want, n)
		}
	}
	// An IPv4 client of a dual-stack listener arrives IPv4-mapped.
	var raw unix.RawSockaddrAny
	sa := (*unix.RawSockaddrInet6)(unsafe.Pointer(&raw))
	sa.Family, sa.Addr = unix.AF_INET6, netip.MustParseAddr("::ffff:127.0.0.2").As16()
	binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:], 5000)
	if got := sockaddrString(&raw); got != "127.0.0.2:5000" {
		t.Errorf("IPv4-mapped: %q, want 127.0.0.2:5000", got)
	}
	var other unix.RawSockaddrAny
	other.Addr.Family = unix.AF_UNIX
	if got := sockaddrString(&other); got != "unix" {
		t.Errorf("a unix peer: %q", got)
	}
}

// A TCP client's socket has TCP_NODELAY, as Go's net package gives its
// connections (a pipelining client's request must not wait for the
// acknowledgement of the one before), set once on the listeners, whose
// accepted sockets inherit it; the server's sockets, spares included,
// have it too.
func TestEpollTCPSocketsNoDelay(t *testing.T) {
	eng := newEpollForTest(t, 2)
	p := startProxyOn(t, eng, "tcp", startCache(t, "tcp"), Options{}, nil)
	clients := make([]*client, 6)
	for i := range clients {
		clients[i] = newClient(t, p.Addr())
		clients[i].do(distcache.OpHave, []byte("x"))
	}
	defer func() {
		for _, c := range clients {
			c.c.Close()
		}
	}()
	var sides [2]int // sockets seen: clients, servers
	for _, l := range eng.loops {
		done := make(chan []string)
		l.post(func() {
			var bad []string
			for fd := range l.slots {
				s, ok := l.slots[fd].h.(*lside)
				if !ok || s.lc.state != stOpen {
					continue
				}
				sides[s.idx]++
				if v, err := unix.GetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY); err != nil || v == 0 {
					bad = append(bad, fmt.Sprintf("%s fd %d: TCP_NODELAY %d (%v)", peerName(s.dir(), true), fd, v, err))
				}
			}
			done <- bad
		})
		if bad := <-done; bad != nil {
			t.Errorf("loop %d: %v", l.idx, bad)
		}
	}
	if sides[0] != len(clients) || sides[1] != len(clients) {
		t.Fatalf("%d client and %d server sockets open on the loops, want %d of each", sides[0], sides[1], len(clients))
	}
}
