package apievent

import (
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/snoopd/snoopd/distcache"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
	"github.com/snoopd/snoopd/internal/apiconv"
	"github.com/snoopd/snoopd/proxy"
)

// Builder is the storage of one event in API form, filled in place. The
// zero value is ready to use; a Builder is not safe for concurrent use.
type Builder struct {
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
	gap       snoopv1.CaptureGap
	id        [distcache.MaxSessionIDLen]byte
	digest    [distcache.DigestSize]byte
}

// New renders e in messages of its own, which the caller may keep.
// Captured session data goes out only with includeData, and is shared
// with e (the proxy never changes it after publishing).
func New(e *proxy.Event, includeData bool) *snoopv1.Event {
	return new(Builder).Fill(e, includeData)
}

// Fill renders e into a's messages, setting every field (nothing of the
// previous event survives), and returns the Event, valid until the next
// Fill. Captured session data is shared with e, not copied: the proxy
// never changes it after publishing, so the message may be marshalled or
// printed until e is reused.
func (a *Builder) Fill(e *proxy.Event, includeData bool) *snoopv1.Event {
	ev := &a.ev
	ev.Kind = apiconv.Kind(e.Kind)
	a.fillTimes(e)
	ev.Proxy = e.Proxy
	ev.ConnectionId = e.ConnID
	ev.Client = e.Client
	ev.Transaction, ev.Closed, ev.ProtocolError, ev.CaptureGap, ev.Error = nil, nil, nil, nil, ""
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
		pe.Direction, pe.Policy = e.Direction.String(), Policy(e.Policy)
		pe.Rule, pe.Field, pe.Offset, pe.Frame, pe.Message = "", "", 0, 0, ""
		if perr, ok := e.Err.(*distcache.ProtocolError); ok {
			pe.Rule, pe.Field, pe.Offset, pe.Frame = perr.Rule.String(), perr.Field, perr.Offset, perr.Frame
		}
		if e.Err != nil {
			pe.Message = e.Err.Error()
		}
		ev.ProtocolError = pe
	case proxy.KindCaptureGap:
		if g := e.Gap; g != nil {
			a.gap.Direction = g.Direction.String()
			a.gap.FirstOffset, a.gap.LastOffset, a.gap.BytesMissing = g.First, g.Last, g.Missing()
			ev.CaptureGap = &a.gap
		}
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
func (a *Builder) fillTimes(e *proxy.Event) {
	setTimestamp(&a.end, e.Time)
	a.ev.EndTime = &a.end
	start := e.Time
	if e.Kind == proxy.KindTransaction && e.Tx != nil && !e.Tx.Start.IsZero() {
		start = e.Tx.Start
	}
	setTimestamp(&a.time, start)
	a.ev.Time = &a.time
}

func (a *Builder) fillTx(t *proxy.Transaction, includeData bool) *snoopv1.Transaction {
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

// Policy maps a corrupt policy to the API's enum.
func Policy(p proxy.CorruptPolicy) snoopv1.CorruptPolicy {
	switch p {
	case proxy.PassThrough:
		return snoopv1.CorruptPolicy_CORRUPT_POLICY_PASSTHROUGH
	case proxy.Resync:
		return snoopv1.CorruptPolicy_CORRUPT_POLICY_RESYNC
	}
	return snoopv1.CorruptPolicy_CORRUPT_POLICY_CLOSE
}
