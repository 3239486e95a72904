package afpacket

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/snoopd/snoopd/distcache"
	"github.com/snoopd/snoopd/distcache/cacheserver"
	"github.com/snoopd/snoopd/distcache/loadgen"
	"github.com/snoopd/snoopd/internal/skip"
)

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		skip.Missing(t, "root (CAP_NET_RAW) to open a packet socket on lo")
	}
}

// captured is one packet as read, copied out of the ring.
type captured struct {
	data []byte
	ci   gopacket.CaptureInfo
}

// capture reads src until it is closed, then sends what it read.
func capture(src *Source) <-chan []captured {
	done := make(chan []captured, 1)
	go func() {
		var got []captured
		for {
			data, ci, err := src.ReadPacketData()
			if err != nil {
				done <- got
				return
			}
			got = append(got, captured{data, ci})
		}
	}()
	return done
}

func startServer(t *testing.T) *cacheserver.Server {
	t.Helper()
	srv, err := cacheserver.Start(distcache.MustParseAddr("IP:127.0.0.1:0"), cacheserver.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return srv
}

func portOf(t *testing.T, srv *cacheserver.Server) uint16 {
	t.Helper()
	_, port, err := net.SplitHostPort(srv.Addr().NetAddr())
	if err != nil {
		t.Fatal(err)
	}
	var p uint16
	fmt.Sscan(port, &p)
	return p
}

// load runs a bounded dcload-style load: persistent pipelined workers,
// then workers opening a connection per operation, so the capture holds
// long streams and many connection openings and closings.
func load(t *testing.T, srv *cacheserver.Server) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, cfg := range []loadgen.Config{
		{Addr: srv.Addr(), Conns: 2, Persistent: true, Pipeline: 4, Ops: 2000, Duration: 20 * time.Second},
		{Addr: srv.Addr(), Conns: 2, Ops: 100, Duration: 20 * time.Second},
	} {
		rep, err := loadgen.Run(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		if rep.Errors != 0 || rep.Ops != cfg.Ops {
			t.Fatalf("load: %d answered of %d, %d errors: %v", rep.Ops, cfg.Ops, rep.Errors, rep.ErrorSamples)
		}
	}
	// The server closes its side once it has read each client's FIN;
	// the capture is complete only after that.
	deadline := time.Now().Add(10 * time.Second)
	for srv.Stats().ConnectionsActive != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("server still has %d connections open", srv.Stats().ConnectionsActive)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// drain waits until the reader has every packet the kernel counted (the
// last block reaches the reader at most BlockTimeout after its last
// packet), then closes src and returns what was read.
func drain(t *testing.T, src *Source, done <-chan []captured) []captured {
	t.Helper()
	time.Sleep(5 * DefaultBlockTimeout)
	if err := src.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-done:
		return got
	case <-time.After(10 * time.Second):
		t.Fatal("reader did not return after Close")
		return nil
	}
}

// flowKey names one direction of one TCP connection.
type flowKey struct{ src, dst string }

type segment struct {
	seq uint32
	len int
}

// TestLoopbackCapturesEveryServerPacketOnce loads a cache server while a
// second one on another port is loaded too, and checks the capture of
// the first port: nothing of the other port, no packet twice, and for
// every direction of every connection its SYN, its FIN and between them
// data segments that cover the stream with no gap. On lo the kernel shows
// a packet socket each packet leaving and arriving, byte for byte the
// same; TCP's own retransmissions (a tail loss probe when an ACK is late)
// carry a new IP id and are told apart.
func TestLoopbackCapturesEveryServerPacketOnce(t *testing.T) {
	needRoot(t)
	srv, other := startServer(t), startServer(t)
	port, otherPort := portOf(t, srv), portOf(t, other)
	src, err := Open("lo", port, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if src.LinkType() != layers.LinkTypeEthernet {
		t.Errorf("link type of lo = %v, want Ethernet", src.LinkType())
	}
	done := capture(src)
	load(t, srv)
	load(t, other)
	got := drain(t, src, done)

	st, err := src.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.Drops != 0 {
		t.Fatalf("kernel dropped %d of %d packets; the checks below would fail for that alone", st.Drops, st.Packets)
	}
	if st.Packets != uint64(len(got)) {
		t.Errorf("kernel counted %d packets, the reader read %d", st.Packets, len(got))
	}

	seen := map[string]int{}
	syns := map[flowKey]uint32{}
	fins := map[flowKey]uint32{}
	data := map[flowKey][]segment{}
	for i, p := range got {
		if p.ci.CaptureLength != len(p.data) || p.ci.Length != len(p.data) || p.ci.Timestamp.IsZero() {
			t.Fatalf("packet %d: capture info %+v for %d bytes", i, p.ci, len(p.data))
		}
		if j, dup := seen[string(p.data)]; dup {
			t.Fatalf("packets %d and %d are the same packet", j, i)
		}
		seen[string(p.data)] = i
		pkt := gopacket.NewPacket(p.data, src.LinkType(), gopacket.NoCopy)
		tl, ok := pkt.TransportLayer().(*layers.TCP)
		if !ok {
			t.Fatalf("packet %d is not TCP: %v", i, pkt)
		}
		if uint16(tl.SrcPort) != port && uint16(tl.DstPort) != port {
			t.Fatalf("packet %d is between ports %d and %d, neither the server's %d (the other server is on %d)", i, tl.SrcPort, tl.DstPort, port, otherPort)
		}
		nl := pkt.NetworkLayer().NetworkFlow()
		k := flowKey{fmt.Sprintf("%v:%d", nl.Src(), tl.SrcPort), fmt.Sprintf("%v:%d", nl.Dst(), tl.DstPort)}
		if tl.SYN {
			if _, dup := syns[k]; dup {
				t.Fatalf("%v: SYN seen twice", k)
			}
			syns[k] = tl.Seq
		}
		if tl.FIN {
			if _, dup := fins[k]; dup {
				t.Fatalf("%v: FIN seen twice", k)
			}
			fins[k] = tl.Seq + uint32(len(tl.Payload))
		}
		if len(tl.Payload) > 0 {
			data[k] = append(data[k], segment{tl.Seq, len(tl.Payload)})
		}
	}
	if len(syns) == 0 {
		t.Fatal("no connection captured")
	}
	var bytes, again int
	for k, isn := range syns {
		end, ok := fins[k]
		if !ok {
			t.Errorf("%v: SYN but no FIN", k)
			continue
		}
		segs := data[k]
		sort.Slice(segs, func(i, j int) bool { return segs[i].seq-isn < segs[j].seq-isn })
		at := isn + 1
		for _, s := range segs {
			if int32(s.seq-at) > 0 {
				t.Fatalf("%v: a gap from %d to %d", k, at-isn, s.seq-isn)
			}
			if end := s.seq + uint32(s.len); int32(end-at) > 0 {
				again += int(at - s.seq)
				bytes += int(end - at)
				at = end
			} else {
				again += s.len
			}
		}
		if at != end {
			t.Errorf("%v: data ends at %d, FIN at %d", k, at-isn, end-isn)
		}
	}
	for k := range fins {
		if _, ok := syns[k]; !ok {
			t.Errorf("%v: FIN but no SYN", k)
		}
	}
	// Every connection is seen both ways.
	for k := range syns {
		if _, ok := syns[flowKey{k.dst, k.src}]; !ok {
			t.Errorf("%v: no SYN the other way", k)
		}
	}
	t.Logf("%d packets, %d connections, %d payload bytes, %d sent again by TCP", len(got), len(syns)/2, bytes, again)
}

func TestCloseWakesABlockedReader(t *testing.T) {
	needRoot(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	src, err := Open("lo", uint16(ln.Addr().(*net.TCPAddr).Port), Options{})
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		_, _, err := src.ZeroCopyReadPacketData()
		errc <- err
	}()
	// Nothing reaches the port, so the reader waits in poll.
	select {
	case err := <-errc:
		t.Fatalf("read returned with no traffic: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	if err := src.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, io.EOF) {
			t.Errorf("read after Close: %v, want io.EOF", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not wake the blocked reader")
	}
	if _, _, err := src.ReadPacketData(); !errors.Is(err, io.EOF) {
		t.Errorf("read after Close: %v, want io.EOF", err)
	}
	if err := src.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// TestFullRingCountsDrops sends packets to a tiny ring nobody reads:
// the kernel must drop, and Stats must say so.
func TestFullRingCountsDrops(t *testing.T) {
	needRoot(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	page := os.Getpagesize()
	src, err := Open("lo", uint16(ln.Addr().(*net.TCPAddr).Port), Options{BlockSize: page, BlockCount: 2, BlockTimeout: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()

	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		io.Copy(io.Discard, c)
		accepted <- c
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c.(*net.TCPConn).SetNoDelay(true)
	// Each write is its own segment; two pages hold a few dozen.
	for i := 0; i < 500; i++ {
		if _, err := c.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	c.Close()
	if sc, ok := <-accepted; ok {
		sc.Close()
	}
	st, err := src.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.Drops == 0 || st.FreezeQueueCount == 0 || st.Packets < st.Drops {
		t.Errorf("stats %+v: want drops and a frozen queue counted", st)
	}
}

const helperEnv = "AFPACKET_OPEN_HELPER"

// TestOpenWithoutCapNetRawSaysWhatIsNeeded opens a capture without the
// capability: as root, in a child process in a user namespace of its
// own, whose capabilities do not reach the host's network.
func TestOpenWithoutCapNetRawSaysWhatIsNeeded(t *testing.T) {
	if os.Getenv(helperEnv) != "" {
		_, err := Open("lo", 9, Options{})
		fmt.Println(err)
		return
	}
	var msg string
	if os.Geteuid() != 0 {
		_, err := Open("lo", 9, Options{})
		if !errors.Is(err, ErrNeedCapNetRaw) {
			t.Fatalf("Open without CAP_NET_RAW: %v", err)
		}
		msg = err.Error()
	} else {
		cmd := exec.Command(os.Args[0], "-test.run=^TestOpenWithoutCapNetRawSaysWhatIsNeeded$")
		cmd.Env = append(os.Environ(), helperEnv+"=1")
		cmd.SysProcAttr = &syscall.SysProcAttr{
			Cloneflags:  syscall.CLONE_NEWUSER,
			UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: 0, Size: 1}},
			GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: 0, Size: 1}},
		}
		out, err := cmd.Output()
		if err != nil {
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				t.Fatalf("helper: %v\n%s%s", err, out, ee.Stderr)
			}
			skip.Missing(t, "user namespaces, to drop CAP_NET_RAW: %v", err)
		}
		msg, _, _ = strings.Cut(string(out), "\n")
	}
	want := "capture on lo: " + ErrNeedCapNetRaw.Error()
	if msg != want {
		t.Errorf("message %q, want %q", msg, want)
	}
}

// TestStopKeepsAZeroCopyPacketReadable stops a capture while a packet a
// zero-copy read returned is still in use on another goroutine: the
// packet stays readable (the ring stays mapped) and the next read says
// io.EOF; Close then releases the ring.
func TestStopKeepsAZeroCopyPacketReadable(t *testing.T) {
	needRoot(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := uint16(ln.Addr().(*net.TCPAddr).Port)
	src, err := Open("lo", port, Options{BlockTimeout: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c.Close()

	type read struct {
		data []byte
		err  error
	}
	reads := make(chan read)
	go func() {
		for {
			data, _, err := src.ZeroCopyReadPacketData()
			reads <- read{data, err}
			if err != nil {
				return
			}
		}
	}()
	first := <-reads
	if first.err != nil {
		t.Fatal(first.err)
	}
	if err := src.Stop(); err != nil {
		t.Fatal(err)
	}
	// The reader goes on until it sees io.EOF: the packets the ring
	// still held, then the end.
	var last read
	for last = range reads {
		if last.err != nil {
			break
		}
	}
	if !errors.Is(last.err, io.EOF) {
		t.Errorf("read after Stop: %v, want io.EOF", last.err)
	}
	tl, ok := gopacket.NewPacket(first.data, src.LinkType(), gopacket.Default).TransportLayer().(*layers.TCP)
	if !ok || uint16(tl.DstPort) != port {
		t.Errorf("the first packet, read after Stop: %v", tl)
	}
	if err := src.Close(); err != nil {
		t.Fatal(err)
	}
}
