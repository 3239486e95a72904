package sniff

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"go.uber.org/goleak"

	"github.com/snoopd/snoopd/distcache"
	"github.com/snoopd/snoopd/sniff/snifftest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	testClient = "10.0.0.1:40000"
	testServer = "10.0.0.2:9001"
)

func portServer(port uint16) Options { return Options{Server: Server{Port: port}} }

// traffic returns a request and a response of distcache bytes: an ADD of
// an 5000-byte session (three frames) and its answer.
func traffic() (req, resp []byte) {
	id := []byte("session-1")
	req = distcache.AppendMessage(nil, false, 7, distcache.OpAdd,
		distcache.AppendAddRequest(nil, 60000, id, bytes.Repeat([]byte{0xab}, 5000)))
	resp = distcache.AppendMessage(nil, true, 7, distcache.OpAdd, []byte{byte(distcache.StatusOK)})
	return req, resp
}

func TestWholeConnectionIsHandedOnInOrderAndClosedByWhoFinishedFirst(t *testing.T) {
	req, resp := traffic()
	for _, link := range []layers.LinkType{layers.LinkTypeEthernet, layers.LinkTypeLinuxSLL, layers.LinkTypeLinuxSLL2,
		layers.LinkTypeNull, layers.LinkTypeLoop, layers.LinkTypeRaw} {
		for _, pair := range [][2]string{{testClient, testServer}, {"[2001:db8::1]:40000", "[2001:db8::2]:9001"}} {
			t.Run(fmt.Sprintf("%s/%s", link, pair[0]), func(t *testing.T) {
				c := snifftest.NewConversation(t, link, pair[0], pair[1])
				c.Handshake()
				c.Send(true, req, 1448)
				c.Send(false, resp, 1448)
				c.CloseBoth()
				rec := &recorder{}
				s := New(rec, portServer(9001))
				feed(s, c)
				if len(rec.conns) != 1 {
					t.Fatalf("%d connections, want 1 (log %q)", len(rec.conns), rec.log)
				}
				conn := rec.conns[0]
				if conn.midStream || conn.client != pair[0] {
					t.Errorf("opened %q midStream %v, want %q from its start", conn.client, conn.midStream, pair[0])
				}
				if got := conn.streams[0].String(); got != string(req) {
					t.Errorf("client stream %d bytes, want the %d of the request", len(got), len(req))
				}
				if got := conn.streams[1].String(); got != string(resp) {
					t.Errorf("server stream %q, want %q", got, resp)
				}
				if conn.closed != "client closed" {
					t.Errorf("closed %q, want client closed", conn.closed)
				}
				st := s.Stats()
				if st.Conns != 1 || st.Gaps != 0 || st.Malformed != 0 || st.Other != 0 || st.Packets != int64(len(c.Packets)) {
					t.Errorf("stats %+v", st)
				}
			})
		}
	}
}

// permuted feeds the conversation with its data packets reordered by
// order (indexes into the packets after the handshake), and returns the
// recorder.
func feedInOrder(t *testing.T, c *snifftest.Conversation, order []int, opts Options) (*recorder, *Sniffer) {
	t.Helper()
	rec := &recorder{}
	s := New(rec, opts)
	for _, i := range order {
		p := c.Packets[i]
		s.Packet(p.Data, p.CI, c.Link)
	}
	return rec, s
}

func TestReorderedAndRepeatedSegmentsAreHandedOnOnceInOrder(t *testing.T) {
	req, resp := traffic()
	c := snifftest.NewConversation(t, layers.LinkTypeEthernet, testClient, testServer)
	c.Handshake()
	c.Send(true, req, 1000) // packets 3..8
	c.Send(false, resp, 1000)
	c.CloseBoth()
	order := []int{0, 1, 2, 5, 3, 3, 8, 4, 7, 6, 5, 4, 8}
	for i := 9; i < len(c.Packets); i++ {
		order = append(order, i)
	}
	rec, s := feedInOrder(t, c, order, portServer(9001))
	conn := rec.conns[0]
	if got := conn.streams[0].String(); got != string(req) {
		t.Fatalf("client stream differs from the request (%d bytes, want %d)", len(got), len(req))
	}
	if conn.closed != "client closed" || len(rec.gaps) != 0 {
		t.Fatalf("closed %q with gaps %v", conn.closed, rec.gaps)
	}
	// Again: 3, 4 and 5 whole (3000 bytes), and the request's last 59.
	if st := s.Stats(); st.Retransmitted != 3059 || st.Conflicts != 0 {
		t.Fatalf("retransmitted %d bytes with %d conflicts, want 3059 and 0", st.Retransmitted, st.Conflicts)
	}
}

func TestOverlapKeepsTheFirstCopyAndCountsADifference(t *testing.T) {
	c := snifftest.NewConversation(t, layers.LinkTypeEthernet, testClient, testServer)
	c.Handshake()
	base := c.CSeq
	c.Add(true, snifftest.Flags{ACK: true}, []byte("aaaa")) // 3: offsets 0..3, arrives last
	c.Add(true, snifftest.Flags{ACK: true}, []byte("bbbb")) // 4: offsets 4..7
	c.CSeq = base + 2
	c.Add(true, snifftest.Flags{ACK: true}, []byte("XXYYZZ")) // 5: offsets 2..7, after 4
	c.CSeq = base + 8
	c.Add(true, snifftest.Flags{ACK: true}, []byte("zz")) // 6: offsets 8..9
	c.CSeq = base + 8
	c.Add(true, snifftest.Flags{ACK: true}, []byte("zz")) // 7: the same again
	rec, s := feedInOrder(t, c, []int{0, 1, 2, 4, 5, 3, 6, 7}, portServer(9001))
	// 5's YYZZ lose to 4's bbbb, 3's aa at 2..3 to 5's XX: two differing
	// copies; 7 is a copy that agrees.
	if got := rec.conns[0].streams[0].String(); got != "aaXXbbbbzz" {
		t.Fatalf("stream %q, want aaXXbbbbzz: the first copy of each byte", got)
	}
	if st := s.Stats(); st.Conflicts != 2 {
		t.Fatalf("%d conflicts, want 2", st.Conflicts)
	}
}

func TestLostSegmentBecomesAGapOnceTheBufferBoundIsPassed(t *testing.T) {
	req, resp := traffic()
	c := snifftest.NewConversation(t, layers.LinkTypeEthernet, testClient, testServer)
	c.Handshake()
	c.Send(true, req, 1000) // 3..8; 4 is lost
	c.Send(false, resp, 1000)
	order := []int{0, 1, 2, 3}
	for i := 5; i < len(c.Packets); i++ {
		order = append(order, i)
	}
	opts := portServer(9001)
	opts.MaxHeld = 2500 // two held segments fit, the third does not
	rec, s := feedInOrder(t, c, order, opts)
	want := []Gap{{Dir: distcache.ClientToServer, First: 1000, Last: 1999}}
	if !slices.Equal(rec.gaps, want) {
		t.Fatalf("gaps %v, want %v", rec.gaps, want)
	}
	conn := rec.conns[0]
	if got, w := conn.streams[0].String(), string(req[:1000])+"|"+string(req[2000:]); got != w {
		t.Fatalf("client stream of %d bytes, want the request without bytes 1000..1999, a resync between", len(got))
	}
	if conn.streams[1].String() != string(resp) {
		t.Fatal("the response did not come through")
	}
	if st := s.Stats(); st.Gaps != 1 || st.BytesSkipped != 1000 {
		t.Fatalf("stats %+v", st)
	}
}

func TestHoleLeftAtTheEndOfTheConnectionIsAGapBeforeTheClose(t *testing.T) {
	c := snifftest.NewConversation(t, layers.LinkTypeEthernet, testClient, testServer)
	c.Handshake()
	c.Send(true, []byte("0123456789"), 4) // 3: 0123, 4: 4567 (lost), 5: 89
	c.CloseBoth()
	rec, _ := feedInOrder(t, c, []int{0, 1, 2, 3, 5, 6, 7, 8}, portServer(9001))
	if want := []Gap{{Dir: distcache.ClientToServer, First: 4, Last: 7}}; !slices.Equal(rec.gaps, want) {
		t.Fatalf("gaps %v, want %v", rec.gaps, want)
	}
	if got := rec.conns[0].streams[0].String(); got != "0123|89" {
		t.Fatalf("stream %q", got)
	}
	if !slices.Equal(rec.log, []string{"open " + testClient, "data client->server", "gap", "data client->server", "close client closed"}) {
		t.Fatalf("log %q", rec.log)
	}
}

func TestSegmentCutByTheSnapLengthIsAGapAtOnce(t *testing.T) {
	c := snifftest.NewConversation(t, layers.LinkTypeEthernet, testClient, testServer)
	c.Handshake()
	c.Send(true, []byte("0123456789"), 10)
	c.Send(true, []byte("abc"), 10)
	cut := &c.Packets[3]
	cut.Data = cut.Data[:len(cut.Data)-6] // the last 6 payload bytes not captured
	cut.CI.CaptureLength = len(cut.Data)
	rec, s := feedInOrder(t, c, []int{0, 1, 2, 3, 4}, portServer(9001))
	if want := []Gap{{Dir: distcache.ClientToServer, First: 4, Last: 9}}; !slices.Equal(rec.gaps, want) {
		t.Fatalf("gaps %v, want %v", rec.gaps, want)
	}
	if got := rec.conns[0].streams[0].String(); got != "0123|abc" {
		t.Fatalf("stream %q", got)
	}
	if st := s.Stats(); st.Truncated != 1 {
		t.Fatalf("%d truncated, want 1", st.Truncated)
	}
}

func TestConnectionWithoutItsSYNIsPickedUpMidStream(t *testing.T) {
	c := snifftest.NewConversation(t, layers.LinkTypeEthernet, testClient, testServer)
	c.Handshake()
	c.Send(true, []byte("lost-before-capture"), 100)
	c.Send(true, []byte("seen"), 100)
	c.Send(false, []byte("answer"), 100)
	rec, s := feedInOrder(t, c, []int{2, 4, 5}, portServer(9001))
	s.Finish("end of capture")
	if len(rec.conns) != 1 || !rec.conns[0].midStream {
		t.Fatalf("conns %+v, want one mid-stream", rec.conns)
	}
	conn := rec.conns[0]
	if conn.streams[0].String() != "seen" || conn.streams[1].String() != "answer" || conn.closed != "end of capture" {
		t.Fatalf("streams %q %q closed %q", conn.streams[0].String(), conn.streams[1].String(), conn.closed)
	}
}

func TestMissedSYNACKStillStartsTheServerStreamAtItsFirstByte(t *testing.T) {
	c := snifftest.NewConversation(t, layers.LinkTypeEthernet, testClient, testServer)
	c.Handshake()
	c.Send(true, []byte("req"), 100)
	c.Send(false, []byte("ab"), 1)                                   // 4: "a" lost, 5: "b"
	rec, _ := feedInOrder(t, c, []int{0, 2, 3, 5}, portServer(9001)) // no SYN-ACK
	s := rec.conns[0]
	if s.midStream || s.streams[1].String() != "" {
		t.Fatalf("midStream %v, server stream %q: the b must wait for the a", s.midStream, s.streams[1].String())
	}
}

func TestResetClosesWithTheSideThatReset(t *testing.T) {
	c := snifftest.NewConversation(t, layers.LinkTypeEthernet, testClient, testServer)
	c.Handshake()
	c.Send(true, []byte("req"), 100)
	c.Add(false, snifftest.Flags{RST: true, ACK: true}, nil)
	c.Add(true, snifftest.Flags{ACK: true}, []byte("late")) // after the reset: starts nothing
	rec, _ := feedInOrder(t, c, []int{0, 1, 2, 3, 4, 5}, portServer(9001))
	if len(rec.conns) != 1 || rec.conns[0].closed != "server reset" {
		t.Fatalf("log %q", rec.log)
	}
}

func TestStrayACKsAfterACloseStartNothing(t *testing.T) {
	c := snifftest.NewConversation(t, layers.LinkTypeEthernet, testClient, testServer)
	c.Handshake()
	c.CloseBoth()
	c.Add(false, snifftest.Flags{FIN: true, ACK: true}, nil) // a retransmitted FIN
	rec, s := feedInOrder(t, c, []int{0, 1, 2, 3, 4, 5, 6, 5}, portServer(9001))
	s.Finish("end of capture")
	if len(rec.conns) != 1 || rec.conns[0].closed != "client closed" {
		t.Fatalf("log %q", rec.log)
	}
}

func TestClientReconnectingOnTheSamePortIsANewConnection(t *testing.T) {
	c := snifftest.NewConversation(t, layers.LinkTypeEthernet, testClient, testServer)
	c.Handshake()
	c.Send(true, []byte("one"), 100)
	c.CSeq += 100000
	c.Handshake()
	c.Send(true, []byte("two"), 100)
	rec, s := feedInOrder(t, c, []int{0, 1, 2, 3, 4, 5, 6, 7}, portServer(9001))
	s.Finish("end of capture")
	if len(rec.conns) != 2 || rec.conns[0].closed != "client reconnected" ||
		rec.conns[0].streams[0].String() != "one" || rec.conns[1].streams[0].String() != "two" {
		t.Fatalf("log %q", rec.log)
	}
}

func TestSequenceNumbersWrapAround(t *testing.T) {
	c := snifftest.NewConversation(t, layers.LinkTypeEthernet, testClient, testServer)
	c.CSeq = 0xffffffff - 5
	c.Handshake()
	c.Send(true, []byte("0123456789abcdef"), 4)
	rec, s := feedInOrder(t, c, []int{0, 1, 2, 4, 3, 6, 5}, portServer(9001))
	s.Finish("end of capture")
	if got := rec.conns[0].streams[0].String(); got != "0123456789abcdef" {
		t.Fatalf("stream %q across the wrap", got)
	}
}

func TestOtherTrafficIsCountedAndIgnored(t *testing.T) {
	rec := &recorder{}
	srv, err := ParseServer(context.Background(), "IP:10.0.0.2:9001")
	if err != nil {
		t.Fatal(err)
	}
	s := New(rec, Options{Server: srv})
	at := gopacket.CaptureInfo{Timestamp: time.Unix(1, 0)}
	for _, dst := range []string{"10.0.0.3:9001", "10.0.0.2:9002"} {
		p := snifftest.Frame(t, layers.LinkTypeEthernet, netip.MustParseAddrPort(testClient), netip.MustParseAddrPort(dst), 1, 0, snifftest.Flags{SYN: true}, nil)
		s.Packet(p, at, layers.LinkTypeEthernet)
	}
	s.Packet([]byte{1, 2, 3}, at, layers.LinkTypeEthernet)
	arp := make([]byte, 60)
	arp[12], arp[13] = 0x08, 0x06
	s.Packet(arp, at, layers.LinkTypeEthernet)
	if st := s.Stats(); st.Other != 3 || st.Malformed != 1 || st.Conns != 0 || len(rec.conns) != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestIdleAndSurplusConnectionsAreEvicted(t *testing.T) {
	rec := &recorder{}
	opts := portServer(9001)
	opts.MaxConns, opts.IdleTimeout = 2, time.Minute
	s := New(rec, opts)
	start := time.Unix(1000, 0)
	for i, at := range []time.Duration{0, time.Second, 2 * time.Second, 10 * time.Minute} {
		client := netip.AddrPortFrom(netip.MustParseAddr("10.0.0.1"), uint16(40000+i))
		p := snifftest.Frame(t, layers.LinkTypeEthernet, client, netip.MustParseAddrPort(testServer), 1, 0, snifftest.Flags{SYN: true}, nil)
		s.Packet(p, gopacket.CaptureInfo{Timestamp: start.Add(at)}, layers.LinkTypeEthernet)
	}
	want := []string{"evicted: too many connections", "idle in the capture", "idle in the capture", ""}
	for i, c := range rec.conns {
		if c.closed != want[i] {
			t.Errorf("connection %d closed %q, want %q", i, c.closed, want[i])
		}
	}
	if st := s.Stats(); st.Evicted != 3 || st.Conns != 4 {
		t.Fatalf("stats %+v", st)
	}
}

func TestHeldBytesOfAllConnectionsAreBounded(t *testing.T) {
	rec := &recorder{}
	opts := portServer(9001)
	opts.MaxHeldTotal = 3000
	s := New(rec, opts)
	var convs []*snifftest.Conversation
	for i := range 3 {
		c := snifftest.NewConversation(t, layers.LinkTypeEthernet, fmt.Sprintf("10.0.0.1:%d", 40000+i), testServer)
		c.Handshake()
		c.Send(true, bytes.Repeat([]byte{'x'}, 3000), 1000) // 3: lost, 4 and 5 held
		convs = append(convs, c)
	}
	for _, c := range convs {
		for _, i := range []int{0, 1, 2, 4, 5} {
			s.Packet(c.Packets[i].Data, c.Packets[i].CI, c.Link)
		}
		if s.held > opts.MaxHeldTotal {
			t.Fatalf("%d bytes held, bound %d", s.held, opts.MaxHeldTotal)
		}
	}
	if len(rec.gaps) != 2 {
		t.Fatalf("gaps %v, want the two oldest connections' holes given up", rec.gaps)
	}
}

func TestParseServer(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		in   string
		want string
		ok   bool
	}{
		{"9001", "port 9001", true},
		{"IP:10.0.0.5:9001", "10.0.0.5:9001", true},
		{"10.0.0.5:9001", "10.0.0.5:9001", true},
		{"[2001:db8::5]:9001", "[2001:db8::5]:9001", true},
		{"IP:9001", "port 9001", true},
		{"0", "", false},
		{"UNIX:/run/dc.sock", "", false},
		{"10.0.0.5:0", "", false},
		{"nonsense", "", false},
	} {
		srv, err := ParseServer(ctx, tc.in)
		if (err == nil) != tc.ok || (tc.ok && srv.String() != tc.want) {
			t.Errorf("ParseServer(%q) = %q, %v; want %q ok %v", tc.in, srv.String(), err, tc.want, tc.ok)
		}
	}
	srv, _ := ParseServer(ctx, "IP:[::ffff:10.0.0.5]:9001")
	if !srv.Is(netip.MustParseAddrPort("10.0.0.5:9001")) {
		t.Error("an IPv4-mapped server address does not match its IPv4 packets")
	}
}

func TestAcknowledgedHoleIsAGapBeforeTheAnswer(t *testing.T) {
	c := snifftest.NewConversation(t, layers.LinkTypeEthernet, testClient, testServer)
	c.Handshake()
	c.Send(true, []byte("0123456789"), 4) // 3: 0123, 4: 4567 (lost), 5: 89
	c.Send(false, []byte("answer"), 100)  // 6: acknowledges all ten
	rec, s := feedInOrder(t, c, []int{0, 1, 2, 3, 5, 6}, portServer(9001))
	s.Finish("end of capture")
	if want := []Gap{{Dir: distcache.ClientToServer, First: 4, Last: 7}}; !slices.Equal(rec.gaps, want) {
		t.Fatalf("gaps %v, want %v", rec.gaps, want)
	}
	conn := rec.conns[0]
	if conn.streams[0].String() != "0123|89" || conn.streams[1].String() != "answer" {
		t.Fatalf("streams %q %q", conn.streams[0].String(), conn.streams[1].String())
	}
	// The gap and the request's last bytes came before the answer.
	if !slices.Equal(rec.log, []string{"open " + testClient, "data client->server", "gap", "data client->server", "data server->client", "close end of capture"}) {
		t.Fatalf("log %q", rec.log)
	}
}

func TestEvictedConnectionThatGoesOnIsPickedUpAgain(t *testing.T) {
	rec := &recorder{}
	opts := portServer(9001)
	opts.IdleTimeout = time.Minute
	s := New(rec, opts)
	c := snifftest.NewConversation(t, layers.LinkTypeEthernet, testClient, testServer)
	c.Handshake()
	c.Send(true, []byte("one"), 100)
	c.At = c.At.Add(90 * time.Second) // closed at 60 s idle; the ended would be ignored till 180 s
	c.Send(true, []byte("two"), 100)
	feed(s, c)
	s.Finish("end of capture")
	if len(rec.conns) != 2 || rec.conns[0].closed != "idle in the capture" || !rec.conns[1].midStream ||
		rec.conns[1].streams[0].String() != "two" {
		t.Fatalf("log %q", rec.log)
	}
}
