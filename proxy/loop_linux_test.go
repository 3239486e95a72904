package proxy

import (
	"bytes"
	"io"
	"net"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/snoopd/snoopd/distcache"
	"github.com/snoopd/snoopd/internal/testutil"
)

// With several loops, proxies are spread over them and each serves its
// clients on its own loop, in either wait mode.
func TestEpollSeveralLoops(t *testing.T) {
	for _, mode := range []string{"", "raw"} {
		t.Run("wait="+mode, func(t *testing.T) {
			t.Setenv("SNOOPD_EPOLL_WAIT", mode)
			eng, err := NewEngine(EngineEpoll, 3)
			if err != nil {
				t.Fatal(err)
			}
			defer eng.Close()
			if eng.Loops() != 3 {
				t.Fatalf("%d loops, want 3", eng.Loops())
			}
			server := startCache(t, "tcp")
			loops := map[*loop]bool{}
			for i := range 3 {
				p, err := New(Config{Name: "p" + string(rune('a'+i)), Listen: distcache.MustParseAddr("IP:127.0.0.1:0"),
					Server: server, Enabled: true, Engine: eng}, nil)
				if err != nil {
					t.Fatal(err)
				}
				if err := p.Start(); err != nil {
					t.Fatal(err)
				}
				loops[p.pinned.(*loop)] = true
				for range 5 {
					c := newClient(t, p.Addr())
					c.do(distcache.OpHave, []byte("x"))
					c.c.Close()
				}
				if err := p.Stop(t.Context()); err != nil {
					t.Fatal(err)
				}
				if st := p.Stats(); st.Transactions() != 5 {
					t.Fatalf("proxy %d: %d transactions", i, st.Transactions())
				}
			}
			if len(loops) != 3 {
				t.Fatalf("3 proxies on %d loops, want 3", len(loops))
			}
		})
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

// Raw waits, where a P is left for the rest of the process, serve as the
// default waits do.
func TestEpollRawWait(t *testing.T) {
	t.Setenv("SNOOPD_EPOLL_WAIT", "raw")
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
	if st := p.Stats(); st.SpareFailures < 1 || st.SparesDialled < 2 || st.SparesLost != 0 {
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
	case *lspares:
		answer := make(chan bool)
		sp.l.post(func() { answer <- sp.retry > 0 })
		return <-answer
	}
	return false
}
