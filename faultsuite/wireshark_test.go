package faultsuite

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/snoopd/snoopd/ctl/pcapout"
	"github.com/snoopd/snoopd/distcache"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
	"github.com/snoopd/snoopd/internal/skip"
	"github.com/snoopd/snoopd/internal/testutil"
	"github.com/snoopd/snoopd/internal/tshark"
)

// TestSavedPcapngReadsInTsharkAsTailShowedIt runs dcload through a real
// proxy, saves what it carried with snoopctl save FILE.pcapng, and holds
// what tshark with the dissector shows in that file (transactions: client,
// op, uid, result, session id, latency) to what snoopctl tail -o json
// showed of the same run, and to what snoopctl read shows of the file:
// once with TCP clients, whose addresses are real, once with unix socket
// clients, whose addresses are made up.
func TestSavedPcapngReadsInTsharkAsTailShowedIt(t *testing.T) {
	if err := tshark.Available(); err != nil {
		skip.Missing(t, "%v", err)
	}
	d := startSnoopd(t, daemonOpts{})
	cache := startCache(t, "IP:127.0.0.1:0")
	t.Run("tcp", func(t *testing.T) { savedPcapngAsTailShowedIt(t, d, cache, "IP:127.0.0.1:0") })
	t.Run("unix", func(t *testing.T) {
		savedPcapngAsTailShowedIt(t, d, cache, "UNIX:"+filepath.Join(testutil.SocketDir(t), "ws.sock"))
	})
}

func savedPcapngAsTailShowedIt(t *testing.T, d *snoopd, cache *dccache, listenOn string) {
	name := strings.ReplaceAll(t.Name(), "/", "-")
	listen := d.mustCtl(t, "add", name, "--listen", listenOn, "--server", cache.addr)
	const ops, conns = 400, 4
	rep := dcload(t, "-addr", listen, "-ops", fmt.Sprint(ops), "-conns", fmt.Sprint(conns), "-pipeline", "2", "-data", "100-5000", "-sessions", "50")
	if rep.Errors > 0 {
		t.Fatalf("dcload: %d errors (%s)", rep.Errors, causes(rep))
	}

	// Both from the history, so neither misses the start of the run:
	// each transaction, and for save each connection's open and close.
	pcap := filepath.Join(t.TempDir(), "ws.pcapng")
	d.mustCtl(t, "save", pcap, name, "--history", "10000", "--count", fmt.Sprint(ops+2*conns))
	out := d.mustCtl(t, "tail", name, "-o", "json", "--history", "10000", "--count", fmt.Sprint(ops))
	var evs []*snoopv1.Event
	for _, line := range strings.Split(out, "\n") {
		var r snoopv1.WatchEventsResponse
		if err := protojson.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("tail -o json line %q: %v", line, err)
		}
		if r.GetEvent() != nil {
			evs = append(evs, r.GetEvent())
		}
	}
	// A unix socket client shows in the file at the address save made up
	// for it.
	client := func(ev *snoopv1.Event) string { return ev.GetClient() }
	if path, ok := strings.CutPrefix(listen, "UNIX:"); ok {
		client = func(ev *snoopv1.Event) string { return pcapout.UnixClient(path, ev.GetConnectionId()).String() }
	}
	want := tshark.FromEvents(evs, client)
	if len(want) != ops {
		t.Fatalf("tail showed %d transactions, want %d", len(want), ops)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pdus, err := tshark.Run(ctx, pcap)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pdus {
		if p.Rule != "" {
			t.Errorf("tshark shows frame %d breaking rule %s", p.Frame, p.Rule)
		}
	}
	got := tshark.Transactions(pdus)
	if diffs := tshark.Compare(want, got, time.Microsecond); len(diffs) > 0 {
		t.Fatalf("tshark's view of the pcapng differs from tail's:\n%s", strings.Join(diffs, "\n"))
	}
	// snoopctl read of the same file sees what tshark sees.
	out = d.mustCtl(t, "read", pcap, "--server", cache.addr, "-o", "json", "--events", "transaction")
	var read []*snoopv1.Event
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var r snoopv1.WatchEventsResponse
		if err := protojson.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("read -o json line %q: %v", line, err)
		}
		if r.GetEvent() != nil {
			read = append(read, r.GetEvent())
		}
	}
	fromRead := tshark.FromEvents(read, func(ev *snoopv1.Event) string { return ev.GetClient() })
	if diffs := tshark.Compare(fromRead, got, time.Microsecond); len(diffs) > 0 {
		t.Fatalf("tshark's view of the pcapng differs from snoopctl read's:\n%s", strings.Join(diffs, "\n"))
	}
	results := map[string]int{}
	for _, tx := range got {
		results[tx.Op+" "+tx.Result]++
	}
	t.Logf("%d transactions in %d PDUs agree with tail and with snoopctl read: %v", len(got), len(pdus), results)
}

// TestSegmentedTrafficReadsInTsharkAsSnoopdSawIt sends a multi-frame ADD
// cut inside headers and data, a GET cut inside its header, two pipelined
// requests in one write and then a corrupt frame through a real proxy,
// writes what the client sent and received into a pcapng segment by
// segment as it went, and holds tshark's view of that file to what
// snoopctl tail -o json -v showed: the same transactions (latencies
// aside: the client's clock is not the proxy's), and the corrupt frame
// under the rule snoopd named.
func TestSegmentedTrafficReadsInTsharkAsSnoopdSawIt(t *testing.T) {
	if err := tshark.Available(); err != nil {
		skip.Missing(t, "%v", err)
	}
	d := startSnoopd(t, daemonOpts{})
	cache := startCache(t, "IP:127.0.0.1:0")
	listen := d.addProxy(t, "seg", cache.addr)
	hostPort, ok := strings.CutPrefix(listen, "IP:")
	if !ok {
		t.Fatalf("proxy listens on %s, want an IP address", listen)
	}
	c, err := net.DialTimeout("tcp", hostPort, waitLimit)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(waitLimit))

	var file bytes.Buffer
	capture, err := tshark.NewCapture(&file)
	if err != nil {
		t.Fatal(err)
	}
	stream, err := capture.Stream(time.Now(), netip.MustParseAddrPort(c.LocalAddr().String()), netip.MustParseAddrPort(c.RemoteAddr().String()))
	if err != nil {
		t.Fatal(err)
	}
	// send writes each part as its own write, a moment apart, and into
	// the file as its own segment.
	send := func(parts ...[]byte) {
		t.Helper()
		for _, p := range parts {
			if err := stream.Send(time.Now(), true, p); err != nil {
				t.Fatal(err)
			}
			if _, err := c.Write(p); err != nil {
				t.Fatal(err)
			}
			time.Sleep(2 * time.Millisecond)
		}
	}
	// receive reads until n whole messages came back, each read a
	// segment of the file.
	r := distcache.NewReader(&recorder{c: c, stream: stream, t: t}, distcache.ServerToClient)
	receive := func(n int) {
		t.Helper()
		for range n {
			if _, err := r.ReadMessage(); err != nil {
				t.Fatalf("reading an answer: %v", err)
			}
		}
	}
	id := []byte("segmented-session")
	add := distcache.AppendMessage(nil, false, 1, distcache.OpAdd, distcache.AppendAddRequest(nil, 60000, id, bytes.Repeat([]byte{5}, 5000)))
	send(add[:5], add[5:1000], add[1000:2068], add[2068:])
	receive(1)
	get := distcache.AppendMessage(nil, false, 2, distcache.OpGet, id)
	send(get[:9], get[9:])
	receive(1)
	send(append(distcache.AppendMessage(nil, false, 3, distcache.OpHave, id), distcache.AppendMessage(nil, false, 4, distcache.OpGet, []byte("other"))...))
	receive(2)
	bad := distcache.AppendMessage(nil, false, 5, distcache.OpGet, id)
	bad[9] = 1 // op_class
	send(bad)
	// The proxy closes the connection on the corrupt frame.
	if _, err := r.ReadMessage(); err == nil {
		t.Fatal("the proxy answered a corrupt frame")
	}
	if err := capture.Flush(); err != nil {
		t.Fatal(err)
	}
	pcap := filepath.Join(t.TempDir(), "segmented.pcapng")
	if err := os.WriteFile(pcap, file.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}

	// opened, four transactions, the protocol error, closed.
	out := d.mustCtl(t, "tail", "seg", "-o", "json", "-v", "--history", "100", "--count", "7")
	var evs []*snoopv1.Event
	var rules []string
	for _, line := range strings.Split(out, "\n") {
		var r snoopv1.WatchEventsResponse
		if err := protojson.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("tail -o json line %q: %v", line, err)
		}
		if ev := r.GetEvent(); ev != nil {
			evs = append(evs, ev)
			if pe := ev.GetProtocolError(); pe != nil {
				rules = append(rules, pe.GetRule())
			}
		}
	}
	want := tshark.FromEvents(evs, nil)
	for i := range want {
		want[i].Latency = 0
	}
	if len(want) != 4 || !slices.Equal(rules, []string{"op-class"}) {
		t.Fatalf("tail showed %d transactions and rules %q, want 4 and op-class:\n%s", len(want), rules, out)
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// The ADD's first segment is shorter than a header, so the
	// heuristic cannot take the stream there: name the proxy's port, as
	// a user of a proxy on a port of its own does.
	port := fmt.Sprint(c.RemoteAddr().(*net.TCPAddr).Port)
	pdus, err := tshark.Run(ctx, pcap, "-o", "distcache.port:"+port)
	if err != nil {
		t.Fatal(err)
	}
	var tsharkRules []string
	for _, p := range pdus {
		if p.Rule != "" {
			tsharkRules = append(tsharkRules, p.Rule)
		}
	}
	if !slices.Equal(tsharkRules, rules) {
		t.Errorf("tshark names rules %q, snoopd %q", tsharkRules, rules)
	}
	if diffs := tshark.Compare(want, tshark.Transactions(pdus), 0); len(diffs) > 0 {
		t.Errorf("tshark's view of the segmented traffic differs from tail's:\n%s", strings.Join(diffs, "\n"))
	}
}

// recorder reads from the proxy and writes each read into the capture as
// a segment from the server.
type recorder struct {
	c      net.Conn
	stream *tshark.Stream
	t      *testing.T
}

func (r *recorder) Read(p []byte) (int, error) {
	n, err := r.c.Read(p)
	if n > 0 {
		if serr := r.stream.Send(time.Now(), false, p[:n]); serr != nil {
			r.t.Error(serr)
		}
	}
	return n, err
}
