package proxy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/snoopd/snoopd/distcache"
)

// closedReason waits for the connection's close event and returns its
// reason.
func closedReason(t *testing.T, rec *recorder) string {
	t.Helper()
	evs := rec.waitKind(t, KindConnClosed, 1)
	return evs[0].Closed.Reason
}

func TestIdleTimeout(t *testing.T) {
	rec := newRecorder()
	p := startProxy(t, "tcp", startCache(t, "tcp"), Options{IdleTimeout: 100 * time.Millisecond}, rec)
	c := newClient(t, p.Addr())
	c.do(distcache.OpHave, []byte("x"))
	if r := closedReason(t, rec); !strings.Contains(r, "idle timeout") {
		t.Fatalf("closed because %q, want the idle timeout", r)
	}
	// The client sees the close.
	c.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.c.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("client read after idle timeout: %v, want EOF", err)
	}
	if st := p.Stats(); st.Timeouts != 1 {
		t.Fatalf("timeouts %d, want 1", st.Timeouts)
	}
}

func TestMessageTimeout(t *testing.T) {
	rec := newRecorder()
	p := startProxy(t, "tcp", startCache(t, "tcp"), Options{MessageTimeout: 100 * time.Millisecond}, rec)
	c := dial(t, p.Addr())
	// Five bytes of a 14-byte header, then nothing.
	if _, err := c.Write(distcache.AppendMessage(nil, false, 1, distcache.OpGet, []byte("x"))[:5]); err != nil {
		t.Fatal(err)
	}
	if r := closedReason(t, rec); !strings.Contains(r, "message timeout: client message incomplete") {
		t.Fatalf("closed because %q, want the message timeout", r)
	}
	if st := p.Stats(); st.Timeouts != 1 {
		t.Fatalf("timeouts %d, want 1", st.Timeouts)
	}
}

// A server that never answers: the request is reported unanswered, and
// both the client's and the server's connection are closed, even though
// the client is still there.
func TestResponseTimeout(t *testing.T) {
	srv := startFake(t, recordAll)
	rec := newRecorder()
	p := startProxy(t, "tcp", srv.addr, Options{ResponseTimeout: 150 * time.Millisecond, Spares: -1}, rec)
	c := newClient(t, p.Addr())
	c.send(distcache.OpGet, []byte("sess"))
	if r := closedReason(t, rec); !strings.Contains(r, "response timeout") {
		t.Fatalf("closed because %q, want the response timeout", r)
	}
	txs := rec.ofKind(KindTransaction)
	if len(txs) != 1 || !txs[0].Tx.Unanswered {
		t.Fatalf("want one unanswered transaction: %s", describe(rec.all()))
	}
	select {
	case <-srv.ended:
	case <-time.After(5 * time.Second):
		t.Fatal("the server's connection is still open")
	}
}

// The client leaves with a request pending on a silent server: the server
// connection must not be held forever.
func TestClientGoneWithPendingRequest(t *testing.T) {
	srv := startFake(t, recordAll)
	rec := newRecorder()
	p := startProxy(t, "tcp", srv.addr, Options{ResponseTimeout: 150 * time.Millisecond, Spares: -1}, rec)
	c := newClient(t, p.Addr())
	c.send(distcache.OpGet, []byte("sess"))
	rec.waitFor(t, "the request", func([]*Event) bool { return len(p.Conns()) == 1 && p.Conns()[0].Pending == 1 })
	c.c.Close()
	select {
	case <-srv.ended:
	case <-time.After(5 * time.Second):
		t.Fatal("the server's connection is still open")
	}
	rec.waitKind(t, KindConnClosed, 1)
}

// A client that sends far more than it reads: the proxy stops reading
// what it cannot write on (its memory stays bounded), and every answer
// still arrives, in order, once the client reads.
func TestBackpressureSlowReader(t *testing.T) {
	for _, network := range []string{"tcp", "unix"} {
		t.Run(network, func(t *testing.T) {
			rec := newRecorder()
			p := startProxy(t, network, startCache(t, network), Options{}, rec)
			c := newClient(t, p.Addr())
			data := bytes.Repeat([]byte("d"), 30000)
			id := []byte("big-session")
			if m := c.do(distcache.OpAdd, distcache.AppendAddRequest(nil, 60000, id, data)); m.Payload[0] != byte(distcache.StatusOK) {
				t.Fatalf("add: status %d", m.Payload[0])
			}
			const n = 400 // 12 MB of answers, far more than socket buffers hold
			var frame []byte
			for i := range n {
				frame = distcache.AppendMessage(frame, false, uint32(1000+i), distcache.OpGet, id)
			}
			werr := make(chan error, 1)
			go func() {
				_, err := c.c.Write(frame)
				werr <- err
			}()
			// Nobody reads for a while: the proxy must hold back.
			time.Sleep(300 * time.Millisecond)
			for i := range n {
				m := c.recv()
				if m.RequestUID != uint32(1000+i) || !bytes.Equal(m.Payload, data) {
					t.Fatalf("answer %d: uid %d, %d bytes", i, m.RequestUID, len(m.Payload))
				}
			}
			if err := <-werr; err != nil {
				t.Fatal(err)
			}
			rec.waitKind(t, KindTransaction, n+1)
		})
	}
}

// A proxy whose server is its own listener is caught when it dials: the
// client gets a connect failure that names the loop, and nothing
// multiplies.
func TestLoopCaughtAtDial(t *testing.T) {
	for _, network := range []string{"tcp", "unix"} {
		t.Run(network, func(t *testing.T) {
			rec := newRecorder()
			p := startProxy(t, network, startCache(t, network), Options{}, rec)
			if err := p.SetServer(p.Addr()); err != nil {
				t.Fatal(err)
			}
			before := DataFDs()
			for range 5 {
				c := dialAndAsk(t, p.Addr())
				c.SetReadDeadline(time.Now().Add(5 * time.Second))
				if _, err := c.Read(make([]byte, 1)); err == nil {
					t.Fatal("read from a looping proxy succeeded")
				}
				c.Close()
			}
			fails := rec.waitKind(t, KindConnectFailed, 5)
			if !errors.Is(fails[0].Err, ErrProxyLoop) || !strings.Contains(fails[0].Err.Error(), `proxy "t"`) {
				t.Fatalf("connect failure %v, want a loop naming the proxy", fails[0].Err)
			}
			if st := p.Stats(); st.LoopRefusals < 5 || st.ConnsTotal != 5 {
				t.Fatalf("loop refusals %d, connections %d: want ≥5 and exactly 5 (nothing multiplied)", st.LoopRefusals, st.ConnsTotal)
			}
			rec.waitFor(t, "descriptors back", func([]*Event) bool { return DataFDs() <= before })
		})
	}
}

// Spares the server closes are noticed and never handed to a client.
func TestDeadSpareNotHandedOut(t *testing.T) {
	backend := startCache(t, "tcp")
	var accepted atomic.Int32
	// The first two connections (the initial spares) are closed by the
	// server at once; the rest are relayed to a real cache.
	srv := startFake(t, func(c net.Conn, f *fakeServer) {
		if accepted.Add(1) <= 2 {
			return
		}
		b, err := net.Dial("tcp", backend.NetAddr())
		if err != nil {
			return
		}
		defer b.Close()
		go func() { io.Copy(b, c); b.Close() }()
		io.Copy(c, b)
	})
	rec := newRecorder()
	p := startProxy(t, "tcp", srv.addr, Options{Spares: 2}, rec)
	rec.waitFor(t, "both spares closed by the server", func([]*Event) bool { return accepted.Load() >= 2 })
	// Replaced at once, before any client asks.
	rec.waitFor(t, "the spares replaced", func([]*Event) bool { return accepted.Load() >= 4 })
	for range 3 {
		c := newClient(t, p.Addr())
		if m := c.do(distcache.OpHave, []byte("x")); !m.IsResponse {
			t.Fatal("no answer")
		}
		c.c.Close()
	}
	if st := p.Stats(); st.ConnectFailed != 0 || st.Results[distcache.OpHave]["notok"] != 3 {
		t.Fatalf("connect failures %d, HAVE results %v: want 0 and 3 answered", st.ConnectFailed, st.Results[distcache.OpHave])
	}
}

// A server that closes every connection as soon as it accepts it (one at
// its connection limit, or not a distcache server) does not get a dial
// loop: after a pool's worth of young deaths in a row the refills back
// off, and clients are still served by their own dials.
func TestSparesBackOffFromAServerThatClosesThem(t *testing.T) {
	var accepted atomic.Int32
	srv := startFake(t, func(c net.Conn, f *fakeServer) { accepted.Add(1) })
	rec := newRecorder()
	p := startProxy(t, "tcp", srv.addr, Options{Spares: 2}, rec)
	// Two spares, each replaced once at once (a pool's worth), the
	// replacements closed too: then the back-off (1 s, doubling).
	rec.waitFor(t, "the pool and its replacements dialled", func([]*Event) bool { return accepted.Load() >= 4 })
	// Not a timing assertion: a slow machine dials less in this time,
	// never more. Without the back-off it was thousands of dials.
	time.Sleep(300 * time.Millisecond)
	if n := accepted.Load(); n > 8 {
		t.Fatalf("%d connections to a server that closes each at once, within 300 ms of the fourth", n)
	}
	// A client still gets through to the server (which closes it).
	c := newClient(t, p.Addr())
	c.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	c.send(distcache.OpHave, []byte("x"))
	if _, err := c.c.Read(make([]byte, 1)); err == nil {
		t.Fatal("an answer from a server that answers nothing")
	}
	if st := p.Stats(); st.ConnsTotal != 1 || st.SparesLost < 4 || st.SparesDialled < st.SparesLost {
		t.Fatalf("%d client connections (want 1), %d spares dialled, %d lost (want at least 4)", st.ConnsTotal, st.SparesDialled, st.SparesLost)
	}
}

func TestYoungSpareBackoff(t *testing.T) {
	n := 0
	var waits []time.Duration
	for range 10 {
		n = countYoung(n, 10*time.Millisecond)
		waits = append(waits, youngBackoff(n, 2))
	}
	want := []time.Duration{0, 0, time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second, 32 * time.Second, time.Minute, time.Minute}
	if !slices.Equal(waits, want) {
		t.Fatalf("waits %v, want %v", waits, want)
	}
	if countYoung(n, spareYoung) != 0 {
		t.Fatal("a spare that lived spareYoung did not end the row")
	}
	if youngBackoff(1000, 2) != spareRetryMax {
		t.Fatal("no cap")
	}
}

// Under the process's descriptor bound, clients beyond it are refused at
// once and counted, and the proxy serves again once descriptors are free.
func TestFDLimitRefuses(t *testing.T) {
	rec := newRecorder()
	p := startProxy(t, "tcp", startCache(t, "tcp"), Options{Spares: -1}, rec)
	base := DataFDs()
	SetFDLimit(base + 4) // two proxied connections
	defer SetFDLimit(0)
	var held []*client
	for range 2 {
		c := newClient(t, p.Addr())
		c.do(distcache.OpHave, []byte("x"))
		held = append(held, c)
	}
	over := dial(t, p.Addr())
	over.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := over.Read(make([]byte, 1)); err == nil {
		t.Fatal("a client over the descriptor bound was served")
	}
	ref := rec.waitKind(t, KindConnRefused, 1)
	if !strings.Contains(ref[0].Err.Error(), "file descriptor limit") {
		t.Fatalf("refused because %v", ref[0].Err)
	}
	held[0].c.Close()
	rec.waitKind(t, KindConnClosed, 1)
	c := newClient(t, p.Addr())
	c.do(distcache.OpHave, []byte("x"))
	if st := p.Stats(); st.ConnsRefused != 1 {
		t.Fatalf("refused %d, want 1", st.ConnsRefused)
	}
}

// A server given by host name is resolved off the loop, for clients and
// for spares alike.
func TestServerByHostName(t *testing.T) {
	backend := startCache(t, "tcp")
	byName := distcache.MustParseAddr(fmt.Sprintf("IP:localhost:%d", backend.Port()))
	for _, spares := range []int{-1, 2} {
		rec := newRecorder()
		p := startProxy(t, "tcp", byName, Options{Spares: spares}, rec)
		for range 3 {
			c := newClient(t, p.Addr())
			c.do(distcache.OpHave, []byte("x"))
			c.c.Close()
		}
		if st := p.Stats(); st.ConnectFailed != 0 || st.Transactions() != 3 {
			t.Fatalf("spares %d: connect failures %d, transactions %d", spares, st.ConnectFailed, st.Transactions())
		}
	}
}

// Clients that arrive together do not carry the data path over its
// descriptor bound, though their servers are dialled after they are
// accepted: each admitted client holds room for its server.
func TestFDLimitBurst(t *testing.T) {
	rec := newRecorder()
	p := startProxy(t, "tcp", startCache(t, "tcp"), Options{Spares: -1}, rec)
	base := DataFDs()
	const pairs, clients = 3, 40
	SetFDLimit(base + 2*pairs)
	defer SetFDLimit(0)
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range clients {
		conns = append(conns, dialAndAsk(t, p.Addr()))
	}
	rec.waitFor(t, "every client admitted or refused", func([]*Event) bool {
		st := p.Stats()
		return st.ConnsTotal+st.ConnsRefused >= clients
	})
	rec.waitFor(t, "the admitted clients' servers dialled", func(evs []*Event) bool {
		opened := 0
		for _, e := range evs {
			if e.Kind == KindConnOpened {
				opened++
			}
		}
		return int64(opened) == p.Stats().ConnsTotal
	})
	// A refused client is counted before its socket is closed, so the
	// count may still include one for a moment: wait for it to settle.
	rec.waitFor(t, fmt.Sprintf("at most %d clients holding %d descriptors", pairs, 2*pairs), func([]*Event) bool {
		return p.Stats().ConnsActive <= pairs && DataFDs()-base <= 2*pairs
	})
}
