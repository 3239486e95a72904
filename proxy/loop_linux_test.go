package proxy

import (
	"bytes"
	"io"
	"net"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/snoopd/snoopd/distcache"
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
