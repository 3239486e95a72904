// Package snifftest builds what a packet capture of distcache traffic
// holds, for tests: the frames of TCP conversations between a client and
// a server, of any link type sniff reads, which a test may reorder,
// repeat, cut or drop before it writes them as a pcap or pcapng file.
package snifftest

import (
	"encoding/binary"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
)

// Flags are a segment's TCP flags.
type Flags struct{ SYN, ACK, FIN, RST bool }

// Frame builds one frame of the link type carrying a TCP segment from
// src to dst, with correct lengths and checksums.
func Frame(t testing.TB, link layers.LinkType, src, dst netip.AddrPort, seq, ack uint32, fl Flags, payload []byte) []byte {
	t.Helper()
	tcp := &layers.TCP{
		SrcPort: layers.TCPPort(src.Port()), DstPort: layers.TCPPort(dst.Port()),
		Seq: seq, Ack: ack, SYN: fl.SYN, ACK: fl.ACK, FIN: fl.FIN, RST: fl.RST, Window: 65535,
	}
	var ip gopacket.SerializableLayer
	ethType := layers.EthernetTypeIPv4
	if src.Addr().Is4() {
		ip4 := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolTCP,
			SrcIP: net.IP(src.Addr().AsSlice()), DstIP: net.IP(dst.Addr().AsSlice())}
		if err := tcp.SetNetworkLayerForChecksum(ip4); err != nil {
			t.Fatal(err)
		}
		ip = ip4
	} else {
		ethType = layers.EthernetTypeIPv6
		ip6 := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolTCP,
			SrcIP: net.IP(src.Addr().AsSlice()), DstIP: net.IP(dst.Addr().AsSlice())}
		if err := tcp.SetNetworkLayerForChecksum(ip6); err != nil {
			t.Fatal(err)
		}
		ip = ip6
	}
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	if err := gopacket.SerializeLayers(buf, opts, ip, tcp, gopacket.Payload(payload)); err != nil {
		t.Fatal(err)
	}
	var hdr []byte
	switch link {
	case layers.LinkTypeEthernet:
		hdr = make([]byte, 14)
		copy(hdr[0:6], []byte{2, 0, 0, 0, 0, 2})
		copy(hdr[6:12], []byte{2, 0, 0, 0, 0, 1})
		binary.BigEndian.PutUint16(hdr[12:], uint16(ethType))
	case layers.LinkTypeLinuxSLL:
		hdr = make([]byte, 16)
		binary.BigEndian.PutUint16(hdr[0:], 4)   // sent by us
		binary.BigEndian.PutUint16(hdr[2:], 772) // ARPHRD_LOOPBACK
		binary.BigEndian.PutUint16(hdr[4:], 6)
		binary.BigEndian.PutUint16(hdr[14:], uint16(ethType))
	case layers.LinkTypeLinuxSLL2:
		hdr = make([]byte, 20)
		binary.BigEndian.PutUint16(hdr[0:], uint16(ethType))
		binary.BigEndian.PutUint32(hdr[4:], 1)
		binary.BigEndian.PutUint16(hdr[8:], 772)
		hdr[10], hdr[11] = 4, 6
	case layers.LinkTypeNull:
		// The address family in the capturing host's byte order: here a
		// little-endian host, whose AF_INET6 is 30 (macOS).
		hdr = make([]byte, 4)
		family := uint32(2)
		if ethType == layers.EthernetTypeIPv6 {
			family = 30
		}
		binary.LittleEndian.PutUint32(hdr, family)
	case layers.LinkTypeLoop:
		// Network byte order; OpenBSD's AF_INET6 is 24.
		hdr = make([]byte, 4)
		family := uint32(2)
		if ethType == layers.EthernetTypeIPv6 {
			family = 24
		}
		binary.BigEndian.PutUint32(hdr, family)
	case layers.LinkTypeRaw:
	default:
		t.Fatalf("snifftest: no frames of link type %s", link)
	}
	return append(hdr, buf.Bytes()...)
}

// Packet is one captured frame.
type Packet struct {
	Data       []byte
	CI         gopacket.CaptureInfo
	FromClient bool
}

// Conversation accumulates the packets of TCP connections between a
// client and a server, 1 ms apart, with the sequence numbers a real
// stack would give; a test may change CSeq and SSeq between segments to
// forge retransmissions and overlaps.
type Conversation struct {
	T              testing.TB
	Link           layers.LinkType
	Client, Server netip.AddrPort
	CSeq, SSeq     uint32 // the next sequence number of each side
	At             time.Time
	Packets        []Packet
}

// NewConversation starts a conversation between client and server
// ("ip:port", "[ipv6]:port").
func NewConversation(t testing.TB, link layers.LinkType, client, server string) *Conversation {
	return &Conversation{
		T: t, Link: link,
		Client: netip.MustParseAddrPort(client), Server: netip.MustParseAddrPort(server),
		CSeq: 1000, SSeq: 900000,
		At: time.Date(2026, 3, 14, 15, 4, 5, 0, time.UTC),
	}
}

// Add appends one segment from the client or the server.
func (c *Conversation) Add(fromClient bool, fl Flags, payload []byte) {
	c.At = c.At.Add(time.Millisecond)
	src, dst, seq, ack := c.Client, c.Server, &c.CSeq, c.SSeq
	if !fromClient {
		src, dst, seq, ack = c.Server, c.Client, &c.SSeq, c.CSeq
	}
	data := Frame(c.T, c.Link, src, dst, *seq, ack, fl, payload)
	c.Packets = append(c.Packets, Packet{data, gopacket.CaptureInfo{Timestamp: c.At, CaptureLength: len(data), Length: len(data)}, fromClient})
	*seq += uint32(len(payload))
	if fl.SYN || fl.FIN {
		*seq++
	}
}

// Handshake appends the SYN, SYN-ACK and ACK.
func (c *Conversation) Handshake() {
	c.Add(true, Flags{SYN: true}, nil)
	c.Add(false, Flags{SYN: true, ACK: true}, nil)
	c.Add(true, Flags{ACK: true}, nil)
}

// Send appends p from one side in segments of at most mss bytes.
func (c *Conversation) Send(fromClient bool, p []byte, mss int) {
	for len(p) > 0 {
		n := min(mss, len(p))
		c.Add(fromClient, Flags{ACK: true}, p[:n])
		p = p[n:]
	}
}

// CloseBoth appends the client's FIN, the server's FIN and the last ACK.
func (c *Conversation) CloseBoth() {
	c.Add(true, Flags{FIN: true, ACK: true}, nil)
	c.Add(false, Flags{FIN: true, ACK: true}, nil)
	c.Add(true, Flags{ACK: true}, nil)
}

// Truncate cuts packet i to its first n bytes, as a snap length of n
// would.
func (c *Conversation) Truncate(i, n int) {
	p := &c.Packets[i]
	if n < len(p.Data) {
		p.Data = p.Data[:n]
		p.CI.CaptureLength = n
	}
}

// Pick returns the packets at the indexes, in that order (repeats and
// omissions allowed).
func (c *Conversation) Pick(idx ...int) []Packet {
	out := make([]Packet, len(idx))
	for i, j := range idx {
		out[i] = c.Packets[j]
	}
	return out
}

// WritePcap writes packets of the link type as a pcap file.
func WritePcap(t testing.TB, w io.Writer, link layers.LinkType, packets []Packet) {
	t.Helper()
	pw := pcapgo.NewWriterNanos(w)
	if err := pw.WriteFileHeader(65535, link); err != nil {
		t.Fatal(err)
	}
	for _, p := range packets {
		if err := pw.WritePacket(p.CI, p.Data); err != nil {
			t.Fatal(err)
		}
	}
}

// WritePcapNG writes packets of the link type as a pcapng file.
func WritePcapNG(t testing.TB, w io.Writer, link layers.LinkType, packets []Packet) {
	t.Helper()
	nw, err := pcapgo.NewNgWriter(w, link)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range packets {
		if err := nw.WritePacket(p.CI, p.Data); err != nil {
			t.Fatal(err)
		}
	}
	if err := nw.Flush(); err != nil {
		t.Fatal(err)
	}
}
