package ctl

import (
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/snoopd/snoopd/ctl/format"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
	"github.com/snoopd/snoopd/internal/apiwire"
	"github.com/snoopd/snoopd/internal/testutil"
)

// BenchmarkTailJSON is what tail -o json does with each event of a busy
// daemon's batches of 256, once gRPC has handed over a response: decode
// it, count the event in the summary, write its line. "decoded" decodes
// every event into messages first (as tail did); "wire" leaves the events
// in their wire form and writes each line from it, reading on the way the
// few fields the summary counts. One op is one event.
func BenchmarkTailJSON(b *testing.B) {
	now := time.Now()
	resp := &snoopv1.WatchEventsResponse{}
	for i := range 256 {
		resp.Events = append(resp.Events, &snoopv1.Event{
			Kind: snoopv1.EventKind_EVENT_KIND_TRANSACTION, Time: timestamppb.New(now), EndTime: timestamppb.New(now.Add(time.Millisecond)),
			Proxy: "sessions", ConnectionId: uint64(i % 8), Client: "127.0.0.1:51234", ProxyInstance: "0b6f7d0e-8c1f-4a55-9a51-3a4f4ad6f1d2",
			Transaction: &snoopv1.Transaction{Op: snoopv1.Op_OP_GET, RequestUid: uint32(i), SessionId: []byte("0123456789abcdef0123456789abcdef"),
				SessionIdLength: 32, RequestSize: 36, ResponseSize: 1040, RequestFrames: 1, ResponseFrames: 1, Result: "hit",
				DataLength: 1000, DataDigest: []byte("12345678"), StartTime: timestamppb.New(now), Latency: durationpb.New(123456 * time.Nanosecond),
				ServerLatency: durationpb.New(100000 * time.Nanosecond)},
		})
	}
	batch, err := proto.Marshal(resp)
	if err != nil {
		b.Fatal(err)
	}
	out := make([]byte, 0, 512<<10)
	b.Run("decoded", func(b *testing.B) {
		defer testutil.ReportCPU(b)()
		b.ReportAllocs()
		var r apiwire.Response
		sum := newSummary()
		var one snoopv1.WatchEventsResponse
		for range b.N / 256 {
			into := r.Buffer(len(batch))
			copy(into, batch)
			if err := r.Unmarshal(into); err != nil {
				b.Fatal(err)
			}
			out = out[:0]
			for _, ev := range r.Msg.Events {
				one.Event = ev
				sum.add(&one)
				if out, err = format.AppendEventLine(out, ev); err != nil {
					b.Fatal(err)
				}
				out = append(out, '\n')
			}
		}
	})
	b.Run("wire", func(b *testing.B) {
		defer testutil.ReportCPU(b)()
		b.ReportAllocs()
		r := apiwire.Response{Raw: true}
		sum := newSummary()
		for range b.N / 256 {
			into := r.Buffer(len(batch))
			copy(into, batch)
			if err := r.Unmarshal(into); err != nil {
				b.Fatal(err)
			}
			out = out[:0]
			for _, ev := range r.Wire {
				if out, err = format.AppendEventLineWire(out, ev, &sum.facts); err != nil {
					b.Fatal(err)
				}
				out = append(out, '\n')
				sum.addFacts()
			}
		}
	})
}
