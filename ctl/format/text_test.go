package format

import (
	"math/rand/v2"
	"strconv"
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
