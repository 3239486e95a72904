package format

import (
	"math"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
)

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

// AppendDuration appends three significant digits in the largest unit
// that fits, whole seconds from 1000s on, and a sign before negatives.
func TestAppendDurationKnownValues(t *testing.T) {
	for _, c := range []struct {
		d    time.Duration
		want string
	}{
		{0, "0ns"},
		{1, "1ns"},
		{999, "999ns"},
		{1000, "1.00µs"},
		{1234, "1.23µs"},
		{10_000, "10.0µs"},
		{99_940, "99.9µs"},
		{100_000, "100µs"},
		{999_400, "999µs"},
		{1_000_000, "1.00ms"},
		{12_345_678, "12.3ms"},
		{123_456_789, "123ms"},
		{1_500_000_000, "1.50s"},
		{59_500_000_000, "59.5s"},
		{999 * time.Second, "999s"},
		{1000 * time.Second, "16m40s"},
		{1000*time.Second + 600*time.Millisecond, "16m41s"},
		{36 * time.Hour, "36h0m0s"},
		{-1_234_567, "-1.23ms"},
		{-999, "-999ns"},
		{math.MaxInt64, "2562047h47m16.854775807s"},
		{math.MinInt64, "-2562047h47m16.854775808s"},
	} {
		if got := string(AppendDuration([]byte("x"), c.d)); got != "x"+c.want {
			t.Errorf("AppendDuration(x, %d) = %q, want %q", int64(c.d), got, "x"+c.want)
		}
		if got := Duration(c.d); got != c.want {
			t.Errorf("Duration(%d) = %q, want %q", int64(c.d), got, c.want)
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
