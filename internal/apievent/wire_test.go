package apievent

import (
	"bytes"
	"errors"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"

	"github.com/snoopd/snoopd/distcache"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
	"github.com/snoopd/snoopd/internal/apiwire"
	"github.com/snoopd/snoopd/proxy"
)

// fillWire is how events were encoded before WireEncoder: filled into
// the API's messages, written by apiwire, and written again with the
// strings mended if one was not UTF-8 (mended says so).
func fillWire(b []byte, e *proxy.Event, instance string) (out []byte, mended bool) {
	ev := new(Builder).Fill(e, false)
	ev.ProxyInstance = instance
	out, err := apiwire.AppendEvent(b, ev)
	if err != nil {
		mendUTF8(ev)
		out, _ = apiwire.AppendEvent(b, ev)
	}
	return out, err != nil
}

// fillDataWire is how captured data was encoded before AppendData.
func fillDataWire(b []byte, e *proxy.Event) []byte {
	if e.Kind != proxy.KindTransaction || e.Tx == nil || e.Tx.Data == nil {
		return b
	}
	out, _ := apiwire.AppendEvent(b, &snoopv1.Event{Transaction: &snoopv1.Transaction{Data: e.Tx.Data, DataTruncated: e.Tx.DataTruncated}})
	return out
}

func mendUTF8(ev *snoopv1.Event) {
	fix := func(s *string) {
		if !utf8.ValidString(*s) {
			*s = strings.ToValidUTF8(*s, "\uFFFD")
		}
	}
	fix(&ev.Proxy)
	fix(&ev.Client)
	fix(&ev.Error)
	fix(&ev.ProxyInstance)
	fix(&ev.Daemon)
	if t := ev.Transaction; t != nil {
		fix(&t.Result)
		fix(&t.Fault)
	}
	if c := ev.Closed; c != nil {
		fix(&c.Reason)
	}
	if p := ev.ProtocolError; p != nil {
		fix(&p.Rule)
		fix(&p.Direction)
		fix(&p.Field)
		fix(&p.Message)
	}
	if g := ev.CaptureGap; g != nil {
		fix(&g.Direction)
	}
}

// randomText is empty, short, long enough that its message needs a
// two-byte length, or not UTF-8.
func randomText(r *rand.Rand) string {
	switch r.IntN(6) {
	case 0:
		return ""
	case 1:
		return "p"
	case 2:
		return strings.Repeat("long text ", 1+r.IntN(40))
	case 3:
		return "bad \xff\xfe bytes" // not UTF-8
	case 4:
		return "ünï\xc3" // cut in a sequence
	}
	return "127.0.0.1:40000"
}

func randomTime(r *rand.Rand) time.Time {
	switch r.IntN(5) {
	case 0:
		return time.Time{}
	case 1:
		return time.Unix(-r.Int64N(1e10), r.Int64N(1e9))
	case 2:
		return time.Unix(r.Int64N(1e10), 0)
	}
	return time.Unix(1_700_000_000+r.Int64N(1e8), r.Int64N(1e9))
}

func randomDuration(r *rand.Rand) time.Duration {
	return []time.Duration{0, 1, -1, time.Second, -1500 * time.Millisecond, time.Duration(r.Int64()), math.MinInt64, 123456}[r.IntN(8)]
}

func randomInt(r *rand.Rand) int64 {
	return []int64{0, 1, -1, 127, 128, math.MaxInt64, math.MinInt64, r.Int64()}[r.IntN(8)]
}

// randomWireEvent is an event of any kind, with any of its fields set:
// every kind's own fields, edge values, strings that are not UTF-8,
// captured data, and fields the kind does not use.
func randomWireEvent(r *rand.Rand) *proxy.Event {
	kinds := []proxy.EventKind{proxy.KindTransaction, proxy.KindConnOpened, proxy.KindConnClosed, proxy.KindConnectFailed,
		proxy.KindConnRefused, proxy.KindProtocolError, proxy.KindCaptureGap, 0, 99}
	e := &proxy.Event{
		Kind:      kinds[r.IntN(len(kinds))],
		Time:      randomTime(r),
		Proxy:     randomText(r),
		ConnID:    uint64(randomInt(r)),
		Client:    randomText(r),
		Direction: distcache.Direction(r.IntN(3)),
		Policy:    proxy.CorruptPolicy(r.IntN(3)),
	}
	if r.IntN(4) != 0 || e.Kind == proxy.KindTransaction {
		t := &proxy.Transaction{Start: randomTime(r), Latency: randomDuration(r), ServerLatency: randomDuration(r)}
		t.Op = distcache.Op(r.IntN(7))
		t.RequestUID = r.Uint32()
		t.SessionID = make([]byte, []int{0, 1, 19, 32, 64, 70}[r.IntN(6)])
		for i := range t.SessionID {
			t.SessionID[i] = byte(r.Uint32())
		}
		t.SessionIDLen = int(randomInt(r))
		t.TimeoutMS = r.Uint32() >> r.IntN(32)
		t.RequestSize, t.ResponseSize = int(randomInt(r)), r.IntN(40000)
		t.RequestFrames, t.ResponseFrames = r.IntN(3), int(randomInt(r))
		t.Status = distcache.Status(r.IntN(9))
		t.Hit = r.IntN(2) == 0
		t.ResponseMalformed = r.IntN(10) == 0
		t.Unanswered = r.IntN(8) == 0
		t.Orphan = r.IntN(8) == 0
		t.DataLen = int(randomInt(r))
		if r.IntN(2) == 0 {
			t.HasDigest = true
			for i := range t.Digest {
				t.Digest[i] = byte(r.Uint32())
			}
		}
		if r.IntN(3) == 0 {
			t.Data = make([]byte, []int{0, 5, 200, 40000}[r.IntN(4)])
			t.DataTruncated = r.IntN(2) == 0
		}
		t.Fault = randomText(r)
		if r.IntN(10) == 0 {
			t.Start = time.Time{} // the event's time stands in
		}
		e.Tx = t
	}
	if r.IntN(2) == 0 || e.Kind == proxy.KindConnClosed {
		e.Closed = &proxy.ConnClosed{BytesUp: randomInt(r), BytesDown: randomInt(r), Duration: randomDuration(r),
			Transactions: randomInt(r), Reason: randomText(r)}
	}
	if r.IntN(2) == 0 || e.Kind == proxy.KindCaptureGap {
		e.Gap = &proxy.CaptureGap{Direction: distcache.Direction(r.IntN(3)), First: randomInt(r), Last: randomInt(r)}
	}
	switch r.IntN(4) {
	case 0:
		e.Err = &distcache.ProtocolError{Rule: distcache.Rule(r.IntN(12)), Field: randomText(r), Offset: randomInt(r), Frame: randomInt(r), Detail: randomText(r)}
	case 1:
		e.Err = errors.New(randomText(r))
	}
	if r.IntN(20) == 0 {
		// A kind without the part it names.
		e.Tx, e.Closed, e.Gap = nil, nil, nil
	}
	return e
}

// A WireEncoder writes byte for byte what filling the messages and encoding
// them wrote, and AppendData what encoding the data alone wrote, for
// events of every kind with every field set or not, edge values, and
// strings that are not UTF-8, one encoder for them all.
func TestWireEncoderMatchesFill(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	kinds := map[proxy.EventKind]int{}
	mended := 0
	var w WireEncoder
	for i := range 50000 {
		e := randomWireEvent(r)
		inst := []string{"", "5f0c8a51-3f4e-4d0a-9b1e-6b7f2d9c4a10", "inst\xff"}[r.IntN(3)]
		want, mend := fillWire([]byte("prefix"), e, inst)
		got := w.AppendEvent([]byte("prefix"), e, inst)
		if !bytes.Equal(got, want) {
			t.Fatalf("event %d: %+v\n got %x\nwant %x", i, e, got, want)
		}
		if mend {
			mended++
		}
		if dw, dg := fillDataWire([]byte("x"), e), w.AppendData([]byte("x"), e); !bytes.Equal(dg, dw) {
			t.Fatalf("event %d: data\n got %x\nwant %x", i, dg, dw)
		}
		// What goes out always decodes.
		if err := proto.Unmarshal(got[len("prefix"):], new(snoopv1.Event)); err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
		kinds[e.Kind]++
	}
	if len(kinds) < 9 || mended < 1000 {
		t.Fatalf("the generator made only the kinds %v, and %d events with a string to mend", kinds, mended)
	}
}

// The strings a WireEncoder mends are those a decoder would refuse: the
// bytes that are not UTF-8 become U+FFFD, the rest stays.
func TestWireEncoderMendsInvalidUTF8(t *testing.T) {
	e := &proxy.Event{Kind: proxy.KindConnectFailed, Proxy: "p\xff", Err: errors.New("dial: \xff\xfe refused")}
	var got snoopv1.Event
	if err := proto.Unmarshal(new(WireEncoder).AppendEvent(nil, e, "i\xc3"), &got); err != nil {
		t.Fatal(err)
	}
	if got.GetError() != "dial: \uFFFD refused" || got.GetProxy() != "p\uFFFD" || got.GetProxyInstance() != "i\uFFFD" {
		t.Fatalf("mended: %q %q %q", got.GetError(), got.GetProxy(), got.GetProxyInstance())
	}
}

// FuzzWireEncoderMatchesFill holds the direct encoding to the fill and
// encode one over events made from arbitrary bytes.
func FuzzWireEncoderMatchesFill(f *testing.F) {
	f.Add(uint64(1), uint64(2))
	f.Add(uint64(0), uint64(0))
	f.Fuzz(func(t *testing.T, a, b uint64) {
		e := randomWireEvent(rand.New(rand.NewPCG(a, b)))
		want, _ := fillWire(nil, e, "i")
		if got := new(WireEncoder).AppendEvent(nil, e, "i"); !bytes.Equal(got, want) {
			t.Fatalf("%+v\n got %x\nwant %x", e, got, want)
		}
	})
}

func BenchmarkWireEncoder(b *testing.B) {
	tx := &proxy.Transaction{Start: time.Now(), Latency: 123456 * time.Nanosecond, ServerLatency: 120001 * time.Nanosecond}
	tx.Op, tx.RequestUID = distcache.OpGet, 1234
	tx.SessionID = []byte("0123456789abcdef0123456789a")
	tx.SessionIDLen = len(tx.SessionID)
	tx.RequestSize, tx.ResponseSize, tx.RequestFrames, tx.ResponseFrames = 36, 1040, 1, 1
	tx.Hit, tx.DataLen, tx.HasDigest = true, 1000, true
	e := &proxy.Event{Kind: proxy.KindTransaction, Time: time.Now(), Proxy: "sessions", ConnID: 42, Client: "127.0.0.1:51234", Tx: tx}
	const inst = "5f0c8a51-3f4e-4d0a-9b1e-6b7f2d9c4a10"
	b.Run("direct", func(b *testing.B) {
		var buf []byte
		var w WireEncoder
		for b.Loop() {
			buf = w.AppendEvent(buf[:0], e, inst)
		}
	})
	b.Run("fill+apiwire", func(b *testing.B) {
		var buf []byte
		var bld Builder
		for b.Loop() {
			ev := bld.Fill(e, false)
			ev.ProxyInstance = inst
			buf, _ = apiwire.AppendEvent(buf[:0], ev)
		}
	})
}
