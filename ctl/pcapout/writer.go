package pcapout

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strconv"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"

	"github.com/snoopd/snoopd/distcache"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
	"github.com/snoopd/snoopd/vocab"
)

// maxSegment is the most TCP payload one packet carries: an IP packet
// holds at most 65535 bytes, headers included. A distcache message
// (at most 16 frames of 2048 bytes and their headers) fits in one.
const maxSegment = 65535 - 60 - 60

// window is the receive window every segment advertises.
const window = 65535

// Options say how the Writer addresses connections and what it keeps.
type Options struct {
	// Proxies describes the proxies by name; connections of a proxy it
	// does not name get made-up addresses.
	Proxies map[string]Proxy
	// Data writes the session data the events carry (captured by a proxy
	// with --capture-data, sent to a watch with --data); without it, or
	// when an event carries none, session data is zeros.
	Data bool
	// Application names the program in the file's section header.
	Application string
}

// Writer turns events into a pcapng file. It is not safe for concurrent
// use.
type Writer struct {
	ng    *pcapgo.NgWriter
	opts  Options
	conns map[connKey]*conn
	buf   gopacket.SerializeBuffer
	msg   []byte // the message being written, reused

	packets int64
}

// connKey names a connection: its proxy's incarnation and its id.
type connKey struct {
	proxy string
	id    uint64
}

// conn is a connection whose packets are not written yet.
type conn struct {
	client, server netip.AddrPort
	opened         time.Time // zero until known
	msgs           []message
}

// message is one message travelling one way, encoded when its
// connection is written.
type message struct {
	t   time.Time
	up  bool // client to server: a request
	uid uint32
	op  distcache.Op
	p   payload
}

// NewWriter writes a pcapng section header and one raw-IP interface to w.
func NewWriter(w io.Writer, o Options) (*Writer, error) {
	app := o.Application
	if app == "" {
		app = "snoopctl"
	}
	ng, err := pcapgo.NewNgWriterInterface(w, pcapgo.NgInterface{
		Name:                "snoopd",
		Description:         "connections through snoopd proxies, rebuilt from their events",
		LinkType:            layers.LinkTypeRaw,
		TimestampResolution: 9,
	}, pcapgo.NgWriterOptions{SectionInfo: pcapgo.NgSectionInfo{Application: app}})
	if err != nil {
		return nil, fmt.Errorf("pcapng header: %w", err)
	}
	return &Writer{ng: ng, opts: o, conns: make(map[connKey]*conn), buf: gopacket.NewSerializeBuffer()}, nil
}

// Packets is the number of packets written so far.
func (w *Writer) Packets() int64 { return w.packets }

// WriteEvent takes one event. Transactions are kept with their
// connection until it closes; a closed connection is written at once.
// Other kinds of event have no bytes to write and are skipped.
func (w *Writer) WriteEvent(ev *snoopv1.Event) error {
	switch ev.GetKind() {
	case snoopv1.EventKind_EVENT_KIND_CONNECTION_OPENED:
		c := w.conn(ev)
		c.opened = ev.GetTime().AsTime()
	case snoopv1.EventKind_EVENT_KIND_TRANSACTION:
		w.conn(ev).add(ev, w.opts.Data)
	case snoopv1.EventKind_EVENT_KIND_CONNECTION_CLOSED:
		k := keyOf(ev)
		c := w.conn(ev)
		delete(w.conns, k)
		end := ev.GetTime().AsTime()
		if c.opened.IsZero() && ev.GetClosed().GetDuration() != nil {
			c.opened = end.Add(-ev.GetClosed().GetDuration().AsDuration())
		}
		return w.writeConn(c, end, true)
	}
	return nil
}

// Close writes the connections still open, without a FIN, and flushes
// the file's buffer. It does not close the underlying writer.
func (w *Writer) Close() error {
	open := make([]*conn, 0, len(w.conns))
	for _, c := range w.conns {
		open = append(open, c)
	}
	slices.SortFunc(open, func(a, b *conn) int { return a.start().Compare(b.start()) })
	for _, c := range open {
		if err := w.writeConn(c, time.Time{}, false); err != nil {
			return err
		}
	}
	clear(w.conns)
	if err := w.ng.Flush(); err != nil {
		return fmt.Errorf("pcapng: %w", err)
	}
	return nil
}

// Flush writes the packets of the connections closed so far through to
// the underlying writer.
func (w *Writer) Flush() error {
	if err := w.ng.Flush(); err != nil {
		return fmt.Errorf("pcapng: %w", err)
	}
	return nil
}

func keyOf(ev *snoopv1.Event) connKey {
	p := ev.GetProxyInstance()
	if p == "" {
		p = ev.GetProxy()
	}
	return connKey{proxy: p, id: ev.GetConnectionId()}
}

// conn returns ev's connection, addressing a new one.
func (w *Writer) conn(ev *snoopv1.Event) *conn {
	k := keyOf(ev)
	if c, ok := w.conns[k]; ok {
		return c
	}
	c := &conn{}
	c.client, c.server = w.addresses(ev)
	w.conns[k] = c
	return c
}

// addresses returns the client's and the server's address for ev's
// connection, both of one family.
func (w *Writer) addresses(ev *snoopv1.Event) (client, server netip.AddrPort) {
	p := w.opts.Proxies[ev.GetProxy()]
	server = p.Server
	if !server.IsValid() {
		// A proxy the Writer was not told of: one made-up server
		// address per name, as for a unix socket path.
		server = UnixServer(ev.GetProxy())
	}
	client, err := netip.ParseAddrPort(ev.GetClient())
	if err != nil {
		key := p.ListenPath
		if key == "" {
			key = ev.GetProxy()
		}
		client = UnixClient(key, ev.GetConnectionId())
	}
	client = netip.AddrPortFrom(client.Addr().Unmap(), client.Port())
	if client.Addr().Is4() != server.Addr().Is4() {
		// One packet has one family: write the IPv4 side as an
		// IPv4-mapped IPv6 address.
		client = netip.AddrPortFrom(netip.AddrFrom16(client.Addr().As16()), client.Port())
		server = netip.AddrPortFrom(netip.AddrFrom16(server.Addr().As16()), server.Port())
	}
	return client, server
}

// add keeps the messages of a transaction event: the request at its
// start, the response when the client had it (start plus latency), an
// unanswered request alone and an orphan response alone.
func (c *conn) add(ev *snoopv1.Event, keepData bool) {
	tx := ev.GetTransaction()
	start := ev.GetTime().AsTime()
	if tx.GetStartTime() != nil {
		start = tx.GetStartTime().AsTime()
	}
	end := ev.GetEndTime().AsTime()
	if tx.GetLatency() != nil {
		end = start.Add(tx.GetLatency().AsDuration())
	} else if ev.GetEndTime() == nil {
		end = start
	}
	var data []byte
	if keepData {
		data = tx.GetData()
	}
	op := opOf(tx.GetOp())
	result := tx.GetResult()
	if result != vocab.ResultOrphan.String() {
		var reqData []byte
		if tx.GetOp() == snoopv1.Op_OP_ADD {
			reqData = data
		}
		c.msgs = append(c.msgs, message{t: start, up: true, uid: tx.GetRequestUid(), op: op, p: requestPayload(tx, reqData)})
	}
	if result == vocab.ResultUnanswered.String() {
		return
	}
	hit := result == vocab.ResultHit.String()
	var respData []byte
	if hit {
		respData = data
	}
	c.msgs = append(c.msgs, message{t: end, up: false, uid: tx.GetRequestUid(), op: op, p: responsePayload(tx, hit, respData)})
}

// start is when the connection began: when it opened, or its first
// message if that came earlier (or no open was seen).
func (c *conn) start() time.Time {
	s := c.opened
	for _, g := range c.msgs {
		if s.IsZero() || g.t.Before(s) {
			s = g.t
		}
	}
	return s
}

// writeConn writes c's handshake, its messages in time order (a segment
// each) with the sequence and acknowledgement numbers that order gives,
// and, when closed, a FIN from each side at end.
func (w *Writer) writeConn(c *conn, end time.Time, closed bool) error {
	slices.SortStableFunc(c.msgs, func(a, b message) int { return a.t.Compare(b.t) })
	start := c.start()
	if start.IsZero() {
		start = end
	}
	isn := initialSeqs(c)
	next := [2]uint32{isn[0] + 1, isn[1] + 1} // [client, server]
	pkts := []struct {
		t     time.Time
		up    bool
		flags tcpFlags
		seq   uint32
		ack   uint32
		data  []byte
	}{
		{start, true, tcpFlags{syn: true}, isn[0], 0, nil},
		{start, false, tcpFlags{syn: true, ack: true}, isn[1], isn[0] + 1, nil},
		{start, true, tcpFlags{ack: true}, isn[0] + 1, isn[1] + 1, nil},
	}
	for _, p := range pkts {
		if err := w.packet(c, p.t, p.up, p.flags, p.seq, p.ack, p.data); err != nil {
			return err
		}
	}
	last := start
	for _, m := range c.msgs {
		me, peer := side(m.up)
		w.msg = distcache.AppendMessage(w.msg[:0], !m.up, m.uid, m.op, m.p.bytes())
		for b := w.msg; len(b) > 0; {
			n := min(len(b), maxSegment)
			if err := w.packet(c, m.t, m.up, tcpFlags{ack: true, psh: true}, next[me], next[peer], b[:n]); err != nil {
				return err
			}
			next[me] += uint32(n)
			b = b[n:]
		}
		last = m.t
	}
	if !closed {
		return nil
	}
	if end.Before(last) {
		end = last
	}
	// The client closes first, as distcache clients do when done.
	if err := w.packet(c, end, true, tcpFlags{fin: true, ack: true}, next[0], next[1], nil); err != nil {
		return err
	}
	next[0]++
	if err := w.packet(c, end, false, tcpFlags{fin: true, ack: true}, next[1], next[0], nil); err != nil {
		return err
	}
	next[1]++
	return w.packet(c, end, true, tcpFlags{ack: true}, next[0], next[1], nil)
}

// side returns the indexes into next of a segment's sender and receiver.
func side(up bool) (me, peer int) {
	if up {
		return 0, 1
	}
	return 1, 0
}

// initialSeqs derives both directions' initial sequence numbers from the
// connection's addresses, so a file written twice from the same events is
// the same.
func initialSeqs(c *conn) [2]uint32 {
	h := sha256.Sum256([]byte(c.client.String() + " " + c.server.String() + " " + strconv.FormatInt(c.start().UnixNano(), 10)))
	return [2]uint32{binary.BigEndian.Uint32(h[0:4]), binary.BigEndian.Uint32(h[4:8])}
}

type tcpFlags struct{ syn, ack, psh, fin bool }

// packet writes one IP packet of c, client to server when up.
func (w *Writer) packet(c *conn, t time.Time, up bool, f tcpFlags, seq, ack uint32, data []byte) error {
	src, dst := c.client, c.server
	if !up {
		src, dst = dst, src
	}
	tcp := &layers.TCP{
		SrcPort: layers.TCPPort(src.Port()), DstPort: layers.TCPPort(dst.Port()),
		Seq: seq, Ack: ack, SYN: f.syn, ACK: f.ack, PSH: f.psh, FIN: f.fin,
		Window: window,
	}
	var ip gopacket.NetworkLayer
	if src.Addr().Is4() {
		s, d := src.Addr().As4(), dst.Addr().As4()
		ip = &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolTCP, Flags: layers.IPv4DontFragment, SrcIP: s[:], DstIP: d[:]}
	} else {
		s, d := src.Addr().As16(), dst.Addr().As16()
		ip = &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolTCP, SrcIP: s[:], DstIP: d[:]}
	}
	if err := tcp.SetNetworkLayerForChecksum(ip); err != nil {
		return fmt.Errorf("tcp checksum: %w", err)
	}
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	if err := gopacket.SerializeLayers(w.buf, opts, ip.(gopacket.SerializableLayer), tcp, gopacket.Payload(data)); err != nil {
		return fmt.Errorf("packet %s -> %s: %w", src, dst, err)
	}
	b := w.buf.Bytes()
	ci := gopacket.CaptureInfo{Timestamp: t, CaptureLength: len(b), Length: len(b)}
	if err := w.ng.WritePacket(ci, b); err != nil {
		return fmt.Errorf("pcapng: %w", err)
	}
	w.packets++
	return nil
}
