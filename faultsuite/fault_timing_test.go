package faultsuite

import (
	"bytes"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/snoopd/snoopd/distcache"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
)

// The faults' timing as users set it with snoopctl: a fault's --for ends
// it by itself, a stall holds both directions for its delay, and a
// bandwidth fault paces an answer at its rate, neither faster nor much
// slower. The bounds are the faults' own durations (lower bounds, which a
// busy machine cannot break) and containment bounds several times the
// expected time (a fault that never ends or never releases breaks them by
// far).

// TestFaultForEndsTheFaultByItself adds a latency fault with --for and
// checks it holds GETs while it lasts, is listed as ended after, and no
// longer holds anything.
func TestFaultForEndsTheFaultByItself(t *testing.T) {
	const delay, lasts = 400 * time.Millisecond, 2 * time.Second
	cache := startCache(t, "IP:127.0.0.1:0")
	d := startSnoopd(t, daemonOpts{})
	addr := strings.TrimPrefix(d.addProxy(t, "p", cache.addr), "IP:")
	added := time.Now()
	d.mustCtl(t, "fault", "add", "p", "slow", "--type", "latency", "--delay", delay.String(), "--for", lasts.String())
	if took, err := getThrough(t, addr); err != nil || took < delay {
		t.Fatalf("GET while the fault lasts: %v after %v, want held at least %v", err, took, delay)
	}
	// An ended fault stays listed, marked ended, with its counters.
	var list string
	for deadline := time.Now().Add(lasts + 20*time.Second); !strings.Contains(list, "ended"); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("fault list does not say the fault ended:\n%s", list)
		}
		list = d.mustCtl(t, "fault", "list", "p")
	}
	if at := time.Since(added); at < lasts {
		t.Fatalf("the fault ended %v after it was added with --for %v", at, lasts)
	}
	applied := faultApplied(d.proxy(t, "p"), "slow")
	// Unheld now: the fastest of a few GETs is well under the delay (one
	// GET may be slow on a busy machine; all of them held is the fault).
	fastest := time.Hour
	for range 5 {
		took, err := getThrough(t, addr)
		if err != nil {
			t.Fatal(err)
		}
		fastest = min(fastest, took)
	}
	if fastest >= delay {
		t.Fatalf("after --for ended the fault the fastest of 5 GETs took %v, the fault's delay", fastest)
	}
	if after := faultApplied(d.proxy(t, "p"), "slow"); after > applied {
		t.Fatalf("the ended fault was applied %d more times", after-applied)
	}
}

// faultApplied returns how often the named fault acted, from its counters.
func faultApplied(p *snoopv1.Proxy, name string) int64 {
	for _, f := range p.GetCounters().GetFaults() {
		if f.GetName() == name {
			return f.GetApplied()
		}
	}
	return 0
}

// TestStallHoldsBothDirections pipelines a GET and a HAVE through a proxy
// whose stall fault matches HAVE, in front of a server the test plays: the
// server has the GET and answers it only once the HAVE started the stall.
// Neither the HAVE (client to server) nor the GET's answer (server to
// client) may pass before the stall's delay is over, and both must pass
// after it.
func TestStallHoldsBothDirections(t *testing.T) {
	const delay = 1500 * time.Millisecond
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	d := startSnoopd(t, daemonOpts{})
	// No spares: the one connection the server accepts is the client's.
	addr := strings.TrimPrefix(d.addProxy(t, "p", "IP:"+l.Addr().String(), "--spares", "0"), "IP:")
	d.mustCtl(t, "fault", "add", "p", "freeze", "--type", "stall", "--delay", delay.String(), "--op", "have")

	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// The proxy may dial the server only once the client has sent.
	if _, err := c.Write(getRequest(1, "stall-get")); err != nil {
		t.Fatal(err)
	}
	l.(*net.TCPListener).SetDeadline(time.Now().Add(waitLimit))
	s, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	sr := distcache.NewReader(s, distcache.ClientToServer)
	s.SetReadDeadline(time.Now().Add(waitLimit))
	if m, err := sr.ReadMessage(); err != nil || m.Op != distcache.OpGet {
		t.Fatalf("server: the GET: %v %v", m, err)
	}

	// The stall cannot begin before the HAVE is sent: holds measured from
	// here are never longer than the real ones.
	sent := time.Now()
	if _, err := c.Write(distcache.AppendMessage(nil, false, 2, distcache.OpHave, []byte("stall-have"))); err != nil {
		t.Fatal(err)
	}
	d.waitProxy(t, "p", "the stall applied", func(p *snoopv1.Proxy) bool { return faultApplied(p, "freeze") == 1 })
	stalled := time.Now()
	// The server answers the GET while the stall is on.
	if _, err := s.Write(distcache.AppendMessage(nil, true, 1, distcache.OpGet, nil)); err != nil {
		t.Fatal(err)
	}

	haveAt := make(chan time.Time, 1)
	go func() {
		if m, err := sr.ReadMessage(); err == nil && m.Op == distcache.OpHave {
			haveAt <- time.Now()
		}
		close(haveAt)
	}()
	c.SetReadDeadline(time.Now().Add(waitLimit))
	cr := distcache.NewReader(c, distcache.ServerToClient)
	m, err := cr.ReadMessage()
	if err != nil || m.RequestUID != 1 {
		t.Fatalf("client: the GET's answer: %v %v", m, err)
	}
	answered := time.Now()
	at, ok := <-haveAt
	if !ok {
		t.Fatal("the server never got the HAVE")
	}
	if held := answered.Sub(sent); held < delay {
		t.Errorf("the GET's answer came %v after the HAVE was sent, inside the stall's %v", held, delay)
	}
	if held := at.Sub(sent); held < delay {
		t.Errorf("the HAVE reached the server %v after it was sent, inside the stall's %v", held, delay)
	}
	if late := answered.Sub(stalled); late > delay+10*time.Second {
		t.Errorf("the GET's answer came %v after the stall began: not released when it ended", late)
	}
}

// TestBandwidthPacesAtItsRate sends a 200 KB answer through a bandwidth
// fault of 100,000 bytes a second: it must take at least what the rate
// allows (minus the bucket's first 1/20 s), and at most twice that plus a
// second, so the pacing neither lets bytes through early nor starves them.
func TestBandwidthPacesAtItsRate(t *testing.T) {
	const rate = 100_000
	cache := startCache(t, "IP:127.0.0.1:0")
	d := startSnoopd(t, daemonOpts{})
	addr := strings.TrimPrefix(d.addProxy(t, "p", cache.addr), "IP:")
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(waitLimit))
	data := bytes.Repeat([]byte("b"), distcache.MaxMessageData-64)
	if _, err := c.Write(distcache.AppendMessage(nil, false, 1, distcache.OpAdd, distcache.AppendAddRequest(nil, 60000, []byte("big"), data))); err != nil {
		t.Fatal(err)
	}
	r := distcache.NewReader(c, distcache.ServerToClient)
	if _, err := r.ReadMessage(); err != nil {
		t.Fatal(err)
	}
	d.mustCtl(t, "fault", "add", "p", "thin", "--type", "bandwidth", "--rate", "100000")
	// Several GETs pipelined: one paced stream of about 200 KB.
	const gets = 6
	var req []byte
	for i := range gets {
		req = append(req, getRequest(uint32(2+i), "big")...)
	}
	start := time.Now()
	if _, err := c.Write(req); err != nil {
		t.Fatal(err)
	}
	total := 0
	for range gets {
		m, err := r.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		total += distcache.HeaderSize*((len(m.Payload)+distcache.MaxFrameData-1)/distcache.MaxFrameData) + len(m.Payload)
	}
	took := time.Since(start)
	ideal := time.Duration(float64(total) / rate * float64(time.Second))
	if low := time.Duration(float64(total-rate/20) / rate * float64(time.Second)); took < low {
		t.Errorf("%d bytes at %d B/s took %v, faster than the rate allows (%v)", total, rate, took, low)
	}
	if high := 2*ideal + time.Second; took > high {
		t.Errorf("%d bytes at %d B/s took %v, more than twice the %v the rate gives", total, rate, took, ideal)
	}
}
