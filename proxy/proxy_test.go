package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/snoopd/snoopd/distcache"
	"github.com/snoopd/snoopd/distcache/cacheserver"
	"github.com/snoopd/snoopd/internal/testutil"
)

// testEngine serves every proxy of the tests. The suite runs once per
// engine: TestMain runs it with the default engine, then runs the test
// binary again with PROXY_ENGINE set to the other one.
var testEngine Engine

func TestMain(m *testing.M) {
	name := os.Getenv("PROXY_ENGINE")
	eng, err := NewEngine(name, 0)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	testEngine = eng
	code := m.Run()
	eng.Close()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
			code = 1
		}
	}
	if code == 0 && name == "" && eng.Name() != EngineGoroutines {
		// The same tests against the portable engine.
		cmd := exec.Command(os.Args[0], os.Args[1:]...)
		cmd.Env = append(os.Environ(), "PROXY_ENGINE="+EngineGoroutines)
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		fmt.Printf("== proxy tests again with the %s engine\n", EngineGoroutines)
		if err := cmd.Run(); err != nil {
			code = 1
		}
	}
	os.Exit(code)
}

// recorder is a Sink that keeps every event for the test to inspect.
type recorder struct {
	mu     sync.Mutex
	events []*Event
	signal chan struct{}
}

func newRecorder() *recorder { return &recorder{signal: make(chan struct{}, 1)} }

func (r *recorder) Publish(e *Event) {
	r.mu.Lock()
	r.events = append(r.events, e.Clone())
	r.mu.Unlock()
	select {
	case r.signal <- struct{}{}:
	default:
	}
}

func (r *recorder) all() []*Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*Event(nil), r.events...)
}

func (r *recorder) ofKind(k EventKind) []*Event {
	var out []*Event
	for _, e := range r.all() {
		if e.Kind == k {
			out = append(out, e)
		}
	}
	return out
}

// waitFor waits until cond holds over the events, failing after 5s.
func (r *recorder) waitFor(t *testing.T, what string, cond func([]*Event) bool) []*Event {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		if evs := r.all(); cond(evs) {
			return evs
		}
		select {
		case <-r.signal:
		case <-time.After(10 * time.Millisecond):
		case <-deadline:
			t.Fatalf("timed out waiting for %s; have %d events: %s", what, len(r.all()), describe(r.all()))
		}
	}
}

func (r *recorder) waitKind(t *testing.T, k EventKind, n int) []*Event {
	t.Helper()
	r.waitFor(t, k.String(), func(evs []*Event) bool {
		c := 0
		for _, e := range evs {
			if e.Kind == k {
				c++
			}
		}
		return c >= n
	})
	return r.ofKind(k)
}

func describe(evs []*Event) string {
	var b strings.Builder
	for _, e := range evs {
		b.WriteString(e.Kind.String())
		if e.Tx != nil {
			b.WriteString("(" + e.Tx.Op.String() + " " + e.Tx.Result() + ")")
		}
		if e.Closed != nil {
			b.WriteString("(" + e.Closed.Reason + ")")
		}
		if e.Err != nil {
			b.WriteString("(" + e.Err.Error() + ")")
		}
		b.WriteString(" ")
	}
	return b.String()
}

// shortDir returns a temporary directory whose paths fit a unix socket.
func shortDir(t *testing.T) string {
	t.Helper()
	return testutil.SocketDir(t)
}

// startCache runs an in-memory distcache server on a network of the test's
// choice.
func startCache(t *testing.T, network string) distcache.Addr {
	t.Helper()
	addr := distcache.MustParseAddr("IP:127.0.0.1:0")
	if network == "unix" {
		addr = distcache.MustParseAddr("UNIX:" + filepath.Join(shortDir(t), "dc.sock"))
	}
	s, err := cacheserver.Start(addr, cacheserver.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s.Addr()
}

// startProxy runs a proxy in front of server on the tests' engine and
// stops it at cleanup.
func startProxy(t *testing.T, network string, server distcache.Addr, opts Options, sink Sink) *Proxy {
	t.Helper()
	return startProxyOn(t, testEngine, network, server, opts, sink)
}

// startProxyOn is startProxy on a given engine. The proxy is stopped
// before the engine is closed (cleanups run last first).
func startProxyOn(t *testing.T, eng Engine, network string, server distcache.Addr, opts Options, sink Sink) *Proxy {
	t.Helper()
	listen := distcache.MustParseAddr("IP:127.0.0.1:0")
	if network == "unix" {
		listen = distcache.MustParseAddr("UNIX:" + filepath.Join(shortDir(t), "p.sock"))
	}
	p, err := New(Config{Name: "t", Listen: listen, Server: server, Enabled: true, Options: opts, Engine: eng}, sink)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := p.Stop(ctx); err != nil {
			t.Errorf("stop: %v", err)
		}
	})
	return p
}

func dial(t *testing.T, a distcache.Addr) net.Conn {
	t.Helper()
	c, err := net.DialTimeout(a.Network().String(), a.NetAddr(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// dialAndAsk dials a and sends a GET, without reading: a proxy dials its
// server for a client only once the client has spoken.
func dialAndAsk(t *testing.T, a distcache.Addr) net.Conn {
	t.Helper()
	c := dial(t, a)
	// A client refused at once may be closed before it writes; that is
	// for the caller to see.
	c.Write(distcache.AppendMessage(nil, false, 1, distcache.OpGet, []byte("s")))
	return c
}

// client is a minimal synchronous distcache client over one connection.
type client struct {
	t   *testing.T
	c   net.Conn
	r   *distcache.Reader
	uid uint32
}

func newClient(t *testing.T, a distcache.Addr) *client {
	c := dial(t, a)
	return &client{t: t, c: c, r: distcache.NewReader(c, distcache.ServerToClient)}
}

func (c *client) send(op distcache.Op, payload []byte) uint32 {
	c.t.Helper()
	c.uid++
	if _, err := c.c.Write(distcache.AppendMessage(nil, false, c.uid, op, payload)); err != nil {
		c.t.Fatal(err)
	}
	return c.uid
}

func (c *client) recv() distcache.Message {
	c.t.Helper()
	c.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	m, err := c.r.ReadMessage()
	if err != nil {
		c.t.Fatalf("read response: %v", err)
	}
	m.Payload = bytes.Clone(m.Payload)
	return m
}

func (c *client) do(op distcache.Op, payload []byte) distcache.Message {
	c.t.Helper()
	uid := c.send(op, payload)
	m := c.recv()
	if m.RequestUID != uid || m.Op != op {
		c.t.Fatalf("response uid %d op %s to request %d %s", m.RequestUID, m.Op, uid, op)
	}
	return m
}

func TestProxyTransactions(t *testing.T) {
	for _, network := range []string{"tcp", "unix"} {
		t.Run(network, func(t *testing.T) {
			rec := newRecorder()
			p := startProxy(t, network, startCache(t, network), Options{}, rec)
			c := newClient(t, p.Addr())
			data := bytes.Repeat([]byte("s"), 5000) // three frames
			if m := c.do(distcache.OpAdd, distcache.AppendAddRequest(nil, 60000, []byte("id-1"), data)); m.Payload[0] != 0 {
				t.Fatalf("ADD answered %v", m.Payload)
			}
			if m := c.do(distcache.OpGet, []byte("id-1")); !bytes.Equal(m.Payload, data) || m.Frames != 3 {
				t.Fatalf("GET returned %d bytes in %d frames", len(m.Payload), m.Frames)
			}
			c.do(distcache.OpGet, []byte("nope"))
			c.do(distcache.OpHave, []byte("id-1"))
			c.do(distcache.OpRemove, []byte("id-1"))
			c.do(distcache.OpAdd, distcache.AppendAddRequest(nil, 60000, nil, data))

			txs := rec.waitKind(t, KindTransaction, 6)
			want := []struct {
				op     distcache.Op
				id     string
				result string
			}{
				{distcache.OpAdd, "id-1", "ok"}, {distcache.OpGet, "id-1", "hit"}, {distcache.OpGet, "nope", "miss"},
				{distcache.OpHave, "id-1", "ok"}, {distcache.OpRemove, "id-1", "ok"}, {distcache.OpAdd, "", "id-range"},
			}
			for i, w := range want {
				tx := txs[i].Tx
				if tx.Op != w.op || string(tx.SessionID) != w.id || tx.Result() != w.result || tx.RequestUID != uint32(i+1) {
					t.Errorf("tx %d: %s %q %s uid %d, want %s %q %s", i, tx.Op, tx.SessionID, tx.Result(), tx.RequestUID, w.op, w.id, w.result)
				}
				if tx.Latency <= 0 || tx.Start.IsZero() || txs[i].ConnID == 0 {
					t.Errorf("tx %d: latency %v start %v conn %d", i, tx.Latency, tx.Start, txs[i].ConnID)
				}
			}
			add, get := txs[0].Tx, txs[1].Tx
			if add.DataLen != 5000 || add.TimeoutMS != 60000 || add.RequestFrames != 3 || add.RequestSize != 8+4+5000 {
				t.Errorf("ADD: data %d timeout %d frames %d size %d", add.DataLen, add.TimeoutMS, add.RequestFrames, add.RequestSize)
			}
			if get.DataLen != 5000 || get.ResponseFrames != 3 || !get.HasDigest || get.Digest != add.Digest || get.Data != nil {
				t.Errorf("GET: data %d frames %d digest %x vs %x, data retained %v", get.DataLen, get.ResponseFrames, get.Digest, add.Digest, get.Data != nil)
			}
			st := p.Stats()
			if st.Results[distcache.OpGet]["hit"] != 1 || st.Results[distcache.OpGet]["miss"] != 1 || st.Transactions() != 6 ||
				st.ConnsActive != 1 || st.Latency.Count != 6 || st.FramesUp != 10 || st.FramesDown != 8 {
				t.Errorf("stats: results %v, active %d, latency count %d, frames %d/%d",
					st.Results, st.ConnsActive, st.Latency.Count, st.FramesUp, st.FramesDown)
			}
			if conns := p.Conns(); len(conns) != 1 || conns[0].Transactions != 6 || conns[0].BytesUp == 0 {
				t.Errorf("conns: %+v", conns)
			}
			c.c.Close()
			closed := rec.waitKind(t, KindConnClosed, 1)[0]
			if closed.Closed.Transactions != 6 || closed.Closed.BytesDown != st.BytesDown || closed.Closed.Reason != "client closed" && closed.Closed.Reason != "closed" {
				t.Errorf("closed event: %+v", closed.Closed)
			}
		})
	}
}

func TestProxyCapture(t *testing.T) {
	rec := newRecorder()
	p := startProxy(t, "tcp", startCache(t, "tcp"), Options{CaptureData: true, CaptureLimit: 10}, rec)
	c := newClient(t, p.Addr())
	c.do(distcache.OpAdd, distcache.AppendAddRequest(nil, 1000, []byte("k"), []byte("0123456789abcdef")))
	c.do(distcache.OpGet, []byte("k"))
	txs := rec.waitKind(t, KindTransaction, 2)
	for _, e := range txs {
		if string(e.Tx.Data) != "0123456789" || !e.Tx.DataTruncated || e.Tx.DataLen != 16 {
			t.Errorf("%s captured %q truncated=%v len %d", e.Tx.Op, e.Tx.Data, e.Tx.DataTruncated, e.Tx.DataLen)
		}
	}
}

// A batch of pipelined requests, written at once, is forwarded in order
// and answered in order.
func TestProxyPipelining(t *testing.T) {
	rec := newRecorder()
	p := startProxy(t, "unix", startCache(t, "unix"), Options{}, rec)
	c := newClient(t, p.Addr())
	var batch []byte
	const n = 64
	for i := range n {
		id := []byte{byte('a' + i%26), byte(i)}
		if i%2 == 0 {
			batch = distcache.AppendMessage(batch, false, uint32(i), distcache.OpAdd,
				distcache.AppendAddRequest(nil, 1000, id, bytes.Repeat([]byte{byte(i)}, 3000)))
		} else {
			batch = distcache.AppendMessage(batch, false, uint32(i), distcache.OpGet, []byte{byte('a' + (i-1)%26), byte(i - 1)})
		}
	}
	if _, err := c.c.Write(batch); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if m := c.recv(); m.RequestUID != uint32(i) {
			t.Fatalf("response %d has uid %d", i, m.RequestUID)
		}
	}
	// How they pair is the assembler's (TestAssemblerPairsTheSameAtEveryCut);
	// here, that a batch read at once reaches it whole.
	rec.waitKind(t, KindTransaction, n)
}

// fakeServer accepts one connection at a time, records what it receives
// and runs script on each connection.
type fakeServer struct {
	addr     distcache.Addr
	mu       sync.Mutex
	received bytes.Buffer
	done     chan struct{}
	ended    chan struct{} // one value per connection whose script returned
}

func startFake(t *testing.T, script func(c net.Conn, f *fakeServer)) *fakeServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a, _ := distcache.AddrFromNet(ln.Addr())
	f := &fakeServer{addr: a, done: make(chan struct{}), ended: make(chan struct{}, 100)}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				script(c, f)
				select {
				case f.ended <- struct{}{}:
				case <-f.done: // the test has ended; nobody counts
				}
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		close(f.done)
		wg.Wait()
	})
	return f
}

func (f *fakeServer) record(b []byte) {
	f.mu.Lock()
	f.received.Write(b)
	f.mu.Unlock()
}

func (f *fakeServer) got() []byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	return bytes.Clone(f.received.Bytes())
}

// recordAll records everything until the peer closes.
func recordAll(c net.Conn, f *fakeServer) {
	buf := make([]byte, 4096)
	for {
		n, err := c.Read(buf)
		f.record(buf[:n])
		if err != nil {
			return
		}
	}
}

func TestProxyServerDown(t *testing.T) {
	// A port held where nothing listens.
	down := distcache.MustParseAddr("IP:" + testutil.RefusingAddr(t))
	rec := newRecorder()
	p := startProxy(t, "tcp", down, Options{}, rec)
	c := dialAndAsk(t, p.Addr())
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := c.Read(make([]byte, 1)); err == nil || n != 0 {
		t.Fatalf("client not closed: n=%d err=%v", n, err)
	}
	e := rec.waitKind(t, KindConnectFailed, 1)[0]
	if !strings.Contains(e.Err.Error(), "refused") || !strings.Contains(e.Err.Error(), down.String()) {
		t.Errorf("connect-failed says %q", e.Err)
	}
	if st := p.Stats(); st.ConnectFailed != 1 || st.ConnsActive != 0 {
		t.Errorf("stats %+v", st)
	}
	// The spares' connects are refused too (on loopback TCP the epoll
	// engine hears of it as EPOLLERR): counted as failures, none ready.
	rec.waitFor(t, "a spare failure counted", func([]*Event) bool { return p.Stats().SpareFailures > 0 })
	if st := p.Stats(); st.SparesDialled != 0 {
		t.Errorf("%d spares dialled to a server that refuses", st.SparesDialled)
	}
}

func TestProxyServerClosesMidMessage(t *testing.T) {
	resp := distcache.AppendMessage(nil, true, 1, distcache.OpGet, make([]byte, 3000))
	f := startFake(t, func(c net.Conn, f *fakeServer) {
		buf := make([]byte, 100)
		c.Read(buf)
		c.Write(resp[:2100])
	})
	rec := newRecorder()
	p := startProxy(t, "tcp", f.addr, Options{}, rec)
	c := dial(t, p.Addr())
	c.Write(distcache.AppendMessage(nil, false, 1, distcache.OpGet, []byte("x")))
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, err := io.ReadAll(c)
	if err != nil || !bytes.Equal(got, resp[:2100]) {
		t.Fatalf("client got %d bytes (%v), want the 2100 the server sent", len(got), err)
	}
	c.Close()
	evs := rec.waitKind(t, KindConnClosed, 1)
	if r := evs[0].Closed.Reason; r != "server closed mid-message" {
		t.Errorf("close reason %q", r)
	}
	tx := rec.ofKind(KindTransaction)
	if len(tx) != 1 || !tx[0].Tx.Unanswered || tx[0].Tx.Result() != "unanswered" {
		t.Errorf("want one unanswered transaction: %s", describe(rec.all()))
	}
}

func TestProxyClientHalfClose(t *testing.T) {
	for _, network := range []string{"tcp", "unix"} {
		t.Run(network, func(t *testing.T) {
			rec := newRecorder()
			p := startProxy(t, network, startCache(t, network), Options{}, rec)
			c := dial(t, p.Addr())
			var req []byte
			req = distcache.AppendMessage(req, false, 1, distcache.OpAdd, distcache.AppendAddRequest(nil, 1000, []byte("a"), make([]byte, 9000)))
			req = distcache.AppendMessage(req, false, 2, distcache.OpGet, []byte("a"))
			c.Write(req)
			// Half-close: no more requests, but the responses must still come.
			if err := c.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
				t.Fatal(err)
			}
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			r := distcache.NewReader(c, distcache.ServerToClient)
			for uid := uint32(1); uid <= 2; uid++ {
				m, err := r.ReadMessage()
				if err != nil || m.RequestUID != uid {
					t.Fatalf("response %d: %+v %v", uid, m, err)
				}
			}
			if _, err := r.ReadMessage(); err != io.EOF {
				t.Fatalf("after responses: %v, want EOF", err)
			}
			rec.waitKind(t, KindConnClosed, 1)
			if n := len(rec.ofKind(KindTransaction)); n != 2 {
				t.Errorf("%d transactions", n)
			}
		})
	}
}

func TestProxyCorruptRequests(t *testing.T) {
	good := distcache.AppendMessage(nil, false, 1, distcache.OpHave, []byte("k"))
	corrupt := func(i int, v byte) []byte {
		b := bytes.Clone(good)
		b[i] = v
		return append(bytes.Clone(good), b...) // one good frame, then the bad one
	}
	cases := []struct {
		name   string
		stream []byte
		rule   distcache.Rule
	}{
		{"version", corrupt(1, 0x12), distcache.RuleVersion},
		{"is_response", corrupt(4, 9), distcache.RuleIsResponse},
		{"direction", corrupt(4, 1), distcache.RuleDirection},
		{"op_class", corrupt(9, 1), distcache.RuleClass},
		{"operation", corrupt(10, 4), distcache.RuleOperation},
		{"complete", corrupt(11, 2), distcache.RuleComplete},
		{"data_len", corrupt(12, 9), distcache.RuleDataLen},
		{"short frame", append(bytes.Clone(good), distcache.AppendFrame(nil, distcache.FrameHeader{ProtoLevel: distcache.ProtocolLevel, Op: distcache.OpAdd}, []byte("xy"))...), distcache.RuleShortFrame},
	}
	for _, policy := range []CorruptPolicy{CloseOnCorrupt, PassThrough} {
		for _, tc := range cases {
			t.Run(policy.String()+"/"+tc.name, func(t *testing.T) {
				f := startFake(t, recordAll)
				rec := newRecorder()
				p := startProxy(t, "tcp", f.addr, Options{OnCorrupt: policy}, rec)
				c := dial(t, p.Addr())
				c.Write(tc.stream)
				pe := rec.waitKind(t, KindProtocolError, 1)[0]
				var perr *distcache.ProtocolError
				if !errors.As(pe.Err, &perr) || perr.Rule != tc.rule || pe.Direction != distcache.ClientToServer || pe.Policy != policy {
					t.Fatalf("protocol error event: %v dir %v", pe.Err, pe.Direction)
				}
				if policy == CloseOnCorrupt {
					c.SetReadDeadline(time.Now().Add(5 * time.Second))
					if _, err := c.Read(make([]byte, 1)); err == nil {
						t.Error("client connection still open")
					}
					rec.waitKind(t, KindConnClosed, 1)
					select {
					case <-f.ended:
					case <-time.After(5 * time.Second):
						t.Fatal("server side never saw the connection end")
					}
					if got := f.got(); !bytes.Equal(got, tc.stream[:perr.Offset]) {
						t.Errorf("server received %d bytes, want exactly the %d valid ones", len(got), perr.Offset)
					}
				} else {
					deadline := time.Now().Add(5 * time.Second)
					for !bytes.Equal(f.got(), tc.stream) && time.Now().Before(deadline) {
						time.Sleep(5 * time.Millisecond)
					}
					if got := f.got(); !bytes.Equal(got, tc.stream) {
						t.Errorf("passthrough forwarded %d of %d bytes", len(got), len(tc.stream))
					}
					// Reported once even if more garbage follows.
					c.Write([]byte{0xff, 0xff, 0xff})
					time.Sleep(20 * time.Millisecond)
					if n := len(rec.ofKind(KindProtocolError)); n != 1 {
						t.Errorf("%d protocol error events", n)
					}
				}
				if p.Stats().ProtocolErrors != 1 {
					t.Errorf("protocol error not counted")
				}
			})
		}
	}
}

// TestProxyCorruptResponses breaks every rule in the server->client
// direction, after one good response, under both policies.
func TestProxyCorruptResponses(t *testing.T) {
	good := distcache.AppendMessage(nil, true, 1, distcache.OpGet, []byte{1})
	resp := func(uid uint32, op distcache.Op, complete bool, n int) []byte {
		return distcache.AppendFrame(nil, distcache.FrameHeader{ProtoLevel: distcache.ProtocolLevel, IsResponse: true,
			RequestUID: uid, Op: op, Complete: complete}, make([]byte, n))
	}
	set := func(b []byte, i int, v byte) []byte { b = bytes.Clone(b); b[i] = v; return b }
	full := func(n int) []byte {
		var b []byte
		for range n {
			b = append(b, resp(5, distcache.OpGet, false, 2048)...)
		}
		return b
	}
	cases := []struct {
		name string
		bad  []byte
		rule distcache.Rule
	}{
		{"version", set(good, 1, 0x12), distcache.RuleVersion},
		{"is_response", set(good, 4, 9), distcache.RuleIsResponse},
		{"direction", set(good, 4, 0), distcache.RuleDirection},
		{"op_class", set(good, 9, 1), distcache.RuleClass},
		{"operation", set(good, 10, 7), distcache.RuleOperation},
		{"complete", set(good, 11, 2), distcache.RuleComplete},
		{"data_len", set(good, 12, 9), distcache.RuleDataLen},
		{"short frame", resp(5, distcache.OpGet, false, 2), distcache.RuleShortFrame},
		{"continuation uid", append(full(1), resp(6, distcache.OpGet, true, 1)...), distcache.RuleContinuation},
		{"continuation op", append(full(1), resp(5, distcache.OpHave, true, 1)...), distcache.RuleContinuation},
		{"message too long", append(full(16), resp(5, distcache.OpGet, true, 1)...), distcache.RuleMessageTooLong},
	}
	for _, policy := range []CorruptPolicy{CloseOnCorrupt, PassThrough} {
		for _, tc := range cases {
			t.Run(policy.String()+"/"+tc.name, func(t *testing.T) {
				stream := append(bytes.Clone(good), tc.bad...)
				// Where the rule breaks, as the decoder sees it on its own.
				d := distcache.NewDecoder(distcache.ServerToClient)
				valid := 0
				for p := stream; len(p) > 0; {
					n, _, err := d.Next(p)
					valid += n
					if err != nil {
						break
					}
					p = p[n:]
				}
				f := startFake(t, func(c net.Conn, f *fakeServer) {
					if n, _ := c.Read(make([]byte, 100)); n == 0 {
						return // a spare connection the proxy never used
					}
					c.Write(stream)
					c.Read(make([]byte, 100)) // until the proxy closes
				})
				rec := newRecorder()
				p := startProxy(t, "tcp", f.addr, Options{OnCorrupt: policy}, rec)
				c := dial(t, p.Addr())
				c.Write(distcache.AppendMessage(nil, false, 1, distcache.OpGet, []byte("k")))
				// Under close, everything before the offending byte still
				// passes; under passthrough, everything.
				want := stream
				if policy == CloseOnCorrupt {
					want = stream[:valid]
				}
				c.SetReadDeadline(time.Now().Add(5 * time.Second))
				got := make([]byte, len(want))
				if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, want) {
					t.Fatalf("client got %d bytes (%v), want %d", len(got), err, len(want))
				}
				if policy == CloseOnCorrupt {
					if n, err := c.Read(make([]byte, 10)); err == nil {
						t.Errorf("client still open, read %d more bytes", n)
					}
				}
				pe := rec.waitKind(t, KindProtocolError, 1)[0]
				var perr *distcache.ProtocolError
				if !errors.As(pe.Err, &perr) || perr.Rule != tc.rule || perr.Offset != int64(valid) || pe.Direction != distcache.ServerToClient {
					t.Errorf("event: %v, want rule %s at %d", pe.Err, tc.rule, valid)
				}
				if txs := rec.waitKind(t, KindTransaction, 1); txs[0].Tx.Result() != "miss" {
					t.Errorf("the good response was not paired: %s", describe(txs))
				}
			})
		}
	}
}

// An answer no request asked for reaches the client unchanged, and the
// proxy's counters name it an orphan (the pairing itself is the
// assembler's: TestAssemblerPairsTheSameAtEveryCut).
func TestProxyForwardsAnAnswerNoRequestAskedFor(t *testing.T) {
	orphan := distcache.AppendMessage(nil, true, 99, distcache.OpGet, []byte{1})
	f := startFake(t, func(c net.Conn, f *fakeServer) {
		c.Read(make([]byte, 100))
		c.Write(orphan)
		c.Read(make([]byte, 100))
	})
	rec := newRecorder()
	p := startProxy(t, "tcp", f.addr, Options{}, rec)
	c := dial(t, p.Addr())
	c.Write(distcache.AppendMessage(nil, false, 1, distcache.OpGet, []byte("k")))
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	got := make([]byte, len(orphan))
	if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, orphan) {
		t.Fatalf("client read % x, %v; want the answer % x", got, err, orphan)
	}
	c.Close()
	rec.waitKind(t, KindConnClosed, 1)
	if st := p.Stats(); st.Results[distcache.OpGet]["orphan"] != 1 || st.Results[distcache.OpGet]["unanswered"] != 1 {
		t.Errorf("stats %+v, want one orphan and one unanswered", st.Results)
	}
}

func TestUnixListenPath(t *testing.T) {
	dir := shortDir(t)
	server := distcache.MustParseAddr("IP:127.0.0.1:1")
	newProxy := func(path string) (*Proxy, error) {
		p, err := New(Config{Name: "u", Listen: distcache.MustParseAddr("UNIX:" + path), Server: server, Enabled: true,
			Options: Options{SocketMode: 0o600}, Engine: testEngine}, nil)
		if err != nil {
			t.Fatal(err)
		}
		return p, p.Start()
	}
	stop := func(p *Proxy) {
		if err := p.Stop(context.Background()); err != nil {
			t.Error(err)
		}
	}

	// A stale socket (its listener gone without removing it) is replaced.
	stale := filepath.Join(dir, "stale.sock")
	ul, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ul.SetUnlinkOnClose(false)
	ul.Close()
	p, err := newProxy(stale)
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	if fi, err := os.Stat(stale); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode: %v %v", fi.Mode(), err)
	}
	// A live socket is refused and kept.
	if _, err := newProxy(stale); !errors.Is(err, ErrAddrInUse) {
		t.Errorf("second proxy on a live socket: %v", err)
	}
	stop(p)
	if _, err := os.Lstat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket file left behind after stop: %v", err)
	}

	// A regular file is refused and left untouched.
	regular := filepath.Join(dir, "file")
	os.WriteFile(regular, []byte("keep me"), 0o644)
	if _, err := newProxy(regular); !errors.Is(err, ErrPathExists) || !strings.Contains(err.Error(), "regular file") {
		t.Errorf("regular file: %v", err)
	}
	if b, _ := os.ReadFile(regular); string(b) != "keep me" {
		t.Error("regular file changed")
	}
	if _, err := newProxy(dir); !errors.Is(err, ErrPathExists) {
		t.Errorf("directory: %v", err)
	}
	if _, err := newProxy(filepath.Join(dir, "missing", "x.sock")); err == nil {
		t.Error("socket in a missing directory accepted")
	}
}

func TestPortInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	taken, _ := distcache.AddrFromNet(ln.Addr())
	p, err := New(Config{Name: "x", Listen: taken, Server: distcache.MustParseAddr("IP:127.0.0.1:1"), Enabled: true, Engine: testEngine}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Stop(context.Background())
	if err := p.Start(); !errors.Is(err, ErrAddrInUse) || !strings.Contains(err.Error(), taken.String()) {
		t.Fatalf("start on a taken port: %v", err)
	}
	if p.Listening() {
		t.Error("listening after a failed bind")
	}
}

func TestDisableEnableStop(t *testing.T) {
	rec := newRecorder()
	p := startProxy(t, "tcp", startCache(t, "tcp"), Options{}, rec)
	addr := p.Addr()
	c := newClient(t, addr)
	c.do(distcache.OpHave, []byte("x"))

	// Disable keeps live connections, refuses new ones.
	p.Disable(false)
	c.do(distcache.OpHave, []byte("x"))
	if _, err := net.DialTimeout("tcp", addr.NetAddr(), time.Second); err == nil {
		t.Error("disabled proxy accepted a connection")
	}
	// Enable listens again on the same port.
	if err := p.Enable(); err != nil {
		t.Fatal(err)
	}
	if p.Addr() != addr {
		t.Errorf("address changed from %s to %s", addr, p.Addr())
	}
	c2 := newClient(t, addr)
	c2.do(distcache.OpHave, []byte("y"))
	// Disable with closeConns ends both.
	p.Disable(true)
	for _, cl := range []*client{c, c2} {
		cl.c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := cl.c.Read(make([]byte, 1)); err == nil {
			t.Error("connection survived disable(true)")
		}
	}
	closed := rec.waitKind(t, KindConnClosed, 2)
	for _, e := range closed {
		if e.Closed.Reason != "proxy disabled" {
			t.Errorf("reason %q", e.Closed.Reason)
		}
	}
	// Stop with a live connection returns, and the connection is closed.
	p.Enable()
	c3 := newClient(t, addr)
	c3.do(distcache.OpHave, []byte("z"))
	if err := p.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := c3.c.Read(make([]byte, 1)); err == nil {
		t.Error("connection survived stop")
	}
	if err := p.Enable(); !errors.Is(err, ErrStopped) {
		t.Errorf("enable after stop: %v", err)
	}
}

func TestConnectionLimit(t *testing.T) {
	rec := newRecorder()
	p := startProxy(t, "tcp", startCache(t, "tcp"), Options{MaxConns: 2}, rec)
	a, b := newClient(t, p.Addr()), newClient(t, p.Addr())
	a.do(distcache.OpHave, []byte("1"))
	b.do(distcache.OpHave, []byte("2"))
	extra := dial(t, p.Addr())
	extra.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := extra.Read(make([]byte, 1)); err == nil {
		t.Fatal("third connection not closed")
	}
	if st := p.Stats(); st.ConnsRefused != 1 || st.ConnsActive != 2 {
		t.Errorf("stats: refused %d active %d", st.ConnsRefused, st.ConnsActive)
	}
	rec.waitKind(t, KindConnRefused, 1)
	// A slot frees up when a client leaves.
	a.c.Close()
	rec.waitKind(t, KindConnClosed, 1)
	c := newClient(t, p.Addr())
	c.do(distcache.OpHave, []byte("3"))
}

func TestCloseConnAndDrain(t *testing.T) {
	rec := newRecorder()
	p := startProxy(t, "unix", startCache(t, "unix"), Options{}, rec)
	a, b := newClient(t, p.Addr()), newClient(t, p.Addr())
	a.do(distcache.OpHave, []byte("1"))
	b.do(distcache.OpHave, []byte("2"))
	conns := p.Conns()
	if len(conns) != 2 {
		t.Fatalf("%d conns", len(conns))
	}
	if !p.CloseConn(conns[0].ID) || p.CloseConn(12345) {
		t.Fatal("CloseConn")
	}
	e := rec.waitKind(t, KindConnClosed, 1)[0]
	if e.ConnID != conns[0].ID || e.Closed.Reason != "closed by operator" {
		t.Errorf("closed %d: %q", e.ConnID, e.Closed.Reason)
	}
	// Drain waits for the remaining client, then returns when it leaves.
	drained := make(chan error)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		drained <- p.Drain(ctx)
	}()
	time.Sleep(20 * time.Millisecond)
	b.do(distcache.OpHave, []byte("still served while draining"))
	b.c.Close()
	if err := <-drained; err != nil {
		t.Fatal(err)
	}
}

func TestDrainDeadlineClosesConnections(t *testing.T) {
	p := startProxy(t, "tcp", startCache(t, "tcp"), Options{}, nil)
	c := newClient(t, p.Addr())
	c.do(distcache.OpHave, []byte("1"))
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := p.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	c.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.c.Read(make([]byte, 1)); err == nil {
		t.Error("connection survived the drain deadline")
	}
}

func TestConfigValidation(t *testing.T) {
	ok := Config{Name: "a", Listen: distcache.MustParseAddr("IP:0"), Server: distcache.MustParseAddr("IP:127.0.0.1:1")}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []Config{
		{Name: "", Listen: ok.Listen, Server: ok.Server},
		{Name: "-x", Listen: ok.Listen, Server: ok.Server},
		{Name: "a b", Listen: ok.Listen, Server: ok.Server},
		{Name: "a", Server: ok.Server},
		{Name: "a", Listen: ok.Listen},
		{Name: "a", Listen: ok.Listen, Server: distcache.MustParseAddr("IP:9001")},
		{Name: "a", Listen: ok.Listen, Server: ok.Server, Options: Options{MaxConns: -1}},
	} {
		if err := bad.Validate(); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("%+v: %v", bad, err)
		}
	}
	if _, err := ParseCorruptPolicy("drop"); err == nil {
		t.Error("unknown policy accepted")
	}
}

func TestSetServerAffectsNewConnections(t *testing.T) {
	rec := newRecorder()
	first, second := startCache(t, "tcp"), startCache(t, "unix")
	p := startProxy(t, "tcp", first, Options{}, rec)
	old := newClient(t, p.Addr())
	old.do(distcache.OpAdd, distcache.AppendAddRequest(nil, 1000, []byte("k"), []byte("v")))
	if err := p.SetServer(second); err != nil {
		t.Fatal(err)
	}
	fresh := newClient(t, p.Addr())
	if m := fresh.do(distcache.OpHave, []byte("k")); m.Payload[0] != 1 {
		t.Error("new connection reached the old server")
	}
	if m := old.do(distcache.OpHave, []byte("k")); m.Payload[0] != 0 {
		t.Error("old connection moved to the new server")
	}
	if p.Config().Server != second {
		t.Errorf("config server %s", p.Config().Server)
	}
}

// A Stop whose context ends before the proxy's goroutines do returns,
// and leaves nothing of its own waiting behind it (a wedged connection is
// stood in for by a count that is never taken back until the end).
func TestStopThatTimesOutLeavesNoWaiter(t *testing.T) {
	p := startProxy(t, "tcp", startCache(t, "tcp"), Options{}, Discard)
	p.wg.Add(1)
	defer p.wg.Done()
	before := goleak.IgnoreCurrent()
	for range 3 {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		err := p.Stop(ctx)
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Stop with a goroutine that never ends: %v, want the deadline", err)
		}
	}
	if err := goleak.Find(before); err != nil {
		t.Errorf("Stop left goroutines behind: %v", err)
	}
}

// A proxy made without an engine runs on DefaultEngine, the one snoopd
// runs, made when it listens and closed when it stops.
func TestNewWithoutEngineRunsTheDefault(t *testing.T) {
	p, err := New(Config{Name: "d", Listen: distcache.MustParseAddr("IP:127.0.0.1:0"), Server: startCache(t, "tcp"), Enabled: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	own, ok := p.engine.(*ownedEngine)
	if !ok || own.Name() != DefaultEngine || own.eng != nil {
		t.Fatalf("engine %T named %q, made %v; want the default, not made before listening", p.engine, p.engine.Name(), ok && own.eng != nil)
	}
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	if own.eng == nil || own.eng.Name() != DefaultEngine {
		t.Fatalf("listening on %v, want %s", own.eng, DefaultEngine)
	}
	c := newClient(t, p.Addr())
	c.do(distcache.OpGet, []byte("k"))
	c.c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := p.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if own.eng != nil {
		t.Fatal("the proxy's own engine is still running after Stop")
	}
}
