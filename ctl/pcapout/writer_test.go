package pcapout

import (
	"bytes"
	"errors"
	"io"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/snoopd/snoopd/distcache"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var t0 = time.Date(2026, 12, 7, 14, 0, 0, 0, time.UTC)

func at(us int) *timestamppb.Timestamp {
	return timestamppb.New(t0.Add(time.Duration(us) * time.Microsecond))
}

func us(n int) *durationpb.Duration { return durationpb.New(time.Duration(n) * time.Microsecond) }

// connEvents is one connection's life: an ADD with captured data, a GET
// hit, two pipelined requests answered in order, a multi-frame ADD, an
// unanswered GET and an orphan response, then the close.
func connEvents(client string, id uint64) []*snoopv1.Event {
	data := bytes.Repeat([]byte{0xab}, 100)
	big := bytes.Repeat([]byte{0xcd}, 5000)
	ev := func(us0 int, tx *snoopv1.Transaction) *snoopv1.Event {
		return &snoopv1.Event{Kind: snoopv1.EventKind_EVENT_KIND_TRANSACTION, Time: at(us0), Proxy: "p", ProxyInstance: "i1",
			ConnectionId: id, Client: client, Transaction: tx, EndTime: at(us0 + 1000)}
	}
	return []*snoopv1.Event{
		{Kind: snoopv1.EventKind_EVENT_KIND_CONNECTION_OPENED, Time: at(0), Proxy: "p", ProxyInstance: "i1", ConnectionId: id, Client: client},
		ev(10, &snoopv1.Transaction{Op: snoopv1.Op_OP_ADD, RequestUid: 1, SessionId: []byte("sess-1"), SessionIdLength: 6, TimeoutMs: 60000,
			RequestSize: 8 + 6 + 100, ResponseSize: 1, Result: "ok", DataLength: 100, Data: data, StartTime: at(10), Latency: us(50)}),
		ev(100, &snoopv1.Transaction{Op: snoopv1.Op_OP_GET, RequestUid: 2, SessionId: []byte("sess-1"), SessionIdLength: 6,
			RequestSize: 6, ResponseSize: 100, Result: "hit", DataLength: 100, Data: data, StartTime: at(100), Latency: us(40)}),
		// Pipelined: the second request goes out before the first answer.
		ev(200, &snoopv1.Transaction{Op: snoopv1.Op_OP_GET, RequestUid: 3, SessionId: []byte("nope"), SessionIdLength: 4,
			RequestSize: 4, ResponseSize: 1, Result: "miss", Status: 1, StartTime: at(200), Latency: us(30)}),
		ev(210, &snoopv1.Transaction{Op: snoopv1.Op_OP_HAVE, RequestUid: 4, SessionId: []byte("sess-1"), SessionIdLength: 6,
			RequestSize: 6, ResponseSize: 1, Result: "ok", StartTime: at(210), Latency: us(35)}),
		ev(300, &snoopv1.Transaction{Op: snoopv1.Op_OP_ADD, RequestUid: 5, SessionId: []byte("sess-2"), SessionIdLength: 6, TimeoutMs: 1,
			RequestSize: 8 + 6 + 5000, ResponseSize: 1, Result: "exists", Status: 101, DataLength: 5000, Data: big, StartTime: at(300), Latency: us(70)}),
		ev(400, &snoopv1.Transaction{Op: snoopv1.Op_OP_GET, RequestUid: 6, SessionId: []byte("late"), SessionIdLength: 4,
			RequestSize: 4, Result: "unanswered", StartTime: at(400)}),
		{Kind: snoopv1.EventKind_EVENT_KIND_TRANSACTION, Time: at(500), EndTime: at(500), Proxy: "p", ProxyInstance: "i1", ConnectionId: id, Client: client,
			Transaction: &snoopv1.Transaction{Op: snoopv1.Op_OP_REMOVE, RequestUid: 7, ResponseSize: 1, Result: "orphan", Status: 1}},
		{Kind: snoopv1.EventKind_EVENT_KIND_CONNECTION_CLOSED, Time: at(600), Proxy: "p", ProxyInstance: "i1", ConnectionId: id, Client: client,
			Closed: &snoopv1.ConnectionClosed{Duration: us(600)}},
	}
}

// packet is one packet read back.
type packet struct {
	t        time.Time
	src, dst netip.AddrPort
	tcp      *layers.TCP
}

func write(t *testing.T, o Options, evs []*snoopv1.Event) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := NewWriter(&buf, o)
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range evs {
		if err := w.WriteEvent(ev); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func readPackets(t *testing.T, file []byte) []packet {
	t.Helper()
	r, err := pcapgo.NewNgReader(bytes.NewReader(file), pcapgo.DefaultNgReaderOptions)
	if err != nil {
		t.Fatal(err)
	}
	if r.LinkType() != layers.LinkTypeRaw {
		t.Fatalf("link type %v, want raw IP", r.LinkType())
	}
	var out []packet
	for {
		data, ci, err := r.ReadPacketData()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		p := gopacket.NewPacket(data, layers.LayerTypeIPv4, gopacket.Default)
		if data[0]>>4 == 6 {
			p = gopacket.NewPacket(data, layers.LayerTypeIPv6, gopacket.Default)
		}
		if el := p.ErrorLayer(); el != nil {
			t.Fatalf("packet %d: %v", len(out)+1, el.Error())
		}
		tcp, _ := p.Layer(layers.LayerTypeTCP).(*layers.TCP)
		if tcp == nil {
			t.Fatalf("packet %d has no TCP layer", len(out)+1)
		}
		src, _ := netip.AddrFromSlice(p.NetworkLayer().NetworkFlow().Src().Raw())
		dst, _ := netip.AddrFromSlice(p.NetworkLayer().NetworkFlow().Dst().Raw())
		out = append(out, packet{t: ci.Timestamp, tcp: tcp,
			src: netip.AddrPortFrom(src, uint16(tcp.SrcPort)), dst: netip.AddrPortFrom(dst, uint16(tcp.DstPort))})
	}
}

// stream checks one connection's TCP: a handshake, every segment at the
// sequence number its direction has reached and acknowledging all the
// other direction sent before it, and FINs when closed. It returns each
// direction's bytes.
func stream(t *testing.T, pkts []packet, closed bool) (up, down []byte) {
	t.Helper()
	if len(pkts) < 3 || !pkts[0].tcp.SYN || pkts[0].tcp.ACK || !pkts[1].tcp.SYN || !pkts[1].tcp.ACK || pkts[2].tcp.SYN || !pkts[2].tcp.ACK {
		t.Fatalf("no SYN, SYN-ACK, ACK handshake at the start")
	}
	client := pkts[0].src
	next := map[bool]uint32{true: pkts[0].tcp.Seq + 1, false: pkts[1].tcp.Seq + 1}
	if pkts[1].tcp.Ack != next[true] {
		t.Fatalf("SYN-ACK acknowledges %d, want %d", pkts[1].tcp.Ack, next[true])
	}
	last := pkts[0].t
	for i, p := range pkts[3:] {
		fromClient := p.src == client
		if p.t.Before(last) {
			t.Errorf("packet %d at %v goes back in time from %v", i+4, p.t, last)
		}
		last = p.t
		if p.tcp.Seq != next[fromClient] || p.tcp.Ack != next[!fromClient] {
			t.Fatalf("packet %d: seq %d ack %d, want seq %d ack %d", i+4, p.tcp.Seq, p.tcp.Ack, next[fromClient], next[!fromClient])
		}
		next[fromClient] += uint32(len(p.tcp.Payload))
		if p.tcp.FIN {
			next[fromClient]++
		}
		if fromClient {
			up = append(up, p.tcp.Payload...)
		} else {
			down = append(down, p.tcp.Payload...)
		}
	}
	end := pkts[len(pkts)-3:]
	fins := end[0].tcp.FIN && end[1].tcp.FIN && !end[2].tcp.FIN && end[2].tcp.ACK
	if fins != closed {
		t.Errorf("FIN from both sides at the end: %v, want %v", fins, closed)
	}
	return up, down
}

func messages(t *testing.T, b []byte, dir distcache.Direction) []distcache.Message {
	t.Helper()
	r := distcache.NewReader(bytes.NewReader(b), dir)
	var out []distcache.Message
	for {
		m, err := r.ReadMessage()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("%v after %d messages", err, len(out))
		}
		m.Payload = bytes.Clone(m.Payload)
		out = append(out, m)
	}
}

func TestConnectionBecomesATCPStreamOfValidFrames(t *testing.T) {
	server := netip.MustParseAddrPort("10.1.2.3:9000")
	file := write(t, Options{Proxies: map[string]Proxy{"p": {Server: server}}}, connEvents("192.0.2.7:40000", 1))
	pkts := readPackets(t, file)
	for _, p := range pkts {
		if (p.src.String() != "192.0.2.7:40000" || p.dst != server) && (p.src != server || p.dst.String() != "192.0.2.7:40000") {
			t.Fatalf("packet %s -> %s, want between the client and the proxy's server", p.src, p.dst)
		}
	}
	if !pkts[0].t.Equal(t0) {
		t.Errorf("SYN at %v, want the connection's open %v", pkts[0].t, t0)
	}
	if end := pkts[len(pkts)-1].t; !end.Equal(t0.Add(600 * time.Microsecond)) {
		t.Errorf("last packet at %v, want the close", end)
	}
	up, down := stream(t, pkts, true)
	reqs := messages(t, up, distcache.ClientToServer)
	resps := messages(t, down, distcache.ServerToClient)

	type msg struct {
		uid    uint32
		op     distcache.Op
		frames int
		size   int
	}
	var gotReq, gotResp []msg
	for _, m := range reqs {
		gotReq = append(gotReq, msg{m.RequestUID, m.Op, m.Frames, len(m.Payload)})
	}
	for _, m := range resps {
		gotResp = append(gotResp, msg{m.RequestUID, m.Op, m.Frames, len(m.Payload)})
	}
	wantReq := []msg{{1, distcache.OpAdd, 1, 114}, {2, distcache.OpGet, 1, 6}, {3, distcache.OpGet, 1, 4}, {4, distcache.OpHave, 1, 6},
		{5, distcache.OpAdd, 3, 5014}, {6, distcache.OpGet, 1, 4}}
	wantResp := []msg{{1, distcache.OpAdd, 1, 1}, {2, distcache.OpGet, 1, 100}, {3, distcache.OpGet, 1, 1}, {4, distcache.OpHave, 1, 1},
		{5, distcache.OpAdd, 1, 1}, {7, distcache.OpRemove, 1, 1}}
	if !slices.Equal(gotReq, wantReq) || !slices.Equal(gotResp, wantResp) {
		t.Fatalf("requests %v\nresponses %v\nwant %v\n%v", gotReq, gotResp, wantReq, wantResp)
	}
	add, err := distcache.ParseAddRequest(reqs[0].Payload)
	if err != nil || add.TimeoutMS != 60000 || string(add.SessionID) != "sess-1" {
		t.Errorf("ADD request %+v, %v; want timeout 60000, id sess-1", add, err)
	}
	if !bytes.Equal(add.Data, make([]byte, 100)) {
		t.Errorf("session data written without Data: % x, want zeros", add.Data[:8])
	}
	if !bytes.Equal(resps[1].Payload, make([]byte, 100)) {
		t.Errorf("GET hit data written without Data, want zeros")
	}
	if string(reqs[2].Payload) != "nope" || resps[2].Payload[0] != 1 || resps[4].Payload[0] != 101 {
		t.Errorf("GET miss %q -> %v, ADD exists -> %v", reqs[2].Payload, resps[2].Payload, resps[4].Payload)
	}
}

func TestPipelinedRequestsGoOutBeforeTheirAnswers(t *testing.T) {
	pkts := readPackets(t, write(t, Options{}, connEvents("192.0.2.7:40000", 1)))
	var order []string
	for _, p := range pkts {
		if len(p.tcp.Payload) >= distcache.HeaderSize {
			h, err := distcache.ParseHeader(p.tcp.Payload)
			if err != nil {
				t.Fatal(err)
			}
			kind := "req"
			if h.IsResponse {
				kind = "resp"
			}
			order = append(order, kind+string(rune('0'+h.RequestUID)))
			if h.RequestUID == 3 && !p.t.Equal(t0.Add(map[bool]time.Duration{false: 200, true: 230}[h.IsResponse]*time.Microsecond)) {
				t.Errorf("uid 3 %s at %v, want its start (plus its latency for the answer)", kind, p.t)
			}
		}
	}
	want := []string{"req1", "resp1", "req2", "resp2", "req3", "req4", "resp3", "resp4", "req5", "resp5", "req6", "resp7"}
	if !slices.Equal(order, want) {
		t.Errorf("messages in order %v, want %v", order, want)
	}
}

func TestDataIsWrittenOnlyWhenAskedFor(t *testing.T) {
	pkts := readPackets(t, write(t, Options{Data: true}, connEvents("192.0.2.7:40000", 1)))
	up, down := stream(t, pkts, true)
	reqs := messages(t, up, distcache.ClientToServer)
	resps := messages(t, down, distcache.ServerToClient)
	add, err := distcache.ParseAddRequest(reqs[0].Payload)
	if err != nil || !bytes.Equal(add.Data, bytes.Repeat([]byte{0xab}, 100)) {
		t.Errorf("ADD data with Data: %v, want the captured bytes", err)
	}
	if !bytes.Equal(resps[1].Payload, bytes.Repeat([]byte{0xab}, 100)) {
		t.Errorf("GET hit with Data does not carry the captured bytes")
	}
	big, _ := distcache.ParseAddRequest(reqs[4].Payload)
	if !bytes.Equal(big.Data, bytes.Repeat([]byte{0xcd}, 5000)) {
		t.Errorf("multi-frame ADD with Data does not carry the captured bytes")
	}
}

func TestOpenConnectionsAreWrittenAtCloseWithoutFIN(t *testing.T) {
	evs := connEvents("192.0.2.7:40000", 1)
	pkts := readPackets(t, write(t, Options{}, evs[:len(evs)-1]))
	stream(t, pkts, false)
	if len(pkts) != 3+12 {
		t.Errorf("%d packets, want the handshake and 12 messages", len(pkts))
	}
}

func TestUnixSocketsGetStableMadeUpAddresses(t *testing.T) {
	o := Options{Proxies: map[string]Proxy{"p": {Server: UnixServer("/run/dc.sock"), ListenPath: "/run/snoop.sock"}}}
	evs := connEvents("unix", 42)
	pkts := readPackets(t, write(t, o, evs))
	client, server := UnixClient("/run/snoop.sock", 42), UnixServer("/run/dc.sock")
	if pkts[0].src != client || pkts[0].dst != server {
		t.Errorf("SYN %s -> %s, want %s -> %s", pkts[0].src, pkts[0].dst, client, server)
	}
	if !client.Addr().IsLoopback() || !server.Addr().IsLoopback() || server.Port() != MadeUpPort || client.Port() < 49152 {
		t.Errorf("made-up addresses %s and %s: want 127/8, the server on %d, the client on an ephemeral port", client, server, MadeUpPort)
	}
	if UnixClient("/run/snoop.sock", 43) == client || UnixServer("/run/other.sock") == server {
		t.Errorf("another connection or path got the same address")
	}
	if again := readPackets(t, write(t, o, evs)); again[0].src != client || again[0].tcp.Seq != pkts[0].tcp.Seq {
		t.Errorf("the same events written again give other addresses or sequence numbers")
	}
}

func TestUnknownProxyAndMixedFamiliesStillMakeOnePacketFamily(t *testing.T) {
	// An IPv6 client of a proxy whose server is IPv4.
	o := Options{Proxies: map[string]Proxy{"p": {Server: netip.MustParseAddrPort("10.0.0.1:9000")}}}
	pkts := readPackets(t, write(t, o, connEvents("[2001:db8::1]:5000", 1)))
	if !pkts[0].src.Addr().Is6() || pkts[0].dst.Addr() != netip.AddrFrom16(netip.MustParseAddr("10.0.0.1").As16()) {
		t.Errorf("SYN %s -> %s, want IPv6 to the IPv4-mapped server", pkts[0].src, pkts[0].dst)
	}
	// A proxy the Writer was not told about.
	pkts = readPackets(t, write(t, Options{}, connEvents("192.0.2.7:40000", 1)))
	if pkts[0].dst != UnixServer("p") {
		t.Errorf("server of an unknown proxy %s, want one made up from its name %s", pkts[0].dst, UnixServer("p"))
	}
}

// BenchmarkWriteConnection writes one connection of eight events (seven
// transactions, one of them a three-frame ADD) per iteration.
func BenchmarkWriteConnection(b *testing.B) {
	w, err := NewWriter(io.Discard, Options{})
	if err != nil {
		b.Fatal(err)
	}
	evs := connEvents("192.0.2.7:40000", 1)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		for _, ev := range evs {
			ev.ConnectionId = uint64(i)
			if err := w.WriteEvent(ev); err != nil {
				b.Fatal(err)
			}
		}
	}
	if err := w.Close(); err != nil {
		b.Fatal(err)
	}
}
