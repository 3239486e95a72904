package daemon

import (
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"strconv"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/snoopd/snoopd/daemon/hub"
	"github.com/snoopd/snoopd/distcache"
	"github.com/snoopd/snoopd/distcache/loadgen"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
	"github.com/snoopd/snoopd/internal/apiconv"
	"github.com/snoopd/snoopd/internal/apievent"
	"github.com/snoopd/snoopd/internal/testutil"
	"github.com/snoopd/snoopd/proxy"
)

// freshAPIEvent is the conversion as it was before events were filled
// into reused messages: every message allocated anew, every byte slice
// copied. The tests hold the reusing conversion to it, and the
// benchmarks measure against it.
func freshAPIEvent(e *proxy.Event, includeData bool) *snoopv1.Event {
	out := &snoopv1.Event{
		Kind:         apiconv.Kind(e.Kind),
		Time:         timestamppb.New(e.Time),
		EndTime:      timestamppb.New(e.Time),
		Proxy:        e.Proxy,
		ConnectionId: e.ConnID,
		Client:       e.Client,
	}
	if e.Kind == proxy.KindTransaction && e.Tx != nil && !e.Tx.Start.IsZero() {
		out.Time = timestamppb.New(e.Tx.Start) // a transaction's time is its start
	}
	switch e.Kind {
	case proxy.KindTransaction:
		if t := e.Tx; t != nil {
			tx := &snoopv1.Transaction{
				Op:              apiconv.Op(t.Op),
				RequestUid:      t.RequestUID,
				SessionId:       append([]byte(nil), t.SessionID...),
				SessionIdLength: uint32(t.SessionIDLen),
				TimeoutMs:       t.TimeoutMS,
				RequestSize:     uint32(t.RequestSize),
				ResponseSize:    uint32(t.ResponseSize),
				RequestFrames:   uint32(t.RequestFrames),
				ResponseFrames:  uint32(t.ResponseFrames),
				Result:          t.Result(),
				Status:          uint32(t.Status),
				DataLength:      uint32(t.DataLen),
				StartTime:       timestamppb.New(t.Start),
			}
			if !t.Unanswered && !t.Orphan {
				tx.Latency = durationpb.New(t.Latency)
				tx.ServerLatency = durationpb.New(t.ServerLatency)
			}
			if t.HasDigest {
				tx.DataDigest = append([]byte(nil), t.Digest[:]...)
			}
			if includeData && t.Data != nil {
				tx.Data = append([]byte(nil), t.Data...)
				tx.DataTruncated = t.DataTruncated
			}
			out.Transaction = tx
		}
	case proxy.KindConnClosed:
		if c := e.Closed; c != nil {
			out.Closed = &snoopv1.ConnectionClosed{
				BytesUp: c.BytesUp, BytesDown: c.BytesDown, Duration: durationpb.New(c.Duration),
				Transactions: c.Transactions, Reason: c.Reason,
			}
		}
	case proxy.KindProtocolError:
		pe := &snoopv1.ProtocolError{Direction: e.Direction.String(), Policy: apievent.Policy(e.Policy)}
		if perr, ok := e.Err.(*distcache.ProtocolError); ok {
			pe.Rule, pe.Field, pe.Offset, pe.Frame = perr.Rule.String(), perr.Field, perr.Offset, perr.Frame
		}
		if e.Err != nil {
			pe.Message = e.Err.Error()
		}
		out.ProtocolError = pe
	default:
		if e.Err != nil {
			out.Error = e.Err.Error()
		}
	}
	return out
}

// randomEvent makes an event of any kind with random contents; about
// half of them are transactions, as in real traffic.
func randomEvent(rng *rand.Rand) *proxy.Event {
	e := &proxy.Event{
		Time:   time.Unix(1_700_000_000+rng.Int64N(1e8), rng.Int64N(1e9)),
		Proxy:  []string{"p", "sessions", ""}[rng.IntN(3)],
		ConnID: rng.Uint64N(3) * rng.Uint64(),
		Client: []string{"", "127.0.0.1:40000", "unix:@"}[rng.IntN(3)],
	}
	kinds := []proxy.EventKind{proxy.KindConnOpened, proxy.KindConnClosed, proxy.KindConnectFailed, proxy.KindConnRefused, proxy.KindProtocolError}
	if rng.IntN(2) == 0 {
		e.Kind = proxy.KindTransaction
	} else {
		e.Kind = kinds[rng.IntN(len(kinds))]
	}
	switch e.Kind {
	case proxy.KindTransaction:
		if rng.IntN(20) == 0 {
			break // a transaction event without its transaction
		}
		t := &proxy.Transaction{Start: e.Time.Add(-time.Duration(rng.Int64N(1e9))), Latency: time.Duration(rng.Int64N(3e9))}
		t.ServerLatency = t.Latency - time.Duration(rng.Int64N(int64(t.Latency)+1))
		t.Op = distcache.Op(rng.IntN(5))
		t.RequestUID = rng.Uint32()
		t.SessionID = make([]byte, rng.IntN(distcache.MaxSessionIDLen+1))
		for i := range t.SessionID {
			t.SessionID[i] = byte(rng.Uint32())
		}
		t.SessionIDLen = len(t.SessionID) + rng.IntN(2)*rng.IntN(100)
		t.TimeoutMS = rng.Uint32()
		t.RequestSize, t.ResponseSize = rng.IntN(40000), rng.IntN(40000)
		t.RequestFrames, t.ResponseFrames = rng.IntN(20), rng.IntN(20)
		t.Status = distcache.Status(rng.IntN(8))
		t.Hit = rng.IntN(2) == 0
		t.Unanswered = rng.IntN(10) == 0
		t.Orphan = rng.IntN(10) == 0
		t.DataLen = rng.IntN(40000)
		if rng.IntN(2) == 0 {
			t.HasDigest = true
			for i := range t.Digest {
				t.Digest[i] = byte(rng.Uint32())
			}
		}
		if rng.IntN(3) == 0 {
			t.Data = make([]byte, rng.IntN(300))
			t.DataTruncated = rng.IntN(2) == 0
		}
		e.Tx = t
	case proxy.KindConnClosed:
		if rng.IntN(20) != 0 {
			e.Closed = &proxy.ConnClosed{BytesUp: rng.Int64(), BytesDown: rng.Int64N(1000), Duration: time.Duration(rng.Int64N(1e12)),
				Transactions: rng.Int64N(100), Reason: []string{"client closed", "", "server reset: x\ny"}[rng.IntN(3)]}
		}
	case proxy.KindProtocolError:
		e.Direction = distcache.Direction(rng.IntN(3))
		e.Policy = proxy.CorruptPolicy(rng.IntN(2))
		switch rng.IntN(3) {
		case 0:
			e.Err = &distcache.ProtocolError{Rule: distcache.RuleVersion, Field: "proto_level", Offset: rng.Int64N(1e6), Frame: rng.Int64N(100), Detail: "bad"}
		case 1:
			e.Err = errors.New("something else")
		}
	default:
		if rng.IntN(2) == 0 {
			e.Err = errors.New("dial tcp 127.0.0.1:1: connection refused")
		}
	}
	return e
}

// TestFillMatchesFreshConversion fills one reused apiEvent with thousands
// of random events of every kind in a row (so a field left over from the
// previous event would show) and holds each result to the allocating
// conversion, message for message and byte for byte.
func TestFillMatchesFreshConversion(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var a apiEvent
	det := proto.MarshalOptions{Deterministic: true}
	for i := range 5000 {
		e := randomEvent(rng)
		data := rng.IntN(2) == 0
		want := freshAPIEvent(e, data)
		got := a.Fill(e, data)
		if !proto.Equal(got, want) {
			t.Fatalf("event %d (data %v):\n got %v\nwant %v", i, data, got, want)
		}
		wb, _ := det.Marshal(want)
		gb, _ := det.Marshal(got)
		if string(wb) != string(gb) {
			t.Fatalf("event %d: encodings differ", i)
		}
	}
}

// recordStream is a watch stream that keeps a copy of every response, as
// a client would receive it: each message goes through the daemon's codec
// and is decoded again.
type recordStream struct {
	grpc.ServerStream
	got []*snoopv1.WatchEventsResponse
}

func (s *recordStream) SendMsg(m any) error {
	b, err := newCodec().Marshal(m)
	if err != nil {
		return err
	}
	defer b.Free()
	c := new(snoopv1.WatchEventsResponse)
	if err := proto.Unmarshal(b.Materialize(), c); err != nil {
		return err
	}
	s.got = append(s.got, c)
	return nil
}

func (s *recordStream) Context() context.Context     { return context.Background() }
func (s *recordStream) SetHeader(metadata.MD) error  { return nil }
func (s *recordStream) SendHeader(metadata.MD) error { return nil }
func (s *recordStream) SetTrailer(metadata.MD)       {}

// exactPool hands out buffers of exactly the length asked for, and
// sizeStream checks that each response filled its buffer exactly: a
// sender that sized a response wrong would have made append move it to a
// larger array, or left room unused.
type exactPool struct{}

func (exactPool) Get(n int) *[]byte { b := make([]byte, n); return &b }
func (exactPool) Put(*[]byte)       {}

type sizeStream struct {
	recordStream
	t *testing.T
}

func (s *sizeStream) SendMsg(m any) error {
	p := m.(*preEncoded)
	if len(*p.b) != cap(*p.b) {
		s.t.Errorf("a response of %d bytes in a buffer sized for %d", len(*p.b), cap(*p.b))
	}
	return s.recordStream.SendMsg(m)
}

func TestEventSenderSizesEachResponseExactly(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	evs := make([]*proxy.Event, 600)
	for i := range evs {
		evs[i] = randomEvent(rng)
		if i%50 == 0 {
			tx := &proxy.Transaction{}
			tx.Data = make([]byte, distcache.MaxSessionDataLen)
			evs[i] = &proxy.Event{Kind: proxy.KindTransaction, Proxy: "p", Tx: tx}
		}
	}
	recs := records(evs, instances(len(evs)))
	for _, req := range []*snoopv1.WatchEventsRequest{{MaxBatch: 1}, {MaxBatch: 256}, {MaxBatch: 256, IncludeData: true}, {MaxBatch: 1, IncludeData: true}} {
		st := &sizeStream{t: t}
		s := newEventSender(st, req, exactPool{})
		if err := s.events(recs); err != nil {
			t.Fatal(err)
		}
		got := 0
		for _, r := range st.got {
			got += len(r.GetEvents())
			if r.GetEvent() != nil {
				got++
			}
		}
		if got != len(evs) {
			t.Errorf("%v: %d events sent, want %d", req, got, len(evs))
		}
	}
}

// The pool's buffers are no larger than gRPC's tiers would give (a
// stream whose client stops reading holds its queued responses' buffers):
// a single event's response gets a buffer of its own size, a batch one of
// the tier above it.
func TestResponsePoolSizes(t *testing.T) {
	var p responsePool
	for _, c := range []struct{ n, capacity int }{
		{1, 1}, {400, 400}, {1024, 1024}, {1025, 4 << 10}, {4 << 10, 4 << 10}, {4<<10 + 1, 16 << 10},
		{100 << 10, largeResponse}, {largeResponse, largeResponse}, {largeResponse + 1, largeResponse + 1},
	} {
		for range 2 { // new, then (perhaps) from the pool
			b := p.Get(c.n)
			if len(*b) != c.n || cap(*b) != c.capacity {
				t.Errorf("Get(%d): len %d cap %d, want cap %d", c.n, len(*b), cap(*b), c.capacity)
			}
			p.Put(b)
		}
	}
}

func TestEventSenderBatches(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	evs := make([]*proxy.Event, 1500)
	for i := range evs {
		evs[i] = randomEvent(rng)
	}
	for _, tc := range []struct {
		maxBatch uint32
		want     []int // events per response; nil: one per response, in event
	}{
		{0, nil},
		{1, nil},
		{2, []int{2, 2, 1}},
		{256, []int{5}},
		{5000, []int{5}},
	} {
		rec := &recordStream{}
		s := newEventSender(rec, &snoopv1.WatchEventsRequest{MaxBatch: tc.maxBatch}, new(responsePool))
		if err := s.events(records(evs[:5], instances(5))); err != nil {
			t.Fatal(err)
		}
		if err := s.dropped(7); err != nil {
			t.Fatal(err)
		}
		if err := s.historyDone(3, 5); err != nil {
			t.Fatal(err)
		}
		var sizes []int
		var got []*snoopv1.Event
		for _, r := range rec.got[:len(rec.got)-2] {
			if r.GetDropped() != 0 || r.GetHistoryDone() {
				t.Fatalf("max_batch %d: a notice among the events: %v", tc.maxBatch, r)
			}
			if tc.want == nil {
				if r.GetEvent() == nil || len(r.GetEvents()) > 0 {
					t.Fatalf("max_batch %d: want one event in event, got %v", tc.maxBatch, r)
				}
				got = append(got, r.GetEvent())
				continue
			}
			if r.GetEvent() != nil {
				t.Fatalf("max_batch %d: event set in a batch", tc.maxBatch)
			}
			sizes = append(sizes, len(r.GetEvents()))
			got = append(got, r.GetEvents()...)
		}
		if tc.want != nil && !slices.Equal(sizes, tc.want) {
			t.Errorf("max_batch %d: batches %v, want %v", tc.maxBatch, sizes, tc.want)
		}
		for i, e := range evs[:5] {
			want := freshAPIEvent(e, false)
			want.ProxyInstance = instances(5)[i]
			if !proto.Equal(got[i], want) {
				t.Fatalf("max_batch %d: event %d differs", tc.maxBatch, i)
			}
		}
		n := len(rec.got)
		if rec.got[n-2].GetDropped() != 7 || rec.got[n-2].GetEvent() != nil || len(rec.got[n-2].GetEvents()) > 0 ||
			!rec.got[n-1].GetHistoryDone() || rec.got[n-1].GetHistoryMissing() != 3 || rec.got[n-1].GetDropped() != 0 || len(rec.got[n-1].GetEvents()) > 0 {
			t.Errorf("max_batch %d: notices %v, %v", tc.maxBatch, rec.got[n-2], rec.got[n-1])
		}
	}

	// The cap: 1,500 events at max_batch 5000 go out 256 at a time.
	rec := &recordStream{}
	s := newEventSender(rec, &snoopv1.WatchEventsRequest{MaxBatch: 5000}, new(responsePool))
	if err := s.events(records(evs, instances(len(evs)))); err != nil {
		t.Fatal(err)
	}
	if len(rec.got) != 6 || len(rec.got[0].GetEvents()) != maxWatchBatch || len(rec.got[5].GetEvents()) != 1500-5*maxWatchBatch {
		t.Errorf("1,500 events at the cap: %d responses", len(rec.got))
	}

	// The size bound: events with 32 KiB of data each close a batch well
	// before 256 events, and no response is far over the bound.
	big := make([]*proxy.Event, 200)
	for i := range big {
		tx := &proxy.Transaction{}
		tx.Data = make([]byte, distcache.MaxSessionDataLen)
		big[i] = &proxy.Event{Kind: proxy.KindTransaction, Proxy: "p", Tx: tx}
	}
	rec = &recordStream{}
	s = newEventSender(rec, &snoopv1.WatchEventsRequest{MaxBatch: 256, IncludeData: true}, new(responsePool))
	if err := s.events(records(big, instances(len(big)))); err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, r := range rec.got {
		for _, ev := range r.GetEvents() {
			if len(ev.GetTransaction().GetData()) != distcache.MaxSessionDataLen {
				t.Fatalf("an event with %d bytes of data, want %d", len(ev.GetTransaction().GetData()), distcache.MaxSessionDataLen)
			}
		}
		total += len(r.GetEvents())
		if sz := proto.Size(r); sz > maxBatchBytes+64<<10 {
			t.Errorf("a response of %d bytes", sz)
		}
	}
	if total != len(big) || len(rec.got) < 2 {
		t.Errorf("data events: %d in %d responses", total, len(rec.got))
	}
}

// TestWatchBatchedOverAPI runs real traffic through a proxy and watches
// it batched and unbatched over gRPC: the same events in the same order,
// the history's end as a notice of its own.
func TestWatchBatchedOverAPI(t *testing.T) {
	a := startAPI(t, Config{}, ServerOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	res, err := a.proxy.CreateProxy(ctx, &snoopv1.CreateProxyRequest{Spec: spec("b", startCache(t).String())})
	if err != nil {
		t.Fatal(err)
	}
	addr := distcache.MustParseAddr(res.GetProxy().GetListenAddress())
	txOnly := []snoopv1.EventKind{snoopv1.EventKind_EVENT_KIND_TRANSACTION}
	const ops = 300
	before := a.d.hub.Published()
	c, err := loadgen.Dial(ctx, addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	for i := range ops / 2 {
		c.Have([]byte{byte(i), byte(i >> 8)})
	}
	// The client has its answer before the proxy publishes the
	// transaction (it forwards first), so wait for the connection's
	// opening and the first half to reach the hub: both watchers must
	// find the same history.
	waitFor(t, "the first half's events", func() bool { return a.d.hub.Published() >= before+1+ops/2 })
	// Both watchers start from history, which holds the first half.
	batched, err := a.events.WatchEvents(ctx, &snoopv1.WatchEventsRequest{Kinds: txOnly, History: ops, MaxBatch: 64})
	if err != nil {
		t.Fatal(err)
	}
	single, err := a.events.WatchEvents(ctx, &snoopv1.WatchEventsRequest{Kinds: txOnly, History: ops})
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); a.d.hub.Watchers() < 2 && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	for i := ops / 2; i < ops; i++ {
		c.Have([]byte{byte(i), byte(i >> 8)})
	}
	c.Close()
	read := func(st grpc.ServerStreamingClient[snoopv1.WatchEventsResponse], batches bool) (ids []int, notice int, multi bool) {
		notice = -1
		for len(ids) < ops {
			r, err := st.Recv()
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case r.GetHistoryDone():
				if r.GetEvent() != nil || len(r.GetEvents()) > 0 {
					t.Fatalf("history_done with events: %v", r)
				}
				notice = len(ids)
				continue
			case r.GetDropped() > 0:
				t.Fatalf("dropped %d", r.GetDropped())
			}
			evs := r.GetEvents()
			if batches {
				if r.GetEvent() != nil {
					t.Fatal("batched watch got a single event")
				}
				multi = multi || len(evs) > 1
			} else {
				if len(evs) > 0 {
					t.Fatal("unbatched watch got events")
				}
				evs = []*snoopv1.Event{r.GetEvent()}
			}
			for _, e := range evs {
				id := e.GetTransaction().GetSessionId()
				ids = append(ids, int(id[0])|int(id[1])<<8)
			}
		}
		return ids, notice, multi
	}
	bids, bnotice, multi := read(batched, true)
	sids, snotice, _ := read(single, false)
	for i := range ops {
		if bids[i] != i || sids[i] != i {
			t.Fatalf("event %d: batched %d, single %d", i, bids[i], sids[i])
		}
	}
	if bnotice != snotice || bnotice < ops/2 {
		t.Errorf("history ended after %d (batched) and %d (single) events, want the same, at least %d", bnotice, snotice, ops/2)
	}
	if !multi {
		t.Error("the history came one event per response despite max_batch 64")
	}
}

// The per-event cost of the stream path: converting a hub event to API
// messages and marshalling the response exactly as grpc-go does (its
// proto codec, buffers returned to its pool). Events are typical
// transactions of a proxy without capture.
func benchEvents(n int) []*proxy.Event {
	evs := make([]*proxy.Event, n)
	now := time.Now()
	for i := range evs {
		tx := &proxy.Transaction{Start: now, Latency: 123456 * time.Nanosecond}
		tx.Op, tx.RequestUID = distcache.OpGet, uint32(i)
		tx.SessionID = []byte("0123456789abcdef0123456789abcdef")
		tx.SessionIDLen = 32
		tx.RequestSize, tx.ResponseSize, tx.RequestFrames, tx.ResponseFrames = 36, 1040, 1, 1
		tx.Hit, tx.DataLen, tx.HasDigest = true, 1000, true
		evs[i] = &proxy.Event{Kind: proxy.KindTransaction, Time: now, Proxy: "sessions", ConnID: 42, Client: "127.0.0.1:51234", Tx: tx}
	}
	return evs
}

// codecStream marshals each response with grpc's proto codec and frees
// the buffers, as serverStream.SendMsg does, without a transport.
type codecStream struct {
	recordStream
	codec encoding.CodecV2
	bytes int
}

func (s *codecStream) SendMsg(m any) error {
	b, err := s.codec.Marshal(m)
	if err != nil {
		return err
	}
	s.bytes += b.Len()
	b.Free()
	return nil
}

func newCodecStream() *codecStream {
	return &codecStream{codec: newCodec()}
}

// BenchmarkStreamEventFresh is the path before: a fresh message tree and
// a response per event.
func BenchmarkStreamEventFresh(b *testing.B) {
	evs := benchEvents(256)
	s := newCodecStream()
	b.ReportAllocs()
	for i := range b.N {
		r := &snoopv1.WatchEventsResponse{Event: freshAPIEvent(evs[i%len(evs)], false)}
		if err := s.SendMsg(r); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(s.bytes)/float64(b.N), "B/event")
}

// BenchmarkStreamEventReused is max_batch 0 or 1: one event per
// response, around the hub's encoding.
func BenchmarkStreamEventReused(b *testing.B) {
	benchSender(b, 1)
}

// BenchmarkStreamEventBatch256 is max_batch 256 with full batches.
func BenchmarkStreamEventBatch256(b *testing.B) {
	benchSender(b, 256)
}

func benchSender(b *testing.B, batch uint32) {
	recs := records(benchEvents(256), instances(256))
	cs := newCodecStream()
	s := newEventSender(cs, &snoopv1.WatchEventsRequest{MaxBatch: batch}, new(responsePool))
	b.ReportAllocs()
	b.ResetTimer()
	defer testutil.ReportCPU(b)()
	// b.N events, in rounds of up to 256 (one op is one event).
	for sent := 0; sent < b.N; {
		n := min(len(recs), b.N-sent)
		if err := s.events(recs[:n]); err != nil {
			b.Fatal(err)
		}
		sent += n
	}
	b.ReportMetric(float64(cs.bytes)/float64(b.N), "B/event")
}

// instances names n proxy instances, one per event.
func instances(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = "instance-" + strconv.Itoa(i)
	}
	return out
}

// records encodes events as the hub does, each with its instance.
func records(evs []*proxy.Event, insts []string) []hub.Record {
	enc := NewEventEncoder()
	out := make([]hub.Record, len(evs))
	for i, e := range evs {
		out[i] = hub.Record{Seq: uint64(i), Instance: insts[i], Wire: enc.AppendEvent(nil, e, insts[i]), Data: enc.AppendData(nil, e)}
		e.MatchView(&out[i].View)
	}
	return out
}

// TestEncoderMatchesTheAPIConversion holds the hub's encoding, with and
// without captured data, to the allocating conversion over random events
// of every kind: decoded, the record is the event as the API has always
// sent it.
func TestEncoderMatchesTheAPIConversion(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	enc := NewEventEncoder()
	for i := range 5000 {
		e := randomEvent(rng)
		wire := enc.AppendEvent(nil, e, "inst-1")
		withData := enc.AppendData(slices.Clip(wire), e)
		for _, tc := range []struct {
			b    []byte
			data bool
		}{{wire, false}, {withData, true}} {
			got := new(snoopv1.Event)
			if err := proto.Unmarshal(tc.b, got); err != nil {
				t.Fatalf("event %d: %v", i, err)
			}
			want := freshAPIEvent(e, tc.data)
			want.ProxyInstance = "inst-1"
			if !proto.Equal(got, want) {
				t.Fatalf("event %d (data %v):\n got %v\nwant %v", i, tc.data, got, want)
			}
		}
	}
}

// An error text that is not UTF-8 would make a client refuse the whole
// response: the encoder replaces the bad bytes.
func TestEncoderMendsInvalidUTF8(t *testing.T) {
	e := &proxy.Event{Kind: proxy.KindConnectFailed, Proxy: "p", Err: errors.New("dial: \xff\xfe refused")}
	got := new(snoopv1.Event)
	if err := proto.Unmarshal(NewEventEncoder().AppendEvent(nil, e, ""), got); err != nil {
		t.Fatal(err)
	}
	if got.GetError() != "dial: \uFFFD refused" {
		t.Errorf("error %q", got.GetError())
	}
}

// BenchmarkEncodeEvent is what the hub's dispatcher spends on an event,
// once, whatever the number of watchers: the API conversion and the hand
// protobuf encoder.
func BenchmarkEncodeEvent(b *testing.B) {
	evs := benchEvents(256)
	enc := NewEventEncoder()
	buf := make([]byte, 0, 1024)
	b.ReportAllocs()
	for i := range b.N {
		buf = enc.AppendEvent(buf[:0], evs[i%len(evs)], "instance-1")
	}
	b.ReportMetric(float64(len(buf)), "B/event")
}

// TestUnpairedTransactionsHaveNoLatency: a request never answered and an
// answer to no request have no pair to time, so their events carry no
// latency (tail shows "-"), not a latency of 0 that reads as a fast
// answer.
func TestUnpairedTransactionsHaveNoLatency(t *testing.T) {
	for _, tx := range []proxy.Transaction{{Unanswered: true}, {Orphan: true}} {
		tx.Latency = 3 * time.Millisecond // whatever the proxy left there
		e := &proxy.Event{Kind: proxy.KindTransaction, Tx: &tx}
		if got := toAPIEvent(e, false).GetTransaction().GetLatency(); got != nil {
			t.Errorf("%s: latency %v, want none", tx.Result(), got.AsDuration())
		}
	}
	answered := &proxy.Event{Kind: proxy.KindTransaction, Tx: &proxy.Transaction{Latency: 3 * time.Millisecond}}
	if got := toAPIEvent(answered, false).GetTransaction().GetLatency().AsDuration(); got != 3*time.Millisecond {
		t.Errorf("an answered transaction: latency %v", got)
	}
}
