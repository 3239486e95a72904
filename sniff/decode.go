package sniff

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// errNotTCP marks a packet that is well formed but carries no TCP
// segment sniff can use: another protocol, an IP fragment, an IPv6
// packet with extension headers before TCP.
var errNotTCP = errors.New("not a TCP segment")

// ErrLinkType is returned for a capture whose link type sniff does not
// decode.
var ErrLinkType = errors.New("unsupported link type")

// CanDecode reports whether sniff decodes packets of the link type:
// Ethernet, Linux cooked captures v1 and v2, BSD loopback (DLT_NULL and
// DLT_LOOP) and raw IP.
func CanDecode(link layers.LinkType) bool {
	switch link {
	case layers.LinkTypeEthernet, layers.LinkTypeLinuxSLL, layers.LinkTypeLinuxSLL2,
		layers.LinkTypeNull, layers.LinkTypeLoop,
		layers.LinkTypeRaw, linkTypeRawDLT, layers.LinkTypeIPv4, layers.LinkTypeIPv6:
		return true
	}
	return false
}

// linkTypeRawDLT is DLT_RAW as OpenBSD numbers it (14), which some
// captures carry instead of LINKTYPE_RAW (101).
const linkTypeRawDLT layers.LinkType = 14

// segmentInfo is what sniff needs of one TCP segment.
type segmentInfo struct {
	src, dst            netip.AddrPort
	seq, ack            uint32
	syn, ackf, fin, rst bool
	payload             []byte
	lost                int // payload bytes the capture cut off
}

// decoder turns captured frames into segments, reusing its layers.
type decoder struct {
	eth  layers.Ethernet
	vlan layers.Dot1Q
	sll  layers.LinuxSLL
	sll2 layers.LinuxSLL2
	loop layers.Loopback
	ip4  layers.IPv4
	ip6  layers.IPv6
	tcp  layers.TCP
}

// decode reads one frame of the link type. It returns errNotTCP for
// traffic that is not TCP, and an error saying what is wrong for a
// frame that cannot be read.
func (d *decoder) decode(data []byte, link layers.LinkType) (segmentInfo, error) {
	var (
		ethType layers.EthernetType
		rest    []byte
		err     error
	)
	df := gopacket.NilDecodeFeedback
	switch link {
	case layers.LinkTypeEthernet:
		if err = d.eth.DecodeFromBytes(data, df); err != nil {
			return segmentInfo{}, fmt.Errorf("ethernet: %w", err)
		}
		ethType, rest = d.eth.EthernetType, d.eth.Payload
		// Up to two VLAN tags (802.1Q, QinQ) before IP.
		for i := 0; i < 2 && (ethType == layers.EthernetTypeDot1Q || ethType == layers.EthernetTypeQinQ); i++ {
			if err = d.vlan.DecodeFromBytes(rest, df); err != nil {
				return segmentInfo{}, fmt.Errorf("vlan tag: %w", err)
			}
			ethType, rest = d.vlan.Type, d.vlan.Payload
		}
	case layers.LinkTypeLinuxSLL:
		if err = d.sll.DecodeFromBytes(data, df); err != nil {
			return segmentInfo{}, fmt.Errorf("linux cooked header: %w", err)
		}
		ethType, rest = d.sll.EthernetType, d.sll.Payload
	case layers.LinkTypeLinuxSLL2:
		if err = d.sll2.DecodeFromBytes(data, df); err != nil {
			return segmentInfo{}, fmt.Errorf("linux cooked v2 header: %w", err)
		}
		ethType, rest = d.sll2.ProtocolType, d.sll2.Payload
	case layers.LinkTypeNull, layers.LinkTypeLoop:
		if len(data) < 4 {
			return segmentInfo{}, fmt.Errorf("loopback header: %d bytes, want 4", len(data))
		}
		if err = d.loop.DecodeFromBytes(data, df); err != nil {
			return segmentInfo{}, fmt.Errorf("loopback header: %w", err)
		}
		switch d.loop.Family.LayerType() {
		case layers.LayerTypeIPv4:
			ethType = layers.EthernetTypeIPv4
		case layers.LayerTypeIPv6:
			ethType = layers.EthernetTypeIPv6
		default:
			return segmentInfo{}, errNotTCP
		}
		rest = d.loop.Payload
	case layers.LinkTypeRaw, linkTypeRawDLT, layers.LinkTypeIPv4, layers.LinkTypeIPv6:
		if len(data) == 0 {
			return segmentInfo{}, errors.New("raw IP: empty packet")
		}
		switch data[0] >> 4 {
		case 4:
			ethType = layers.EthernetTypeIPv4
		case 6:
			ethType = layers.EthernetTypeIPv6
		default:
			return segmentInfo{}, fmt.Errorf("raw IP: version %d", data[0]>>4)
		}
		rest = data
	default:
		return segmentInfo{}, fmt.Errorf("%w: %s (%d)", ErrLinkType, link, int(link))
	}
	switch ethType {
	case layers.EthernetTypeIPv4:
		return d.decodeIPv4(rest)
	case layers.EthernetTypeIPv6:
		return d.decodeIPv6(rest)
	}
	return segmentInfo{}, errNotTCP
}

func (d *decoder) decodeIPv4(data []byte) (segmentInfo, error) {
	df := gopacket.NilDecodeFeedback
	if err := d.ip4.DecodeFromBytes(data, df); err != nil {
		return segmentInfo{}, fmt.Errorf("ipv4: %w", err)
	}
	if d.ip4.Protocol != layers.IPProtocolTCP {
		return segmentInfo{}, errNotTCP
	}
	if d.ip4.Flags&layers.IPv4MoreFragments != 0 || d.ip4.FragOffset != 0 {
		return segmentInfo{}, errNotTCP
	}
	src, _ := netip.AddrFromSlice(d.ip4.SrcIP.To4())
	dst, _ := netip.AddrFromSlice(d.ip4.DstIP.To4())
	// The IP header's length is the segment's true size; the capture may
	// hold less of it. A zero length is TCP segmentation offload on the
	// capturing host: the frame is all there is.
	claimed := -1
	if n := binary.BigEndian.Uint16(data[2:4]); n != 0 {
		claimed = int(n) - int(d.ip4.IHL)*4
	}
	return d.decodeTCP(src, dst, d.ip4.Payload, claimed)
}

func (d *decoder) decodeIPv6(data []byte) (segmentInfo, error) {
	df := gopacket.NilDecodeFeedback
	if len(data) < 40 {
		return segmentInfo{}, fmt.Errorf("ipv6: header of %d bytes, want 40", len(data))
	}
	if err := d.ip6.DecodeFromBytes(data, df); err != nil {
		return segmentInfo{}, fmt.Errorf("ipv6: %w", err)
	}
	// Extension headers before TCP are rare on a cache's traffic; such
	// packets count as other traffic rather than be half read.
	if d.ip6.NextHeader != layers.IPProtocolTCP || d.ip6.HopByHop != nil {
		return segmentInfo{}, errNotTCP
	}
	src, _ := netip.AddrFromSlice(d.ip6.SrcIP.To16())
	dst, _ := netip.AddrFromSlice(d.ip6.DstIP.To16())
	claimed := -1
	if n := binary.BigEndian.Uint16(data[4:6]); n != 0 {
		claimed = int(n)
	}
	return d.decodeTCP(src.Unmap(), dst.Unmap(), data[40:], claimed)
}

// decodeTCP reads the TCP header in data; claimed is the length of the
// IP payload as the IP header gives it (-1 if unknown), so the bytes the
// capture cut off can be told.
func (d *decoder) decodeTCP(src, dst netip.Addr, data []byte, claimed int) (segmentInfo, error) {
	if claimed >= 0 && len(data) > claimed {
		data = data[:claimed]
	}
	if err := d.tcp.DecodeFromBytes(data, gopacket.NilDecodeFeedback); err != nil {
		return segmentInfo{}, fmt.Errorf("tcp: %w", err)
	}
	hdr := int(d.tcp.DataOffset) * 4
	if hdr < 20 || hdr > len(data) {
		return segmentInfo{}, fmt.Errorf("tcp: header length %d of a %d-byte segment", hdr, len(data))
	}
	s := segmentInfo{
		src:     netip.AddrPortFrom(src, uint16(d.tcp.SrcPort)),
		dst:     netip.AddrPortFrom(dst, uint16(d.tcp.DstPort)),
		seq:     d.tcp.Seq,
		ack:     d.tcp.Ack,
		syn:     d.tcp.SYN,
		ackf:    d.tcp.ACK,
		fin:     d.tcp.FIN,
		rst:     d.tcp.RST,
		payload: data[hdr:],
	}
	if claimed >= 0 {
		s.lost = max(0, claimed-len(data))
	}
	return s, nil
}
