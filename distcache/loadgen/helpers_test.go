package loadgen

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/snoopd/snoopd/distcache"
	"github.com/snoopd/snoopd/distcache/cacheserver"
	"github.com/snoopd/snoopd/internal/testutil"
)

// TestMain fails the package if a test leaves a goroutine behind: Run and
// Client must stop everything they start, also when cancelled.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// network is a transport the tests run over; see testutil.Networks.
type network = testutil.Network

var (
	networks = testutil.Networks()
	unixAddr = testutil.UnixAddr
)

// startCache starts the project's in-memory server on addr and stops it
// when the test ends.
func startCache(t testing.TB, addr distcache.Addr) *cacheserver.Server {
	t.Helper()
	s, err := cacheserver.Start(addr, cacheserver.Config{})
	if err != nil {
		t.Fatalf("cacheserver.Start(%s): %v", addr, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// fakeServer is a small, deliberately simple distcache server whose
// answers a test can falsify, to prove the client and the verifier notice.
type fakeServer struct {
	t    testing.TB
	ln   net.Listener
	addr distcache.Addr

	// hook, if set, may replace the correct answer to req (a payload) and
	// its request_uid. n counts the requests of req.Op so far, from 1.
	hook func(req distcache.Message, n int, uid uint32, resp []byte) (uint32, []byte)
	// closeAfter, if positive, closes each connection after answering
	// that many requests on it.
	closeAfter int
	// silent reads requests and never answers; received counts the
	// requests it read.
	silent   bool
	received atomic.Int64

	mu    sync.Mutex
	store map[string][]byte
	count [distcache.NumOps]int
	conns map[net.Conn]bool
	done  bool
	wg    sync.WaitGroup
}

// startFake listens on addr and serves until the test ends. Configure
// the hook fields before calling it.
func startFake(t testing.TB, addr distcache.Addr, s *fakeServer) *fakeServer {
	t.Helper()
	ln, err := net.Listen(addr.Network().String(), addr.NetAddr())
	if err != nil {
		t.Fatal(err)
	}
	a, err := distcache.AddrFromNet(ln.Addr())
	if err != nil {
		t.Fatal(err)
	}
	s.t, s.ln, s.addr = t, ln, a
	s.store = map[string][]byte{}
	s.conns = map[net.Conn]bool{}
	s.wg.Add(1)
	go s.accept()
	t.Cleanup(s.close)
	return s
}

func (s *fakeServer) accept() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		if s.done {
			s.mu.Unlock()
			c.Close()
			return
		}
		s.conns[c] = true
		s.wg.Add(1)
		s.mu.Unlock()
		go s.serve(c)
	}
}

func (s *fakeServer) close() {
	s.mu.Lock()
	s.done = true
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.ln.Close()
	s.wg.Wait()
}

func (s *fakeServer) serve(c net.Conn) {
	defer s.wg.Done()
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		c.Close()
	}()
	r := distcache.NewReader(c, distcache.ClientToServer)
	var out []byte
	for answered := 0; ; answered++ {
		if s.closeAfter > 0 && answered == s.closeAfter {
			return
		}
		m, err := r.ReadMessage()
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				s.t.Logf("fake server: %v", err)
			}
			return
		}
		if s.silent {
			s.received.Add(1)
			continue
		}
		uid, resp := s.answer(m)
		out = distcache.AppendMessage(out[:0], true, uid, m.Op, resp)
		if _, err := c.Write(out); err != nil {
			return
		}
	}
}

// answer computes the correct answer to m, then lets the hook falsify it.
func (s *fakeServer) answer(m distcache.Message) (uint32, []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.count[m.Op]++
	status := func(st distcache.Status) []byte { return []byte{byte(st)} }
	var resp []byte
	switch m.Op {
	case distcache.OpAdd:
		req, st, err := distcache.CheckAdd(m.Payload)
		if err != nil {
			st = distcache.StatusAddCorrupt // the load generator never sends these
		}
		if st == distcache.StatusOK {
			if _, ok := s.store[string(req.SessionID)]; ok {
				st = distcache.StatusAddExists
			} else {
				s.store[string(req.SessionID)] = append([]byte(nil), req.Data...)
			}
		}
		resp = status(st)
	case distcache.OpGet:
		if d, ok := s.store[string(m.Payload)]; ok {
			resp = append([]byte(nil), d...)
		} else {
			resp = status(distcache.StatusNotOK)
		}
	case distcache.OpRemove:
		if _, ok := s.store[string(m.Payload)]; ok {
			delete(s.store, string(m.Payload))
			resp = status(distcache.StatusOK)
		} else {
			resp = status(distcache.StatusNotOK)
		}
	case distcache.OpHave:
		if _, ok := s.store[string(m.Payload)]; ok {
			resp = status(distcache.StatusOK)
		} else {
			resp = status(distcache.StatusNotOK)
		}
	}
	if s.hook != nil {
		return s.hook(m, s.count[m.Op], m.RequestUID, resp)
	}
	return m.RequestUID, resp
}

// deadAddr returns a TCP address nothing listens on: a port that was just
// in use and is closed again.
func deadAddr(t testing.TB) distcache.Addr {
	// Held for the test, so that no other process takes the port.
	return distcache.MustParseAddr("IP:" + testutil.RefusingAddr(t))
}

// within fails the test if f takes longer than d, so a run that does not
// stop by itself fails instead of hanging the suite.
func within(t *testing.T, d time.Duration, what string, f func()) time.Duration {
	t.Helper()
	done := make(chan struct{})
	start := time.Now()
	go func() {
		defer close(done)
		f()
	}()
	select {
	case <-done:
		return time.Since(start)
	case <-time.After(d):
		t.Fatalf("%s did not finish within %v", what, d)
		return 0
	}
}
