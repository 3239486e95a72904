package daemon

import (
	"sort"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/snoopd/snoopd/distcache"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
	"github.com/snoopd/snoopd/internal/apiconv"
	"github.com/snoopd/snoopd/proxy"
)

// apiOp maps a distcache operation to the API's enum.
func apiOp(op distcache.Op) snoopv1.Op {
	if !op.Valid() {
		return snoopv1.Op_OP_UNSPECIFIED
	}
	return snoopv1.Op(op + 1)
}

func counters(s proxy.Stats) *snoopv1.ProxyCounters {
	c := &snoopv1.ProxyCounters{
		ConnectionsActive:  s.ConnsActive,
		ConnectionsTotal:   s.ConnsTotal,
		ConnectionsRefused: s.ConnsRefused,
		ConnectFailures:    s.ConnectFailed,
		ProtocolErrors:     s.ProtocolErrors,
		Timeouts:           s.Timeouts,
		LoopRefusals:       s.LoopRefusals,
		BytesUp:            s.BytesUp,
		BytesDown:          s.BytesDown,
		FramesUp:           s.FramesUp,
		FramesDown:         s.FramesDown,
		Transactions:       s.Transactions(),
		Latency:            apiconv.LatencySummary(&s.Latency),
	}
	ops := make([]distcache.Op, 0, len(s.Results))
	for op := range s.Results {
		ops = append(ops, op)
	}
	sort.Slice(ops, func(i, j int) bool { return ops[i] < ops[j] })
	for _, op := range ops {
		oc := &snoopv1.OpCounters{Op: apiOp(op), Results: map[string]int64{}}
		for r, n := range s.Results[op] {
			oc.Results[r] = n
			oc.Count += n
		}
		c.Ops = append(c.Ops, oc)
	}
	return c
}

// eventKinds maps proxy event kinds to the API's.
var eventKinds = map[proxy.EventKind]snoopv1.EventKind{
	proxy.KindTransaction:   snoopv1.EventKind_EVENT_KIND_TRANSACTION,
	proxy.KindConnOpened:    snoopv1.EventKind_EVENT_KIND_CONNECTION_OPENED,
	proxy.KindConnClosed:    snoopv1.EventKind_EVENT_KIND_CONNECTION_CLOSED,
	proxy.KindConnectFailed: snoopv1.EventKind_EVENT_KIND_CONNECT_FAILED,
	proxy.KindConnRefused:   snoopv1.EventKind_EVENT_KIND_CONNECTION_REFUSED,
	proxy.KindProtocolError: snoopv1.EventKind_EVENT_KIND_PROTOCOL_ERROR,
}

func apiPolicy(p proxy.CorruptPolicy) snoopv1.CorruptPolicy {
	if p == proxy.PassThrough {
		return snoopv1.CorruptPolicy_CORRUPT_POLICY_PASSTHROUGH
	}
	return snoopv1.CorruptPolicy_CORRUPT_POLICY_CLOSE
}

// toAPIEvent renders an event for a watcher. Captured session data goes
// out only when the watcher asked for it.
func toAPIEvent(e *proxy.Event, includeData bool) *snoopv1.Event {
	out := &snoopv1.Event{
		Kind:         eventKinds[e.Kind],
		Time:         timestamppb.New(e.Time),
		Proxy:        e.Proxy,
		ConnectionId: e.ConnID,
		Client:       e.Client,
	}
	switch e.Kind {
	case proxy.KindTransaction:
		if t := e.Tx; t != nil {
			tx := &snoopv1.Transaction{
				Op:              apiOp(t.Op),
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
				Latency:         durationpb.New(t.Latency),
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
		pe := &snoopv1.ProtocolError{Direction: e.Direction.String(), Policy: apiPolicy(e.Policy)}
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

// minDuration reads an optional duration, nil as zero.
func minDuration(d *durationpb.Duration) time.Duration {
	if d == nil {
		return 0
	}
	return d.AsDuration()
}
