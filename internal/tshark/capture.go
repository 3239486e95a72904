package tshark

import (
	"fmt"
	"io"
	"net/netip"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
)

// Capture writes a pcapng of TCP streams segment by segment, so that a
// test decides where messages are cut and when each part travels.
type Capture struct {
	w *pcapgo.NgWriter
}

// NewCapture starts a pcapng on w with one raw-IP interface.
func NewCapture(w io.Writer) (*Capture, error) {
	ng, err := pcapgo.NewNgWriterInterface(w, pcapgo.NgInterface{Name: "test", LinkType: layers.LinkTypeRaw, TimestampResolution: 9},
		pcapgo.NgWriterOptions{SectionInfo: pcapgo.NgSectionInfo{Application: "snoopd tests"}})
	if err != nil {
		return nil, fmt.Errorf("pcapng: %w", err)
	}
	return &Capture{w: ng}, nil
}

// Flush writes what is buffered through to the underlying writer.
func (c *Capture) Flush() error { return c.w.Flush() }

// Stream is one TCP connection of a Capture.
type Stream struct {
	c              *Capture
	client, server netip.AddrPort
	next           [2]uint32 // the client's and the server's next sequence number
}

// Stream writes a handshake from client to server (both IPv4) at t and
// returns the stream.
func (c *Capture) Stream(t time.Time, client, server netip.AddrPort) (*Stream, error) {
	s := &Stream{c: c, client: client, server: server, next: [2]uint32{1000, 5000}}
	if err := s.packet(t, true, true, false, nil); err != nil {
		return nil, err
	}
	s.next[0]++
	if err := s.packet(t, false, true, true, nil); err != nil {
		return nil, err
	}
	s.next[1]++
	return s, s.packet(t, true, false, true, nil)
}

// Send writes one segment of data at t, from the client when up, else
// from the server.
func (s *Stream) Send(t time.Time, up bool, data []byte) error {
	return s.packet(t, up, false, true, data)
}

func (s *Stream) packet(t time.Time, up, syn, ack bool, data []byte) error {
	src, dst, me := s.client, s.server, 0
	if !up {
		src, dst, me = s.server, s.client, 1
	}
	sa, da := src.Addr().As4(), dst.Addr().As4()
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolTCP, SrcIP: sa[:], DstIP: da[:]}
	tcp := &layers.TCP{SrcPort: layers.TCPPort(src.Port()), DstPort: layers.TCPPort(dst.Port()), Seq: s.next[me], Ack: s.next[1-me],
		SYN: syn, ACK: ack, PSH: len(data) > 0, Window: 65535}
	if err := tcp.SetNetworkLayerForChecksum(ip); err != nil {
		return err
	}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ip, tcp, gopacket.Payload(data)); err != nil {
		return fmt.Errorf("packet %s -> %s: %w", src, dst, err)
	}
	b := buf.Bytes()
	if err := s.c.w.WritePacket(gopacket.CaptureInfo{Timestamp: t, CaptureLength: len(b), Length: len(b)}, b); err != nil {
		return fmt.Errorf("pcapng: %w", err)
	}
	s.next[me] += uint32(len(data))
	return nil
}
