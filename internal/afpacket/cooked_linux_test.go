package afpacket

import (
	"bytes"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"golang.org/x/sys/unix"
)

// tunDevice creates a tun interface (IP packets, no link header) that
// lives as long as the returned descriptor, and brings it up. Packets
// written to the descriptor arrive on the interface.
func tunDevice(t *testing.T) (name string, fd int) {
	t.Helper()
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Skipf("needs /dev/net/tun: %v", err)
	}
	name = fmt.Sprintf("snptap%d", os.Getpid()%100000)
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		t.Fatal(err)
	}
	ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		t.Skipf("needs a tun interface (TUNSETIFF): %v", err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	sock, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(sock)
	up, _ := unix.NewIfreq(name)
	up.SetUint16(unix.IFF_UP)
	if err := unix.IoctlIfreq(sock, unix.SIOCSIFFLAGS, up); err != nil {
		t.Fatalf("bringing %s up: %v", name, err)
	}
	return name, fd
}

// TestCookedCaptureOnAnInterfaceWithoutEthernet captures on a tun
// interface, whose packets have no link header: the Source must say so
// (link type Raw), hand over packets that begin with the IP header, and
// filter them for the port as on Ethernet. The packets written to the
// tun arrive addressed to 127.0.0.1 and ::1 on a non-loopback interface,
// which the kernel discards after the capture has seen them.
func TestCookedCaptureOnAnInterfaceWithoutEthernet(t *testing.T) {
	needRoot(t)
	name, tun := tunDevice(t)
	src, err := Open(name, filterPort, Options{BlockTimeout: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if src.LinkType() != layers.LinkTypeRaw {
		t.Errorf("link type of a tun interface = %v, want Raw", src.LinkType())
	}
	done := capture(src)

	v4 := func(sport, dport layers.TCPPort) []byte {
		ip := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolTCP,
			SrcIP: []byte{127, 0, 0, 2}, DstIP: []byte{127, 0, 0, 1}}
		return craft(t, ip, tcp(sport, dport, ip), gopacket.Payload("distcache"))
	}
	v6 := func(sport, dport layers.TCPPort) []byte {
		ip := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolTCP,
			SrcIP: []byte{15: 1}, DstIP: []byte{15: 1}}
		return craft(t, ip, tcp(sport, dport, ip), gopacket.Payload("distcache"))
	}
	want := [][]byte{v4(40000, filterPort), v6(filterPort, 40000), v4(filterPort, 40001)}
	others := [][]byte{v4(40000, filterPort+1), v6(40000, 40001)}
	for _, p := range [][]byte{others[0], want[0], others[1], want[1], want[2]} {
		if _, err := unix.Write(tun, p); err != nil {
			t.Fatalf("writing to the tun: %v", err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, err := src.Stats()
		if err != nil {
			t.Fatal(err)
		}
		if st.Packets >= uint64(len(want)) || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	got := drain(t, src, done)
	if len(got) != len(want) {
		t.Fatalf("captured %d packets, want the %d to or from port %d", len(got), len(want), filterPort)
	}
	for i, p := range got {
		if !bytes.Equal(p.data, want[i]) {
			t.Errorf("packet %d:\n got % x\nwant % x", i, p.data, want[i])
		}
		if p.ci.InterfaceIndex == 0 || p.ci.CaptureLength != len(want[i]) || p.ci.Length != len(want[i]) {
			t.Errorf("packet %d: capture info %+v", i, p.ci)
		}
	}
}
