package export_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/snoopd/snoopd/daemon"
	"github.com/snoopd/snoopd/daemon/export"
	"github.com/snoopd/snoopd/daemon/hub"
	"github.com/snoopd/snoopd/distcache"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
	"github.com/snoopd/snoopd/internal/apijson"
	"github.com/snoopd/snoopd/internal/natstest"
	"github.com/snoopd/snoopd/match"
	"github.com/snoopd/snoopd/proxy"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func txEvent(proxyName string, n uint64, op distcache.Op) *proxy.Event {
	tx := &proxy.Transaction{}
	tx.Op = op
	tx.SessionID = []byte{byte(n), byte(n >> 8), 0xaa}
	tx.SessionIDLen = 3
	tx.Start = time.Unix(1700000000, int64(n))
	tx.Latency = time.Duration(n) * time.Microsecond
	return &proxy.Event{Kind: proxy.KindTransaction, Time: tx.Start, Proxy: proxyName, ConnID: n, Tx: tx}
}

func publish(h *hub.Hub, proxyName string, from, n int, op distcache.Op) {
	for i := from; i < from+n; i++ {
		h.Publish(txEvent(proxyName, uint64(i), op))
	}
}

// waitFor polls cond every 10ms for up to 20s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for i := 0; i < 2000; i++ {
		if cond() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}

func settled(x *export.Exporter) bool {
	s := x.Stats()
	return s.GetPublished()+s.GetDropped() == s.GetMatched()
}

func start(t *testing.T, h *hub.Hub, cfg export.Config) *export.Exporter {
	t.Helper()
	x, err := export.Start(h, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { x.Close(5 * time.Second) })
	return x
}

// jetStream connects to the server at url for the test's reads; the
// connection closes when the test ends.
func jetStream(t *testing.T, url string) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

func streamMessages(t *testing.T, url, stream, filter string, n int) []*nats.Msg {
	t.Helper()
	js := jetStream(t, url)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{FilterSubjects: []string{filter}})
	if err != nil {
		t.Fatal(err)
	}
	var out []*nats.Msg
	for len(out) < n {
		b, err := c.Fetch(n-len(out), jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		got := 0
		for m := range b.Messages() {
			out = append(out, &nats.Msg{Subject: m.Subject(), Data: m.Data(), Header: m.Headers()})
			got++
		}
		if got == 0 {
			break
		}
	}
	return out
}

func TestExportToJetStream(t *testing.T) {
	srv := natstest.Start(t)
	h := hub.New(hub.Config{Interval: time.Millisecond, NewEncoder: daemon.NewEventEncoder})
	defer h.Close()
	x := start(t, h, export.Config{Servers: []string{srv.URL()}, Daemon: "web.7", Stream: "SNOOP", Batch: 1})

	publish(h, "sess ions", 1, 300, distcache.OpGet)
	publish(h, "sess ions", 301, 200, distcache.OpAdd)
	h.Publish(&proxy.Event{Kind: proxy.KindConnOpened, Proxy: "sess ions", ConnID: 9})
	waitFor(t, "500 events published", func() bool { return x.Stats().GetPublished() == 501 })
	if s := x.Stats(); s.GetDropped() != 0 || s.GetMatched() != 501 || !s.GetConnected() || s.GetStream() != "SNOOP" {
		t.Fatalf("stats %v", s)
	}
	// NATS filters by subject: the GETs alone, then the opened event.
	msgs := streamMessages(t, srv.URL(), "SNOOP", "snoop.web_7.sess_ions.tx.get", 300)
	if len(msgs) != 300 {
		t.Fatalf("got %d GET messages, want 300", len(msgs))
	}
	for i, m := range msgs {
		if ct := m.Header.Get(export.HeaderContentType); ct != export.ContentTypeProtobuf {
			t.Fatalf("content type %q", ct)
		}
		var ev snoopv1.Event
		if err := proto.Unmarshal(m.Data, &ev); err != nil {
			t.Fatal(err)
		}
		if ev.GetDaemon() != "web.7" || ev.GetProxy() != "sess ions" || ev.GetConnectionId() != uint64(i+1) ||
			ev.GetTransaction().GetOp() != snoopv1.Op_OP_GET {
			t.Fatalf("message %d: %v", i, &ev)
		}
	}
	if msgs := streamMessages(t, srv.URL(), "SNOOP", "snoop.*.*.opened", 1); len(msgs) != 1 {
		t.Fatalf("opened: %d messages", len(msgs))
	}
}

// TestExportSurvivesOutage stops NATS while events flow: they are dropped
// and counted exactly, the exporter reconnects by itself, and export
// resumes.
func TestExportSurvivesOutage(t *testing.T) {
	srv := natstest.Start(t)
	h := hub.New(hub.Config{Interval: time.Millisecond, NewEncoder: daemon.NewEventEncoder})
	defer h.Close()
	x := start(t, h, export.Config{Servers: []string{srv.URL()}, Daemon: "d", Stream: "SNOOP"})

	publish(h, "p", 0, 50, distcache.OpGet)
	waitFor(t, "first events published", func() bool { return x.Stats().GetPublished() == 50 })
	publish(h, "p", 50, 50, distcache.OpGet)
	waitFor(t, "more events published", func() bool { return x.Stats().GetPublished() == 100 })

	srv.Stop()
	waitFor(t, "disconnect seen", func() bool { return !x.Stats().GetConnected() })
	publish(h, "p", 100, 1000, distcache.OpGet)
	waitFor(t, "outage settled", func() bool { return settled(x) && x.Stats().GetMatched() == 1100 })
	if s := x.Stats(); s.GetPublished() != 100 || s.GetDropped() != 1000 {
		t.Fatalf("during the outage: %v", s)
	}

	srv.Restart()
	waitFor(t, "reconnect", func() bool { return x.Stats().GetConnected() })
	// The first batch after the reconnect may find the stream check
	// still pending; keep publishing, boundedly, until events go out.
	sent := 1100
	waitFor(t, "publishing resumed", func() bool {
		publish(h, "p", sent, 10, distcache.OpGet)
		sent += 10
		return x.Stats().GetPublished() > 100
	})
	waitFor(t, "settled", func() bool { return settled(x) && x.Stats().GetMatched() == uint64(sent) })
	s := x.Stats()
	// Batched (the default): the stream's messages count their events.
	stored := eventsIn(storedMessages(t, srv.URL(), "SNOOP"))
	if uint64(stored) < s.GetPublished() || uint64(stored) > s.GetPublished()+s.GetDropped() {
		t.Fatalf("stream holds %d events, published %d, dropped %d", stored, s.GetPublished(), s.GetDropped())
	}
}

// TestExportCoreJSONFiltered publishes on core NATS only, as JSON, the
// events the filter takes.
func TestExportCoreJSONFiltered(t *testing.T) {
	srv := natstest.Start(t)
	nc, err := nats.Connect(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	ch := make(chan *nats.Msg, 100)
	sub, err := nc.ChanSubscribe("snoop.>", ch)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	h := hub.New(hub.Config{Interval: time.Millisecond, NewEncoder: daemon.NewEventEncoder})
	defer h.Close()
	x := start(t, h, export.Config{Servers: []string{srv.URL()}, Daemon: "d", Format: export.FormatJSON, Batch: 1,
		Filter: match.Spec{Expr: `op == "add" && daemon == "d"`}})
	publish(h, "p", 0, 10, distcache.OpGet)
	publish(h, "p", 10, 5, distcache.OpAdd)
	waitFor(t, "published", func() bool { return x.Stats().GetPublished() == 5 })
	if s := x.Stats(); s.GetMatched() != 5 || s.GetStream() != "" {
		t.Fatalf("stats %v", s)
	}
	for i := 0; i < 5; i++ {
		select {
		case m := <-ch:
			if m.Subject != "snoop.d.p.tx.add" || m.Header.Get(export.HeaderContentType) != export.ContentTypeJSON {
				t.Fatalf("subject %q header %v", m.Subject, m.Header)
			}
			var ev snoopv1.Event
			if err := protojson.Unmarshal(m.Data, &ev); err != nil {
				t.Fatal(err)
			}
			if ev.GetConnectionId() != uint64(10+i) || ev.GetDaemon() != "d" {
				t.Fatalf("event %v", &ev)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("no message")
		}
	}
}

// TestExportCloseFlushes: events still queued when the hub closes are
// published before Close returns.
func TestExportCloseFlushes(t *testing.T) {
	srv := natstest.Start(t)
	h := hub.New(hub.Config{Interval: time.Hour, NewEncoder: daemon.NewEventEncoder})
	x, err := export.Start(h, export.Config{Servers: []string{srv.URL()}, Daemon: "d", Stream: "S"})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "connected", func() bool { return x.Stats().GetConnected() })
	publish(h, "p", 0, 200, distcache.OpGet)
	h.Close()
	x.Close(10 * time.Second)
	if s := x.Stats(); s.GetPublished() != 200 || s.GetDropped() != 0 || s.GetMatched() != 200 {
		t.Fatalf("after close: %v", s)
	}
}

func TestStartErrors(t *testing.T) {
	h := hub.New(hub.Config{NewEncoder: daemon.NewEventEncoder})
	defer h.Close()
	for _, c := range []struct {
		cfg  export.Config
		want string
	}{
		{export.Config{}, "no NATS server"},
		{export.Config{Servers: []string{"nats://127.0.0.1:1"}, Subject: "a.*"}, "subject prefix"},
		{export.Config{Servers: []string{"nats://127.0.0.1:1"}, Format: "xml"}, "format"},
		{export.Config{Servers: []string{"nats://127.0.0.1:1"}, Filter: match.Spec{Expr: "op =="}}, "export filter"},
	} {
		x, err := export.Start(h, c.cfg)
		if err == nil {
			x.Close(time.Second)
			t.Errorf("%+v: no error", c.cfg)
			continue
		}
		if !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want %q", c.cfg, err, c.want)
		}
	}
}

func TestSubject(t *testing.T) {
	for _, c := range []struct{ got, want string }{
		{export.Subject("snoop", "web-7", "sessions", proxy.KindTransaction, distcache.OpGet, true), "snoop.web-7.sessions.tx.get"},
		{export.Subject("a.b", "h.x", "p*>", proxy.KindConnClosed, 0, false), "a.b.h_x.p__.closed"},
		{export.Subject("snoop", "", "p q", proxy.KindProtocolError, 0, false), "snoop._.p_q.protocol"},
		{export.Filter("snoop", "", "", "", ""), "snoop.>"},
		{export.Filter("snoop", "web-7", "", "", ""), "snoop.web-7.>"},
		{export.Filter("snoop", "", "sessions", "", ""), "snoop.*.sessions.>"},
		{export.Filter("snoop", "", "", "tx", ""), "snoop.*.*.tx.>"},
		{export.Filter("snoop", "", "", "closed", ""), "snoop.*.*.closed"},
		{export.Filter("snoop", "", "s", "", "get"), "snoop.*.s.tx.get"},
	} {
		if c.got != c.want {
			t.Errorf("got %q, want %q", c.got, c.want)
		}
	}
}

// With Batch, a message carries up to Batch events of one subject as a
// WatchEventsResponse; every event arrives once, in its subject's order,
// and the counters count events, not messages.
func TestExportBatched(t *testing.T) {
	for _, format := range []string{export.FormatProtobuf, export.FormatJSON} {
		t.Run(format, func(t *testing.T) {
			srv := natstest.Start(t)
			h := hub.New(hub.Config{Interval: time.Millisecond, NewEncoder: daemon.NewEventEncoder})
			defer h.Close()
			x := start(t, h, export.Config{Servers: []string{srv.URL()}, Daemon: "d", Stream: "SNOOP", Batch: 64, Format: format})
			for i := 1; i <= 400; i++ {
				op := distcache.OpGet
				if i%3 == 0 {
					op = distcache.OpAdd
				}
				h.Publish(txEvent("p", uint64(i), op))
			}
			for i := 0; i < 300 && x.Stats().GetPublished()+x.Stats().GetDropped() < 400; i++ {
				time.Sleep(10 * time.Millisecond)
			}
			if s := x.Stats(); s.GetPublished() != 400 || s.GetDropped() != 0 || s.GetMatched() != 400 {
				t.Fatalf("stats %v", s)
			}
			// Messages until the 400 events are in (how many messages
			// depends on how the hub handed the events over).
			msgs := storedMessages(t, srv.URL(), "SNOOP")
			seen := map[snoopv1.Op][]uint64{}
			total := 0
			for _, m := range msgs {
				var batch snoopv1.WatchEventsResponse
				var err error
				switch ct := m.Header.Get(export.HeaderContentType); ct {
				case export.ContentTypeProtobufBatch:
					err = proto.Unmarshal(m.Data, &batch)
				case export.ContentTypeJSONBatch:
					err = protojson.Unmarshal(m.Data, &batch)
				default:
					t.Fatalf("content type %q", ct)
				}
				if err != nil {
					t.Fatal(err)
				}
				if n := len(batch.GetEvents()); n == 0 || n > 64 || m.Header.Get(export.HeaderEvents) != strconv.Itoa(n) {
					t.Fatalf("a message of %d events says %q", n, m.Header.Get(export.HeaderEvents))
				}
				for _, ev := range batch.GetEvents() {
					op := ev.GetTransaction().GetOp()
					if want := map[snoopv1.Op]string{snoopv1.Op_OP_GET: "snoop.d.p.tx.get", snoopv1.Op_OP_ADD: "snoop.d.p.tx.add"}[op]; m.Subject != want {
						t.Fatalf("a %v event on %s", op, m.Subject)
					}
					seen[op] = append(seen[op], ev.GetConnectionId())
					total++
				}
			}
			if total != 400 || len(msgs) >= 400 {
				t.Fatalf("%d events in %d messages, want 400 in fewer", total, len(msgs))
			}
			for op, ids := range seen {
				for i := 1; i < len(ids); i++ {
					if ids[i] <= ids[i-1] {
						t.Fatalf("%v: events out of order: %d after %d", op, ids[i], ids[i-1])
					}
				}
			}
		})
	}
}

// eventsIn counts the events of batched messages by their header.
func eventsIn(msgs []*nats.Msg) int {
	n := 0
	for _, m := range msgs {
		k, _ := strconv.Atoi(m.Header.Get(export.HeaderEvents))
		n += k
	}
	return n
}

// storedMessages reads every message a stream holds, by sequence.
func storedMessages(t *testing.T, url, stream string) []*nats.Msg {
	t.Helper()
	js := jetStream(t, url)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []*nats.Msg
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("message %d: %v", seq, err)
		}
		out = append(out, &nats.Msg{Subject: m.Subject, Data: m.Data, Header: m.Header})
	}
	return out
}

// By default events are batched: those of one subject that come within
// the flush interval go in one message, sent when the interval is over
// though no more events come.
func TestExportBatchesByDefault(t *testing.T) {
	srv := natstest.Start(t)
	h := hub.New(hub.Config{Interval: time.Millisecond, NewEncoder: daemon.NewEventEncoder})
	defer h.Close()
	x := start(t, h, export.Config{Servers: []string{srv.URL()}, Daemon: "d", Stream: "SNOOP", FlushInterval: time.Second})
	for i := range 5 {
		h.Publish(txEvent("p", uint64(i+1), distcache.OpGet))
		time.Sleep(5 * time.Millisecond) // several hand-overs from the hub
	}
	h.Publish(&proxy.Event{Kind: proxy.KindConnOpened, Proxy: "p", ConnID: 9})
	waitFor(t, "the batch sent after the interval", func() bool { return x.Stats().GetPublished() == 6 })
	msgs := storedMessages(t, srv.URL(), "SNOOP")
	if len(msgs) != 2 || eventsIn(msgs) != 6 {
		t.Fatalf("%d messages holding %d events, want the 5 GETs in one and the opened event in another", len(msgs), eventsIn(msgs))
	}
	for _, m := range msgs {
		if ct := m.Header.Get(export.HeaderContentType); ct != export.ContentTypeProtobufBatch {
			t.Fatalf("content type %q", ct)
		}
	}
}

// A batch whose payload grows large (events carrying captured session
// data) is sent before it is full, so every message fits the server's
// max_payload.
func TestExportBatchBoundedBySize(t *testing.T) {
	srv := natstest.Start(t)
	h := hub.New(hub.Config{Interval: time.Millisecond, NewEncoder: daemon.NewEventEncoder})
	defer h.Close()
	x := start(t, h, export.Config{Servers: []string{srv.URL()}, Daemon: "d", Stream: "SNOOP", Data: true, Batch: 1000})
	const n, size = 40, 60 << 10
	for i := range n {
		e := txEvent("p", uint64(i+1), distcache.OpAdd)
		e.Tx.Data = make([]byte, size)
		h.Publish(e)
	}
	waitFor(t, "published", func() bool { return x.Stats().GetPublished()+x.Stats().GetDropped() == n })
	if s := x.Stats(); s.GetDropped() != 0 {
		t.Fatalf("stats %v", s)
	}
	msgs := storedMessages(t, srv.URL(), "SNOOP")
	if eventsIn(msgs) != n || len(msgs) < 2 {
		t.Fatalf("%d events in %d messages", eventsIn(msgs), len(msgs))
	}
	for _, m := range msgs {
		var batch snoopv1.WatchEventsResponse
		if err := proto.Unmarshal(m.Data, &batch); err != nil {
			t.Fatal(err)
		}
		for _, ev := range batch.GetEvents() {
			if len(ev.GetTransaction().GetData()) != size {
				t.Fatalf("an event with %d bytes of data, want %d", len(ev.GetTransaction().GetData()), size)
			}
		}
		if len(m.Data) > 512<<10 {
			t.Fatalf("a message of %d bytes (%d events)", len(m.Data), len(batch.GetEvents()))
		}
	}
}

// An event with a string that is not UTF-8 (which a decoder would refuse,
// with the whole batch) goes out with the bad bytes replaced; its batch
// decodes, with the first event of a batch as with a later one.
func TestExportMendsInvalidUTF8(t *testing.T) {
	for _, format := range []string{export.FormatProtobuf, export.FormatJSON} {
		t.Run(format, func(t *testing.T) { testExportMendsInvalidUTF8(t, format) })
	}
}

func testExportMendsInvalidUTF8(t *testing.T, format string) {
	srv := natstest.Start(t)
	h := hub.New(hub.Config{Interval: time.Millisecond, NewEncoder: daemon.NewEventEncoder})
	defer h.Close()
	x := start(t, h, export.Config{Servers: []string{srv.URL()}, Daemon: "d", Stream: "SNOOP", Format: format, FlushInterval: 50 * time.Millisecond})
	for i := 1; i <= 6; i++ {
		e := txEvent("p", uint64(i), distcache.OpGet)
		if i == 1 || i == 4 {
			e.Tx.Fault = "bad\xff"
		}
		h.Publish(e)
	}
	waitFor(t, "settled", func() bool { s := x.Stats(); return s.GetPublished()+s.GetDropped() == 6 })
	if s := x.Stats(); s.GetPublished() != 6 || s.GetDropped() != 0 {
		t.Fatalf("stats %v, want 6 published and none dropped", s)
	}
	var ids []uint64
	for _, m := range storedMessages(t, srv.URL(), "SNOOP") {
		var batch snoopv1.WatchEventsResponse
		var err error
		if format == export.FormatJSON {
			err = protojson.Unmarshal(m.Data, &batch)
		} else {
			err = proto.Unmarshal(m.Data, &batch)
		}
		if err != nil {
			t.Fatalf("a stored batch does not decode: %v\n%q", err, m.Data)
		}
		for _, ev := range batch.GetEvents() {
			ids = append(ids, ev.GetConnectionId())
			if id := ev.GetConnectionId(); (id == 1 || id == 4) != (ev.GetTransaction().GetFault() == "bad\uFFFD") {
				t.Fatalf("event %d: fault %q", id, ev.GetTransaction().GetFault())
			}
		}
	}
	if fmt.Sprint(ids) != "[1 2 3 4 5 6]" {
		t.Fatalf("stored events %v, want [1 2 3 4 5 6]", ids)
	}
}

// variedEvents are one of each kind, with captured data, escapes and
// multi-byte text: what the JSON export must carry unchanged. Each has
// its own connection id; their times increase, as the hub keeps them.
func variedEvents() []*proxy.Event {
	t0 := time.Unix(1700000000, 123456789)
	get := txEvent("p", 1, distcache.OpGet)
	get.Client = "127.0.0.1:40312"
	get.Tx.Status, get.Tx.Hit, get.Tx.DataLen, get.Tx.HasDigest = distcache.StatusOK, true, 1200, true
	get.Tx.Digest = [distcache.DigestSize]byte{1, 2, 3, 4, 5, 6, 7, 8}
	get.Tx.Data, get.Tx.DataTruncated = []byte("\x30\x82\x04\xb1 session \"data\""), true
	add := txEvent("p", 2, distcache.OpAdd)
	add.Tx.TimeoutMS, add.Tx.RequestSize, add.Tx.RequestFrames, add.Tx.Fault = 300000, 1238, 1, "délai \"x\"\n"
	return []*proxy.Event{
		{Kind: proxy.KindConnOpened, Time: time.Unix(1700000000, 0), Proxy: "p", ConnID: 3, Client: "[::1]:5000"},
		get, // at 1700000000 s + 1 ns
		add, // + 2 ns
		{Kind: proxy.KindConnClosed, Time: t0.Add(time.Second), Proxy: "p", ConnID: 4, Client: "[::1]:5000",
			Closed: &proxy.ConnClosed{BytesUp: 1300, BytesDown: 1250, Duration: 6 * time.Millisecond, Transactions: 3, Reason: "client closed"}},
		{Kind: proxy.KindProtocolError, Time: t0.Add(2 * time.Second), Proxy: "p", ConnID: 5, Direction: distcache.ServerToClient,
			Policy: proxy.PassThrough, Err: &distcache.ProtocolError{Rule: distcache.RuleVersion, Field: "proto_level", Offset: 140, Frame: 3}},
		{Kind: proxy.KindConnectFailed, Time: t0.Add(3 * time.Second), Proxy: "p", ConnID: 6, Err: errors.New("dial unix /run/dc.sock: \x01 refused\t€")},
		{Kind: proxy.KindConnRefused, Time: t0.Add(4 * time.Second), Proxy: "p", ConnID: 7, Err: errors.New("at the connection limit (2)")},
	}
}

// TestExportJSONIsProtojson: the JSON payloads, batched and one event a
// message, read back with protojson as exactly the events exported
// (rendered by the daemon's own conversion), and are byte for byte the
// compact protojson of those messages, with protojson's default
// (lowerCamelCase) keys as the export has always written them.
func TestExportJSONIsProtojson(t *testing.T) {
	want := map[uint64]*snoopv1.Event{}
	enc := daemon.NewEventEncoder()
	for _, e := range variedEvents() {
		ev := new(snoopv1.Event)
		if err := proto.Unmarshal(enc.AppendData(enc.AppendEvent(nil, e, ""), e), ev); err != nil {
			t.Fatal(err)
		}
		ev.Daemon = "d"
		want[e.ConnID] = ev
	}
	for _, batch := range []int{64, 1} {
		t.Run(fmt.Sprintf("batch%d", batch), func(t *testing.T) {
			srv := natstest.Start(t)
			h := hub.New(hub.Config{Interval: time.Millisecond, NewEncoder: daemon.NewEventEncoder})
			defer h.Close()
			x := start(t, h, export.Config{Servers: []string{srv.URL()}, Daemon: "d", Stream: "SNOOP", Format: export.FormatJSON,
				Data: true, Batch: batch, FlushInterval: 20 * time.Millisecond})
			evs := variedEvents()
			for _, e := range evs {
				h.Publish(e)
			}
			waitFor(t, "settled", func() bool { s := x.Stats(); return s.GetPublished()+s.GetDropped() == uint64(len(evs)) })
			if s := x.Stats(); s.GetPublished() != uint64(len(evs)) {
				t.Fatalf("stats %v", s)
			}
			seen := map[uint64]bool{}
			for _, m := range storedMessages(t, srv.URL(), "SNOOP") {
				var got []*snoopv1.Event
				var compact []byte
				var err error
				if batch == 1 {
					ev := &snoopv1.Event{}
					err = protojson.Unmarshal(m.Data, ev)
					got = []*snoopv1.Event{ev}
					compact, _ = apijson.AppendProto(nil, ev, apijson.CamelKeys)
				} else {
					r := &snoopv1.WatchEventsResponse{}
					err = protojson.Unmarshal(m.Data, r)
					got = r.GetEvents()
					compact, _ = apijson.AppendProto(nil, r, apijson.CamelKeys)
				}
				if err != nil {
					t.Fatalf("%s: %v\n%s", m.Subject, err, m.Data)
				}
				if !bytes.Equal(m.Data, compact) {
					t.Errorf("%s: not compact protojson:\n got %s\nwant %s", m.Subject, m.Data, compact)
				}
				for _, ev := range got {
					id := ev.GetConnectionId()
					if seen[id] || want[id] == nil {
						t.Fatalf("event %d again or unknown: %v", id, ev)
					}
					seen[id] = true
					if !proto.Equal(ev, want[id]) {
						t.Errorf("event %d:\n got %v\nwant %v", id, ev, want[id])
					}
				}
			}
			if len(seen) != len(want) {
				t.Fatalf("%d of %d events stored", len(seen), len(want))
			}
		})
	}
}
