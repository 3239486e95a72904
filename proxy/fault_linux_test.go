package proxy

import (
	"bytes"
	"errors"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/snoopd/snoopd/distcache"
	"github.com/snoopd/snoopd/internal/skip"
	"github.com/snoopd/snoopd/match"
)

// The fault tests run on the epoll engine only: the goroutine engine
// refuses faults (TestFaultsNeedEpoll).

func needEpoll(t *testing.T) {
	t.Helper()
	if testEngine.Name() != EngineEpoll {
		skip.ByDesign(t, "faults need the epoll engine: run with the epoll suite")
	}
}

// faultProxy runs a proxy with faults in front of an in-memory cache
// holding the session "s" (data 3000 bytes of 'd').
func faultProxy(t *testing.T, rec *recorder, faults ...FaultSpec) (*Proxy, []byte) {
	t.Helper()
	needEpoll(t)
	cache := startCache(t, "tcp")
	data := bytes.Repeat([]byte("d"), 3000)
	seed := &client{t: t, c: dial(t, cache)}
	seed.r = distcache.NewReader(seed.c, distcache.ServerToClient)
	if m := seed.do(distcache.OpAdd, distcache.AppendAddRequest(nil, 60000, []byte("s"), data)); m.Payload[0] != 0 {
		t.Fatalf("seeding the cache: status %d", m.Payload[0])
	}
	p := startProxy(t, "tcp", cache, Options{}, rec)
	if err := p.SetFaults(faults); err != nil {
		t.Fatal(err)
	}
	return p, data
}

// rawResponse sends one request and returns the exact bytes of the
// response's frames.
func rawResponse(t *testing.T, c net.Conn, uid uint32, op distcache.Op, payload []byte) []byte {
	t.Helper()
	if _, err := c.Write(distcache.AppendMessage(nil, false, uid, op, payload)); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var out []byte
	for {
		var hd [distcache.HeaderSize]byte
		if _, err := io.ReadFull(c, hd[:]); err != nil {
			t.Fatalf("read response header: %v (have %d bytes)", err, len(out))
		}
		n := int(hd[12])<<8 | int(hd[13])
		body := make([]byte, min(n, distcache.MaxFrameData))
		if _, err := io.ReadFull(c, body); err != nil {
			t.Fatalf("read response data: %v", err)
		}
		out = append(append(out, hd[:]...), body...)
		if hd[11] != 0 || n > distcache.MaxFrameData {
			return out
		}
	}
}

func txWithFault(t *testing.T, rec *recorder, name string, n int) []*Event {
	t.Helper()
	return rec.waitFor(t, "transactions of fault "+name, func(evs []*Event) bool {
		c := 0
		for _, e := range evs {
			if e.Kind == KindTransaction && e.Tx.Fault == name {
				c++
			}
		}
		return c >= n
	})
}

func TestFaultsNeedEpoll(t *testing.T) {
	eng, err := NewEngine(EngineGoroutines, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	_, err = New(Config{Name: "g", Listen: distcache.MustParseAddr("IP:127.0.0.1:0"), Server: distcache.MustParseAddr("IP:127.0.0.1:1"),
		Engine: eng, Faults: []FaultSpec{{Name: "m", Type: FaultMiss, Probability: 1}}}, nil)
	if !errors.Is(err, ErrFaultsNeedEpoll) {
		t.Fatalf("goroutine engine with faults: %v, want ErrFaultsNeedEpoll", err)
	}
}

func TestFaultMissAndRemoval(t *testing.T) {
	rec := newRecorder()
	p, data := faultProxy(t, rec, FaultSpec{Name: "nohit", Type: FaultMiss, Probability: 1})
	c := dial(t, p.Addr())
	got := rawResponse(t, c, 7, distcache.OpGet, []byte("s"))
	want := distcache.AppendMessage(nil, true, 7, distcache.OpGet, []byte{1})
	if !bytes.Equal(got, want) {
		t.Fatalf("GET under miss: % x, want % x", got, want)
	}
	// HAVE is not a GET: untouched.
	if got := rawResponse(t, c, 8, distcache.OpHave, []byte("s")); !bytes.Equal(got, distcache.AppendMessage(nil, true, 8, distcache.OpHave, []byte{0})) {
		t.Fatalf("HAVE under a miss fault: % x", got)
	}
	evs := txWithFault(t, rec, "nohit", 1)
	for _, e := range evs {
		if e.Kind == KindTransaction && e.Tx.Fault == "nohit" && (e.Tx.Result() != "miss" || e.Tx.ResponseSize != 1) {
			t.Errorf("faulted transaction: result %s, response %d bytes", e.Tx.Result(), e.Tx.ResponseSize)
		}
	}
	if fs := p.Stats().Faults; len(fs) != 1 || fs[0].Matched != 1 || fs[0].Applied != 1 {
		t.Errorf("fault counters %+v", fs)
	}
	// Removed: the same live connection gets the server's answer at once.
	if err := p.SetFaults(nil); err != nil {
		t.Fatal(err)
	}
	got = rawResponse(t, c, 9, distcache.OpGet, []byte("s"))
	if want := distcache.AppendMessage(nil, true, 9, distcache.OpGet, data); !bytes.Equal(got, want) {
		t.Fatalf("GET after removal: %d bytes, want the %d-byte hit", len(got), len(want))
	}
}

func TestFaultErrorAdd(t *testing.T) {
	rec := newRecorder()
	p, _ := faultProxy(t, rec, FaultSpec{Name: "full", Type: FaultError, Status: distcache.StatusAddExists, Probability: 1})
	c := dial(t, p.Addr())
	got := rawResponse(t, c, 3, distcache.OpAdd, distcache.AppendAddRequest(nil, 1000, []byte("new"), []byte("data")))
	if want := distcache.AppendMessage(nil, true, 3, distcache.OpAdd, []byte{101}); !bytes.Equal(got, want) {
		t.Fatalf("ADD under error exists: % x, want % x", got, want)
	}
	evs := txWithFault(t, rec, "full", 1)
	for _, e := range evs {
		if e.Kind == KindTransaction && e.Tx.Fault == "full" && e.Tx.Result() != "exists" {
			t.Errorf("result %s, want exists", e.Tx.Result())
		}
	}
	// GET is not an ADD: a hit as usual.
	if got := rawResponse(t, c, 4, distcache.OpGet, []byte("s")); len(got) != distcache.HeaderSize*2+3000 {
		t.Fatalf("GET under an ADD error fault: %d bytes", len(got))
	}
}

func TestFaultLatencyKeepsOrder(t *testing.T) {
	rec := newRecorder()
	const delay = 150 * time.Millisecond
	// Only the HAVE is held; the GET behind it must still come second.
	p, data := faultProxy(t, rec, FaultSpec{Name: "slow", Type: FaultLatency, Ops: []distcache.Op{distcache.OpHave}, Delay: delay, Probability: 1})
	c := dial(t, p.Addr())
	var req []byte
	req = distcache.AppendMessage(req, false, 1, distcache.OpHave, []byte("s"))
	req = distcache.AppendMessage(req, false, 2, distcache.OpGet, []byte("s"))
	start := time.Now()
	c.Write(req)
	r := distcache.NewReader(c, distcache.ServerToClient)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	m1, err := r.ReadMessage()
	if err != nil || m1.RequestUID != 1 {
		t.Fatalf("first response %+v %v", m1, err)
	}
	// A lower bound, which no slowness can break: the timer never fires
	// before its time.
	if el := time.Since(start); el < delay {
		t.Fatalf("held response came after %v, before the %v delay", el, delay)
	}
	m2, err := r.ReadMessage()
	if err != nil || m2.RequestUID != 2 || !bytes.Equal(m2.Payload, data) {
		t.Fatalf("second response %d %v", m2.RequestUID, err)
	}
	txWithFault(t, rec, "slow", 1)
}

func TestFaultDrop(t *testing.T) {
	needEpoll(t)
	for _, dir := range []FaultDirection{FaultRequests, FaultResponses} {
		t.Run(dir.String(), func(t *testing.T) {
			answer := distcache.AppendMessage(nil, true, 1, distcache.OpGet, []byte("hello"))
			f := startFake(t, func(c net.Conn, f *fakeServer) {
				buf := make([]byte, 4096)
				n, err := c.Read(buf)
				f.record(buf[:n])
				if err == nil {
					c.Write(answer)
				}
				io.Copy(io.Discard, c)
			})
			rec := newRecorder()
			p := startProxy(t, "tcp", f.addr, Options{Spares: -1}, rec)
			if err := p.SetFaults([]FaultSpec{{Name: "gone", Type: FaultDrop, Direction: dir, Probability: 1}}); err != nil {
				t.Fatal(err)
			}
			c := dial(t, p.Addr())
			c.Write(distcache.AppendMessage(nil, false, 1, distcache.OpGet, []byte("s")))
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			got, err := io.ReadAll(c)
			if err != nil || len(got) != 0 {
				t.Fatalf("client got %d bytes, %v; want a plain close", len(got), err)
			}
			evs := rec.waitKind(t, KindConnClosed, 1)
			if r := evs[0].Closed.Reason; r != "fault gone: drop" {
				t.Errorf("close reason %q", r)
			}
			tx := rec.ofKind(KindTransaction)
			if len(tx) != 1 || !tx[0].Tx.Unanswered || tx[0].Tx.Fault != "gone" {
				t.Errorf("want one unanswered transaction of fault gone: %s", describe(rec.all()))
			}
			<-f.ended
			sent := len(f.got()) > 0
			if sent != (dir == FaultResponses) {
				t.Errorf("direction %s: the server got the request: %v", dir, sent)
			}
		})
	}
}

func TestFaultReset(t *testing.T) {
	rec := newRecorder()
	p, _ := faultProxy(t, rec, FaultSpec{Name: "rst", Type: FaultReset, Direction: FaultResponses, Probability: 1})
	c := dial(t, p.Addr())
	c.Write(distcache.AppendMessage(nil, false, 1, distcache.OpGet, []byte("s")))
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := io.ReadAll(c)
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("client read: %v, want a connection reset", err)
	}
	evs := rec.waitKind(t, KindConnClosed, 1)
	if r := evs[0].Closed.Reason; r != "fault rst: reset" {
		t.Errorf("close reason %q", r)
	}
}

func TestFaultStall(t *testing.T) {
	rec := newRecorder()
	const delay = 150 * time.Millisecond
	p, _ := faultProxy(t, rec, FaultSpec{Name: "freeze", Type: FaultStall, Ops: []distcache.Op{distcache.OpHave}, Delay: delay, Probability: 1})
	c := dial(t, p.Addr())
	start := time.Now()
	if got := rawResponse(t, c, 1, distcache.OpHave, []byte("s")); !bytes.Equal(got, distcache.AppendMessage(nil, true, 1, distcache.OpHave, []byte{0})) {
		t.Fatalf("HAVE after a stall: % x", got)
	}
	if el := time.Since(start); el < delay {
		t.Fatalf("answer after %v, within the %v stall", el, delay)
	}
	txWithFault(t, rec, "freeze", 1)
}

func TestFaultBandwidth(t *testing.T) {
	rec := newRecorder()
	const rate = 100_000
	p, data := faultProxy(t, rec, FaultSpec{Name: "thin", Type: FaultBandwidth, Rate: rate, Probability: 1})
	c := dial(t, p.Addr())
	// A 30 KB hit: its frames, paced.
	big := bytes.Repeat([]byte("b"), 30000)
	if got := rawResponse(t, c, 1, distcache.OpAdd, distcache.AppendAddRequest(nil, 60000, []byte("big"), big)); got[len(got)-1] != 0 {
		t.Fatalf("ADD: % x", got)
	}
	start := time.Now()
	got := rawResponse(t, c, 2, distcache.OpGet, []byte("big"))
	want := distcache.AppendMessage(nil, true, 2, distcache.OpGet, big)
	if !bytes.Equal(got, want) {
		t.Fatalf("paced GET: %d bytes, want %d unchanged", len(got), len(want))
	}
	// The bucket holds 1/20 s of the rate (5,000 bytes); the rest waits.
	if el, min := time.Since(start), time.Duration(float64(len(want)-5000)/rate*float64(time.Second)); el < min {
		t.Fatalf("%d bytes at %d B/s took %v, less than %v", len(want), rate, el, min)
	}
	_ = data
}

func TestFaultCorrupt(t *testing.T) {
	needEpoll(t)
	clean := distcache.AppendMessage(nil, true, 5, distcache.OpHave, []byte{0})
	for _, c := range []struct {
		field HeaderField
		patch func(b []byte)
	}{
		{FieldVersion, func(b []byte) { copy(b, []byte{0, 0x10, 0, 0}) }},
		{FieldIsResponse, func(b []byte) { b[4] = 0 }},
		{FieldRequestUID, func(b []byte) { copy(b[5:9], []byte{0xff, 0xff, 0xff, 0xfa}) }},
		{FieldOp, func(b []byte) { b[10] = 0 }},
		{FieldComplete, func(b []byte) { b[11] = 2 }},
		{FieldDataLen, func(b []byte) { b[12], b[13] = 0xff, 0xff }},
	} {
		t.Run(c.field.String(), func(t *testing.T) {
			rec := newRecorder()
			p, _ := faultProxy(t, rec, FaultSpec{Name: "bad", Type: FaultCorrupt, Field: c.field, Acknowledged: true, Probability: 1})
			conn := dial(t, p.Addr())
			conn.Write(distcache.AppendMessage(nil, false, 5, distcache.OpHave, []byte("s")))
			got := make([]byte, len(clean))
			conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := io.ReadFull(conn, got); err != nil {
				t.Fatal(err)
			}
			want := bytes.Clone(clean)
			c.patch(want)
			if !bytes.Equal(got, want) {
				t.Fatalf("got % x, want % x", got, want)
			}
		})
	}
}

// missPattern runs n GETs of a hit session through a fresh connection
// and returns which ones missed.
func missPattern(t *testing.T, p *Proxy, n int) string {
	t.Helper()
	c := dial(t, p.Addr())
	var b strings.Builder
	for i := 1; i <= n; i++ {
		got := rawResponse(t, c, uint32(i), distcache.OpGet, []byte("s"))
		if len(got) == distcache.HeaderSize+1 {
			b.WriteByte('m')
		} else {
			b.WriteByte('h')
		}
	}
	c.Close()
	return b.String()
}

func TestFaultSeedRepeats(t *testing.T) {
	rec := newRecorder()
	half := FaultSpec{Name: "half", Type: FaultMiss, Probability: 0.5, Seed: 42}
	p, _ := faultProxy(t, rec, half)
	first := missPattern(t, p, 40)
	if !strings.Contains(first, "m") || !strings.Contains(first, "h") {
		t.Fatalf("probability 0.5 gave %s", first)
	}
	// Installed again: the same sequence from the same seed.
	p.SetFaults(nil)
	p.SetFaults([]FaultSpec{half})
	if again := missPattern(t, p, 40); again != first {
		t.Fatalf("same seed, different choices:\n%s\n%s", first, again)
	}
	// Adding another fault leaves this one's sequence where it is.
	p.SetFaults(nil)
	p.SetFaults([]FaultSpec{half})
	a := missPattern(t, p, 20)
	p.SetFaults([]FaultSpec{half, {Name: "other", Type: FaultLatency, Ops: []distcache.Op{distcache.OpRemove}, Delay: time.Millisecond, Probability: 1}})
	if b := missPattern(t, p, 20); a+b != first {
		t.Fatalf("adding a fault restarted the sequence:\n%s\n%s", first, a+b)
	}
	// Another seed, other choices.
	p.SetFaults([]FaultSpec{{Name: "half", Type: FaultMiss, Probability: 0.5, Seed: 43}})
	if other := missPattern(t, p, 40); other == first {
		t.Fatalf("seed 43 chose as seed 42 did: %s", other)
	}
}

func TestFaultBudgetAndFilter(t *testing.T) {
	rec := newRecorder()
	p, _ := faultProxy(t, rec, FaultSpec{Name: "three", Type: FaultMiss, Budget: 3, Probability: 1, Filter: `session_id == b"s"`})
	if got := missPattern(t, p, 5); got != "mmmhh" {
		t.Fatalf("budget 3: %s", got)
	}
	if fs := p.Stats().Faults; fs[0].Matched != 3 || fs[0].Applied != 3 {
		t.Fatalf("counters %+v", fs)
	}
	p.SetFaults([]FaultSpec{{Name: "other-id", Type: FaultMiss, Probability: 1, Filter: `session_id == b"t"`}})
	if got := missPattern(t, p, 2); got != "hh" {
		t.Fatalf("filter on another id: %s", got)
	}
}

// The benchmark's costly filter is accepted, and one term more is not:
// it stands for the most a fault filter may cost.
func TestCostlyFaultFilterIsAtTheLimit(t *testing.T) {
	if _, err := match.CompileFault(match.Spec{Expr: costlyFaultFilter}); err != nil {
		t.Fatal(err)
	}
	if _, err := match.CompileFault(match.Spec{Expr: costlyFaultFilter + ` || conn + 1u == 0u`}); err == nil || !strings.Contains(err.Error(), "a fault filter may cost at most") {
		t.Fatalf("one term more: %v", err)
	}
}
