package daemon

import (
	"math"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/snoopd/snoopd/daemon/hub"
	"github.com/snoopd/snoopd/distcache"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
	"github.com/snoopd/snoopd/internal/apiconv"
	"github.com/snoopd/snoopd/proxy"
)

// maxWatchBatch caps WatchEventsRequest.max_batch at what one Next of the
// hub returns: more events per response save nothing measurable.
const maxWatchBatch = hub.MaxBatch

// maxBatchBytes bounds the size of one batched response. A gRPC client
// refuses messages over 4 MiB by default, and events with captured data
// can be 32 KiB each, so a batch closes once it reaches this size (it may
// exceed it by its last event). A stream whose client stops reading holds
// about one such response in the transport, so it is kept small; at this
// size the cost per event is the same as at 1 MiB.
const maxBatchBytes = 256 << 10

// WatchEventsResponse's field numbers, for writing responses by hand.
const (
	respEvent          protowire.Number = 1
	respDropped        protowire.Number = 2
	respHistoryDone    protowire.Number = 3
	respEvents         protowire.Number = 4
	respHistoryMissing protowire.Number = 5
	respHistoryBeyond  protowire.Number = 6
)

// eventSender writes hub records to one watch stream. The hub encoded
// each event once, for every stream; a response is written around those
// bytes (a WatchEventsResponse is its fields one after the other, and an
// event is a length-prefixed field holding the record's bytes), into one
// buffer the sender reuses, and goes out as a preEncoded message that the
// server's codec passes through. So sending an event costs a copy of its
// bytes, whatever the number of watchers.
type eventSender struct {
	stream      grpc.ServerStream
	includeData bool
	// maxBatch is the most events per response; 1 sends each event in
	// a response of its own, in WatchEventsResponse.event.
	maxBatch int

	buf []byte
}

func newEventSender(stream grpc.ServerStream, req *snoopv1.WatchEventsRequest) *eventSender {
	return &eventSender{
		stream:      stream,
		includeData: req.GetIncludeData(),
		maxBatch:    int(max(1, min(req.GetMaxBatch(), maxWatchBatch))),
	}
}

func (s *eventSender) send() error {
	return s.stream.SendMsg(&preEncoded{b: s.buf})
}

// events sends recs in order, as many per response as allowed. It never
// waits for more events to fill a batch.
func (s *eventSender) events(recs []hub.Record) error {
	if s.maxBatch <= 1 {
		for i := range recs {
			s.buf = appendRecord(s.buf[:0], respEvent, &recs[i], s.includeData)
			if err := s.send(); err != nil {
				return err
			}
		}
		return nil
	}
	for len(recs) > 0 {
		s.buf = s.buf[:0]
		n := 0
		for n < len(recs) && n < s.maxBatch && len(s.buf) < maxBatchBytes {
			s.buf = appendRecord(s.buf, respEvents, &recs[n], s.includeData)
			n++
		}
		if err := s.send(); err != nil {
			return err
		}
		recs = recs[n:]
	}
	return nil
}

// appendRecord appends r as the message field num: the record's bytes,
// and its captured data when asked for.
func appendRecord(b []byte, num protowire.Number, r *hub.Record, includeData bool) []byte {
	n := len(r.Wire)
	if includeData {
		n += len(r.Data)
	}
	b = protowire.AppendTag(b, num, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(n))
	b = append(b, r.Wire...)
	if includeData {
		b = append(b, r.Data...)
	}
	return b
}

// dropped sends a drop notice.
func (s *eventSender) dropped(n uint64) error {
	s.buf = protowire.AppendTag(s.buf[:0], respDropped, protowire.VarintType)
	s.buf = protowire.AppendVarint(s.buf, n)
	return s.send()
}

// historyDone sends the end-of-history notice, with the numbers of
// history events asked for and not sent: those that were gone, and those
// beyond what ever happened.
func (s *eventSender) historyDone(missing, beyond uint64) error {
	s.buf = protowire.AppendTag(s.buf[:0], respHistoryDone, protowire.VarintType)
	s.buf = protowire.AppendVarint(s.buf, 1)
	if m := min(missing, math.MaxUint32); m > 0 {
		s.buf = protowire.AppendTag(s.buf, respHistoryMissing, protowire.VarintType)
		s.buf = protowire.AppendVarint(s.buf, m)
	}
	if beyond > 0 {
		s.buf = protowire.AppendTag(s.buf, respHistoryBeyond, protowire.VarintType)
		s.buf = protowire.AppendVarint(s.buf, beyond)
	}
	return s.send()
}

// apiEvent is the storage of one event in API form, filled in place.
type apiEvent struct {
	ev        snoopv1.Event
	tx        snoopv1.Transaction
	time      timestamppb.Timestamp
	end       timestamppb.Timestamp
	start     timestamppb.Timestamp
	latency   durationpb.Duration
	server    durationpb.Duration
	closed    snoopv1.ConnectionClosed
	closedDur durationpb.Duration
	perr      snoopv1.ProtocolError
	id        [distcache.MaxSessionIDLen]byte
	digest    [distcache.DigestSize]byte
}

// toAPIEvent renders an event for a watcher in messages of its own, which
// the caller may keep. Captured session data goes out only when the
// watcher asked for it, and is shared with e (the proxy never changes it
// after publishing).
func toAPIEvent(e *proxy.Event, includeData bool) *snoopv1.Event {
	return new(apiEvent).fill(e, includeData)
}

// fill renders e into a's messages, setting every field (nothing of the
// previous event survives), and returns the Event. Captured session data
// is shared with e, not copied: the proxy never changes it after
// publishing, and the message is marshalled before the hub reuses e.
func (a *apiEvent) fill(e *proxy.Event, includeData bool) *snoopv1.Event {
	ev := &a.ev
	ev.Kind = apiconv.Kind(e.Kind)
	a.fillTimes(e)
	ev.Proxy = e.Proxy
	ev.ConnectionId = e.ConnID
	ev.Client = e.Client
	ev.Transaction, ev.Closed, ev.ProtocolError, ev.Error = nil, nil, nil, ""
	switch e.Kind {
	case proxy.KindTransaction:
		if t := e.Tx; t != nil {
			ev.Transaction = a.fillTx(t, includeData)
		}
	case proxy.KindConnClosed:
		if c := e.Closed; c != nil {
			setDuration(&a.closedDur, c.Duration)
			a.closed.BytesUp, a.closed.BytesDown = c.BytesUp, c.BytesDown
			a.closed.Duration = &a.closedDur
			a.closed.Transactions, a.closed.Reason = c.Transactions, c.Reason
			ev.Closed = &a.closed
		}
	case proxy.KindProtocolError:
		pe := &a.perr
		pe.Direction, pe.Policy = e.Direction.String(), apiPolicy(e.Policy)
		pe.Rule, pe.Field, pe.Offset, pe.Frame, pe.Message = "", "", 0, 0, ""
		if perr, ok := e.Err.(*distcache.ProtocolError); ok {
			pe.Rule, pe.Field, pe.Offset, pe.Frame = perr.Rule.String(), perr.Field, perr.Offset, perr.Frame
		}
		if e.Err != nil {
			pe.Message = e.Err.Error()
		}
		ev.ProtocolError = pe
	default:
		if e.Err != nil {
			ev.Error = e.Err.Error()
		}
	}
	return ev
}

// fillTimes sets an event's two times: end_time is when the event was
// emitted (the proxy's Event.Time, kept in publication order by the hub),
// which orders the stream; time is when it began, for a transaction the
// request's first byte (Transaction.Start), for other events the same as
// end_time.
func (a *apiEvent) fillTimes(e *proxy.Event) {
	setTimestamp(&a.end, e.Time)
	a.ev.EndTime = &a.end
	start := e.Time
	if e.Kind == proxy.KindTransaction && e.Tx != nil && !e.Tx.Start.IsZero() {
		start = e.Tx.Start
	}
	setTimestamp(&a.time, start)
	a.ev.Time = &a.time
}

func (a *apiEvent) fillTx(t *proxy.Transaction, includeData bool) *snoopv1.Transaction {
	tx := &a.tx
	tx.Op = apiconv.Op(t.Op)
	tx.RequestUid = t.RequestUID
	tx.SessionId = nil
	if n := copy(a.id[:], t.SessionID); n > 0 {
		tx.SessionId = a.id[:n:n]
	}
	tx.SessionIdLength = uint32(t.SessionIDLen)
	tx.TimeoutMs = t.TimeoutMS
	tx.RequestSize = uint32(t.RequestSize)
	tx.ResponseSize = uint32(t.ResponseSize)
	tx.RequestFrames = uint32(t.RequestFrames)
	tx.ResponseFrames = uint32(t.ResponseFrames)
	tx.Result = t.Result()
	tx.Status = uint32(t.Status)
	tx.DataLength = uint32(t.DataLen)
	tx.DataDigest = nil
	if t.HasDigest {
		a.digest = t.Digest
		tx.DataDigest = a.digest[:]
	}
	tx.Data, tx.DataTruncated = nil, false
	if includeData && t.Data != nil {
		tx.Data, tx.DataTruncated = t.Data, t.DataTruncated
	}
	setTimestamp(&a.start, t.Start)
	tx.StartTime = &a.start
	// A request never answered, or an answer to no request, has no pair
	// to time: no latency, rather than a latency of 0.
	tx.Latency, tx.ServerLatency = nil, nil
	if !t.Unanswered && !t.Orphan {
		setDuration(&a.latency, t.Latency)
		tx.Latency = &a.latency
		setDuration(&a.server, t.ServerLatency)
		tx.ServerLatency = &a.server
	}
	tx.Fault = t.Fault
	return tx
}

// setTimestamp is timestamppb.New without the allocation.
func setTimestamp(ts *timestamppb.Timestamp, t time.Time) {
	ts.Seconds, ts.Nanos = t.Unix(), int32(t.Nanosecond())
}

// setDuration is durationpb.New without the allocation.
func setDuration(d *durationpb.Duration, v time.Duration) {
	nanos := v.Nanoseconds()
	d.Seconds, d.Nanos = nanos/1e9, int32(nanos%1e9)
}
