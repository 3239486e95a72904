package proxy

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"

	"github.com/snoopd/snoopd/distcache"
)

// A fault that holds messages for an hour, and the ways it can end: what
// it holds must go at once, in order, with every byte as the server sent
// it. The waits below are far below the hour, so only a release passes.

// releaseWait bounds how long a released message may take to arrive in
// these tests: a bound for a slow machine, not a measure of speed.
const releaseWait = 20 * time.Second

// heldPipeline opens conns clients that each send, in one write, a HAVE
// and a GET of "s", and returns them, with what each got so far, once the
// proxy's first fault has been applied to want messages.
func heldPipeline(t *testing.T, p *Proxy, conns, want int) ([]net.Conn, [][]byte) {
	t.Helper()
	var cs []net.Conn
	for i := range conns {
		c := dial(t, p.Addr())
		var req []byte
		req = distcache.AppendMessage(req, false, uint32(2*i+1), distcache.OpHave, []byte("s"))
		req = distcache.AppendMessage(req, false, uint32(2*i+2), distcache.OpGet, []byte("s"))
		if _, err := c.Write(req); err != nil {
			t.Fatal(err)
		}
		cs = append(cs, c)
	}
	deadline := time.Now().Add(releaseWait)
	for {
		fs := p.Stats().Faults
		if len(fs) > 0 && fs[0].Applied >= int64(want) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the fault was applied to %+v messages, want %d", fs, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
	// What came through so far (a paced answer's first piece, the
	// answer before a held one), which must not be all of it.
	got := make([][]byte, len(cs))
	for i, c := range cs {
		c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		b := make([]byte, 64<<10)
		n, _ := io.ReadAtLeast(c, b, len(b))
		if got[i] = b[:n]; n >= answersLen(i, 3000) {
			t.Fatalf("client %d got all of its answers while the fault held them", i)
		}
	}
	return cs, got
}

// answers are the exact bytes of the answers to client i's HAVE and GET,
// in that order.
func answers(i int, data []byte) []byte {
	var want []byte
	want = distcache.AppendMessage(want, true, uint32(2*i+1), distcache.OpHave, []byte{0})
	return distcache.AppendMessage(want, true, uint32(2*i+2), distcache.OpGet, data)
}

func answersLen(i, dataLen int) int { return len(answers(i, make([]byte, dataLen))) }

// expectAnswers reads the rest of every client's answers after the part
// it got already, and checks them byte for byte.
func expectAnswers(t *testing.T, cs []net.Conn, got [][]byte, data []byte) {
	t.Helper()
	for i, c := range cs {
		want := answers(i, data)
		b := make([]byte, len(want))
		n := copy(b, got[i])
		c.SetReadDeadline(time.Now().Add(releaseWait))
		if k, err := io.ReadFull(c, b[n:]); err != nil {
			t.Fatalf("client %d: %d of %d bytes of its answers: %v", i, n+k, len(want), err)
		}
		if !bytes.Equal(b, want) {
			t.Fatalf("client %d: answers differ from the server's, in order", i)
		}
	}
}

func TestFaultEndReleasesHeldMessages(t *testing.T) {
	have, get := []distcache.Op{distcache.OpHave}, []distcache.Op{distcache.OpGet}
	// Each applies to one message per client: the HAVE (the GET waits
	// behind it) or the GET's answer.
	holds := []struct {
		name string
		f    FaultSpec
	}{
		{"stall", FaultSpec{Name: "hold", Type: FaultStall, Ops: have, Delay: time.Hour, Probability: 1}},
		{"latency", FaultSpec{Name: "hold", Type: FaultLatency, Ops: have, Delay: time.Hour, Probability: 1}},
		// 1 byte/s: the GET's 3,000 bytes would take most of an hour.
		{"bandwidth", FaultSpec{Name: "hold", Type: FaultBandwidth, Ops: get, Rate: 1, Probability: 1}},
	}
	ends := []struct {
		name string
		end  func(p *Proxy, f FaultSpec) error
	}{
		{"clear", func(p *Proxy, _ FaultSpec) error { return p.SetFaults(nil) }},
		{"remove", func(p *Proxy, _ FaultSpec) error {
			return p.SetFaults([]FaultSpec{{Name: "other", Type: FaultError, Status: distcache.StatusNotOK, Ops: []distcache.Op{distcache.OpAdd}, Probability: 1}})
		}},
		{"change", func(p *Proxy, f FaultSpec) error {
			// The same name with another spec is another fault: the
			// old one's holds go, the new one decides on what follows.
			f.Probability = 0
			return p.SetFaults([]FaultSpec{f})
		}},
	}
	for _, h := range holds {
		for _, e := range ends {
			t.Run(h.name+"/"+e.name, func(t *testing.T) {
				p, data := faultProxy(t, newRecorder(), h.f)
				const conns = 8
				cs, got := heldPipeline(t, p, conns, conns)
				if err := e.end(p, h.f); err != nil {
					t.Fatal(err)
				}
				expectAnswers(t, cs, got, data)
			})
		}
	}
}

// A fault whose --for runs out releases what it holds then, not when
// each hold would have ended.
func TestFaultDurationEndReleasesHeldMessages(t *testing.T) {
	have, get := []distcache.Op{distcache.OpHave}, []distcache.Op{distcache.OpGet}
	for _, f := range []FaultSpec{
		{Name: "hold", Type: FaultStall, Ops: have, Delay: time.Hour, Duration: 2 * time.Second, Probability: 1},
		{Name: "hold", Type: FaultLatency, Ops: have, Delay: time.Hour, Duration: 2 * time.Second, Probability: 1},
		{Name: "hold", Type: FaultBandwidth, Ops: get, Rate: 1, Duration: 2 * time.Second, Probability: 1},
	} {
		t.Run(f.Type.String(), func(t *testing.T) {
			p, data := faultProxy(t, newRecorder(), f)
			cs, got := heldPipeline(t, p, 4, 4)
			expectAnswers(t, cs, got, data)
		})
	}
}

// A fault kept unchanged beside a new one keeps holding.
func TestFaultKeptUnchangedKeepsHolding(t *testing.T) {
	f := FaultSpec{Name: "hold", Type: FaultStall, Ops: []distcache.Op{distcache.OpHave}, Delay: time.Hour, Probability: 1}
	p, _ := faultProxy(t, newRecorder(), f)
	cs, _ := heldPipeline(t, p, 2, 2)
	if err := p.SetFaults([]FaultSpec{f, {Name: "other", Type: FaultError, Status: distcache.StatusNotOK, Ops: []distcache.Op{distcache.OpAdd}, Probability: 1}}); err != nil {
		t.Fatal(err)
	}
	for i, c := range cs {
		c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		var b [1]byte
		if n, err := c.Read(b[:]); n > 0 || err == nil {
			t.Fatalf("client %d got an answer while its stall is still declared", i)
		}
	}
}

// A fault given an end that has passed (as the daemon restores one) is
// spent from the start.
func TestFaultWithPassedEndIsSpent(t *testing.T) {
	p, data := faultProxy(t, newRecorder(), FaultSpec{Name: "late", Type: FaultMiss, Probability: 1,
		Duration: time.Hour, Ends: time.Now().Add(-time.Minute)})
	c := dial(t, p.Addr())
	got := rawResponse(t, c, 1, distcache.OpGet, []byte("s"))
	if want := distcache.AppendMessage(nil, true, 1, distcache.OpGet, data); !bytes.Equal(got, want) {
		t.Fatalf("GET under a fault past its end: % x", got[:min(len(got), 16)])
	}
	if fs := p.Stats().Faults; fs[0].Matched != 0 {
		t.Fatalf("a fault past its end matched: %+v", fs)
	}
	// The same spec again is the same fault; its end is in the spec.
	p.SetFaults([]FaultSpec{{Name: "late", Type: FaultMiss, Probability: 1, Duration: time.Hour, Ends: time.Now().Add(time.Hour)}})
	got = rawResponse(t, c, 2, distcache.OpGet, []byte("s"))
	if want := distcache.AppendMessage(nil, true, 2, distcache.OpGet, []byte{1}); !bytes.Equal(got, want) {
		t.Fatalf("GET under the fault given a later end: % x", got[:min(len(got), 16)])
	}
}
