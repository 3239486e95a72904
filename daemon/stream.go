package daemon

import (
	"math"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/snoopd/snoopd/daemon/hub"
	"github.com/snoopd/snoopd/distcache"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
	"github.com/snoopd/snoopd/internal/apiconv"
	"github.com/snoopd/snoopd/proxy"
)

// maxWatchBatch caps WatchEventsRequest.max_batch at what one Next of the
// hub returns: more events per response save nothing measurable, and
// every slot is memory a stream keeps (about 900 bytes), also while its
// client does not read.
const maxWatchBatch = hub.MaxBatch

// maxBatchBytes bounds the estimated encoded size of one batched response.
// A gRPC client refuses messages over 4 MiB by default, and events with
// captured data can be 32 KiB each, so a batch closes once it reaches
// this size (it may exceed it by its last event). A stream whose client
// stops reading holds about one such response in the transport, so it is
// kept small; at this size the cost per event is the same as at 1 MiB.
const maxBatchBytes = 256 << 10

// eventSender writes hub events to one watch stream. It owns the API
// messages it sends and reuses them from send to send, so that in steady
// state converting an event costs no allocation: an event is a dozen
// small messages (Event, Transaction, two Timestamps, a Duration, ...),
// which the one-message-per-event conversion allocated anew every time.
//
// Reuse after Send returns is safe because grpc-go (v1.85,
// serverStream.SendMsg in stream.go) marshals the message synchronously
// (prepareMsg → encode → codec.Marshal) before handing bytes to the
// transport; the only later readers of the message itself are a stats
// handler (outPayload) and golang.org/x/net/trace when grpc.EnableTracing
// is set, and the daemon's server installs neither (NewServer). Binary
// logging, if enabled, logs the encoded bytes, not the message. grpc's
// documentation says "It is not safe to modify the message after calling
// SendMsg. Tracing libraries and stats handlers may use the message
// lazily": adding a stats handler or tracing to NewServer would have to
// stop this reuse.
type eventSender struct {
	stream      grpc.ServerStreamingServer[snoopv1.WatchEventsResponse]
	includeData bool
	// maxBatch is the most events per response; 1 sends each event in
	// a response of its own, in WatchEventsResponse.event.
	maxBatch int

	resp  snoopv1.WatchEventsResponse
	slots []*apiEvent
	evs   []*snoopv1.Event // resp.Events' backing array
}

func newEventSender(stream grpc.ServerStreamingServer[snoopv1.WatchEventsResponse], req *snoopv1.WatchEventsRequest) *eventSender {
	return &eventSender{
		stream:      stream,
		includeData: req.GetIncludeData(),
		maxBatch:    int(max(1, min(req.GetMaxBatch(), maxWatchBatch))),
	}
}

// reset clears the response for the next send.
func (s *eventSender) reset() {
	s.resp.Event, s.resp.Dropped, s.resp.HistoryDone, s.resp.Events = nil, 0, false, nil
	s.resp.HistoryMissing = 0
}

// slot returns the i-th reusable event storage, making it on first use:
// a stream holds only as many as its largest batch needed.
func (s *eventSender) slot(i int) *apiEvent {
	for len(s.slots) <= i {
		s.slots = append(s.slots, new(apiEvent))
	}
	return s.slots[i]
}

// events sends evs in order, as many per response as allowed; insts[i]
// is the instance of the proxy that published evs[i]. It never waits for
// more events to fill a batch.
func (s *eventSender) events(evs []*proxy.Event, insts []string) error {
	if s.maxBatch <= 1 {
		a := s.slot(0)
		for i, e := range evs {
			s.reset()
			s.resp.Event = a.fill(e, s.includeData)
			s.resp.Event.ProxyInstance = insts[i]
			if err := s.stream.Send(&s.resp); err != nil {
				return err
			}
		}
		return nil
	}
	for len(evs) > 0 {
		s.reset()
		s.evs = s.evs[:0]
		size := 0
		n := 0
		for n < len(evs) && n < s.maxBatch && size < maxBatchBytes {
			a := s.slot(n)
			ev := a.fill(evs[n], s.includeData)
			ev.ProxyInstance = insts[n]
			s.evs = append(s.evs, ev)
			size += a.sizeHint()
			n++
		}
		s.resp.Events = s.evs
		if err := s.stream.Send(&s.resp); err != nil {
			return err
		}
		evs, insts = evs[n:], insts[n:]
	}
	return nil
}

// dropped sends a drop notice.
func (s *eventSender) dropped(n uint64) error {
	s.reset()
	s.resp.Dropped = n
	return s.stream.Send(&s.resp)
}

// historyDone sends the end-of-history notice, with the number of history
// events asked for and not sent.
func (s *eventSender) historyDone(missing uint64) error {
	s.reset()
	s.resp.HistoryDone = true
	s.resp.HistoryMissing = uint32(min(missing, math.MaxUint32))
	return s.stream.Send(&s.resp)
}

// apiEvent is the storage of one event in API form, filled in place.
type apiEvent struct {
	ev        snoopv1.Event
	tx        snoopv1.Transaction
	time      timestamppb.Timestamp
	end       timestamppb.Timestamp
	start     timestamppb.Timestamp
	latency   durationpb.Duration
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
	setDuration(&a.latency, t.Latency)
	tx.Latency = &a.latency
	tx.Fault = t.Fault
	return tx
}

// sizeHint is a generous estimate of the filled event's encoded size, for
// bounding a batch: every fixed-size field at its widest, plus the
// variable ones.
func (a *apiEvent) sizeHint() int {
	n := 256 + len(a.ev.Proxy) + len(a.ev.Client) + len(a.ev.Error)
	if a.ev.Transaction != nil {
		n += len(a.tx.SessionId) + len(a.tx.Data) + len(a.tx.Result) + len(a.tx.Fault)
	}
	if a.ev.Closed != nil {
		n += len(a.closed.Reason)
	}
	if a.ev.ProtocolError != nil {
		n += len(a.perr.Message) + len(a.perr.Rule) + len(a.perr.Field)
	}
	return n
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
