package apijson

import (
	"bytes"
	"flag"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
)

// randString returns strings of the kinds the daemon sends and the kinds
// that need escaping: empty, plain, quotes and backslashes, every control
// character, multi-byte UTF-8, U+FFFD itself, and (rarely) invalid UTF-8.
func randString(rng *rand.Rand) string {
	pieces := []string{"", "web", "127.0.0.1:40312", "[::1]:5000", `say "hi"`, `back\slash`, "tab\there",
		"line\nbreak\r", "\b\f", "\x00\x01\x1f\x7f", "é€😀", "\uFFFD", "<&>", "\u2028\u2029", "dial unix /run/dc.sock: connect: connection refused"}
	if rng.IntN(200) == 0 {
		pieces = append(pieces, "\xff\xfe", "ok\xc3")
	}
	var b strings.Builder
	for range rng.IntN(4) {
		b.WriteString(pieces[rng.IntN(len(pieces))])
		if rng.IntN(4) == 0 {
			b.WriteByte(byte(rng.IntN(0x80)))
		}
	}
	return b.String()
}

func randBytes(rng *rand.Rand, max int) []byte {
	if rng.IntN(3) == 0 {
		return nil
	}
	b := make([]byte, rng.IntN(max+1))
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

// randInt64 favours the values where encodings change: zero, small,
// negative, extremes.
func randInt64(rng *rand.Rand) int64 {
	switch rng.IntN(6) {
	case 0:
		return 0
	case 1:
		return rng.Int64N(1000)
	case 2:
		return -rng.Int64N(1000)
	case 3:
		return []int64{1<<63 - 1, -1 << 63, 1 << 53}[rng.IntN(3)]
	}
	return rng.Int64()
}

func randNanos(rng *rand.Rand) int32 {
	switch rng.IntN(6) {
	case 0:
		return 0
	case 1:
		return int32(rng.IntN(1000)) * 1e6
	case 2:
		return int32(rng.IntN(1e6)) * 1e3
	case 3:
		return []int32{1e9, -1, 999999999, 1e9 - 1000}[rng.IntN(4)] // edges and invalid
	}
	return rng.Int32N(1e9)
}

func randTimestamp(rng *rand.Rand) *timestamppb.Timestamp {
	switch rng.IntN(12) {
	case 0:
		return nil
	case 1:
		return &timestamppb.Timestamp{}
	case 2: // around and beyond protojson's range
		return &timestamppb.Timestamp{Seconds: []int64{minTimestampSeconds, maxTimestampSeconds, minTimestampSeconds - 1, maxTimestampSeconds + 1, -1}[rng.IntN(5)], Nanos: randNanos(rng)}
	case 3:
		return timestamppb.New(time.Now())
	}
	return &timestamppb.Timestamp{Seconds: 1_700_000_000 + rng.Int64N(1e9), Nanos: randNanos(rng)}
}

func randDuration(rng *rand.Rand) *durationpb.Duration {
	switch rng.IntN(10) {
	case 0:
		return nil
	case 1:
		return &durationpb.Duration{}
	case 2: // edges, mismatched signs, out of range
		return &durationpb.Duration{Seconds: []int64{maxDurationSeconds, -maxDurationSeconds, maxDurationSeconds + 1, 5, -5, 0}[rng.IntN(6)],
			Nanos: []int32{-5e8, 5e8, 0, -999999999, 1e9, -1e9}[rng.IntN(6)]}
	case 3:
		return durationpb.New(time.Duration(rng.Int64()))
	}
	return durationpb.New(time.Duration(rng.Int64N(int64(10 * time.Second))))
}

// randEnum returns mostly named values, sometimes a number without a name.
func randEnum(rng *rand.Rand, names map[int32]string) int32 {
	if rng.IntN(30) == 0 {
		return 99
	}
	return rng.Int32N(int32(len(names)))
}

func randEvent(rng *rand.Rand) *snoopv1.Event {
	ev := &snoopv1.Event{
		Kind:         snoopv1.EventKind(randEnum(rng, snoopv1.EventKind_name)),
		Time:         randTimestamp(rng),
		Proxy:        randString(rng),
		ConnectionId: uint64(randInt64(rng)),
		Client:       randString(rng),
		Error:        randString(rng),
	}
	if rng.IntN(2) == 0 {
		ev.EndTime = randTimestamp(rng)
		ev.ProxyInstance, ev.Daemon = randString(rng), randString(rng)
	}
	if rng.IntN(2) == 0 {
		ev.Transaction = &snoopv1.Transaction{
			Op:              snoopv1.Op(randEnum(rng, snoopv1.Op_name)),
			RequestUid:      rng.Uint32() >> rng.IntN(33),
			SessionId:       randBytes(rng, 64),
			SessionIdLength: rng.Uint32N(100),
			TimeoutMs:       rng.Uint32() >> rng.IntN(33),
			RequestSize:     rng.Uint32N(40000),
			ResponseSize:    rng.Uint32N(40000),
			RequestFrames:   rng.Uint32N(3),
			ResponseFrames:  rng.Uint32N(3),
			Result:          []string{"", "ok", "hit", "miss", "unanswered"}[rng.IntN(5)],
			Status:          rng.Uint32N(3),
			DataLength:      rng.Uint32N(3) * rng.Uint32N(40000),
			DataDigest:      randBytes(rng, 8),
			Data:            randBytes(rng, 100),
			DataTruncated:   rng.IntN(2) == 0,
			StartTime:       randTimestamp(rng),
			Latency:         randDuration(rng),
			ServerLatency:   durationpb.New(time.Duration(rng.Int64N(int64(time.Hour)))),
		}
		if rng.IntN(8) == 0 {
			ev.Transaction.Fault = randString(rng)
		}
		if rng.IntN(20) == 0 {
			ev.Transaction = &snoopv1.Transaction{}
		}
	}
	if rng.IntN(4) == 0 {
		ev.Closed = &snoopv1.ConnectionClosed{BytesUp: randInt64(rng), BytesDown: randInt64(rng), Duration: randDuration(rng),
			Transactions: randInt64(rng), Reason: randString(rng)}
	}
	if rng.IntN(4) == 0 {
		ev.ProtocolError = &snoopv1.ProtocolError{Rule: randString(rng), Direction: randString(rng), Field: randString(rng),
			Offset: randInt64(rng), Frame: randInt64(rng), Message: randString(rng),
			Policy: snoopv1.CorruptPolicy(randEnum(rng, snoopv1.CorruptPolicy_name))}
	}
	if rng.IntN(4) == 0 {
		ev.CaptureGap = &snoopv1.CaptureGap{Direction: randString(rng), FirstOffset: randInt64(rng),
			LastOffset: randInt64(rng), BytesMissing: randInt64(rng)}
	}
	if rng.IntN(40) == 0 {
		ev = &snoopv1.Event{}
	}
	return ev
}

// randResponse returns every shape of stream response: events, batches,
// drop notices, the end of the history.
func randResponse(rng *rand.Rand) *snoopv1.WatchEventsResponse {
	switch rng.IntN(20) {
	case 0:
		return &snoopv1.WatchEventsResponse{Dropped: uint64(randInt64(rng))}
	case 1:
		return &snoopv1.WatchEventsResponse{HistoryDone: true, HistoryMissing: rng.Uint32() >> rng.IntN(33)}
	case 2:
		return &snoopv1.WatchEventsResponse{Event: randEvent(rng), Dropped: rng.Uint64N(3), HistoryDone: rng.IntN(2) == 0}
	case 3, 4:
		evs := make([]*snoopv1.Event, 1+rng.IntN(4))
		for i := range evs {
			evs[i] = randEvent(rng)
		}
		return &snoopv1.WatchEventsResponse{Events: evs}
	case 5:
		return &snoopv1.WatchEventsResponse{}
	}
	return &snoopv1.WatchEventsResponse{Event: randEvent(rng)}
}

var allKeys = []Keys{ProtoKeys, CamelKeys}

// TestMatchesProtojson runs the hand encoder and protojson over many
// generated responses and events, in one reused buffer as its users
// reuse theirs, with both key styles, and requires the same bytes (or an
// error from both).
func TestMatchesProtojson(t *testing.T) {
	rng := rand.New(rand.NewPCG(8, 8))
	var buf []byte
	fast := 0
	const cases = 60000
	for i := range cases {
		k := allKeys[i%2]
		r := randResponse(rng)
		var m proto.Message = r
		buf = append(buf[:0], "prefix"...)
		var err error
		switch {
		case r.GetEvent() != nil && r.GetDropped() == 0 && !r.GetHistoryDone() && rng.IntN(3) == 0:
			buf, err = AppendEventResponse(buf, r.GetEvent(), k)
		case r.GetEvent() != nil && rng.IntN(2) == 0:
			m = r.GetEvent()
			buf, err = AppendEvent(buf, r.GetEvent(), k)
		default:
			buf, err = AppendResponse(buf, r, k)
		}
		want, werr := AppendProto([]byte("prefix"), m, k)
		if (err != nil) != (werr != nil) {
			t.Fatalf("case %d (%v): error %v, protojson %v, for %v", i, k, err, werr, m)
		}
		if err != nil {
			if string(buf) != "prefix" {
				t.Fatalf("case %d (%v): an error left %q in the buffer", i, k, buf)
			}
			continue
		}
		if !bytes.Equal(buf, want) {
			t.Fatalf("case %d (%v) differs:\n got %s\nwant %s", i, k, buf, want)
		}
		if _, slow := appendResponse(nil, k, r.GetEvent(), r.GetDropped(), r.GetHistoryDone(), r.GetHistoryMissing(), r.GetHistoryBeyond(), r.GetEvents()); slow == nil {
			fast++
		}
	}
	// Most cases must have taken the fast path, or the test proves
	// nothing about it.
	if fast < cases*3/4 {
		t.Errorf("only %d of %d cases took the fast path", fast, cases)
	}
}

// fillAll sets every field of m, recursively, to a value other than its
// zero, that the hand encoder can write.
func fillAll(t *testing.T, m protoreflect.Message) {
	fields := m.Descriptor().Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		if fd.IsMap() {
			t.Fatalf("%s: a map field; fillAll and the encoder need to learn maps", fd.FullName())
		}
		if fd.IsList() {
			l := m.Mutable(fd).List()
			for range 2 {
				if fd.Message() != nil {
					e := l.NewElement()
					fillAll(t, e.Message())
					l.Append(e)
				} else {
					l.Append(scalar(t, fd))
				}
			}
			continue
		}
		if fd.Message() == nil {
			m.Set(fd, scalar(t, fd))
			continue
		}
		switch fd.Message().FullName() {
		case "google.protobuf.Timestamp":
			m.Set(fd, protoreflect.ValueOfMessage(timestamppb.New(time.Date(2026, 3, 14, 15, 9, 26, 535897000, time.UTC)).ProtoReflect()))
		case "google.protobuf.Duration":
			m.Set(fd, protoreflect.ValueOfMessage(durationpb.New(1234567*time.Nanosecond).ProtoReflect()))
		default:
			fillAll(t, m.Mutable(fd).Message())
		}
	}
}

func scalar(t *testing.T, fd protoreflect.FieldDescriptor) protoreflect.Value {
	switch fd.Kind() {
	case protoreflect.BoolKind:
		return protoreflect.ValueOfBool(true)
	case protoreflect.EnumKind:
		return protoreflect.ValueOfEnum(fd.Enum().Values().Get(fd.Enum().Values().Len() - 1).Number())
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		return protoreflect.ValueOfInt32(-7)
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		return protoreflect.ValueOfUint32(7)
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		return protoreflect.ValueOfInt64(-1 << 40)
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return protoreflect.ValueOfUint64(1 << 40)
	case protoreflect.StringKind:
		return protoreflect.ValueOfString(string(fd.Name()) + ` "é"`)
	case protoreflect.BytesKind:
		return protoreflect.ValueOfBytes([]byte(fd.Name()))
	}
	t.Fatalf("%s: kind %v; fillAll and the encoder need to learn it", fd.FullName(), fd.Kind())
	return protoreflect.Value{}
}

// TestEveryField sets every field of a response and its events, so that
// a field added to the .proto that the encoder leaves out (or writes out
// of order, or under the wrong key) fails here: the fast path must write
// exactly what protojson writes.
func TestEveryField(t *testing.T) {
	r := &snoopv1.WatchEventsResponse{}
	fillAll(t, r.ProtoReflect())
	for _, k := range allKeys {
		want, err := AppendProto(nil, r, k)
		if err != nil {
			t.Fatal(err)
		}
		got, err := appendResponse(nil, k, r.GetEvent(), r.GetDropped(), r.GetHistoryDone(), r.GetHistoryMissing(), r.GetHistoryBeyond(), r.GetEvents())
		if err != nil {
			t.Fatalf("%v: the fast path refused a response with every field set: %v", k, err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%v differs:\n got %s\nwant %s", k, got, want)
		}
	}
}

// TestCamelNames holds appendCamel to protojson's JSON name of every
// field the encoder writes.
func TestCamelNames(t *testing.T) {
	seen := map[protoreflect.FullName]bool{}
	var walk func(md protoreflect.MessageDescriptor)
	walk = func(md protoreflect.MessageDescriptor) {
		if seen[md.FullName()] || md.FullName().Parent() == "google.protobuf" {
			return
		}
		seen[md.FullName()] = true
		for i := range md.Fields().Len() {
			fd := md.Fields().Get(i)
			if got := string(appendCamel(nil, string(fd.Name()))); got != fd.JSONName() {
				t.Errorf("%s: %q, want %q", fd.FullName(), got, fd.JSONName())
			}
			if fd.Message() != nil {
				walk(fd.Message())
			}
		}
	}
	walk((&snoopv1.WatchEventsResponse{}).ProtoReflect().Descriptor())
	if len(seen) < 5 {
		t.Fatalf("walked %d messages", len(seen))
	}
}

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// base is the fixed time of every test event.
var base = time.Date(2026, 3, 14, 15, 9, 26, 535897000, time.UTC)

func at(ms int) *timestamppb.Timestamp {
	return timestamppb.New(base.Add(time.Duration(ms) * time.Millisecond))
}

// responses is a fixed stream with one of every kind of event and
// notice, and a batch.
func responses() []*snoopv1.WatchEventsResponse {
	ev := func(e *snoopv1.Event) *snoopv1.WatchEventsResponse { return &snoopv1.WatchEventsResponse{Event: e} }
	long := []byte("0123456789abcdef0123456789abcdef")
	return []*snoopv1.WatchEventsResponse{
		ev(&snoopv1.Event{Kind: snoopv1.EventKind_EVENT_KIND_CONNECTION_OPENED, Time: at(0), Proxy: "web", ConnectionId: 7, Client: "127.0.0.1:40312",
			ProxyInstance: "3f2a", Daemon: "web-7", EndTime: at(0)}),
		{HistoryDone: true, HistoryMissing: 3},
		ev(&snoopv1.Event{Kind: snoopv1.EventKind_EVENT_KIND_TRANSACTION, Time: at(1), Proxy: "web", ConnectionId: 7, Client: "127.0.0.1:40312",
			Transaction: &snoopv1.Transaction{Op: snoopv1.Op_OP_ADD, RequestUid: 1, SessionId: long, SessionIdLength: 32, TimeoutMs: 300000,
				RequestSize: 1238, ResponseSize: 1, RequestFrames: 1, ResponseFrames: 1, Result: "ok", DataLength: 1200,
				DataDigest: []byte("12345678"), StartTime: at(1), Latency: durationpb.New(245 * time.Microsecond),
				Data: []byte("\x30\x82\x04\xb1 session data that spans more than thirty-two bytes"), DataTruncated: true}}),
		{Events: []*snoopv1.Event{
			{Kind: snoopv1.EventKind_EVENT_KIND_TRANSACTION, Time: at(2), Proxy: "web", ConnectionId: 7,
				Transaction: &snoopv1.Transaction{Op: snoopv1.Op_OP_GET, RequestUid: 2, SessionId: long, SessionIdLength: 32,
					RequestSize: 36, ResponseSize: 1201, Result: "hit", DataLength: 1200, Latency: durationpb.New(1234567 * time.Nanosecond)}},
			{Kind: snoopv1.EventKind_EVENT_KIND_TRANSACTION, Time: at(3), Proxy: "web", ConnectionId: 7,
				Transaction: &snoopv1.Transaction{Op: snoopv1.Op_OP_GET, RequestUid: 3, SessionId: []byte{0xde, 0xad}, SessionIdLength: 2,
					RequestSize: 6, ResponseSize: 1, Result: "miss", Status: 1, Latency: durationpb.New(12 * time.Millisecond), Fault: "delay"}},
		}},
		{Dropped: 42},
		ev(&snoopv1.Event{Kind: snoopv1.EventKind_EVENT_KIND_PROTOCOL_ERROR, Time: at(5), Proxy: "web", ConnectionId: 7,
			ProtocolError: &snoopv1.ProtocolError{Rule: "version", Direction: "client->server", Field: "proto_level", Offset: 140, Frame: 3,
				Message: "protocol level 9, want 1", Policy: snoopv1.CorruptPolicy_CORRUPT_POLICY_CLOSE}}),
		ev(&snoopv1.Event{Kind: snoopv1.EventKind_EVENT_KIND_CONNECTION_CLOSED, Time: at(6), Proxy: "web", ConnectionId: 7, Client: "127.0.0.1:40312",
			Closed: &snoopv1.ConnectionClosed{BytesUp: 1300, BytesDown: 1250, Duration: durationpb.New(6 * time.Millisecond), Transactions: 3, Reason: "protocol error"}}),
		ev(&snoopv1.Event{Kind: snoopv1.EventKind_EVENT_KIND_CONNECT_FAILED, Time: at(7), Proxy: "api", Client: "[::1]:5000",
			Error: "dial unix /run/dc.sock: connect: connection refused"}),
		ev(&snoopv1.Event{Kind: snoopv1.EventKind_EVENT_KIND_CONNECTION_REFUSED, Time: at(8), Proxy: "api", Client: "[::1]:5001",
			Error: "at the connection limit (2)\nsecond line \"quoted\" \\ \x01"}),
	}
}

// TestGolden holds the encoder to the golden lines, in both key styles.
func TestGolden(t *testing.T) {
	for _, tc := range []struct {
		file string
		keys Keys
	}{{"responses.jsonl", ProtoKeys}, {"responses-camel.jsonl", CamelKeys}} {
		var b []byte
		for _, r := range responses() {
			var err error
			if b, err = AppendResponse(b, r, tc.keys); err != nil {
				t.Fatal(err)
			}
			b = append(b, '\n')
		}
		path := filepath.Join("testdata", tc.file)
		if *update {
			if err := os.WriteFile(path, b, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		want, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%v (go test -update writes it)", err)
		}
		if !bytes.Equal(b, want) {
			t.Errorf("%s differs (go test -update rewrites it)\n--- got\n%s\n--- want\n%s", tc.file, b, want)
		}
		// Each line parses back to the same message.
		for i, line := range bytes.Split(bytes.TrimSuffix(b, []byte("\n")), []byte("\n")) {
			got := &snoopv1.WatchEventsResponse{}
			if err := protojson.Unmarshal(line, got); err != nil {
				t.Fatalf("%s line %d: %v", tc.file, i+1, err)
			}
			if !proto.Equal(got, responses()[i]) {
				t.Errorf("%s line %d reads back as %v", tc.file, i+1, got)
			}
		}
	}
}

func TestDoesNotAllocate(t *testing.T) {
	rs := responses()
	buf := make([]byte, 0, 64<<10)
	for _, k := range allKeys {
		allocs := testing.AllocsPerRun(100, func() {
			buf = buf[:0]
			for _, r := range rs {
				var err error
				if buf, err = AppendResponse(buf, r, k); err != nil {
					t.Fatal(err)
				}
				if r.GetEvent() != nil {
					if buf, err = AppendEvent(buf, r.GetEvent(), k); err != nil {
						t.Fatal(err)
					}
					if buf, err = AppendEventResponse(buf, r.GetEvent(), k); err != nil {
						t.Fatal(err)
					}
				}
			}
		})
		if allocs != 0 {
			t.Errorf("%v: %v allocations per run of %d responses, want 0", k, allocs, len(rs))
		}
	}
}

// typical is a typical transaction event as snoopctl receives it: a GET
// hit, a 32-byte session id, a digest, no data.
func typical() *snoopv1.Event {
	now := time.Now()
	return &snoopv1.Event{Kind: snoopv1.EventKind_EVENT_KIND_TRANSACTION, Time: timestamppb.New(now),
		Proxy: "sessions", ConnectionId: 42, Client: "127.0.0.1:51234",
		Transaction: &snoopv1.Transaction{Op: snoopv1.Op_OP_GET, RequestUid: 7, SessionId: []byte("0123456789abcdef0123456789abcdef"),
			SessionIdLength: 32, RequestSize: 36, ResponseSize: 1040, RequestFrames: 1, ResponseFrames: 1, Result: "hit",
			DataLength: 1000, DataDigest: []byte("12345678"), StartTime: timestamppb.New(now), Latency: durationpb.New(123456 * time.Nanosecond)}}
}

// BenchmarkJSONLineProtojson is snoopctl's -o json line before:
// protojson and a compaction pass.
func BenchmarkJSONLineProtojson(b *testing.B) {
	benchAppend(b, typical(), func(buf []byte, ev *snoopv1.Event) ([]byte, error) {
		return AppendProto(buf, &snoopv1.WatchEventsResponse{Event: ev}, ProtoKeys)
	})
}

// BenchmarkJSONLineFast is snoopctl's -o json line by the hand encoder.
func BenchmarkJSONLineFast(b *testing.B) {
	benchAppend(b, typical(), func(buf []byte, ev *snoopv1.Event) ([]byte, error) { return AppendEventResponse(buf, ev, ProtoKeys) })
}

// BenchmarkExportEventProtojson is an event of the JSON export before:
// protojson.Marshal, copied into the batch.
func BenchmarkExportEventProtojson(b *testing.B) {
	benchAppend(b, exported(), func(buf []byte, ev *snoopv1.Event) ([]byte, error) {
		j, err := protojson.Marshal(ev)
		return append(buf, j...), err
	})
}

// BenchmarkExportEventFast is an event of the JSON export by the hand
// encoder.
func BenchmarkExportEventFast(b *testing.B) {
	benchAppend(b, exported(), func(buf []byte, ev *snoopv1.Event) ([]byte, error) { return AppendEvent(buf, ev, CamelKeys) })
}

// exported is the typical event as the daemon exports it, with its name
// and end time.
func exported() *snoopv1.Event {
	ev := typical()
	ev.Daemon, ev.EndTime = "web-7", ev.GetTransaction().GetStartTime()
	return ev
}

// benchAppend encodes ev into a reused buffer; one op is one event.
func benchAppend(b *testing.B, ev *snoopv1.Event, enc func([]byte, *snoopv1.Event) ([]byte, error)) {
	buf := make([]byte, 0, 64<<10)
	b.ReportAllocs()
	for i := range b.N {
		if len(buf) > 60<<10 {
			buf = buf[:0]
		}
		var err error
		ev.Transaction.RequestUid = uint32(i)
		if buf, err = enc(buf, ev); err != nil {
			b.Fatal(err)
		}
		buf = append(buf, '\n')
	}
}
