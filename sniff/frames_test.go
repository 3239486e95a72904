package sniff

import (
	"encoding/binary"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/snoopd/snoopd/distcache"
)

// tcpFlags are the flags of a test segment.
type tcpFlags struct{ syn, ack, fin, rst bool }

// frame builds one captured frame of the link type carrying a TCP
// segment from src to dst.
func frame(t testing.TB, link layers.LinkType, src, dst netip.AddrPort, seq, ack uint32, fl tcpFlags, payload []byte) []byte {
	t.Helper()
	tcp := &layers.TCP{
		SrcPort: layers.TCPPort(src.Port()), DstPort: layers.TCPPort(dst.Port()),
		Seq: seq, Ack: ack, SYN: fl.syn, ACK: fl.ack, FIN: fl.fin, RST: fl.rst, Window: 65535,
	}
	var ip gopacket.NetworkLayer
	ethType := layers.EthernetTypeIPv4
	if src.Addr().Is4() {
		ip4 := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolTCP,
			SrcIP: net.IP(src.Addr().AsSlice()), DstIP: net.IP(dst.Addr().AsSlice())}
		ip = ip4
	} else {
		ethType = layers.EthernetTypeIPv6
		ip = &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolTCP,
			SrcIP: net.IP(src.Addr().AsSlice()), DstIP: net.IP(dst.Addr().AsSlice())}
	}
	if err := tcp.SetNetworkLayerForChecksum(ip); err != nil {
		t.Fatal(err)
	}
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	if err := gopacket.SerializeLayers(buf, opts, ip.(gopacket.SerializableLayer), tcp, gopacket.Payload(payload)); err != nil {
		t.Fatal(err)
	}
	pkt := buf.Bytes()
	var hdr []byte
	switch link {
	case layers.LinkTypeEthernet:
		hdr = make([]byte, 14)
		copy(hdr[0:6], []byte{2, 0, 0, 0, 0, 2})
		copy(hdr[6:12], []byte{2, 0, 0, 0, 0, 1})
		binary.BigEndian.PutUint16(hdr[12:], uint16(ethType))
	case layers.LinkTypeLinuxSLL:
		hdr = make([]byte, 16)
		binary.BigEndian.PutUint16(hdr[0:], 4) // outgoing
		binary.BigEndian.PutUint16(hdr[2:], 772)
		binary.BigEndian.PutUint16(hdr[4:], 6)
		binary.BigEndian.PutUint16(hdr[14:], uint16(ethType))
	case layers.LinkTypeLinuxSLL2:
		hdr = make([]byte, 20)
		binary.BigEndian.PutUint16(hdr[0:], uint16(ethType))
		binary.BigEndian.PutUint32(hdr[4:], 1)
		binary.BigEndian.PutUint16(hdr[8:], 772)
		hdr[10], hdr[11] = 4, 6
	case layers.LinkTypeNull:
		hdr = make([]byte, 4)
		family := uint32(2)
		if ethType == layers.EthernetTypeIPv6 {
			family = 30
		}
		binary.LittleEndian.PutUint32(hdr, family) // host order, as a little-endian machine writes it
	case layers.LinkTypeLoop:
		hdr = make([]byte, 4)
		family := uint32(2)
		if ethType == layers.EthernetTypeIPv6 {
			family = 24
		}
		binary.BigEndian.PutUint32(hdr, family)
	case layers.LinkTypeRaw:
	default:
		t.Fatalf("no frames of link type %s", link)
	}
	return append(hdr, pkt...)
}

// conversation writes the packets of TCP connections to a server, as a
// capture would hold them, and lets a test reorder, repeat or drop them.
type conversation struct {
	t      testing.TB
	link   layers.LinkType
	client netip.AddrPort
	server netip.AddrPort
	cseq   uint32 // the client's next sequence number
	sseq   uint32
	at     time.Time
	pkts   []capturedPacket
}

type capturedPacket struct {
	data []byte
	ci   gopacket.CaptureInfo
}

func newConversation(t testing.TB, link layers.LinkType, client, server string) *conversation {
	return &conversation{
		t: t, link: link,
		client: netip.MustParseAddrPort(client), server: netip.MustParseAddrPort(server),
		cseq: 1000, sseq: 900000,
		at: time.Date(2026, 3, 14, 15, 4, 5, 0, time.UTC),
	}
}

func (c *conversation) add(fromClient bool, fl tcpFlags, payload []byte) {
	c.at = c.at.Add(time.Millisecond)
	src, dst, seq, ack := c.client, c.server, &c.cseq, c.sseq
	if !fromClient {
		src, dst, seq, ack = c.server, c.client, &c.sseq, c.cseq
	}
	data := frame(c.t, c.link, src, dst, *seq, ack, fl, payload)
	c.pkts = append(c.pkts, capturedPacket{data, gopacket.CaptureInfo{Timestamp: c.at, CaptureLength: len(data), Length: len(data)}})
	*seq += uint32(len(payload))
	if fl.syn || fl.fin {
		*seq++
	}
}

// handshake adds the SYN, SYN-ACK and ACK.
func (c *conversation) handshake() {
	c.add(true, tcpFlags{syn: true}, nil)
	c.add(false, tcpFlags{syn: true, ack: true}, nil)
	c.add(true, tcpFlags{ack: true}, nil)
}

// send adds p from one side in segments of at most mss bytes.
func (c *conversation) send(fromClient bool, p []byte, mss int) {
	for len(p) > 0 {
		n := min(mss, len(p))
		c.add(fromClient, tcpFlags{ack: true}, p[:n])
		p = p[n:]
	}
}

// closeBoth adds the client's FIN, the server's FIN and the last ACK.
func (c *conversation) closeBoth() {
	c.add(true, tcpFlags{fin: true, ack: true}, nil)
	c.add(false, tcpFlags{fin: true, ack: true}, nil)
	c.add(true, tcpFlags{ack: true}, nil)
}

// feed runs the packets through s.
func (c *conversation) feed(s *Sniffer) {
	for _, p := range c.pkts {
		s.Packet(p.data, p.ci, c.link)
	}
}

// recorder is a Sink that writes down everything it is told.
type recorder struct {
	conns []*recConn
	gaps  []Gap
	log   []string
}

var _ Sink = (*recorder)(nil)

func (r *recorder) Open(client string, now time.Time, midStream bool) Conn {
	c := &recConn{r: r, id: uint64(len(r.conns) + 1), client: client, midStream: midStream}
	r.conns = append(r.conns, c)
	r.log = append(r.log, "open "+client)
	return c
}

func (r *recorder) Gap(c Conn, g Gap, now time.Time) {
	r.gaps = append(r.gaps, g)
	r.log = append(r.log, "gap")
}

type recConn struct {
	r         *recorder
	id        uint64
	client    string
	midStream bool
	streams   [2]strings.Builder
	resyncs   [2]int
	closed    string
}

func (c *recConn) ID() uint64 { return c.id }

func (c *recConn) Data(dir distcache.Direction, p []byte, now time.Time) {
	if c.closed != "" {
		panic("data after close")
	}
	c.streams[dirIndex(dir)].Write(p)
}

func (c *recConn) Resync(dir distcache.Direction, now time.Time) {
	c.resyncs[dirIndex(dir)]++
	c.streams[dirIndex(dir)].WriteString("|")
}

func (c *recConn) Close(reason string, now time.Time) {
	if c.closed != "" {
		panic("closed twice")
	}
	c.closed = reason
	c.r.log = append(c.r.log, "close "+reason)
}
