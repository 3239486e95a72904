package proxy

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/snoopd/snoopd/distcache"
)

// recSink keeps a copy of every event it is given.
type recSink struct {
	mu     sync.Mutex
	events []*Event
}

func (s *recSink) Publish(e *Event) {
	s.mu.Lock()
	s.events = append(s.events, e.Clone())
	s.mu.Unlock()
}

func (s *recSink) take() []*Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	ev := s.events
	s.events = nil
	return ev
}

// txLines summarises the transaction events of ev, in order, one line each:
// what a transaction's consumer compares.
func txLines(ev []*Event) []string {
	var out []string
	for _, e := range ev {
		if e.Kind == KindTransaction {
			out = append(out, txLine(e.Tx))
		}
	}
	return out
}

func txLine(t *Transaction) string {
	return fmt.Sprintf("%s uid=%d id=%q %s frames=%d/%d size=%d/%d data=%d digest=%x fault=%q",
		t.Op, t.RequestUID, t.SessionID, t.Result(), t.RequestFrames, t.ResponseFrames,
		t.RequestSize, t.ResponseSize, t.DataLen, t.Digest, t.Fault)
}

// message is one message of a recorded stream.
type message struct {
	resp    bool
	uid     uint32
	op      distcache.Op
	payload []byte
}

func (m message) bytes() []byte {
	return distcache.AppendMessage(nil, m.resp, m.uid, m.op, m.payload)
}

// session returns n bytes of session data that never take the shape of
// a frame header (each byte is its index's low byte, plus seed).
func session(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i)*7 + seed
	}
	return b
}

// recorded is a connection's traffic with the transactions a whole-stream
// decoding makes of it: pipelined requests, two requests sharing a uid
// with different operations answered out of order, multi-frame ADD and
// GET messages, a response no request asked for, and a request that is
// never answered.
type recorded struct {
	up, down     []message
	want         []string // the transactions, in the order the responses come
	wantAtClose  []string // the unanswered requests, reported at close
	upBytes      []byte
	downBytes    []byte
	upStarts     []int // each message's offset in upBytes
	downStarts   []int
	orphanOf     map[int]string // for each response, the transaction it makes without its request
	unansweredOf map[int]string // for each request, the transaction it makes without its response
}

func newRecorded() *recorded {
	add := distcache.AppendAddRequest(nil, 60000, []byte("sess-a"), session(3000, 1))
	r := &recorded{
		up: []message{
			{false, 1, distcache.OpAdd, add},
			{false, 2, distcache.OpGet, []byte("sess-a")},
			{false, 3, distcache.OpGet, []byte("sess-b")},
			{false, 3, distcache.OpRemove, []byte("sess-b")},
			{false, 4, distcache.OpHave, []byte("sess-a")},
			{false, 5, distcache.OpGet, []byte("sess-c")},
		},
		down: []message{
			{true, 1, distcache.OpAdd, []byte{byte(distcache.StatusOK)}},
			{true, 2, distcache.OpGet, session(3000, 1)},
			{true, 3, distcache.OpRemove, []byte{byte(distcache.StatusNotOK)}},
			{true, 3, distcache.OpGet, []byte{byte(distcache.StatusNotOK)}},
			{true, 4, distcache.OpHave, []byte{byte(distcache.StatusOK)}},
			{true, 99, distcache.OpGet, []byte{byte(distcache.StatusNotOK)}},
		},
	}
	r.want = []string{
		`ADD uid=1 id="sess-a" ok frames=2/1 size=3014/1 data=3000 digest=` + digestHex(session(3000, 1)) + ` fault=""`,
		`GET uid=2 id="sess-a" hit frames=1/2 size=6/3000 data=3000 digest=` + digestHex(session(3000, 1)) + ` fault=""`,
		`REMOVE uid=3 id="sess-b" notok frames=1/1 size=6/1 data=0 digest=0000000000000000 fault=""`,
		`GET uid=3 id="sess-b" miss frames=1/1 size=6/1 data=0 digest=0000000000000000 fault=""`,
		`HAVE uid=4 id="sess-a" ok frames=1/1 size=6/1 data=0 digest=0000000000000000 fault=""`,
		`GET uid=99 id="" orphan frames=0/1 size=0/1 data=0 digest=0000000000000000 fault=""`,
	}
	r.wantAtClose = []string{`GET uid=5 id="sess-c" unanswered frames=1/0 size=6/0 data=0 digest=0000000000000000 fault=""`}
	r.orphanOf, r.unansweredOf = map[int]string{}, map[int]string{}
	for i, m := range r.up {
		r.upStarts = append(r.upStarts, len(r.upBytes))
		r.upBytes = append(r.upBytes, m.bytes()...)
		r.unansweredOf[i] = alone(m)
	}
	for i, m := range r.down {
		r.downStarts = append(r.downStarts, len(r.downBytes))
		r.downBytes = append(r.downBytes, m.bytes()...)
		r.orphanOf[i] = alone(m)
	}
	return r
}

// alone is the transaction message m makes when its counterpart is lost.
func alone(m message) string {
	a := newTestAssembler(&recSink{}, false)
	var h half
	a.initHalf(&h, direction(m.resp))
	if _, err := a.decode(&h, m.bytes(), time.Unix(0, 0), nil); err != nil {
		panic(err)
	}
	a.flush(&h)
	a.unanswered(time.Unix(0, 0))
	return txLines(a.sink.(*recSink).take())[0]
}

func direction(resp bool) distcache.Direction {
	if resp {
		return distcache.ServerToClient
	}
	return distcache.ClientToServer
}

func digestHex(data []byte) string {
	var s distcache.PayloadScanner
	s.SetOptions(distcache.ScanOptions{Digest: true})
	s.Start(distcache.OpGet, true)
	s.Write(data)
	return fmt.Sprintf("%x", s.Summary().Digest)
}

func newTestAssembler(sink Sink, capture bool) *assembler {
	return &assembler{proxy: "t", id: 1, client: "c", stats: new(counters), sink: sink,
		capture: capture, captureLimit: DefaultCaptureLimit}
}

// feedAssembler decodes chunks of one direction as an engine does,
// publishing after each chunk, and fails on a protocol error.
func feedAssembler(t *testing.T, a *assembler, h *half, chunks ...[]byte) {
	t.Helper()
	for _, c := range chunks {
		if _, err := a.decode(h, c, time.Unix(1, 0), nil); err != nil {
			t.Fatal(err)
		}
		a.flush(h)
	}
}

// The assembler makes the same transactions of a connection however its
// streams are cut into reads: pipelined requests pair in order, a uid
// shared by two operations pairs by operation, multi-frame messages are
// one transaction each, a response with no request is an orphan, and a
// request pending at close is reported unanswered.
func TestAssemblerPairsTheSameAtEveryCut(t *testing.T) {
	r := newRecorded()
	want := append(slices.Clone(r.want), r.wantAtClose...)
	r.eachCut(func(how string, upChunks, downChunks [][]byte) {
		sink := &recSink{}
		a := newTestAssembler(sink, false)
		var up, down half
		a.initHalf(&up, distcache.ClientToServer)
		a.initHalf(&down, distcache.ServerToClient)
		feedAssembler(t, a, &up, upChunks...)
		feedAssembler(t, a, &down, downChunks...)
		a.unanswered(time.Unix(2, 0))
		if got := txLines(sink.take()); !slices.Equal(got, want) {
			t.Fatalf("%s:\ngot  %s\nwant %s", how, strings.Join(got, "\n     "), strings.Join(want, "\n     "))
		}
	})
}

// eachCut calls f with the recorded streams cut in two at every place of
// one of them, the other whole.
func (r *recorded) eachCut(f func(how string, upChunks, downChunks [][]byte)) {
	for cut := 1; cut <= len(r.upBytes); cut++ {
		f(fmt.Sprintf("requests cut at %d", cut), cutAt(r.upBytes, cut), [][]byte{r.downBytes})
	}
	for cut := 1; cut <= len(r.downBytes); cut++ {
		f(fmt.Sprintf("responses cut at %d", cut), [][]byte{r.upBytes}, cutAt(r.downBytes, cut))
	}
}

// cutAt splits b in two at i.
func cutAt(b []byte, i int) [][]byte { return [][]byte{b[:i], b[i:]} }

// A transaction's latency runs from its request's first byte to its
// response's last; an orphan starts when it is read; counters follow the
// outcomes.
func TestAssemblerTimesAndCountsTransactions(t *testing.T) {
	sink := &recSink{}
	a := newTestAssembler(sink, false)
	var up, down half
	a.initHalf(&up, distcache.ClientToServer)
	a.initHalf(&down, distcache.ServerToClient)
	req := message{false, 7, distcache.OpHave, []byte("s")}.bytes()
	resp := message{true, 7, distcache.OpHave, []byte{0}}.bytes()
	t0 := time.Unix(100, 0)
	a.decode(&up, req[:3], t0, nil)
	a.decode(&up, req[3:], t0.Add(time.Millisecond), nil)
	a.decode(&down, resp[:5], t0.Add(5*time.Millisecond), nil)
	a.decode(&down, resp[5:], t0.Add(8*time.Millisecond), nil)
	a.decode(&down, message{true, 8, distcache.OpHave, []byte{0}}.bytes(), t0.Add(9*time.Millisecond), nil)
	a.flush(&down)
	ev := sink.take()
	if len(ev) != 2 {
		t.Fatalf("%d events, want 2", len(ev))
	}
	if tx := ev[0].Tx; !tx.Start.Equal(t0) || tx.Latency != 8*time.Millisecond || tx.ServerLatency != 8*time.Millisecond {
		t.Errorf("start %v latency %v server %v, want %v, 8ms, 8ms", tx.Start, tx.Latency, tx.ServerLatency, t0)
	}
	if tx := ev[1].Tx; !tx.Orphan || !tx.Start.Equal(t0.Add(9*time.Millisecond)) || tx.Latency != 0 {
		t.Errorf("orphan %v start %v latency %v, want an orphan started when read, without latency", tx.Orphan, tx.Start, tx.Latency)
	}
	s := a.stats.snapshot()
	if s.Results[distcache.OpHave]["ok"] != 1 || s.Results[distcache.OpHave]["orphan"] != 1 || a.transactions.Load() != 1 || s.Latency.Count != 1 {
		t.Errorf("results %v, transactions %d, latency samples %d; want one ok (timed) and one orphan", s.Results, a.transactions.Load(), s.Latency.Count)
	}
}

// Captured session data is kept, whole, only when capture is on, and
// is the event's own copy.
func TestAssemblerCapturesData(t *testing.T) {
	r := newRecorded()
	for _, capture := range []bool{false, true} {
		sink := &recSink{}
		a := newTestAssembler(sink, capture)
		var up, down half
		a.initHalf(&up, distcache.ClientToServer)
		a.initHalf(&down, distcache.ServerToClient)
		feedAssembler(t, a, &up, r.upBytes)
		feedAssembler(t, a, &down, r.downBytes)
		ev := sink.take()
		add, get := ev[0].Tx, ev[1].Tx
		if !capture {
			if add.Data != nil || get.Data != nil {
				t.Errorf("data kept without capture")
			}
			continue
		}
		want := session(3000, 1)
		if !bytes.Equal(add.Data, want) || !bytes.Equal(get.Data, want) {
			t.Errorf("captured ADD %d bytes, GET %d bytes; want the 3000 bytes of the session", len(add.Data), len(get.Data))
		}
	}
}

// After a protocol error in the request direction (the proxy's
// passthrough), answers are not reported as orphans: their requests
// were not decoded.
func TestAssemblerSilencesOrphansOnceRequestsAreNotDecoded(t *testing.T) {
	sink := &recSink{}
	a := newTestAssembler(sink, false)
	var down half
	a.initHalf(&down, distcache.ServerToClient)
	a.upBroken.Store(true)
	feedAssembler(t, a, &down, message{true, 1, distcache.OpGet, []byte{1}}.bytes())
	if ev := sink.take(); len(ev) != 0 {
		t.Fatalf("%d events, want none", len(ev))
	}
}

// testConn is a proxy connection fed by hand, without sockets, as an
// engine feeds it: inspect, forward what it says, afterForward.
func testConn(t *testing.T, opts Options, sink Sink) (*conn, *half, *half) {
	t.Helper()
	p, err := New(Config{Name: "t", Listen: distcache.MustParseAddr("IP:127.0.0.1:0"),
		Server: distcache.MustParseAddr("IP:127.0.0.1:1"), Options: opts, Engine: testEngine}, sink)
	if err != nil {
		t.Fatal(err)
	}
	c := &conn{}
	c.init(p, 1, "c", p.current.Load(), time.Now())
	up, down := &half{}, &half{}
	c.initHalf(up, distcache.ClientToServer)
	c.initHalf(down, distcache.ServerToClient)
	return c, up, down
}

// Under the close policy a connection forwards the valid bytes before a
// corrupt one and closes; under passthrough it forwards everything, stops
// decoding that direction and reports no orphans for the answers to what
// it could not decode. Both report the error once, naming the policy.
func TestConnCorruptPolicies(t *testing.T) {
	good := message{false, 1, distcache.OpGet, []byte("a")}.bytes()
	bad := message{false, 2, distcache.OpGet, []byte("b")}.bytes()
	bad[4] = 7 // is_response neither 0 nor 1
	stream := append(slices.Clone(good), bad...)
	for _, policy := range []CorruptPolicy{CloseOnCorrupt, PassThrough} {
		for cut := 1; cut <= len(stream); cut++ {
			sink := &recSink{}
			c, up, down := testConn(t, Options{OnCorrupt: policy}, sink)
			forwarded, open := 0, true
			for _, chunk := range [][]byte{stream[:cut], stream[cut:]} {
				if !open || len(chunk) == 0 {
					continue
				}
				f := c.inspect(up, chunk, time.Now())
				forwarded += f.n
				open = c.afterForward(up, f)
			}
			var errs []*Event
			for _, e := range sink.take() {
				if e.Kind == KindProtocolError {
					errs = append(errs, e)
				}
			}
			if len(errs) != 1 || errs[0].Policy != policy || errs[0].Direction != distcache.ClientToServer || !errors.Is(errs[0].Err, distcache.ErrCorrupt) {
				t.Fatalf("%s cut %d: protocol errors %v, want one of policy %s", policy, cut, errs, policy)
			}
			switch policy {
			case CloseOnCorrupt:
				if open || forwarded != len(good)+4 {
					t.Fatalf("close cut %d: open %v, forwarded %d; want closed after %d bytes", cut, open, forwarded, len(good)+4)
				}
			case PassThrough:
				if !open || forwarded != len(stream) {
					t.Fatalf("passthrough cut %d: open %v, forwarded %d; want open after all %d", cut, open, forwarded, len(stream))
				}
				answers := append(message{true, 1, distcache.OpGet, []byte{1}}.bytes(), message{true, 2, distcache.OpGet, []byte{1}}.bytes()...)
				c.afterForward(down, c.inspect(down, answers, time.Now()))
				if got := txLines(sink.take()); len(got) != 1 || !strings.HasPrefix(got[0], `GET uid=1 id="a" miss`) {
					t.Fatalf("passthrough cut %d: transactions %q, want the decoded request's only", cut, got)
				}
			}
		}
	}
}

// A connection's first request goes into its proxy's echo table, and out
// again once it is answered; a connection whose first request is a deep
// echo is stopped before it is forwarded.
func TestConnChecksItsFirstRequestForEchoes(t *testing.T) {
	req := message{false, 42, distcache.OpGet, []byte("loop")}.bytes()
	sink := &recSink{}
	var conns []*conn
	var last forwarded
	for i := 0; i <= loopDepth; i++ {
		c, up, _ := testConn(t, Options{}, sink)
		if i > 0 {
			c.p = conns[0].p // one proxy, one table
			c.echo = c.p
		}
		last = c.inspect(up, req, time.Now())
		conns = append(conns, c)
		if i < loopDepth && (last.err != nil || last.n != len(req)) {
			t.Fatalf("connection %d: %v, forwarded %d; want its request forwarded", i, last.err, last.n)
		}
	}
	if !isLoopEcho(last.err) || last.n != 0 {
		t.Fatalf("echo %d laps deep: %v, forwarded %d; want it stopped unforwarded", loopDepth, last.err, last.n)
	}
	first := conns[0]
	if first.echoKey.Load() == 0 {
		t.Fatal("the first connection's request is not in the echo table")
	}
	var down half
	first.initHalf(&down, distcache.ServerToClient)
	first.decode(&down, message{true, 42, distcache.OpGet, []byte{1}}.bytes(), time.Now(), nil)
	if first.echoKey.Load() != 0 {
		t.Fatal("the answered first request stayed in the echo table")
	}
}
