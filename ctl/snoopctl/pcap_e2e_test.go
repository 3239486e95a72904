package main

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gopacket/gopacket/layers"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/snoopd/snoopd/distcache"
	"github.com/snoopd/snoopd/distcache/cacheserver"
	"github.com/snoopd/snoopd/distcache/loadgen"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
	"github.com/snoopd/snoopd/sniff/snifftest"
)

// chunk is what one read of a relayed connection returned.
type chunk struct {
	conn       int
	fromClient bool
	data       []byte
	at         time.Time
	end        bool // the side closed its write half
}

// recordingRelay forwards connections to a server and writes down every
// chunk in the order it crossed, as a capture on the server's host sees
// the traffic.
type recordingRelay struct {
	ln     net.Listener
	server string
	mu     sync.Mutex
	chunks []chunk
	conns  int
	wg     sync.WaitGroup
}

func startRelay(t *testing.T, server string) *recordingRelay {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &recordingRelay{ln: ln, server: server}
	r.wg.Add(1)
	go r.accept()
	t.Cleanup(func() { ln.Close(); r.wg.Wait() })
	return r
}

func (r *recordingRelay) accept() {
	defer r.wg.Done()
	for {
		c, err := r.ln.Accept()
		if err != nil {
			return
		}
		s, err := net.Dial("tcp", r.server)
		if err != nil {
			c.Close()
			continue
		}
		r.mu.Lock()
		id := r.conns
		r.conns++
		r.chunks = append(r.chunks, chunk{conn: id, at: time.Now()}) // the connection's start
		r.mu.Unlock()
		r.wg.Add(2)
		go r.pump(id, true, c, s)
		go r.pump(id, false, s, c)
	}
}

// pump copies one direction, recording each chunk before it passes on,
// so the order of the record is the order of the wire.
func (r *recordingRelay) pump(id int, fromClient bool, src, dst net.Conn) {
	defer r.wg.Done()
	buf := make([]byte, 64<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			r.mu.Lock()
			r.chunks = append(r.chunks, chunk{conn: id, fromClient: fromClient, data: bytes.Clone(buf[:n]), at: time.Now()})
			_, werr := dst.Write(buf[:n])
			r.mu.Unlock()
			if werr != nil {
				err = werr
			}
		}
		if err != nil {
			r.mu.Lock()
			r.chunks = append(r.chunks, chunk{conn: id, fromClient: fromClient, at: time.Now(), end: true})
			r.mu.Unlock()
			if tc, ok := dst.(*net.TCPConn); ok {
				tc.CloseWrite()
			}
			if !fromClient {
				src.Close()
				dst.Close()
			}
			return
		}
	}
}

// capture returns the recorded traffic as the packets of a capture:
// each connection a client 10.9.0.1:PORT of server 10.9.0.2:9001, its
// bytes in segments of at most 1448.
func (r *recordingRelay) capture(t *testing.T) []snifftest.Packet {
	r.mu.Lock()
	defer r.mu.Unlock()
	convs := map[int]*snifftest.Conversation{}
	var pkts []snifftest.Packet
	for _, ch := range r.chunks {
		c := convs[ch.conn]
		if c == nil {
			c = snifftest.NewConversation(t, layers.LinkTypeEthernet, fmt.Sprintf("10.9.0.1:%d", 40000+ch.conn), "10.9.0.2:9001")
			convs[ch.conn] = c
		}
		c.At = ch.at.Add(-time.Millisecond) // Add steps a millisecond on
		n := len(c.Packets)
		switch {
		case len(c.Packets) == 0 && ch.data == nil && !ch.end:
			c.Handshake()
		case ch.end:
			c.Add(ch.fromClient, snifftest.Flags{FIN: true, ACK: true}, nil)
		default:
			c.Send(ch.fromClient, ch.data, 1448)
		}
		pkts = append(pkts, c.Packets[n:]...)
	}
	return pkts
}

// readJSON parses snoopctl read -o json's lines.
func readJSON(t *testing.T, out string) []*snoopv1.Event {
	t.Helper()
	var evs []*snoopv1.Event
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		var r snoopv1.WatchEventsResponse
		if err := protojson.Unmarshal([]byte(l), &r); err != nil {
			t.Fatalf("line %q: %v", l, err)
		}
		evs = append(evs, r.GetEvent())
	}
	return evs
}

func TestReadOfAPacketCaptureGivesWhatTheLoadDid(t *testing.T) {
	cache, err := cacheserver.Start(distcache.MustParseAddr("IP:127.0.0.1:0"), cacheserver.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cache.Close() })
	relay := startRelay(t, cache.Addr().NetAddr())
	addr, err := distcache.AddrFromNet(relay.ln.Addr())
	if err != nil {
		t.Fatal(err)
	}
	rep := load(t, addr, loadgen.Config{Conns: 3, Ops: 600})
	// The relay's pumps end once the load has closed its connections.
	deadline := time.Now().Add(10 * time.Second)
	for {
		relay.mu.Lock()
		ends := 0
		for _, ch := range relay.chunks {
			if ch.end {
				ends++
			}
		}
		relay.mu.Unlock()
		if ends == 2*3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the relay saw %d of 6 directions end", ends)
		}
		time.Sleep(10 * time.Millisecond)
	}
	pkts := relay.capture(t)

	dir := t.TempDir()
	file := filepath.Join(dir, "cache.pcap.gz")
	var raw bytes.Buffer
	snifftest.WritePcap(t, &raw, layers.LinkTypeEthernet, pkts)
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(raw.Bytes())
	zw.Close()
	if err := os.WriteFile(file, gz.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}

	r := runCtl(t, nil, "read", file, "--server", "9001", "-o", "json")
	if r.code != 0 {
		t.Fatalf("read: %v", r)
	}
	got := map[string]map[string]int64{}
	var opened, closed, gaps int
	for _, ev := range readJSON(t, r.out) {
		if ev.GetProxy() != "cache.pcap.gz" {
			t.Fatalf("event of proxy %q, want the file's name", ev.GetProxy())
		}
		switch ev.GetKind() {
		case snoopv1.EventKind_EVENT_KIND_TRANSACTION:
			tx := ev.GetTransaction()
			op := strings.ToUpper(strings.TrimPrefix(tx.GetOp().String(), "OP_"))
			if got[op] == nil {
				got[op] = map[string]int64{}
			}
			got[op][tx.GetResult()]++
		case snoopv1.EventKind_EVENT_KIND_CONNECTION_OPENED:
			opened++
		case snoopv1.EventKind_EVENT_KIND_CONNECTION_CLOSED:
			closed++
			if reason := ev.GetClosed().GetReason(); reason != "client closed" {
				t.Errorf("closed: %q, want client closed", reason)
			}
		case snoopv1.EventKind_EVENT_KIND_CAPTURE_GAP:
			gaps++
		}
	}
	if opened != 3 || closed != 3 || gaps != 0 {
		t.Errorf("%d opened, %d closed, %d gaps; want 3, 3, 0", opened, closed, gaps)
	}
	for _, o := range rep.ByOp {
		for res, n := range o.Results {
			if got[o.Op][res] != n {
				t.Errorf("%s %s: read %d, the load counted %d", o.Op, res, got[o.Op][res], n)
			}
		}
		var sum int64
		for _, n := range got[o.Op] {
			sum += n
		}
		if sum != o.Count {
			t.Errorf("%s: read %d transactions %v, the load counted %d %v", o.Op, sum, got[o.Op], o.Count, o.Results)
		}
	}
	if want := fmt.Sprintf("packets: %d read (0 other traffic, 0 undecodable, 0 cut by the snap length), 3 connections, 0 capture gaps, 0 bytes skipped", len(pkts)); !strings.Contains(r.err, want) {
		t.Errorf("summary\n%s\nwant a line %q", r.err, want)
	}

	// The same file through read's filters, in text.
	r = runCtl(t, nil, "read", file, "--server", "IP:10.9.0.2:9001", "--name", "cache", "--op", "get", "--status", "hit")
	hits := rep.Results["hit"]
	if r.code != 0 || int64(strings.Count(r.out, " hit ")) != hits || strings.Count(r.out, "\n") != int(hits) || !strings.Contains(r.out, " cache conn=") {
		t.Errorf("read --op get --status hit: %d lines for %d hits: %v", strings.Count(r.out, "\n"), hits, r)
	}

	// A lost packet: a capture gap, and the rest read as before.
	var lossy bytes.Buffer
	at := len(pkts) / 2
	for at < len(pkts) && (!pkts[at].FromClient || len(pkts[at].Data) < 100) {
		at++
	}
	if at == len(pkts) {
		t.Fatal("no request segment in the second half of the capture")
	}
	snifftest.WritePcapNG(t, &lossy, layers.LinkTypeEthernet, append(append([]snifftest.Packet{}, pkts[:at]...), pkts[at+1:]...))
	lossyFile := filepath.Join(dir, "lossy.pcapng")
	if err := os.WriteFile(lossyFile, lossy.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	r = runCtl(t, nil, "read", lossyFile, "--server", "9001", "--events", "gap")
	if r.code != 0 || strings.Count(r.out, " capture-gap client->server bytes=") != 1 || !strings.Contains(r.err, "1 capture gap, ") {
		t.Errorf("read of a capture with a lost packet: %v", r)
	}

	// A packet capture needs --server, and a bad one is named.
	if r := runCtl(t, nil, "read", file); r.code != 2 || !strings.Contains(r.err, "--server") {
		t.Errorf("read without --server: %v", r)
	}
	if r := runCtl(t, nil, "read", file, "--server", "UNIX:/run/dc.sock"); r.code != 2 || !strings.Contains(r.err, "unix socket") {
		t.Errorf("read --server UNIX:...: %v", r)
	}

	// plot takes it too.
	svg := filepath.Join(dir, "p.svg")
	if r := runCtl(t, nil, "plot", file, "--server", "9001", "--image", svg); r.code != 0 {
		t.Errorf("plot: %v", r)
	} else if b, err := os.ReadFile(svg); err != nil || !bytes.Contains(b, []byte("<svg")) {
		t.Errorf("plot wrote no SVG: %v", err)
	}
}

// A capture cut inside a packet reads to the cut, with a warning.
func TestReadOfACutPacketCaptureWarns(t *testing.T) {
	c := snifftest.NewConversation(t, layers.LinkTypeLinuxSLL, "10.9.0.1:40000", "10.9.0.2:9001")
	c.Handshake()
	c.Send(true, distcache.AppendMessage(nil, false, 1, distcache.OpHave, []byte("s")), 1448)
	c.Send(false, distcache.AppendMessage(nil, true, 1, distcache.OpHave, []byte{byte(distcache.StatusNotOK)}), 1448)
	c.Send(true, distcache.AppendMessage(nil, false, 2, distcache.OpHave, []byte("s")), 1448)
	var b bytes.Buffer
	snifftest.WritePcap(t, &b, c.Link, c.Packets)
	file := filepath.Join(t.TempDir(), "cut.pcap")
	if err := os.WriteFile(file, b.Bytes()[:b.Len()-10], 0o644); err != nil {
		t.Fatal(err)
	}
	r := runCtl(t, nil, "read", file, "--server", "9001")
	if r.code != 0 || !strings.Contains(r.out, " HAVE ") || !strings.Contains(r.out, "end of capture") || !strings.Contains(r.err, "truncated") {
		t.Fatalf("read of a cut capture: %v", r)
	}
}
