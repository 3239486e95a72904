package faultsuite

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/snoopd/snoopd/ctl/pcapout"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
	"github.com/snoopd/snoopd/internal/skip"
	"github.com/snoopd/snoopd/internal/testutil"
	"github.com/snoopd/snoopd/internal/tshark"
)

// TestSavedPcapngReadsInTsharkAsTailShowedIt runs dcload through a real
// proxy, saves what it carried with snoopctl save FILE.pcapng, and holds
// what tshark with the dissector shows in that file (transactions: client,
// op, uid, result, session id, latency) to what snoopctl tail -o json
// showed of the same run: once with TCP clients, whose addresses are
// real, once with unix socket clients, whose addresses are made up.
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
	results := map[string]int{}
	for _, tx := range got {
		results[tx.Op+" "+tx.Result]++
	}
	t.Logf("%d transactions in %d PDUs agree with tail: %v", len(got), len(pdus), results)
}
