package afpacket

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"golang.org/x/sys/unix"

	"github.com/snoopd/snoopd/internal/testutil"
)

// TestCookedCaptureOnAnInterfaceWithoutEthernet captures on a tun
// interface, whose packets have no link header: the Source must say so
// (link type Raw), hand over packets that begin with the IP header, and
// filter them for the port as on Ethernet. The packets written to the
// tun arrive addressed to 127.0.0.1 and ::1 on a non-loopback interface,
// which the kernel discards after the capture has seen them.
func TestCookedCaptureOnAnInterfaceWithoutEthernet(t *testing.T) {
	needRoot(t)
	tun := testutil.NewTun(t)
	src, err := Open(tun.Name, filterPort, Options{BlockTimeout: time.Millisecond})
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
		tun.Write(t, p)
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

// TestInterfaceDownIsAReadErrorAndCaptureResumes takes the interface
// down under a blocked reader: the read fails once, saying the network
// is down, and once the interface is up again the next packet is read.
func TestInterfaceDownIsAReadErrorAndCaptureResumes(t *testing.T) {
	needRoot(t)
	tun := testutil.NewTun(t)
	src, err := Open(tun.Name, filterPort, Options{BlockTimeout: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	type read struct {
		data []byte
		err  error
	}
	reads := make(chan read, 8)
	go func() {
		for {
			data, _, err := src.ReadPacketData()
			if errors.Is(err, io.EOF) {
				close(reads)
				return
			}
			reads <- read{data, err}
		}
	}()
	next := func() read {
		t.Helper()
		select {
		case r := <-reads:
			return r
		case <-time.After(10 * time.Second):
			t.Fatal("no read returned")
			return read{}
		}
	}
	tun.SetUp(t, false)
	if r := next(); !errors.Is(r.err, unix.ENETDOWN) || !strings.Contains(r.err.Error(), tun.Name) {
		t.Fatalf("read with the interface down: %v, want ENETDOWN naming %s", r.err, tun.Name)
	}
	tun.SetUp(t, true)
	ip := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolTCP,
		SrcIP: []byte{127, 0, 0, 2}, DstIP: []byte{127, 0, 0, 1}}
	pkt := craft(t, ip, tcp(40000, filterPort, ip))
	tun.Write(t, pkt)
	if r := next(); r.err != nil || !bytes.Equal(r.data, pkt) {
		t.Fatalf("read after the interface came back: % x, %v", r.data, r.err)
	}
	src.Close()
	for range reads {
	}
}
