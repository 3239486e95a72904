package format

import (
	"bytes"
	"encoding/json"
	"flag"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/snoopd/snoopd/ctl/stats"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
	"github.com/snoopd/snoopd/internal/apiconv"
	"github.com/snoopd/snoopd/internal/histogram"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// base is the fixed time of every test event.
var base = time.Date(2026, 3, 14, 15, 9, 26, 535897000, time.UTC)

func at(ms int) *timestamppb.Timestamp {
	return timestamppb.New(base.Add(time.Duration(ms) * time.Millisecond))
}

// Events is a fixed stream with one of every kind, used by the golden
// tests of this package.
func events() []*snoopv1.WatchEventsResponse {
	ev := func(e *snoopv1.Event) *snoopv1.WatchEventsResponse { return &snoopv1.WatchEventsResponse{Event: e} }
	long := []byte("0123456789abcdef0123456789abcdef")
	return []*snoopv1.WatchEventsResponse{
		ev(&snoopv1.Event{Kind: snoopv1.EventKind_EVENT_KIND_CONNECTION_OPENED, Time: at(0), Proxy: "web", ConnectionId: 7, Client: "127.0.0.1:40312"}),
		{HistoryDone: true},
		ev(&snoopv1.Event{Kind: snoopv1.EventKind_EVENT_KIND_TRANSACTION, Time: at(1), Proxy: "web", ConnectionId: 7, Client: "127.0.0.1:40312",
			Transaction: &snoopv1.Transaction{Op: snoopv1.Op_OP_ADD, RequestUid: 1, SessionId: long, SessionIdLength: 32, TimeoutMs: 300000,
				RequestSize: 1238, ResponseSize: 1, Result: "ok", DataLength: 1200, Latency: durationpb.New(245 * time.Microsecond),
				Data: []byte("\x30\x82\x04\xb1 session data that spans more than thirty-two bytes"), DataTruncated: true}}),
		ev(&snoopv1.Event{Kind: snoopv1.EventKind_EVENT_KIND_TRANSACTION, Time: at(2), Proxy: "web", ConnectionId: 7,
			Transaction: &snoopv1.Transaction{Op: snoopv1.Op_OP_GET, RequestUid: 2, SessionId: long, SessionIdLength: 32,
				RequestSize: 36, ResponseSize: 1201, Result: "hit", DataLength: 1200, Latency: durationpb.New(1234567 * time.Nanosecond)}}),
		ev(&snoopv1.Event{Kind: snoopv1.EventKind_EVENT_KIND_TRANSACTION, Time: at(3), Proxy: "web", ConnectionId: 7,
			Transaction: &snoopv1.Transaction{Op: snoopv1.Op_OP_GET, RequestUid: 3, SessionId: []byte{0xde, 0xad}, SessionIdLength: 2,
				RequestSize: 6, ResponseSize: 1, Result: "miss", Status: 1, Latency: durationpb.New(12 * time.Millisecond)}}),
		{Dropped: 42},
		ev(&snoopv1.Event{Kind: snoopv1.EventKind_EVENT_KIND_TRANSACTION, Time: at(4), Proxy: "web", ConnectionId: 7,
			Transaction: &snoopv1.Transaction{Op: snoopv1.Op_OP_REMOVE, RequestUid: 4, SessionId: long[:8], SessionIdLength: 8,
				RequestSize: 12, Result: "unanswered"}}),
		ev(&snoopv1.Event{Kind: snoopv1.EventKind_EVENT_KIND_PROTOCOL_ERROR, Time: at(5), Proxy: "web", ConnectionId: 7,
			ProtocolError: &snoopv1.ProtocolError{Rule: "version", Direction: "client->server", Field: "proto_level", Offset: 140, Frame: 3,
				Message: "protocol level 9, want 1", Policy: snoopv1.CorruptPolicy_CORRUPT_POLICY_CLOSE}}),
		ev(&snoopv1.Event{Kind: snoopv1.EventKind_EVENT_KIND_CAPTURE_GAP, Time: at(5), Proxy: "web", ConnectionId: 7,
			CaptureGap: &snoopv1.CaptureGap{Direction: "server->client", FirstOffset: 2896, LastOffset: 4343, BytesMissing: 1448}}),
		ev(&snoopv1.Event{Kind: snoopv1.EventKind_EVENT_KIND_CONNECTION_CLOSED, Time: at(6), Proxy: "web", ConnectionId: 7, Client: "127.0.0.1:40312",
			Closed: &snoopv1.ConnectionClosed{BytesUp: 1300, BytesDown: 1250, Duration: durationpb.New(6 * time.Millisecond), Transactions: 3, Reason: "protocol error"}}),
		ev(&snoopv1.Event{Kind: snoopv1.EventKind_EVENT_KIND_CONNECT_FAILED, Time: at(7), Proxy: "api", Client: "[::1]:5000",
			Error: "dial unix /run/dc.sock: connect: connection refused"}),
		ev(&snoopv1.Event{Kind: snoopv1.EventKind_EVENT_KIND_CONNECTION_REFUSED, Time: at(8), Proxy: "api", Client: "[::1]:5001",
			Error: "at the connection limit (2)\nsecond line"}),
		ev(&snoopv1.Event{Kind: snoopv1.EventKind_EVENT_KIND_TRANSACTION, Time: at(1500), Proxy: "api", ConnectionId: 9,
			Transaction: &snoopv1.Transaction{Op: snoopv1.Op_OP_HAVE, RequestUid: 5, SessionId: []byte("x"), SessionIdLength: 1,
				RequestSize: 5, ResponseSize: 1, Result: "notok", Status: 1, Latency: durationpb.New(1500 * time.Millisecond)}}),
	}
}

// golden compares got with testdata/name, or rewrites it with -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs (go test -update rewrites it)\n--- got\n%s\n--- want\n%s", name, got, want)
	}
}

func TestEventTextGolden(t *testing.T) {
	tests := []struct {
		file string
		text Text
	}{
		{"events.txt", Text{Location: time.UTC}},
		{"events-date-data.txt", Text{Location: time.UTC, Date: true, Data: true}},
		{"events-color.txt", Text{Location: time.UTC, Color: true}},
		{"events-zone.txt", Text{Location: time.FixedZone("CET", 3600)}},
	}
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			var b []byte
			for _, r := range events() {
				b = tc.text.AppendResponse(b, r)
			}
			golden(t, tc.file, b)
			if !tc.text.Color && bytes.Contains(b, []byte("\x1b[")) {
				t.Error("colour codes without Color")
			}
		})
	}
}

// TestEventTextOneLine checks that every event is exactly one line unless
// data was asked for, whatever the daemon put in its messages.
func TestEventTextOneLine(t *testing.T) {
	for _, r := range events() {
		line := Text{}.AppendResponse(nil, r)
		if bytes.Count(line, []byte("\n")) != 1 || line[len(line)-1] != '\n' {
			t.Errorf("not one line: %q", line)
		}
	}
}

func TestEventsJSONGolden(t *testing.T) {
	var b, lines []byte
	for _, r := range events() {
		var err error
		if b, err = AppendJSON(b, r); err != nil {
			t.Fatal(err)
		}
		b = append(b, '\n')
		// tail -o json and save write their lines with the hand
		// encoder: the same bytes.
		if lines, err = AppendResponseLine(lines, r); err != nil {
			t.Fatal(err)
		}
		lines = append(lines, '\n')
	}
	golden(t, "events.jsonl", b)
	if !bytes.Equal(lines, b) {
		t.Errorf("AppendResponseLine's lines differ from AppendJSON's:\n%s", lines)
	}
	// Each line is the API's protojson and parses back to the same message.
	for i, line := range bytes.Split(bytes.TrimSuffix(b, []byte("\n")), []byte("\n")) {
		got := &snoopv1.WatchEventsResponse{}
		if err := protojson.Unmarshal(line, got); err != nil {
			t.Fatalf("line %d: %v", i+1, err)
		}
		if !proto.Equal(got, events()[i]) {
			t.Errorf("line %d does not round-trip: %s", i+1, line)
		}
		var compact bytes.Buffer
		if err := json.Compact(&compact, line); err != nil || !bytes.Equal(compact.Bytes(), line) {
			t.Errorf("line %d is not compact JSON (%v): %s", i+1, err, line)
		}
	}
}

func proxies() []*snoopv1.Proxy {
	return []*snoopv1.Proxy{
		{
			Spec: &snoopv1.ProxySpec{Name: "api", Listen: "IP:127.0.0.1:0", Server: "UNIX:/run/dc.sock", Enabled: proto.Bool(false),
				OnCorrupt: snoopv1.CorruptPolicy_CORRUPT_POLICY_PASSTHROUGH},
			ListenAddress: "IP:127.0.0.1:41000", State: snoopv1.ProxyState_PROXY_STATE_DISABLED,
			Counters:   &snoopv1.ProxyCounters{ConnectionsTotal: 2, ConnectFailures: 1, ConnectionsRefused: 1, LoopEchoes: 9},
			Conditions: []string{"forwarding-loop"},
		},
		{
			Spec:  &snoopv1.ProxySpec{Name: "old", Listen: "IP:127.0.0.1:9100", Server: "IP:10.0.0.5:9001"},
			State: snoopv1.ProxyState_PROXY_STATE_FAILED, Error: "listen tcp 127.0.0.1:9100: bind: address already in use",
			Counters: &snoopv1.ProxyCounters{},
		},
		{
			Spec: &snoopv1.ProxySpec{Name: "web", Listen: "IP:127.0.0.1:9101", Server: "UNIX:/run/dc.sock", CaptureData: true,
				MaxConnections: 100, DialTimeout: durationpb.New(2 * time.Second),
				IdleTimeout: durationpb.New(0), MessageTimeout: durationpb.New(90 * time.Minute), ResponseTimeout: durationpb.New(1500 * time.Millisecond)},
			ListenAddress: "IP:127.0.0.1:9101", State: snoopv1.ProxyState_PROXY_STATE_LISTENING,
			CreateTime: timestamppb.New(base.Add(-90 * time.Minute)),
			Counters: &snoopv1.ProxyCounters{ConnectionsActive: 2, ConnectionsTotal: 40, ProtocolErrors: 1, BytesUp: 1 << 20, BytesDown: 3 << 20,
				FramesUp: 900, FramesDown: 950, Transactions: 1000, Timeouts: 4, LoopRefusals: 3, SparesDialled: 40, SpareFailures: 2, SparesLost: 37,
				Ops: []*snoopv1.OpCounters{
					{Op: snoopv1.Op_OP_ADD, Count: 300, Results: map[string]int64{"ok": 298, "exists": 2},
						Latency: addLat.summary, Histogram: addLat.hist},
					{Op: snoopv1.Op_OP_GET, Count: 700, Results: map[string]int64{"hit": 630, "miss": 69, "status(9)": 1},
						Latency: getLat.summary, Histogram: getLat.hist},
				},
				Histogram: allLat.hist,
				Latency: &snoopv1.LatencySummary{Count: 1000, Mean: durationpb.New(300 * time.Microsecond), P50: durationpb.New(250 * time.Microsecond),
					P90: durationpb.New(600 * time.Microsecond), P99: durationpb.New(2 * time.Millisecond), Max: durationpb.New(15 * time.Millisecond)}},
		},
	}
}

// latencies is a made-up latency distribution in the API's two forms.
type latencies struct {
	summary *snoopv1.LatencySummary
	hist    *snoopv1.Histogram
}

func newLatencies(samples map[time.Duration]uint64) latencies {
	var s histogram.Snapshot
	for d, n := range samples {
		s.RecordN(d, n)
	}
	return latencies{apiconv.LatencySummary(&s), apiconv.Histogram(&s)}
}

var (
	addSamples = map[time.Duration]uint64{180 * time.Microsecond: 100, 300 * time.Microsecond: 150, 700 * time.Microsecond: 45, 3 * time.Millisecond: 3}
	getSamples = map[time.Duration]uint64{120 * time.Microsecond: 400, 250 * time.Microsecond: 250, 600 * time.Microsecond: 40, 15 * time.Millisecond: 9}
	addLat     = newLatencies(addSamples)
	getLat     = newLatencies(getSamples)
	allLat     = newLatencies(func() map[time.Duration]uint64 {
		m := maps.Clone(addSamples)
		maps.Copy(m, getSamples)
		return m
	}())
)

func conns() []*snoopv1.Connection {
	return []*snoopv1.Connection{
		{Id: 7, Client: "127.0.0.1:40312", OpenTime: timestamppb.New(base.Add(-5 * time.Minute)), BytesUp: 1300, BytesDown: 1250, Transactions: 3},
		{Id: 12, Client: "UNIX:@", OpenTime: timestamppb.New(base.Add(-1500 * time.Millisecond)), BytesUp: 40, Pending: 1},
	}
}

func TestProxyGolden(t *testing.T) {
	var b bytes.Buffer
	if err := WriteProxyList(&b, proxies()); err != nil {
		t.Fatal(err)
	}
	golden(t, "list.txt", b.Bytes())

	for _, p := range proxies() {
		b.Reset()
		var cs []*snoopv1.Connection
		if p.GetSpec().GetName() == "web" {
			cs = conns()
		}
		if err := WriteProxy(&b, p, cs, base, time.UTC); err != nil {
			t.Fatal(err)
		}
		golden(t, "show-"+p.GetSpec().GetName()+".txt", b.Bytes())
	}

	b.Reset()
	if err := WriteConns(&b, conns(), base, time.UTC); err != nil {
		t.Fatal(err)
	}
	golden(t, "conns.txt", b.Bytes())
}

func TestTimeout(t *testing.T) {
	for _, tc := range []struct {
		d    *durationpb.Duration
		want string
	}{
		{nil, "5m (default)"},
		{durationpb.New(0), "off"},
		{durationpb.New(30 * time.Second), "30s"},
		{durationpb.New(2 * time.Hour), "2h"},
		{durationpb.New(90 * time.Minute), "1h30m"},
		{durationpb.New(1500 * time.Millisecond), "1.5s"},
	} {
		if got := Timeout(tc.d, 5*time.Minute); got != tc.want {
			t.Errorf("Timeout(%v) = %q, want %q", tc.d, got, tc.want)
		}
	}
}

func TestApplyGolden(t *testing.T) {
	resp := &snoopv1.ApplyProxiesResponse{Results: []*snoopv1.ApplyResult{
		{Name: "api", Action: snoopv1.ApplyAction_APPLY_ACTION_CHANGED},
		{Name: "new", Action: snoopv1.ApplyAction_APPLY_ACTION_CREATED},
		{Name: "old", Action: snoopv1.ApplyAction_APPLY_ACTION_REMOVED},
		{Name: "moved", Action: snoopv1.ApplyAction_APPLY_ACTION_CHANGED},
		{Name: "web", Action: snoopv1.ApplyAction_APPLY_ACTION_UNCHANGED},
	}}
	moved := func(name string) bool { return name == "moved" }
	var b bytes.Buffer
	if err := WriteApply(&b, resp, false, moved, nil); err != nil {
		t.Fatal(err)
	}
	if err := WriteApply(&b, resp, true, moved, nil); err != nil {
		t.Fatal(err)
	}
	golden(t, "apply.txt", b.Bytes())
}

func TestStatsGolden(t *testing.T) {
	c := stats.New()
	for _, r := range events() {
		c.Add(r)
	}
	var b bytes.Buffer
	if err := WriteStats(&b, c.Table(), 1500*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	b.WriteString("--- empty\n")
	if err := WriteStats(&b, stats.New().Table(), time.Second); err != nil {
		t.Fatal(err)
	}
	golden(t, "stats.txt", b.Bytes())

	js, err := StatsJSON(c.Table(), base, 1500*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "stats.json", append(js, '\n'))
}

func TestDurationAndBytes(t *testing.T) {
	durations := map[time.Duration]string{
		0: "0ns", 999: "999ns", time.Microsecond: "1.00µs", 12345 * time.Nanosecond: "12.3µs",
		245 * time.Microsecond: "245µs", 1234567: "1.23ms", 1500 * time.Millisecond: "1.50s",
		100 * time.Second: "100s", 2 * time.Hour: "2h0m0s", -time.Millisecond: "-1.00ms",
	}
	for d, want := range durations {
		if got := Duration(d); got != want {
			t.Errorf("Duration(%d) = %q, want %q", int64(d), got, want)
		}
	}
	sizes := map[int64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 1536: "1.5 KiB", 3 << 20: "3.0 MiB", 5 << 30: "5.0 GiB"}
	for n, want := range sizes {
		if got := Bytes(n); got != want {
			t.Errorf("Bytes(%d) = %q, want %q", n, got, want)
		}
	}
	ids := []struct {
		id   []byte
		full uint32
		want string
	}{
		{nil, 0, "-"},
		{[]byte{1, 2}, 2, "0102"},
		{[]byte{1, 2, 3, 4, 5, 6, 7, 8}, 8, "0102030405060708"},
		{[]byte{1, 2, 3, 4, 5, 6, 7, 8, 9}, 9, "0102030405060708…"},
		{[]byte{1, 2, 3, 4, 5, 6, 7, 8}, 32, "0102030405060708…"},
		{[]byte("dcload-8a3f2c1d-0042"), 20, "dcload-8a3f2c1d-0042"},
		{[]byte("dcload-8a3f2c1d9e7b-000042"), 26, "dcload-8a3f2c1…b-000042"},
		{[]byte("dcload-8a3f2c1d9e7b-000042"), 64, "dcload-8a3f2c1d9e7b-00…"},
		{[]byte("cafe"), 4, "63616665"},
		{[]byte("e2e-7"), 5, "e2e-7"},
	}
	for _, tc := range ids {
		if got := ShortID(tc.id, tc.full); got != tc.want {
			t.Errorf("ShortID(%x, %d) = %q, want %q", tc.id, tc.full, got, tc.want)
		}
	}
	if s := string(AppendDropped(nil, 1)); !strings.HasPrefix(s, "dropped 1 event ") {
		t.Errorf("AppendDropped(1) = %q", s)
	}
}

// TestLogBinsAndBars checks the regrouping into 1-2-5 bars against
// samples whose bars are known, and the drawings made of them.
func TestLogBinsAndBars(t *testing.T) {
	var h histogram.Snapshot
	if LogBins(&h) != nil || Sparkline(&h) != "-" {
		t.Errorf("an empty histogram has bars")
	}
	h.RecordN(30*time.Microsecond, 10)  // 20-50µs
	h.RecordN(49*time.Microsecond, 10)  // 20-50µs, a fine bucket below 50µs
	h.RecordN(300*time.Microsecond, 40) // 200-500µs
	h.RecordN(1500*time.Microsecond, 5) // 1-2ms
	h.RecordN(500*time.Nanosecond, 1)   // below 1µs: the first bar, from 0
	bins := LogBins(&h)
	want := map[time.Duration]uint64{0: 1, 20 * time.Microsecond: 20, 200 * time.Microsecond: 40, time.Millisecond: 5}
	var total uint64
	for i, b := range bins {
		total += b.Count
		if b.Count != want[b.Lo] {
			t.Errorf("bar %v-%v: %d, want %d", b.Lo, b.Hi, b.Count, want[b.Lo])
		}
		if i > 0 && b.Lo != bins[i-1].Hi {
			t.Errorf("bar %d starts at %v, the previous ends at %v", i, b.Lo, bins[i-1].Hi)
		}
	}
	if total != h.Count || bins[0].Lo != 0 || bins[len(bins)-1].Hi != 2*time.Millisecond {
		t.Errorf("bars %v: total %d of %d", bins, total, h.Count)
	}
	// 0-1µs, 1-2, 2-5, 5-10, 10-20, 20-50, 50-100, 100-200, 200-500, 500-1ms, 1-2ms.
	if got := Sparkline(&h); got != "0 [▁    ▄  █ ▁] 2ms" {
		t.Errorf("sparkline %q", got)
	}
	var b bytes.Buffer
	if err := WriteBars(&b, &h, "  ", 8); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
	if len(lines) != len(bins) || !strings.Contains(lines[8], "200µs–500µs   ████████   40   60.6%") ||
		!strings.Contains(lines[5], "20µs–50µs     ████       20   30.3%") {
		t.Errorf("bars:\n%s", b.String())
	}
	if got := Bar(1, 1000, 4); got != "▏   " {
		t.Errorf("a tiny share is %q, want a sliver", got)
	}
}

// show names the chain of proxies a proxy's traffic goes through, and
// says when it is a loop.
func TestShowNamesTheChain(t *testing.T) {
	for _, tc := range []struct {
		chain []string
		end   string
		want  string
	}{
		{[]string{"outer", "inner"}, "IP:127.0.0.1:9001", "\nchain:          outer → inner → IP:127.0.0.1:9001\n"},
		{[]string{"ping", "pong", "ping"}, "", "\nchain:          ping → pong → ping (a proxy loop)\n"},
	} {
		var b bytes.Buffer
		p := &snoopv1.Proxy{Spec: &snoopv1.ProxySpec{Name: tc.chain[0], Server: "IP:127.0.0.1:9002"}, Chain: tc.chain, ChainServer: tc.end}
		if err := WriteProxy(&b, p, nil, base, time.UTC); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(b.String(), tc.want) {
			t.Errorf("show lacks %q:\n%s", tc.want, b.String())
		}
	}
	var b bytes.Buffer
	if err := WriteProxy(&b, &snoopv1.Proxy{Spec: &snoopv1.ProxySpec{Name: "alone", Server: "IP:127.0.0.1:9001"}}, nil, base, time.UTC); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(b.String(), "chain:") {
		t.Errorf("a proxy in front of a real server shows a chain:\n%s", b.String())
	}
}
