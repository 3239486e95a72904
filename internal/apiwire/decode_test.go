package apiwire

import (
	"math/rand/v2"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
)

// checkDecoding holds UnmarshalResponse to proto.Unmarshal on b.
func checkDecoding(t *testing.T, b []byte) {
	t.Helper()
	checkDecodingInto(t, b, new(Response))
}

// checkDecodingInto holds UnmarshalResponse, and Response.Unmarshal into
// reused (which may hold an earlier response), to proto.Unmarshal.
func checkDecodingInto(t *testing.T, b []byte, reused *Response) {
	t.Helper()
	want := new(snoopv1.WatchEventsResponse)
	werr := proto.Unmarshal(b, want)
	got := new(snoopv1.WatchEventsResponse)
	gerr := UnmarshalResponse(b, got)
	if (werr == nil) != (gerr == nil) {
		t.Fatalf("proto.Unmarshal: %v; UnmarshalResponse: %v\n%x", werr, gerr, b)
	}
	buf := reused.Buffer(len(b))
	copy(buf, b)
	rerr := reused.Unmarshal(buf)
	if (werr == nil) != (rerr == nil) {
		t.Fatalf("proto.Unmarshal: %v; Response.Unmarshal: %v\n%x", werr, rerr, b)
	}
	// UnmarshalResponse skips unknown fields, where proto.Unmarshal keeps
	// them: they are not compared.
	dropUnknown(want.ProtoReflect())
	if werr == nil && !proto.Equal(got, want) {
		t.Fatalf("UnmarshalResponse differs from proto.Unmarshal\n got %v\nwant %v", got, want)
	}
	if werr == nil && !proto.Equal(&reused.Msg, want) {
		t.Fatalf("Response.Unmarshal, reused, differs from proto.Unmarshal\n got %v\nwant %v", &reused.Msg, want)
	}
	checkRaw(t, b, want, werr)
}

// checkRaw holds a raw Response.Unmarshal of b to want, proto.Unmarshal's
// decoding (werr its error): a response of events alone leaves exactly
// its events' bytes in Wire, in order, each of which decodes as the
// event; any other decodes as without Raw. A raw
// Unmarshal checks only the response's own fields, so it fails only where
// proto.Unmarshal fails.
func checkRaw(t *testing.T, b []byte, want *snoopv1.WatchEventsResponse, werr error) {
	t.Helper()
	raw := &Response{Raw: true}
	buf := raw.Buffer(len(b))
	copy(buf, b)
	err := raw.Unmarshal(buf)
	if err != nil && werr == nil {
		t.Fatalf("raw Unmarshal: %v, proto.Unmarshal none\n%x", err, b)
	}
	if werr != nil {
		return
	}
	if raw.Wire == nil {
		if eventsAlone(b) {
			t.Fatalf("a response of events alone was decoded: %v", want)
		}
		if !proto.Equal(&raw.Msg, want) {
			t.Fatalf("raw Unmarshal of a response with more than events\n got %v\nwant %v", &raw.Msg, want)
		}
		return
	}
	evs := want.GetEvents()
	if want.GetEvent() != nil {
		evs = []*snoopv1.Event{want.GetEvent()}
	}
	if len(raw.Wire) != len(evs) || want.GetDropped() != 0 || want.GetHistoryDone() || raw.Msg.GetEvent() != nil || len(raw.Msg.GetEvents()) > 0 {
		t.Fatalf("raw Unmarshal: %d events' bytes and %v, for %v", len(raw.Wire), &raw.Msg, want)
	}
	for i, w := range raw.Wire {
		ev := new(snoopv1.Event)
		if err := proto.Unmarshal(w, ev); err != nil {
			t.Fatal(err)
		}
		dropUnknown(ev.ProtoReflect())
		if !proto.Equal(ev, evs[i]) {
			t.Fatalf("raw event %d\n got %v\nwant %v", i, ev, evs[i])
		}
	}
}

// eventsAlone reports whether b, a well-formed response, holds events
// and nothing else: any number in events, or one in event.
func eventsAlone(b []byte) bool {
	events, single := 0, 0
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		m := protowire.ConsumeFieldValue(num, typ, b[n:])
		switch {
		case num == 4 && typ == protowire.BytesType:
			events++
		case num == 1 && typ == protowire.BytesType:
			single++
		default:
			return false
		}
		b = b[n+m:]
	}
	return events+single > 0 && (single == 0 || events+single == 1)
}

// dropUnknown clears the unknown fields of m and of every message in it.
func dropUnknown(m protoreflect.Message) {
	m.SetUnknown(nil)
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsList() && fd.Message() != nil:
			for i := range v.List().Len() {
				dropUnknown(v.List().Get(i).Message())
			}
		case fd.Message() != nil && !fd.IsMap():
			dropUnknown(v.Message())
		}
		return true
	})
}

// Random responses of every shape, batched and single, with notices,
// decode as proto.Unmarshal decodes them.
func TestUnmarshalResponseMatchesProto(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	// One Response for all of them: nothing of one may show in the next.
	reused := new(Response)
	for i := range 5000 {
		resp := &snoopv1.WatchEventsResponse{}
		switch i % 4 {
		case 0:
			resp.Event = &snoopv1.Event{}
			populate(resp.Event.ProtoReflect(), r, []float64{0.1, 0.5, 1}[i%3], 0)
		case 1:
			for range r.IntN(5) {
				ev := &snoopv1.Event{}
				populate(ev.ProtoReflect(), r, []float64{0.1, 0.5, 1}[i%3], 0)
				resp.Events = append(resp.Events, ev)
			}
		case 2:
			resp.Dropped = r.Uint64()
		case 3:
			resp.HistoryDone, resp.HistoryMissing = true, r.Uint32()
		}
		b, err := proto.Marshal(resp)
		if err != nil {
			t.Fatal(err)
		}
		checkDecodingInto(t, b, reused)
	}
}

// A field that comes twice is merged, as the daemon's events with
// captured data are sent (the event, then its data as a second
// transaction field); unknown fields are skipped; damaged input and
// strings that are not UTF-8 are errors, as with proto.Unmarshal.
func TestUnmarshalResponseEdges(t *testing.T) {
	ev, _ := proto.Marshal(&snoopv1.Event{Proxy: "p", Transaction: &snoopv1.Transaction{Result: "hit", RequestUid: 7}})
	data, _ := proto.Marshal(&snoopv1.Event{Transaction: &snoopv1.Transaction{Data: []byte("secret"), DataTruncated: true}})
	merged := append(append([]byte(nil), ev...), data...)
	resp := protowire.AppendTag(nil, 4, protowire.BytesType)
	resp = protowire.AppendBytes(resp, merged)
	checkDecoding(t, resp)
	got := new(snoopv1.WatchEventsResponse)
	if err := UnmarshalResponse(resp, got); err != nil || string(got.GetEvents()[0].GetTransaction().GetData()) != "secret" || got.GetEvents()[0].GetTransaction().GetRequestUid() != 7 {
		t.Fatalf("merged event: %v, %v", got, err)
	}

	unknown := protowire.AppendTag(append([]byte(nil), resp...), 99, protowire.Fixed64Type)
	unknown = protowire.AppendFixed64(unknown, 1)
	unknown = protowire.AppendTag(unknown, 98, protowire.BytesType)
	unknown = protowire.AppendString(unknown, "later field")
	if err := UnmarshalResponse(unknown, new(snoopv1.WatchEventsResponse)); err != nil {
		t.Fatalf("unknown fields: %v", err)
	}

	bad, _ := proto.Marshal(&snoopv1.WatchEventsResponse{Events: []*snoopv1.Event{{Proxy: "p"}}})
	checkDecoding(t, bad[:len(bad)-1])
	badUTF8 := protowire.AppendTag(nil, 3, protowire.BytesType)
	badUTF8 = protowire.AppendString(badUTF8, "web\xff")
	resp = protowire.AppendTag(nil, 1, protowire.BytesType)
	resp = protowire.AppendBytes(resp, badUTF8)
	checkDecoding(t, resp)
}

func FuzzUnmarshalResponse(f *testing.F) {
	r := rand.New(rand.NewPCG(9, 10))
	// Small seeds (the fuzzer mutates large ones slowly): responses of a
	// few random events, each under 1 KiB encoded.
	for seeds := 0; seeds < 8; {
		resp := &snoopv1.WatchEventsResponse{}
		for range 3 {
			ev := &snoopv1.Event{}
			populate(ev.ProtoReflect(), r, 0.5, 0)
			if proto.Size(ev) < 1024 {
				resp.Events = append(resp.Events, ev)
			}
		}
		if len(resp.Events) > 0 {
			b, _ := proto.Marshal(resp)
			f.Add(b)
			seeds++
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		checkDecoding(t, b)
	})
}

// BenchmarkUnmarshalResponse decodes a batch of 256 typical events, per
// event, against proto.Unmarshal.
func BenchmarkUnmarshalResponse(b *testing.B) {
	resp := &snoopv1.WatchEventsResponse{}
	for i := range 256 {
		resp.Events = append(resp.Events, &snoopv1.Event{
			Kind: snoopv1.EventKind_EVENT_KIND_TRANSACTION, Proxy: "sessions", ConnectionId: uint64(i), Client: "127.0.0.1:51234",
			Time: &timestamppbT, EndTime: &timestamppbT, ProxyInstance: "0b6f7d0e-8c1f-4a55-9a51-3a4f4ad6f1d2",
			Transaction: &snoopv1.Transaction{Op: snoopv1.Op_OP_GET, RequestUid: uint32(i), SessionId: []byte("0123456789abcdef0123456789abcdef"),
				SessionIdLength: 32, RequestSize: 36, ResponseSize: 1040, RequestFrames: 1, ResponseFrames: 1, Result: "hit",
				DataLength: 1000, DataDigest: []byte("12345678"), StartTime: &timestamppbT, Latency: &durationpbT},
		})
	}
	buf, _ := proto.Marshal(resp)
	b.Run("proto", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N / 256 {
			if err := proto.Unmarshal(buf, new(snoopv1.WatchEventsResponse)); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("apiwire", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N / 256 {
			if err := UnmarshalResponse(buf, new(snoopv1.WatchEventsResponse)); err != nil {
				b.Fatal(err)
			}
		}
	})
	// As snoopctl reads a stream: the bytes copied out of gRPC's buffers
	// into the Response's own, decoded into its reused storage.
	b.Run("reused", func(b *testing.B) {
		b.ReportAllocs()
		var r Response
		for range b.N / 256 {
			into := r.Buffer(len(buf))
			copy(into, buf)
			if err := r.Unmarshal(into); err != nil {
				b.Fatal(err)
			}
		}
	})
}

var (
	timestamppbT = timestamppb.Timestamp{Seconds: 1765000000, Nanos: 123456789}
	durationpbT  = durationpb.Duration{Nanos: 123456}
)
