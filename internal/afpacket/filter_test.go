package afpacket

import (
	"net"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"golang.org/x/net/bpf"
)

const filterPort = 9000

// craft serializes ls with lengths and checksums filled in.
func craft(t *testing.T, ls ...gopacket.SerializableLayer) []byte {
	t.Helper()
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	if err := gopacket.SerializeLayers(buf, opts, ls...); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func ipv4(proto layers.IPProtocol) *layers.IPv4 {
	return &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: proto,
		SrcIP: net.IPv4(127, 0, 0, 1), DstIP: net.IPv4(127, 0, 0, 2)}
}

func ipv6(next layers.IPProtocol) *layers.IPv6 {
	return &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: next,
		SrcIP: net.ParseIP("::1"), DstIP: net.ParseIP("fd00::2")}
}

func tcp(src, dst layers.TCPPort, under gopacket.NetworkLayer) *layers.TCP {
	l := &layers.TCP{SrcPort: src, DstPort: dst, Seq: 1, ACK: true, Window: 100}
	l.SetNetworkLayerForChecksum(under)
	return l
}

func udp(src, dst layers.UDPPort, under gopacket.NetworkLayer) *layers.UDP {
	l := &layers.UDP{SrcPort: src, DstPort: dst}
	l.SetNetworkLayerForChecksum(under)
	return l
}

func ether(t layers.EthernetType) *layers.Ethernet {
	return &layers.Ethernet{SrcMAC: net.HardwareAddr{0, 1, 2, 3, 4, 5}, DstMAC: net.HardwareAddr{0, 1, 2, 3, 4, 6}, EthernetType: t}
}

// packetCase is one crafted packet, its IP part built once and framed
// both ways.
type packetCase struct {
	name   string
	etype  layers.EthernetType
	ip     func(t *testing.T) []byte // the packet from its IP header on
	accept bool
}

func packetCases() []packetCase {
	payload := gopacket.Payload("distcache")
	v4 := func(ls func(ip *layers.IPv4) []gopacket.SerializableLayer) func(t *testing.T) []byte {
		return func(t *testing.T) []byte { ip := ipv4(layers.IPProtocolTCP); return craft(t, ls(ip)...) }
	}
	v6 := func(ls func(ip *layers.IPv6) []gopacket.SerializableLayer) func(t *testing.T) []byte {
		return func(t *testing.T) []byte { ip := ipv6(layers.IPProtocolTCP); return craft(t, ls(ip)...) }
	}
	return []packetCase{
		{"v4 tcp to port", layers.EthernetTypeIPv4, v4(func(ip *layers.IPv4) []gopacket.SerializableLayer {
			return []gopacket.SerializableLayer{ip, tcp(40000, filterPort, ip), payload}
		}), true},
		{"v4 tcp from port", layers.EthernetTypeIPv4, v4(func(ip *layers.IPv4) []gopacket.SerializableLayer {
			return []gopacket.SerializableLayer{ip, tcp(filterPort, 40000, ip), payload}
		}), true},
		{"v4 tcp other ports", layers.EthernetTypeIPv4, v4(func(ip *layers.IPv4) []gopacket.SerializableLayer {
			return []gopacket.SerializableLayer{ip, tcp(40000, filterPort+1, ip), payload}
		}), false},
		{"v4 tcp with ip options, to port", layers.EthernetTypeIPv4, v4(func(ip *layers.IPv4) []gopacket.SerializableLayer {
			// A 24-byte header: the ports are found through IHL, not at a
			// fixed offset.
			ip.Options = []layers.IPv4Option{{OptionType: 1}, {OptionType: 1}, {OptionType: 1}, {OptionType: 0}}
			return []gopacket.SerializableLayer{ip, tcp(40000, filterPort, ip), payload}
		}), true},
		{"v4 tcp with ip options, port at the fixed offset only", layers.EthernetTypeIPv4, func(t *testing.T) []byte {
			// The options' last word holds the port where a 20-byte
			// header's TCP destination port would be.
			ip := ipv4(layers.IPProtocolTCP)
			ip.Options = []layers.IPv4Option{{OptionType: 1}, {OptionType: 1}, {OptionType: 130, OptionLength: 2}}
			raw := craft(t, ip, tcp(40000, 40001, ip), payload)
			raw[22], raw[23] = filterPort>>8, filterPort&0xff
			return raw
		}, false},
		{"v4 fragment after the first", layers.EthernetTypeIPv4, v4(func(ip *layers.IPv4) []gopacket.SerializableLayer {
			// Its payload starts with what would be the ports, but a
			// later fragment carries no TCP header.
			ip.FragOffset = 185
			return []gopacket.SerializableLayer{ip, gopacket.Payload{filterPort >> 8, filterPort & 0xff, filterPort >> 8, filterPort & 0xff, 0, 0, 0, 0}}
		}), false},
		{"v4 udp to port", layers.EthernetTypeIPv4, func(t *testing.T) []byte {
			ip := ipv4(layers.IPProtocolUDP)
			return craft(t, ip, udp(40000, filterPort, ip), payload)
		}, false},
		{"v4 icmp", layers.EthernetTypeIPv4, func(t *testing.T) []byte {
			ip := ipv4(layers.IPProtocolICMPv4)
			return craft(t, ip, &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(8, 0)}, gopacket.Payload{filterPort >> 8, filterPort & 0xff, filterPort >> 8, filterPort & 0xff})
		}, false},
		{"v6 tcp to port", layers.EthernetTypeIPv6, v6(func(ip *layers.IPv6) []gopacket.SerializableLayer {
			return []gopacket.SerializableLayer{ip, tcp(40000, filterPort, ip), payload}
		}), true},
		{"v6 tcp from port", layers.EthernetTypeIPv6, v6(func(ip *layers.IPv6) []gopacket.SerializableLayer {
			return []gopacket.SerializableLayer{ip, tcp(filterPort, 40000, ip), payload}
		}), true},
		{"v6 tcp other ports", layers.EthernetTypeIPv6, v6(func(ip *layers.IPv6) []gopacket.SerializableLayer {
			return []gopacket.SerializableLayer{ip, tcp(filterPort+1, 40000, ip), payload}
		}), false},
		{"v6 udp from port", layers.EthernetTypeIPv6, func(t *testing.T) []byte {
			ip := ipv6(layers.IPProtocolUDP)
			return craft(t, ip, udp(filterPort, 40000, ip), payload)
		}, false},
	}
}

func runFilter(t *testing.T, f framing, pkt []byte) int {
	t.Helper()
	raw, err := tcpPortFilter(f, filterPort)
	if err != nil {
		t.Fatal(err)
	}
	prog, ok := bpf.Disassemble(raw)
	if !ok {
		t.Fatalf("the assembled filter does not disassemble: %v", prog)
	}
	vm, err := bpf.NewVM(prog)
	if err != nil {
		t.Fatal(err)
	}
	n, err := vm.Run(pkt)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestFilterKeepsOnlyTheServerPortsTCP(t *testing.T) {
	for _, tc := range packetCases() {
		ipPart := tc.ip(t)
		framed := map[string]struct {
			f   framing
			pkt []byte
		}{
			"ethernet": {ethernetFraming, craft(t, ether(tc.etype), gopacket.Payload(ipPart))},
			"ip":       {ipFraming, ipPart},
		}
		for name, fr := range framed {
			t.Run(name+"/"+tc.name, func(t *testing.T) {
				n := runFilter(t, fr.f, fr.pkt)
				if tc.accept && n != snapLen {
					t.Errorf("kept %d bytes of a packet it must keep whole (%d)", n, snapLen)
				}
				if !tc.accept && n != 0 {
					t.Errorf("kept a packet it must refuse (%d bytes)", n)
				}
			})
		}
	}
}

func TestFilterRefusesWhatIsNotIP(t *testing.T) {
	arp := craft(t, ether(layers.EthernetTypeARP), &layers.ARP{
		AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4, HwAddressSize: 6, ProtAddressSize: 4,
		Operation: layers.ARPRequest, SourceHwAddress: make([]byte, 6), SourceProtAddress: []byte{127, 0, 0, 1},
		DstHwAddress: make([]byte, 6), DstProtAddress: []byte{127, 0, 0, 2},
	})
	if n := runFilter(t, ethernetFraming, arp); n != 0 {
		t.Errorf("ethernet framing kept an ARP request (%d bytes)", n)
	}
	// An IPv4 TCP packet framed as Ethernet but read as IP, and the
	// reverse: neither framing mistakes the other for a match.
	ip := ipv4(layers.IPProtocolTCP)
	ipPart := craft(t, ip, tcp(40000, filterPort, ip))
	if n := runFilter(t, ipFraming, craft(t, ether(layers.EthernetTypeIPv4), gopacket.Payload(ipPart))); n != 0 {
		t.Errorf("ip framing kept an Ethernet frame (%d bytes)", n)
	}
	if n := runFilter(t, ethernetFraming, ipPart); n != 0 {
		t.Errorf("ethernet framing kept a bare IP packet (%d bytes)", n)
	}
	// Too short to hold what the filter reads: refused, not accepted.
	for _, short := range [][]byte{nil, {0x45}, ipPart[:21]} {
		if n := runFilter(t, ipFraming, short); n != 0 {
			t.Errorf("ip framing kept a %d-byte packet", len(short))
		}
	}
}
