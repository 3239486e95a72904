package proxy

import (
	"runtime"
	"testing"

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
