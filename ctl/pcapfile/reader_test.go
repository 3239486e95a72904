package pcapfile

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/gopacket/gopacket/layers"
	"go.uber.org/goleak"

	"github.com/snoopd/snoopd/distcache"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
	"github.com/snoopd/snoopd/sniff"
	"github.com/snoopd/snoopd/sniff/snifftest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// exchange is one request and its answer as distcache puts them on the
// wire, with the transaction a proxy would report for them.
type exchange struct {
	req, resp []byte
	want      string // "op uid id result reqsize respsize"
}

// session is a client's session with the cache: an ADD of 3000 bytes of
// session data (two frames), a GET that finds it, a GET that misses, a
// REMOVE and a HAVE that no longer finds it.
func session() []exchange {
	data := bytes.Repeat([]byte("session-data."), 3000/13+1)[:3000]
	add := distcache.AppendAddRequest(nil, 300000, []byte("s1"), data)
	msg := func(resp bool, uid uint32, op distcache.Op, p []byte) []byte {
		return distcache.AppendMessage(nil, resp, uid, op, p)
	}
	status := func(s distcache.Status) []byte { return []byte{byte(s)} }
	return []exchange{
		{msg(false, 1, distcache.OpAdd, add), msg(true, 1, distcache.OpAdd, status(distcache.StatusOK)), fmt.Sprintf("add 1 s1 ok %d 1", len(add))},
		{msg(false, 2, distcache.OpGet, []byte("s1")), msg(true, 2, distcache.OpGet, data), "get 2 s1 hit 2 3000"},
		{msg(false, 3, distcache.OpGet, []byte("nope")), msg(true, 3, distcache.OpGet, status(distcache.StatusNotOK)), "get 3 nope miss 4 1"},
		{msg(false, 4, distcache.OpRemove, []byte("s1")), msg(true, 4, distcache.OpRemove, status(distcache.StatusOK)), "remove 4 s1 ok 2 1"},
		{msg(false, 5, distcache.OpHave, []byte("s1")), msg(true, 5, distcache.OpHave, status(distcache.StatusNotOK)), "have 5 s1 notok 2 1"},
	}
}

// converse appends a whole connection: handshake, each exchange in
// segments of mss bytes, and both FINs.
func converse(c *snifftest.Conversation, ex []exchange, mss int) {
	c.Handshake()
	for _, e := range ex {
		c.Send(true, e.req, mss)
		c.Send(false, e.resp, mss)
	}
	c.CloseBoth()
}

// readAll reads a capture to its end and returns its events, one line
// each: "opened CLIENT", "tx OP UID ID RESULT REQ RESP", "gap DIR FIRST
// LAST MISSING", "closed REASON".
func readAll(t *testing.T, file []byte, server string) ([]string, *Reader, error) {
	t.Helper()
	srv, err := sniff.ParseServer(t.Context(), server)
	if err != nil {
		t.Fatal(err)
	}
	r, err := NewReader(bytes.NewReader(file), Options{Server: srv, Name: "cap.pcap"})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for {
		resp, err := r.Next()
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = nil
			}
			return out, r, err
		}
		out = append(out, line(resp.GetEvent()))
	}
}

func line(ev *snoopv1.Event) string {
	if ev.GetProxy() != "cap.pcap" {
		return "wrong proxy " + ev.GetProxy()
	}
	switch ev.GetKind() {
	case snoopv1.EventKind_EVENT_KIND_CONNECTION_OPENED:
		return "opened " + ev.GetClient()
	case snoopv1.EventKind_EVENT_KIND_TRANSACTION:
		tx := ev.GetTransaction()
		return fmt.Sprintf("tx %s %d %s %s %d %d", strings.ToLower(strings.TrimPrefix(tx.GetOp().String(), "OP_")),
			tx.GetRequestUid(), tx.GetSessionId(), tx.GetResult(), tx.GetRequestSize(), tx.GetResponseSize())
	case snoopv1.EventKind_EVENT_KIND_CAPTURE_GAP:
		g := ev.GetCaptureGap()
		return fmt.Sprintf("gap %s %d %d %d", g.GetDirection(), g.GetFirstOffset(), g.GetLastOffset(), g.GetBytesMissing())
	case snoopv1.EventKind_EVENT_KIND_CONNECTION_CLOSED:
		return "closed " + ev.GetClosed().GetReason()
	case snoopv1.EventKind_EVENT_KIND_PROTOCOL_ERROR:
		return "protocol-error " + ev.GetProtocolError().GetMessage()
	}
	return ev.GetKind().String()
}

func wantSession(client string, ex []exchange, closed string) []string {
	out := []string{"opened " + client}
	for _, e := range ex {
		out = append(out, "tx "+e.want)
	}
	return append(out, "closed "+closed)
}

func check(t *testing.T, got, want []string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Fatalf("events\n  %s\nwant\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
}

func TestEveryLinkTypeAndFormatGivesTheProxysTransactions(t *testing.T) {
	ex := session()
	links := []layers.LinkType{layers.LinkTypeEthernet, layers.LinkTypeLinuxSLL, layers.LinkTypeLinuxSLL2,
		layers.LinkTypeNull, layers.LinkTypeLoop, layers.LinkTypeRaw}
	for _, link := range links {
		for _, pair := range [][2]string{{"10.1.0.1:40001", "10.1.0.2:9001"}, {"[fd00::1]:40001", "[fd00::2]:9001"}} {
			for _, ng := range []bool{false, true} {
				t.Run(fmt.Sprintf("%s/%s/pcapng=%v", link, pair[1], ng), func(t *testing.T) {
					c := snifftest.NewConversation(t, link, pair[0], pair[1])
					converse(c, ex, 1448)
					var file bytes.Buffer
					if ng {
						snifftest.WritePcapNG(t, &file, link, c.Packets)
					} else {
						snifftest.WritePcap(t, &file, link, c.Packets)
					}
					got, r, err := readAll(t, file.Bytes(), pair[1])
					if err != nil {
						t.Fatal(err)
					}
					check(t, got, wantSession(pair[0], ex, "client closed"))
					if st := r.Stats(); st.Packets != int64(len(c.Packets)) || st.Conns != 1 || st.Gaps != 0 {
						t.Fatalf("stats %+v", st)
					}
				})
			}
		}
	}
}

func TestDisorderedSegmentsGiveTheSameTransactions(t *testing.T) {
	ex := session()
	c := snifftest.NewConversation(t, layers.LinkTypeEthernet, "10.1.0.1:40001", "10.1.0.2:9001")
	converse(c, ex, 500)
	n := len(c.Packets)
	// Swap neighbours of one direction (a capture keeps what a side sent
	// after what it answers) and send every third packet twice.
	var order []snifftest.Packet
	for i := 0; i < n; i++ {
		if i+1 < n-3 && i%2 == 1 && c.Packets[i].FromClient == c.Packets[i+1].FromClient {
			order = append(order, c.Packets[i+1], c.Packets[i])
			i++
			continue
		}
		order = append(order, c.Packets[i])
		if i%3 == 0 {
			order = append(order, c.Packets[i])
		}
	}
	var file bytes.Buffer
	snifftest.WritePcap(t, &file, c.Link, order)
	got, r, err := readAll(t, file.Bytes(), "9001")
	if err != nil {
		t.Fatal(err)
	}
	check(t, got, wantSession("10.1.0.1:40001", ex, "client closed"))
	if st := r.Stats(); st.Retransmitted == 0 || st.Gaps != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestOverlappingCopiesGiveTheSameTransactions(t *testing.T) {
	ex := session()[:2]
	c := snifftest.NewConversation(t, layers.LinkTypeEthernet, "10.1.0.1:40001", "10.1.0.2:9001")
	c.Handshake()
	// The ADD request in 1000-byte segments, each sent again as a copy
	// that starts half way into it and runs 500 bytes into the next.
	req := ex[0].req
	base := c.CSeq
	for off := 0; off < len(req); off += 1000 {
		c.CSeq = base + uint32(off)
		c.Send(true, req[off:min(off+1000, len(req))], 1000)
		if half := off + 500; half < len(req) {
			c.CSeq = base + uint32(half)
			c.Send(true, req[half:min(half+1000, len(req))], 1000)
		}
	}
	c.CSeq = base + uint32(len(req))
	c.Send(false, ex[0].resp, 1448)
	c.Send(true, ex[1].req, 1448)
	c.Send(false, ex[1].resp, 1448)
	c.CloseBoth()
	var file bytes.Buffer
	snifftest.WritePcapNG(t, &file, c.Link, c.Packets)
	got, r, err := readAll(t, file.Bytes(), "IP:10.1.0.2:9001")
	if err != nil {
		t.Fatal(err)
	}
	check(t, got, wantSession("10.1.0.1:40001", ex, "client closed"))
	if st := r.Stats(); st.Conflicts != 0 || st.Retransmitted == 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestLostSegmentIsACaptureGapAndNoWrongTransaction(t *testing.T) {
	ex := session()
	c := snifftest.NewConversation(t, layers.LinkTypeEthernet, "10.1.0.1:40001", "10.1.0.2:9001")
	converse(c, ex, 1000)
	// Packet 4 is the ADD request's second segment, bytes 1000..1999.
	var kept []snifftest.Packet
	for i, p := range c.Packets {
		if i != 4 {
			kept = append(kept, p)
		}
	}
	var file bytes.Buffer
	snifftest.WritePcap(t, &file, c.Link, kept)
	got, r, err := readAll(t, file.Bytes(), "9001")
	if err != nil {
		t.Fatal(err)
	}
	// The ADD is lost with its middle; its answer pairs with nothing; the
	// rest of the session is read as it was.
	want := []string{"opened 10.1.0.1:40001", "gap client->server 1000 1999 1000", "tx add 1  orphan 0 1"}
	for _, e := range ex[1:] {
		want = append(want, "tx "+e.want)
	}
	want = append(want, "closed client closed")
	check(t, got, want)
	if st := r.Stats(); st.Gaps != 1 || st.BytesSkipped != 1000 {
		t.Fatalf("stats %+v", st)
	}
}

func TestSnapLengthCutsAreCaptureGaps(t *testing.T) {
	ex := session()
	c := snifftest.NewConversation(t, layers.LinkTypeLinuxSLL2, "10.1.0.1:40001", "10.1.0.2:9001")
	converse(c, ex, 1448)
	// A snap length of 200 bytes: the ADD's segments (and the GET hit's)
	// lose their tails; the small messages fit whole.
	for i := range c.Packets {
		c.Truncate(i, 200)
	}
	var file bytes.Buffer
	snifftest.WritePcap(t, &file, c.Link, c.Packets)
	got, r, err := readAll(t, file.Bytes(), "9001")
	if err != nil {
		t.Fatal(err)
	}
	// Every transaction is either the one that happened or one the
	// observer could not pair (orphan, unanswered): none is made up of
	// what was cut. The answer after a cut GET hit may be passed over
	// (the hunt cannot tell it from the hit's data), so the last two,
	// behind whole short answers, are what must come through.
	for _, g := range got {
		if !strings.HasPrefix(g, "tx ") || strings.Contains(g, " orphan ") || strings.Contains(g, " unanswered ") {
			continue
		}
		if !slices.ContainsFunc(ex, func(e exchange) bool { return "tx "+e.want == g }) {
			t.Errorf("a transaction made of cut segments: %s", g)
		}
	}
	for _, e := range ex[3:] {
		if !slices.Contains(got, "tx "+e.want) {
			t.Errorf("missing %q in\n  %s", e.want, strings.Join(got, "\n  "))
		}
	}
	if st := r.Stats(); st.Truncated == 0 || st.Gaps != st.Truncated {
		t.Fatalf("stats %+v: each cut segment one gap", st)
	}
}

func TestCaptureStartedMidStreamPicksUpAtTheNextMessage(t *testing.T) {
	ex := session()
	c := snifftest.NewConversation(t, layers.LinkTypeEthernet, "[fd00::1]:40001", "[fd00::2]:9001")
	converse(c, ex, 1000)
	// The capture starts with the ADD request's second segment.
	var file bytes.Buffer
	snifftest.WritePcap(t, &file, c.Link, c.Packets[4:])
	got, _, err := readAll(t, file.Bytes(), "[fd00::2]:9001")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"opened [fd00::1]:40001", "tx add 1  orphan 0 1"}
	for _, e := range ex[1:] {
		want = append(want, "tx "+e.want)
	}
	check(t, got, append(want, "closed client closed"))
}

func TestTruncatedFileEndsWithTheConnectionsClosed(t *testing.T) {
	ex := session()[:2]
	c := snifftest.NewConversation(t, layers.LinkTypeEthernet, "10.1.0.1:40001", "10.1.0.2:9001")
	converse(c, ex, 1448)
	// The file ends 20 bytes into the client's FIN.
	n := len(c.Packets) - 3
	var whole, file bytes.Buffer
	snifftest.WritePcap(t, &whole, c.Link, c.Packets[:n])
	snifftest.WritePcap(t, &file, c.Link, c.Packets[:n+1])
	cut := file.Bytes()[:whole.Len()+20]
	got, _, err := readAll(t, cut, "9001")
	if !errors.Is(err, ErrTruncated) {
		t.Fatalf("error %v, want ErrTruncated", err)
	}
	check(t, got, wantSession("10.1.0.1:40001", ex, "end of capture"))
}

func TestFilesThatAreNoCaptureAreRefusedSayingWhy(t *testing.T) {
	var sll bytes.Buffer
	snifftest.WritePcap(t, &sll, layers.LinkTypeEthernet, nil)
	other := sll.Bytes()
	other[20] = 105 // IEEE 802.11
	for _, tc := range []struct {
		file []byte
		want string
	}{
		{[]byte(`{"event":{}}`), "not a pcap or pcapng file"},
		{[]byte{0xd4, 0xc3, 0xb2, 0xa1, 1}, "not a readable pcap file"},
		{[]byte{0x0a, 0x0d, 0x0d, 0x0a, 1, 2}, "not a readable pcapng file"},
		{other, "link type"},
	} {
		_, err := NewReader(bytes.NewReader(tc.file), Options{})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want an error saying %q", tc.file[:min(8, len(tc.file))], err, tc.want)
		}
	}
}

// FuzzReader reads arbitrary file bytes: it never panics, never loops,
// and every connection it opens it closes.
func FuzzReader(f *testing.F) {
	// Small seeds: the fuzzer minimizes every new input it keeps, and a
	// large one takes its whole time.
	ex := session()[2:4]
	c := snifftest.NewConversation(f, layers.LinkTypeEthernet, "10.1.0.1:40001", "10.1.0.2:9001")
	converse(c, ex, 10)
	var pcap, ng bytes.Buffer
	snifftest.WritePcap(f, &pcap, c.Link, c.Packets)
	snifftest.WritePcapNG(f, &ng, c.Link, c.Packets)
	f.Add(pcap.Bytes())
	f.Add(ng.Bytes())
	f.Fuzz(func(t *testing.T, file []byte) {
		r, err := NewReader(bytes.NewReader(file), Options{Server: sniff.Server{Port: 9001}, Name: "f"})
		if err != nil {
			return
		}
		var opened, closed int
		for range 100000 {
			resp, err := r.Next()
			if err != nil {
				if opened != closed {
					t.Fatalf("%d connections opened, %d closed", opened, closed)
				}
				return
			}
			switch resp.GetEvent().GetKind() {
			case snoopv1.EventKind_EVENT_KIND_CONNECTION_OPENED:
				opened++
			case snoopv1.EventKind_EVENT_KIND_CONNECTION_CLOSED:
				closed++
			}
		}
		t.Fatal("no end after 100,000 events")
	})
}
