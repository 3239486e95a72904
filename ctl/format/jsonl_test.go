package format

import (
	"bytes"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
	"time"

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
	if rng.IntN(40) == 0 {
		ev = &snoopv1.Event{}
	}
	return ev
}

// TestLinesMatchProtojson runs the hand encoder and the protojson one
// over many generated events and notices, in one reused buffer as tail
// and save use it, and requires the same bytes (or the same error).
func TestLinesMatchProtojson(t *testing.T) {
	rng := rand.New(rand.NewPCG(8, 8))
	var buf []byte
	fast := 0
	for i := range 60000 {
		var r *snoopv1.WatchEventsResponse
		switch rng.IntN(20) {
		case 0:
			r = &snoopv1.WatchEventsResponse{Dropped: uint64(randInt64(rng))}
		case 1:
			r = &snoopv1.WatchEventsResponse{HistoryDone: true}
		case 2:
			r = &snoopv1.WatchEventsResponse{Event: randEvent(rng), Dropped: rng.Uint64N(3), HistoryDone: rng.IntN(2) == 0}
		case 3:
			r = &snoopv1.WatchEventsResponse{Events: []*snoopv1.Event{randEvent(rng), randEvent(rng)}}
		case 4:
			r = &snoopv1.WatchEventsResponse{}
		default:
			r = &snoopv1.WatchEventsResponse{Event: randEvent(rng)}
		}
		want, werr := AppendJSON([]byte("prefix"), r)
		buf = append(buf[:0], "prefix"...)
		var err error
		if r.GetEvent() != nil && r.GetDropped() == 0 && !r.GetHistoryDone() && rng.IntN(2) == 0 {
			buf, err = AppendEventLine(buf, r.GetEvent())
		} else {
			buf, err = AppendResponseLine(buf, r)
		}
		if (err != nil) != (werr != nil) {
			t.Fatalf("case %d: error %v, protojson %v, for %v", i, err, werr, r)
		}
		if err != nil {
			continue
		}
		if !bytes.Equal(buf, want) {
			t.Fatalf("case %d differs:\n got %s\nwant %s", i, buf, want)
		}
		if _, slow := appendResponse(nil, r.GetEvent(), r.GetDropped(), r.GetHistoryDone()); slow == nil && len(r.GetEvents()) == 0 {
			fast++
		}
	}
	// Most cases must have taken the fast path, or the test proves
	// nothing about it.
	if fast < 45000 {
		t.Errorf("only %d of 60,000 cases took the fast path", fast)
	}
}

// TestLinesGolden holds the hand encoder to the golden capture lines.
func TestLinesGolden(t *testing.T) {
	var b []byte
	for _, r := range events() {
		var err error
		if b, err = AppendResponseLine(b, r); err != nil {
			t.Fatal(err)
		}
		b = append(b, '\n')
	}
	golden(t, "events.jsonl", b)
}

func TestLinesDoNotAllocate(t *testing.T) {
	evs := events()
	buf := make([]byte, 0, 64<<10)
	allocs := testing.AllocsPerRun(100, func() {
		buf = buf[:0]
		for _, r := range evs {
			var err error
			if buf, err = AppendResponseLine(buf, r); err != nil {
				t.Fatal(err)
			}
		}
	})
	if allocs != 0 {
		t.Errorf("%v allocations per run of %d lines, want 0", allocs, len(evs))
	}
}

// BenchmarkJSONLineProtojson is the encoder before: protojson and a
// compaction pass.
func BenchmarkJSONLineProtojson(b *testing.B) {
	benchLines(b, func(buf []byte, r *snoopv1.WatchEventsResponse) ([]byte, error) { return AppendJSON(buf, r) })
}

// BenchmarkJSONLineFast is the hand encoder.
func BenchmarkJSONLineFast(b *testing.B) {
	benchLines(b, AppendResponseLine)
}

// benchLines encodes typical transaction events (a GET hit, a 32-byte
// session id, a digest) into a reused buffer; one op is one line.
func benchLines(b *testing.B, enc func([]byte, *snoopv1.WatchEventsResponse) ([]byte, error)) {
	now := time.Now()
	r := &snoopv1.WatchEventsResponse{Event: &snoopv1.Event{Kind: snoopv1.EventKind_EVENT_KIND_TRANSACTION, Time: timestamppb.New(now),
		Proxy: "sessions", ConnectionId: 42, Client: "127.0.0.1:51234",
		Transaction: &snoopv1.Transaction{Op: snoopv1.Op_OP_GET, RequestUid: 7, SessionId: []byte("0123456789abcdef0123456789abcdef"),
			SessionIdLength: 32, RequestSize: 36, ResponseSize: 1040, RequestFrames: 1, ResponseFrames: 1, Result: "hit",
			DataLength: 1000, DataDigest: []byte("12345678"), StartTime: timestamppb.New(now), Latency: durationpb.New(123456 * time.Nanosecond)}}}
	buf := make([]byte, 0, 64<<10)
	b.ReportAllocs()
	for i := range b.N {
		if len(buf) > 60<<10 {
			buf = buf[:0]
		}
		var err error
		r.Event.Transaction.RequestUid = uint32(i)
		if buf, err = enc(buf, r); err != nil {
			b.Fatal(err)
		}
		buf = append(buf, '\n')
	}
}

// oldDuration is Duration as it was before it appended into a buffer.
func oldDuration(d time.Duration) string {
	if d < 0 {
		return "-" + oldDuration(-d)
	}
	units := []struct {
		unit time.Duration
		name string
	}{{time.Second, "s"}, {time.Millisecond, "ms"}, {time.Microsecond, "µs"}}
	if d >= 1000*time.Second {
		return d.Round(time.Second).String()
	}
	for _, u := range units {
		if d >= u.unit {
			v := float64(d) / float64(u.unit)
			prec := 0
			switch {
			case v < 10:
				prec = 2
			case v < 100:
				prec = 1
			}
			return strconv.FormatFloat(v, 'f', prec, 64) + u.name
		}
	}
	return strconv.FormatInt(int64(d), 10) + "ns"
}

func TestAppendDurationMatchesOld(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for i := range 100000 {
		d := time.Duration(rng.Int64N(int64(1) << rng.IntN(63)))
		if i%2 == 1 {
			d = -d
		}
		if got, want := string(AppendDuration([]byte("x"), d)), "x"+oldDuration(d); got != want {
			t.Fatalf("%d: %q, want %q", int64(d), got, want)
		}
	}
}

func TestTextDoesNotAllocate(t *testing.T) {
	evs := events()
	text := Text{Location: time.UTC, Color: true}
	buf := make([]byte, 0, 64<<10)
	allocs := testing.AllocsPerRun(100, func() {
		buf = buf[:0]
		for _, r := range evs {
			if r.GetEvent().GetKind() == snoopv1.EventKind_EVENT_KIND_CONNECTION_REFUSED {
				continue // its error has a newline, which is replaced in a new string
			}
			buf = text.AppendResponse(buf, r)
		}
	})
	if allocs != 0 {
		t.Errorf("%v allocations per run, want 0", allocs)
	}
}

// BenchmarkTextLine is the text line of the same typical transaction.
func BenchmarkTextLine(b *testing.B) {
	text := Text{Location: time.Local}
	benchLines(b, func(buf []byte, r *snoopv1.WatchEventsResponse) ([]byte, error) {
		return text.AppendResponse(buf, r), nil
	})
}
