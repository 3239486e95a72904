package ctl

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"

	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
)

// pcapngEndpoints reads a pcapng of raw IPv4 packets and returns each
// packet's source and destination.
func pcapngEndpoints(t *testing.T, path string) [][2]netip.AddrPort {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	r, err := pcapgo.NewNgReader(bytes.NewReader(b), pcapgo.DefaultNgReaderOptions)
	if err != nil {
		t.Fatalf("%s is no pcapng: %v", path, err)
	}
	var out [][2]netip.AddrPort
	for {
		data, _, err := r.ReadPacketData()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		p := gopacket.NewPacket(data, layers.LayerTypeIPv4, gopacket.Default)
		ip, _ := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
		tcp, _ := p.Layer(layers.LayerTypeTCP).(*layers.TCP)
		if ip == nil || tcp == nil {
			t.Fatalf("packet %d is not TCP over IPv4", len(out)+1)
		}
		src, _ := netip.AddrFromSlice(ip.SrcIP)
		dst, _ := netip.AddrFromSlice(ip.DstIP)
		out = append(out, [2]netip.AddrPort{netip.AddrPortFrom(src, uint16(tcp.SrcPort)), netip.AddrPortFrom(dst, uint16(tcp.DstPort))})
	}
}

func TestSavePcapngBySuffixAddressesConnectionsToTheProxysServer(t *testing.T) {
	f, addr := startFake(t)
	f.proxies["web"] = &snoopv1.Proxy{Spec: &snoopv1.ProxySpec{Name: "web", Server: "IP:10.9.8.7:9000"}}
	f.setEvents(testEvents(), errEOF)
	file := filepath.Join(t.TempDir(), "cap.pcapng")

	r := run(t, "-a", addr, "save", file)
	wantFail(t, r, ExitFailure, "save: snoopd ended the event stream")
	// web's connection: handshake, 3 transactions, FINs; api's, still
	// open: handshake and one transaction.
	if !strings.HasPrefix(r.err, "wrote 8 events as 17 packets to "+file+" (5 dropped)\n") {
		t.Errorf("save said %q", r.err)
	}
	pkts := pcapngEndpoints(t, file)
	if len(pkts) != 17 {
		t.Fatalf("%d packets, want 17", len(pkts))
	}
	web := [2]string{"127.0.0.1:5000", "10.9.8.7:9000"}
	if pkts[0][0].String() != web[0] || pkts[0][1].String() != web[1] {
		t.Errorf("first SYN %v, want %v: the event's client to the server ListProxies gave", pkts[0], web)
	}

	// An existing file is refused unless --force.
	wantFail(t, run(t, "-a", addr, "save", file), ExitFailure, "save: "+file+" already exists (use --force to replace it)")
	wantFail(t, run(t, "-a", addr, "save", file, "--force"), ExitFailure, "save: snoopd ended the event stream")
}

func TestSaveFormatFlag(t *testing.T) {
	f, addr := startFake(t)
	f.setEvents(testEvents(), errEOF)
	dir := t.TempDir()

	// --format pcapng whatever the name; --format jsonl for a .pcapng name.
	bin := filepath.Join(dir, "cap.bin")
	run(t, "-a", addr, "save", bin, "--format", "pcapng")
	if b, _ := os.ReadFile(bin); !bytes.HasPrefix(b, []byte{0x0a, 0x0d, 0x0d, 0x0a}) {
		t.Errorf("--format pcapng wrote no pcapng section header: % x", b[:min(len(b), 8)])
	}
	js := filepath.Join(dir, "cap2.pcapng")
	run(t, "-a", addr, "save", js, "--format", "jsonl")
	if b, _ := os.ReadFile(js); !bytes.HasPrefix(b, []byte(`{"event"`)) {
		t.Errorf("--format jsonl wrote %q", b[:min(len(b), 16)])
	}

	wantFail(t, run(t, "-a", addr, "save", filepath.Join(dir, "x"), "--format", "pcap"), ExitUsage,
		`--format "pcap": want jsonl (the capture 'snoopctl read' takes) or pcapng (for Wireshark)`)
	for _, flag := range [][]string{{"--append"}, {"--rotate-size", "1M"}} {
		wantFail(t, run(t, append([]string{"-a", addr, "save", filepath.Join(dir, "y.pcapng")}, flag...)...), ExitUsage,
			flag[0]+" is for JSON-lines captures; a pcapng file is written whole, start to end")
	}
}

func TestSavePcapngFlushesClosedConnectionsWhileRunningAndTheRestAtCtrlC(t *testing.T) {
	f, addr := startFake(t)
	f.setEvents(testEvents(), nil) // the stream stays open after them
	file := filepath.Join(t.TempDir(), "cap.pcapng")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan result, 1)
	go func() { done <- runCtl(ctx, "", "-a", addr, "save", file) }()
	// web's connection closed among the events: its 12 packets reach the
	// file while save still runs.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if b, err := os.ReadFile(file); err == nil && len(b) > 0 {
			if r, err := pcapgo.NewNgReader(bytes.NewReader(b), pcapgo.DefaultNgReaderOptions); err == nil {
				n := 0
				for ; n < 100; n++ {
					if _, _, err := r.ReadPacketData(); err != nil {
						break
					}
				}
				if n == 12 {
					break
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("the closed connection's packets did not reach the file while save ran")
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	var r result
	select {
	case r = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("save did not end on Ctrl-C")
	}
	wantOK(t, r)
	if r.err != "wrote 8 events as 17 packets to "+file+" (5 dropped)\n" {
		t.Errorf("save said %q", r.err)
	}
	if n := len(pcapngEndpoints(t, file)); n != 17 {
		t.Errorf("%d packets after Ctrl-C, want 17 (api's open connection at the end)", n)
	}
}

func TestCompletionOffersSaveFormats(t *testing.T) {
	_, addr := startFake(t)
	if got := complete(t, "-a", addr, "save", "--format"); got != "jsonl\npcapng\n" {
		t.Errorf("completion of save --format: %q, want jsonl and pcapng", got)
	}
}
