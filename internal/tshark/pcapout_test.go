package tshark

import (
	"bytes"
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/snoopd/snoopd/ctl/pcapout"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
)

// TestPcapoutFilesReadAsTheirEvents writes events the way snoopctl save
// does and holds tshark's transactions to them: unanswered requests,
// orphan responses, a multi-frame ADD, an IPv6 client of an IPv4 server
// and a unix socket client.
func TestPcapoutFilesReadAsTheirEvents(t *testing.T) {
	needTshark(t)
	t0 := time.Date(2026, 12, 7, 14, 0, 0, 0, time.UTC)
	at := func(us int) *timestamppb.Timestamp {
		return timestamppb.New(t0.Add(time.Duration(us) * time.Microsecond))
	}
	id := []byte("0123456789abcdef0123456789abcdef")
	var evs []*snoopv1.Event
	conn := func(proxy, client string, connID uint64, base int) {
		tx := func(us, lat int, x *snoopv1.Transaction) {
			ev := &snoopv1.Event{Kind: snoopv1.EventKind_EVENT_KIND_TRANSACTION, Time: at(base + us), EndTime: at(base + us + lat),
				Proxy: proxy, ConnectionId: connID, Client: client, Transaction: x}
			if lat > 0 {
				x.Latency = durationpb.New(time.Duration(lat) * time.Microsecond)
			}
			x.StartTime = at(base + us)
			evs = append(evs, ev)
		}
		evs = append(evs, &snoopv1.Event{Kind: snoopv1.EventKind_EVENT_KIND_CONNECTION_OPENED, Time: at(base), Proxy: proxy, ConnectionId: connID, Client: client})
		tx(10, 120, &snoopv1.Transaction{Op: snoopv1.Op_OP_ADD, RequestUid: 1, SessionId: id, SessionIdLength: 32, TimeoutMs: 5000,
			RequestSize: 8 + 32 + 9000, ResponseSize: 1, DataLength: 9000, Result: "ok"})
		tx(200, 80, &snoopv1.Transaction{Op: snoopv1.Op_OP_GET, RequestUid: 2, SessionId: id, SessionIdLength: 32,
			RequestSize: 32, ResponseSize: 9000, DataLength: 9000, Result: "hit"})
		tx(300, 0, &snoopv1.Transaction{Op: snoopv1.Op_OP_HAVE, RequestUid: 3, SessionId: id, SessionIdLength: 32, RequestSize: 32, Result: "unanswered"})
		tx(400, 0, &snoopv1.Transaction{Op: snoopv1.Op_OP_REMOVE, RequestUid: 9, ResponseSize: 1, Status: 1, Result: "orphan"})
		evs = append(evs, &snoopv1.Event{Kind: snoopv1.EventKind_EVENT_KIND_CONNECTION_CLOSED, Time: at(base + 500), Proxy: proxy,
			ConnectionId: connID, Client: client, Closed: &snoopv1.ConnectionClosed{}})
	}
	conn("tcp", "[2001:db8::7]:41000", 1, 0)
	conn("unix", "unix", 1, 1000)
	o := pcapout.Options{Proxies: map[string]pcapout.Proxy{
		"tcp":  {Server: netip.MustParseAddrPort("192.0.2.1:9001")},
		"unix": {Server: pcapout.UnixServer("/run/dc.sock"), ListenPath: "/run/snoop.sock"},
	}}
	var buf bytes.Buffer
	w, err := pcapout.NewWriter(&buf, o)
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range evs {
		if err := w.WriteEvent(ev); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "saved.pcapng")
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pdus, err := Run(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	want := FromEvents(evs, func(ev *snoopv1.Event) string {
		if ev.GetClient() == "unix" {
			return pcapout.UnixClient("/run/snoop.sock", ev.GetConnectionId()).String()
		}
		return ev.GetClient()
	})
	if d := Compare(want, Transactions(pdus), time.Microsecond); len(d) > 0 {
		t.Errorf("tshark's view of the written file differs from its events:\n%s", strings.Join(d, "\n"))
	}
}
