package apijson

import (
	"bytes"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
	"github.com/snoopd/snoopd/internal/apiwire"
	"github.com/snoopd/snoopd/internal/testutil"
)

// checkWire holds AppendEventResponseWire to the reference for wire:
// protojson's line for the event proto.Unmarshal decodes from it, or an
// error (and the buffer as it was) where proto.Unmarshal fails. It
// reports whether the walk wrote the line itself.
func checkWire(t *testing.T, wire []byte, k Keys) (walked bool) {
	t.Helper()
	var facts Facts
	got, err := AppendEventResponseWire([]byte("prefix"), wire, k, &facts)
	ev := new(snoopv1.Event)
	if uerr := proto.Unmarshal(wire, ev); uerr != nil {
		if err == nil {
			t.Fatalf("%v: wire %x: proto.Unmarshal fails (%v), the walk wrote %s", k, wire, uerr, got)
		}
		if string(got) != "prefix" {
			t.Fatalf("%v: an error left %q in the buffer", k, got)
		}
		return false
	}
	want, werr := AppendProto([]byte("prefix"), &snoopv1.WatchEventsResponse{Event: ev}, k)
	if (err != nil) != (werr != nil) {
		t.Fatalf("%v: wire %x: error %v, protojson %v", k, wire, err, werr)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%v: wire %x differs:\n got %s\nwant %s", k, wire, got, want)
	}
	if err == nil {
		checkFacts(t, &facts, ev)
	}
	o := obj{camel: k == CamelKeys}
	return o.wireEvent(wire, new(Facts)) == nil
}

// checkFacts holds the facts read on the way to ev's fields.
func checkFacts(t *testing.T, got *Facts, ev *snoopv1.Event) {
	t.Helper()
	var want Facts
	want.of(ev)
	if !bytes.Equal(got.Proxy, want.Proxy) || !bytes.Equal(got.Result, want.Result) {
		t.Fatalf("facts: proxy %q result %q, want %q %q", got.Proxy, got.Result, want.Proxy, want.Result)
	}
	g, w := *got, want
	g.Proxy, g.Result, w.Proxy, w.Result = nil, nil, nil, nil
	if !reflect.DeepEqual(g, w) {
		t.Fatalf("facts\n got %+v\nwant %+v\nfor %v", g, w, ev)
	}
}

// marshal encodes ev; a string that is not UTF-8 (which proto.Marshal
// refuses) is put on the wire as it is.
func marshal(t *testing.T, ev *snoopv1.Event) []byte {
	t.Helper()
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(ev)
	if err == nil {
		return b
	}
	// Encode with the bad strings replaced by placeholders of the same
	// length, then put them back.
	bad := map[string]string{}
	fix := func(s *string) {
		if utf8.ValidString(*s) {
			return
		}
		p := strings.Repeat("#", len(*s))
		bad[p] = *s
		*s = p
	}
	c := proto.Clone(ev).(*snoopv1.Event)
	for _, s := range []*string{&c.Proxy, &c.Client, &c.Error, &c.ProxyInstance, &c.Daemon} {
		fix(s)
	}
	if tx := c.Transaction; tx != nil {
		fix(&tx.Result)
		fix(&tx.Fault)
	}
	if cl := c.Closed; cl != nil {
		fix(&cl.Reason)
	}
	if p := c.ProtocolError; p != nil {
		for _, s := range []*string{&p.Rule, &p.Direction, &p.Field, &p.Message} {
			fix(s)
		}
	}
	if g := c.CaptureGap; g != nil {
		fix(&g.Direction)
	}
	b, err = proto.MarshalOptions{Deterministic: true}.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	for p, s := range bad {
		b = bytes.Replace(b, []byte(p), []byte(s), 1)
	}
	return b
}

// field is one top-level field of a message's wire form.
type field struct {
	num protowire.Number
	raw []byte // tag and value
}

func splitFields(t testing.TB, b []byte) []field {
	t.Helper()
	var out []field
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		m := protowire.ConsumeFieldValue(num, typ, b[n:])
		if n < 0 || m < 0 {
			t.Fatalf("bad wire %x", b)
		}
		out = append(out, field{num, b[:n+m]})
		b = b[n+m:]
	}
	return out
}

func join(fs []field) []byte {
	var b []byte
	for _, f := range fs {
		b = append(b, f.raw...)
	}
	return b
}

// mutate changes wire in one of the ways a wire form may differ from
// proto.Marshal's and still decode (or not): fields in another order, a
// scalar sent twice, a zero sent explicitly, the transaction in two parts
// as the daemon sends captured data, fields the schema does not have, a
// cut or a flipped byte.
func mutate(t *testing.T, rng *rand.Rand, wire []byte) []byte {
	fs := splitFields(t, wire)
	switch rng.IntN(8) {
	case 0: // another order
		rng.Shuffle(len(fs), func(i, j int) { fs[i], fs[j] = fs[j], fs[i] })
	case 1: // an earlier value of a field, overwritten by the real one
		b := protowire.AppendTag(nil, []protowire.Number{1, 4}[rng.IntN(2)], protowire.VarintType)
		b = protowire.AppendVarint(b, rng.Uint64())
		if rng.IntN(2) == 0 { // a string, which the decoder checks even so
			b = protowire.AppendTag(nil, 3, protowire.BytesType)
			b = protowire.AppendString(b, randString(rng))
		}
		fs = append([]field{{raw: b}}, fs...)
	case 2: // explicit zeros and empty strings
		b := protowire.AppendTag(nil, 4, protowire.VarintType)
		b = protowire.AppendVarint(b, 0)
		b = protowire.AppendTag(b, 9, protowire.BytesType)
		b = protowire.AppendBytes(b, nil)
		fs = append(fs, field{raw: b})
	case 3: // the transaction in two parts, merged by the decoder
		for i, f := range fs {
			if f.num != 6 {
				continue
			}
			_, _, n := protowire.ConsumeTag(f.raw)
			inner, _ := protowire.ConsumeBytes(f.raw[n:])
			tf := splitFields(t, inner)
			cut := rng.IntN(len(tf) + 1)
			one := protowire.AppendBytes(protowire.AppendTag(nil, 6, protowire.BytesType), join(tf[:cut]))
			two := protowire.AppendBytes(protowire.AppendTag(nil, 6, protowire.BytesType), join(tf[cut:]))
			fs[i] = field{6, append(one, two...)}
			break
		}
	case 4: // a field the schema does not have
		b := protowire.AppendTag(nil, protowire.Number(14+rng.IntN(100)), protowire.VarintType)
		fs = append(fs, field{raw: protowire.AppendVarint(b, 5)})
	case 5: // a known field of the wrong wire type
		b := protowire.AppendTag(nil, 3, protowire.Fixed32Type)
		fs = append(fs, field{raw: protowire.AppendFixed32(b, 5)})
	case 6: // cut short
		w := join(fs)
		return w[:rng.IntN(len(w)+1)]
	case 7: // a byte changed
		w := join(fs)
		if len(w) > 0 {
			w[rng.IntN(len(w))] ^= byte(1 + rng.IntN(255))
		}
		return w
	}
	return join(fs)
}

// TestWireMatchesProtojson holds the walk to protojson over generated
// events, as proto.Marshal writes them and changed in the ways mutate
// knows, with both key styles: the same bytes, or an error exactly where
// the event does not decode.
func TestWireMatchesProtojson(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	const cases = 30000
	walked, plain := 0, 0
	for i := range cases {
		k := allKeys[i%2]
		wire := marshal(t, randEvent(rng))
		if rng.IntN(3) > 0 {
			plain++
			if checkWire(t, wire, k) {
				walked++
			}
			continue
		}
		checkWire(t, mutate(t, rng, wire), k)
	}
	// The events as the daemon writes them must mostly take the walk,
	// or the test proves nothing about it.
	if walked < plain*3/4 {
		t.Errorf("only %d of %d unchanged events took the walk", walked, plain)
	}
}

// TestWireTakesTheDaemonsDataInTwoParts: the daemon appends captured
// data as a second transaction field; the walk merges it without falling
// back to the decoder.
func TestWireTakesTheDaemonsDataInTwoParts(t *testing.T) {
	ev := typical()
	wire := marshal(t, ev)
	data := marshal(t, &snoopv1.Event{Transaction: &snoopv1.Transaction{Data: []byte("secret"), DataTruncated: true}})
	both := append(wire, data...)
	if !checkWire(t, both, ProtoKeys) {
		t.Fatal("the event with its data in a second part went to the decoder")
	}
	got, _ := AppendEventResponseWire(nil, both, ProtoKeys, nil)
	if !bytes.Contains(got, []byte(`"data":"c2VjcmV0","data_truncated":true`)) {
		t.Errorf("data missing: %s", got)
	}
}

// TestWireRepeatedTimesAreWrittenByKind: the walk reuses the text of a
// time whose bytes it has just written, and a Timestamp and a Duration
// with the same bytes are still written each as what it is.
func TestWireRepeatedTimesAreWrittenByKind(t *testing.T) {
	five := &timestamppb.Timestamp{Seconds: 5, Nanos: 250}
	ev := typical()
	ev.Time, ev.EndTime = five, five
	ev.Transaction.StartTime = five
	ev.Transaction.Latency = &durationpb.Duration{Seconds: 5, Nanos: 250}
	ev.Transaction.ServerLatency = ev.Transaction.Latency
	if !checkWire(t, marshal(t, ev), ProtoKeys) {
		t.Fatal("the event went to the decoder")
	}
	got, _ := AppendEventResponseWire(nil, marshal(t, ev), ProtoKeys, nil)
	for _, want := range []string{`"time":"1970-01-01T00:00:05.000000250Z"`, `"latency":"5.000000250s"`, `"server_latency":"5.000000250s"`, `"end_time":"1970-01-01T00:00:05.000000250Z"`} {
		if !bytes.Contains(got, []byte(want)) {
			t.Errorf("%s missing in %s", want, got)
		}
	}
}

// TestWireSchemasMatchTheDescriptors: the walk's table of each message's
// fields is the .proto's, so that a field added there and not here fails.
func TestWireSchemasMatchTheDescriptors(t *testing.T) {
	for _, c := range []struct {
		s *schema
		m protoreflect.MessageDescriptor
	}{
		{eventSchema, (&snoopv1.Event{}).ProtoReflect().Descriptor()},
		{transactionSchema, (&snoopv1.Transaction{}).ProtoReflect().Descriptor()},
		{closedSchema, (&snoopv1.ConnectionClosed{}).ProtoReflect().Descriptor()},
		{protoErrSchema, (&snoopv1.ProtocolError{}).ProtoReflect().Descriptor()},
		{gapSchema, (&snoopv1.CaptureGap{}).ProtoReflect().Descriptor()},
		{secondsSchema, (&timestamppb.Timestamp{}).ProtoReflect().Descriptor()},
		{secondsSchema, (&durationpb.Duration{}).ProtoReflect().Descriptor()},
	} {
		fields := c.m.Fields()
		for i := range fields.Len() {
			if n := fields.Get(i).Number(); n >= maxField {
				t.Errorf("%s: field %d is beyond the walk's %d", c.m.FullName(), n, maxField)
			}
		}
		for n := range protowire.Number(maxField) {
			want := noField
			if fd := fields.ByNumber(n); fd != nil {
				switch fd.Kind() {
				case protoreflect.MessageKind:
					want = messageField
				case protoreflect.StringKind, protoreflect.BytesKind:
					want = bytesField
				case protoreflect.EnumKind, protoreflect.BoolKind, protoreflect.Int32Kind, protoreflect.Int64Kind,
					protoreflect.Uint32Kind, protoreflect.Uint64Kind:
					want = varintField
				default:
					t.Errorf("%s: field %d is a %v, which the walk does not know", c.m.FullName(), n, fd.Kind())
				}
			}
			if c.s[n] != want {
				t.Errorf("%s: field %d is %d in the walk's schema, %d in the descriptor", c.m.FullName(), n, c.s[n], want)
			}
		}
	}
}

func TestWireDoesNotAllocate(t *testing.T) {
	ev := typical()
	ev.EndTime, ev.ProxyInstance = ev.Time, "0b6f7d0e-8c1f-4a55-9a51-3a4f4ad6f1d2"
	wire := marshal(t, ev)
	buf := make([]byte, 0, 4096)
	var facts Facts
	for _, k := range allKeys {
		allocs := testing.AllocsPerRun(100, func() {
			var err error
			if buf, err = AppendEventResponseWire(buf[:0], wire, k, &facts); err != nil {
				t.Fatal(err)
			}
		})
		if allocs != 0 {
			t.Errorf("%v: %v allocations per event, want 0", k, allocs)
		}
	}
}

func FuzzAppendEventResponseWire(f *testing.F) {
	rng := rand.New(rand.NewPCG(13, 14))
	for range 8 {
		ev := randEvent(rng)
		if b, err := proto.Marshal(ev); err == nil && len(b) < 1024 {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, wire []byte) {
		checkWire(t, wire, ProtoKeys)
	})
}

// BenchmarkJSONLineWire is a -o json line written from the event's wire
// form, against decoding it (snoopctl's reused storage) and writing the
// decoded event. One op is one event of a batch of 256.
func BenchmarkJSONLineWire(b *testing.B) {
	resp := &snoopv1.WatchEventsResponse{}
	for i := range 256 {
		ev := typical()
		ev.EndTime, ev.ProxyInstance = ev.Time, "0b6f7d0e-8c1f-4a55-9a51-3a4f4ad6f1d2"
		ev.Transaction.RequestUid = uint32(i)
		resp.Events = append(resp.Events, ev)
	}
	batch, err := proto.Marshal(resp)
	if err != nil {
		b.Fatal(err)
	}
	var wires [][]byte
	for _, fl := range splitFields(b, batch) {
		_, _, n := protowire.ConsumeTag(fl.raw)
		w, _ := protowire.ConsumeBytes(fl.raw[n:])
		wires = append(wires, w)
	}
	buf := make([]byte, 0, 256<<10)
	b.Run("decode+write", func(b *testing.B) {
		defer testutil.ReportCPU(b)()
		b.ReportAllocs()
		var r apiwire.Response
		for range b.N / 256 {
			into := r.Buffer(len(batch))
			copy(into, batch)
			if err := r.Unmarshal(into); err != nil {
				b.Fatal(err)
			}
			buf = buf[:0]
			for _, ev := range r.Msg.Events {
				if buf, err = AppendEventResponse(buf, ev, ProtoKeys); err != nil {
					b.Fatal(err)
				}
				buf = append(buf, '\n')
			}
		}
	})
	b.Run("wire", func(b *testing.B) {
		defer testutil.ReportCPU(b)()
		b.ReportAllocs()
		var facts Facts
		for range b.N / 256 {
			buf = buf[:0]
			for _, w := range wires {
				if buf, err = AppendEventResponseWire(buf, w, ProtoKeys, &facts); err != nil {
					b.Fatal(err)
				}
				buf = append(buf, '\n')
			}
		}
	})
}
