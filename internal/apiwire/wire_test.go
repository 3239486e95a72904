package apiwire

import (
	"bytes"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
)

// populate sets fields of m from r: each with probability p (1: all of
// them), recursing into message fields. Values cover the edges of every
// scalar kind: zero, negative, the largest, strings long enough that a
// nested message needs a two-byte length.
func populate(m protoreflect.Message, r *rand.Rand, p float64, depth int) {
	fields := m.Descriptor().Fields()
	for i := range fields.Len() {
		f := fields.Get(i)
		if r.Float64() >= p {
			continue
		}
		if f.Kind() == protoreflect.MessageKind {
			if depth > 3 {
				continue
			}
			populate(m.Mutable(f).Message(), r, p, depth+1)
			continue
		}
		m.Set(f, scalar(f, r))
	}
}

func scalar(f protoreflect.FieldDescriptor, r *rand.Rand) protoreflect.Value {
	pick := func(vals ...int64) int64 { return vals[r.IntN(len(vals))] }
	switch f.Kind() {
	case protoreflect.BoolKind:
		return protoreflect.ValueOfBool(true)
	case protoreflect.EnumKind:
		vals := f.Enum().Values()
		return protoreflect.ValueOfEnum(vals.Get(r.IntN(vals.Len())).Number())
	case protoreflect.Int32Kind:
		return protoreflect.ValueOfInt32(int32(pick(0, 1, -1, 127, 128, math.MaxInt32, math.MinInt32, r.Int64N(1e9))))
	case protoreflect.Int64Kind:
		return protoreflect.ValueOfInt64(pick(0, 1, -1, -62135596800, math.MaxInt64, math.MinInt64, r.Int64()))
	case protoreflect.Uint32Kind:
		return protoreflect.ValueOfUint32(uint32(pick(0, 1, 127, 128, math.MaxUint32, r.Int64N(1<<32))))
	case protoreflect.Uint64Kind:
		return protoreflect.ValueOfUint64(r.Uint64() >> r.IntN(64))
	case protoreflect.StringKind:
		return protoreflect.ValueOfString(string(randomBytes(r)))
	case protoreflect.BytesKind:
		return protoreflect.ValueOfBytes(randomBytes(r))
	}
	panic("populate: a field kind the test does not know: " + f.Kind().String() + " (" + string(f.FullName()) + ")")
}

func randomBytes(r *rand.Rand) []byte {
	b := make([]byte, []int{0, 1, 5, 32, 127, 200, 20000}[r.IntN(7)])
	for i := range b {
		b[i] = 'a' + byte(r.IntN(26))
	}
	return b
}

// The hand-written encoder writes the bytes proto.Marshal writes, for
// random events of every shape.
func TestAppendEventMatchesMarshal(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 20000 {
		ev := &snoopv1.Event{}
		populate(ev.ProtoReflect(), r, []float64{0.1, 0.5, 0.9}[i%3], 0)
		checkEncoding(t, ev)
	}
}

// An event with every field of the schema set, down to the timestamps'
// nanoseconds: a field added to the proto and not to AppendEvent fails
// here.
func TestAppendEventEveryField(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for range 200 {
		ev := &snoopv1.Event{}
		populate(ev.ProtoReflect(), r, 1, 0)
		checkEncoding(t, ev)
	}
	// Set message fields with nothing in them are written, empty.
	checkEncoding(t, &snoopv1.Event{Transaction: &snoopv1.Transaction{}, Closed: &snoopv1.ConnectionClosed{}, ProtocolError: &snoopv1.ProtocolError{},
		CaptureGap: &snoopv1.CaptureGap{}})
}

// A string that is not UTF-8 fails the encoding, as proto.Marshal fails
// (a consumer's decoder would reject the message), wherever it is.
func TestAppendEventInvalidUTF8(t *testing.T) {
	bad := "web\xff7"
	for _, ev := range []*snoopv1.Event{
		{Daemon: bad},
		{Proxy: "p", Error: bad},
		{Transaction: &snoopv1.Transaction{Fault: bad}},
		{ProtocolError: &snoopv1.ProtocolError{Message: bad}},
		{Closed: &snoopv1.ConnectionClosed{Reason: bad}},
		{CaptureGap: &snoopv1.CaptureGap{Direction: bad}},
	} {
		if _, err := proto.Marshal(ev); err == nil {
			t.Fatalf("proto.Marshal took %v", ev)
		}
		if _, err := AppendEvent(nil, ev); err == nil || !strings.Contains(err.Error(), "UTF-8") {
			t.Fatalf("AppendEvent(%v): %v, want a UTF-8 error", ev, err)
		}
	}
}

func checkEncoding(t *testing.T, ev *snoopv1.Event) {
	t.Helper()
	want, err := proto.MarshalOptions{Deterministic: true}.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	// After a prefix, as in a batch.
	got, err := AppendEvent([]byte("prefix"), ev)
	if err != nil {
		t.Fatalf("AppendEvent: %v", err)
	}
	if !bytes.Equal(got[6:], want) {
		var back snoopv1.Event
		uerr := proto.Unmarshal(got[6:], &back)
		t.Fatalf("AppendEvent differs from proto.Marshal for %v\n got %x\nwant %x\n(unmarshals: %v, equal: %v)", ev, got[6:], want, uerr, proto.Equal(&back, ev))
	}
}

func BenchmarkAppendEvent(b *testing.B) {
	r := rand.New(rand.NewPCG(5, 6))
	ev := &snoopv1.Event{}
	populate(ev.ProtoReflect(), r, 1, 0)
	ev.Transaction.Data, ev.Transaction.SessionId, ev.Client = nil, make([]byte, 32), "127.0.0.1:40000"
	ev.Proxy, ev.Daemon, ev.Error, ev.ProxyInstance = "sessions", "web-7", "", ""
	ev.Closed, ev.ProtocolError, ev.CaptureGap = nil, nil, nil
	ev.Transaction.Result, ev.Transaction.Fault = "hit", ""
	b.Run("AppendEvent", func(b *testing.B) {
		var buf []byte
		for b.Loop() {
			buf, _ = AppendEvent(buf[:0], ev)
		}
	})
	b.Run("proto.Marshal", func(b *testing.B) {
		var buf []byte
		for b.Loop() {
			buf = marshalInBatch(buf[:0], ev)
		}
	})
}

// marshalInBatch is what the exporter did before AppendEvent: the size
// for the length prefix, then the generic marshaller.
func marshalInBatch(b []byte, ev *snoopv1.Event) []byte {
	b = protowire.AppendVarint(b, uint64(proto.Size(ev)))
	b, _ = proto.MarshalOptions{}.MarshalAppend(b, ev)
	return b
}
