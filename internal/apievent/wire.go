package apievent

import (
	"strings"
	"time"
	"unicode/utf8"

	"github.com/snoopd/snoopd/distcache"
	"github.com/snoopd/snoopd/internal/apiconv"
	"github.com/snoopd/snoopd/internal/apiwire"
	"github.com/snoopd/snoopd/proxy"
)

// Tags of the fields a WireEncoder writes: a field number shifted left by 3
// and its wire type (0 varint, 2 length-prefixed). Fields 1 to 15 take
// one byte; Transaction's 16 to 19 take two.
const (
	evKind        = 1<<3 | 0
	evTime        = 2<<3 | 2
	evProxy       = 3<<3 | 2
	evConnID      = 4<<3 | 0
	evClient      = 5<<3 | 2
	evTransaction = 6
	evClosed      = 7
	evProtocolErr = 8
	evError       = 9<<3 | 2
	evInstance    = 10<<3 | 2
	evEndTime     = 12<<3 | 2
	evCaptureGap  = 13

	txOp             = 1<<3 | 0
	txRequestUID     = 2<<3 | 0
	txSessionID      = 3<<3 | 2
	txSessionIDLen   = 4<<3 | 0
	txTimeoutMS      = 5<<3 | 0
	txRequestSize    = 6<<3 | 0
	txResponseSize   = 7<<3 | 0
	txRequestFrames  = 8<<3 | 0
	txResponseFrames = 9<<3 | 0
	txResult         = 10<<3 | 2
	txStatus         = 11<<3 | 0
	txDataLength     = 12<<3 | 0
	txDataDigest     = 13<<3 | 2
	txData           = 14<<3 | 2
	txDataTruncated  = 15<<3 | 0
	txStartTime      = 16<<3 | 2 // two bytes on the wire
	txLatency        = 17<<3 | 2
	txFault          = 18<<3 | 2
	txServerLatency  = 19<<3 | 2

	closedBytesUp      = 1<<3 | 0
	closedBytesDown    = 2<<3 | 0
	closedDuration     = 3<<3 | 2
	closedTransactions = 4<<3 | 0
	closedReason       = 5<<3 | 2

	perrRule      = 1<<3 | 2
	perrDirection = 2<<3 | 2
	perrField     = 3<<3 | 2
	perrOffset    = 4<<3 | 0
	perrFrame     = 5<<3 | 0
	perrMessage   = 6<<3 | 2
	perrPolicy    = 7<<3 | 0

	gapDirection = 1<<3 | 2
	gapFirst     = 2<<3 | 0
	gapLast      = 3<<3 | 0
	gapMissing   = 4<<3 | 0

	secondsField = 1<<3 | 0 // of Timestamp and Duration
	nanosField   = 2<<3 | 0
)

// WireEncoder writes events in the protobuf wire form of the API's Event.
// It remembers the last proxy name, instance and client address it found
// to be UTF-8 (each a string shared by all the events of a proxy or a
// connection), so that it checks them once and not once an event. The
// zero value is ready to use; a WireEncoder is not safe for concurrent
// use.
type WireEncoder struct {
	valid [3]string // indexed by sharedProxy, sharedInstance, sharedClient
}

// The strings a WireEncoder remembers.
const (
	sharedProxy = iota
	sharedInstance
	sharedClient
)

// AppendEvent appends e's Event in the protobuf wire form, stamped with
// the instance of the proxy that published it (Event.proxy_instance),
// without captured session data: the bytes that encoding Fill(e, false)
// with apiwire.AppendEvent gives, except that a string that is not UTF-8
// (an error quoting bytes off the wire, say) goes out with each bad
// sequence replaced by U+FFFD, since a decoder would refuse the whole
// response. It writes from e directly, every field once in number order,
// because the daemon encodes every event while anyone watches: filling
// the messages and walking them cost twice as much (docs/benchmarks.md,
// "Watching for less"). The tests hold the two to the same bytes.
func (w *WireEncoder) AppendEvent(b []byte, e *proxy.Event, instance string) []byte {
	b = appendVarintField(b, evKind, uint64(apiconv.Kind(e.Kind)))
	start := e.Time
	if e.Kind == proxy.KindTransaction && e.Tx != nil && !e.Tx.Start.IsZero() {
		start = e.Tx.Start
	}
	b = appendTime(b, evTime, start)
	b = w.appendShared(b, evProxy, e.Proxy, sharedProxy)
	b = appendVarintField(b, evConnID, e.ConnID)
	b = w.appendShared(b, evClient, e.Client, sharedClient)
	var errText string
	switch e.Kind {
	case proxy.KindTransaction:
		if t := e.Tx; t != nil {
			at := apiwire.OpenMessage(&b, evTransaction)
			b = appendTransaction(b, t)
			b = apiwire.CloseMessage(b, at)
		}
	case proxy.KindConnClosed:
		if c := e.Closed; c != nil {
			at := apiwire.OpenMessage(&b, evClosed)
			b = appendVarintField(b, closedBytesUp, uint64(c.BytesUp))
			b = appendVarintField(b, closedBytesDown, uint64(c.BytesDown))
			b = appendDuration(b, closedDuration, c.Duration)
			b = appendVarintField(b, closedTransactions, uint64(c.Transactions))
			b = appendString(b, closedReason, c.Reason)
			b = apiwire.CloseMessage(b, at)
		}
	case proxy.KindProtocolError:
		at := apiwire.OpenMessage(&b, evProtocolErr)
		if perr, ok := e.Err.(*distcache.ProtocolError); ok {
			b = appendString(b, perrRule, perr.Rule.String())
			b = appendString(b, perrDirection, e.Direction.String())
			b = appendString(b, perrField, perr.Field)
			b = appendVarintField(b, perrOffset, uint64(perr.Offset))
			b = appendVarintField(b, perrFrame, uint64(perr.Frame))
		} else {
			b = appendString(b, perrDirection, e.Direction.String())
		}
		if e.Err != nil {
			b = appendString(b, perrMessage, e.Err.Error())
		}
		b = appendVarintField(b, perrPolicy, uint64(Policy(e.Policy)))
		b = apiwire.CloseMessage(b, at)
	case proxy.KindCaptureGap:
	default:
		if e.Err != nil {
			errText = e.Err.Error()
		}
	}
	b = appendString(b, evError, errText)
	b = w.appendShared(b, evInstance, instance, sharedInstance)
	b = appendTime(b, evEndTime, e.Time)
	if g := e.Gap; e.Kind == proxy.KindCaptureGap && g != nil {
		at := apiwire.OpenMessage(&b, evCaptureGap)
		b = appendString(b, gapDirection, g.Direction.String())
		b = appendVarintField(b, gapFirst, uint64(g.First))
		b = appendVarintField(b, gapLast, uint64(g.Last))
		b = appendVarintField(b, gapMissing, uint64(g.Missing()))
		b = apiwire.CloseMessage(b, at)
	}
	return b
}

func appendTransaction(b []byte, t *proxy.Transaction) []byte {
	b = appendVarintField(b, txOp, uint64(apiconv.Op(t.Op)))
	b = appendVarintField(b, txRequestUID, uint64(t.RequestUID))
	if sid := t.SessionID[:min(len(t.SessionID), distcache.MaxSessionIDLen)]; len(sid) > 0 {
		b = append(b, txSessionID, byte(len(sid))) // at most 64 bytes: a one-byte length
		b = append(b, sid...)
	}
	b = appendVarintField(b, txSessionIDLen, uint64(uint32(t.SessionIDLen)))
	b = appendVarintField(b, txTimeoutMS, uint64(t.TimeoutMS))
	b = appendVarintField(b, txRequestSize, uint64(uint32(t.RequestSize)))
	b = appendVarintField(b, txResponseSize, uint64(uint32(t.ResponseSize)))
	b = appendVarintField(b, txRequestFrames, uint64(uint32(t.RequestFrames)))
	b = appendVarintField(b, txResponseFrames, uint64(uint32(t.ResponseFrames)))
	b = appendUTF8(b, txResult, t.Result()) // a name of the vocabulary
	b = appendVarintField(b, txStatus, uint64(uint32(t.Status)))
	b = appendVarintField(b, txDataLength, uint64(uint32(t.DataLen)))
	if t.HasDigest {
		b = append(b, txDataDigest, byte(len(t.Digest)))
		b = append(b, t.Digest[:]...)
	}
	b = appendTime(b, txStartTime, t.Start)
	// A request never answered, or an answer to no request, has no pair
	// to time: no latency, rather than a latency of 0.
	answered := !t.Unanswered && !t.Orphan
	if answered {
		b = appendDuration(b, txLatency, t.Latency)
	}
	b = appendString(b, txFault, t.Fault)
	if answered {
		b = appendDuration(b, txServerLatency, t.ServerLatency)
	}
	return b
}

// AppendData appends the Event that holds only e's captured session
// data (Transaction.data and data_truncated), so that AppendEvent's bytes
// followed by these decode as the event with its data: protobuf merges a
// message field that appears twice. It appends nothing when e carries no
// data.
func (w *WireEncoder) AppendData(b []byte, e *proxy.Event) []byte {
	if e.Kind != proxy.KindTransaction || e.Tx == nil || e.Tx.Data == nil {
		return b
	}
	at := apiwire.OpenMessage(&b, evTransaction)
	if d := e.Tx.Data; len(d) > 0 {
		b = append(b, txData)
		b = appendVarint(b, uint64(len(d)))
		b = append(b, d...)
	}
	if e.Tx.DataTruncated {
		b = append(b, txDataTruncated, 1)
	}
	return apiwire.CloseMessage(b, at)
}

// appendTag appends a field's tag: one byte up to field 15, two above.
func appendTag(b []byte, tag uint64) []byte {
	if tag < 0x80 {
		return append(b, byte(tag))
	}
	return append(b, byte(tag)|0x80, byte(tag>>7))
}

// appendVarint is protowire.AppendVarint, small enough to inline: most
// values here take a byte or two.
func appendVarint(b []byte, v uint64) []byte {
	for v >= 0x80 {
		b = append(b, byte(v)|0x80)
		v >>= 7
	}
	return append(b, byte(v))
}

// appendVarintField appends a varint field unless it is zero, as proto3
// leaves zero values out. Signed values arrive sign-extended to 64 bits,
// as protobuf encodes int32, int64 and enums.
func appendVarintField(b []byte, tag uint64, v uint64) []byte {
	if v == 0 {
		return b
	}
	return appendVarint(appendTag(b, tag), v)
}

// appendString appends a string field unless it is empty, mending what
// is not UTF-8.
func appendString(b []byte, tag uint64, s string) []byte {
	if s == "" {
		return b
	}
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	b = appendVarint(appendTag(b, tag), uint64(len(s)))
	return append(b, s...)
}

// appendShared appends a string field unless it is empty, checking that
// it is UTF-8 only when it is not the string last found to be in w's slot
// i.
func (w *WireEncoder) appendShared(b []byte, tag uint64, s string, i int) []byte {
	if s == "" {
		return b
	}
	if s != w.valid[i] {
		if !utf8.ValidString(s) {
			return appendString(b, tag, s)
		}
		w.valid[i] = s
	}
	return appendUTF8(b, tag, s)
}

// appendUTF8 appends a string field known to be UTF-8.
func appendUTF8(b []byte, tag uint64, s string) []byte {
	b = appendVarint(appendTag(b, tag), uint64(len(s)))
	return append(b, s...)
}

// appendTime appends a Timestamp field, set even at the zero of both of
// its fields (a set message field is written, empty).
func appendTime(b []byte, tag uint64, t time.Time) []byte {
	return appendSecondsNanos(b, tag, t.Unix(), int32(t.Nanosecond()))
}

// appendDuration appends a Duration field, set even when zero.
func appendDuration(b []byte, tag uint64, d time.Duration) []byte {
	nanos := d.Nanoseconds()
	return appendSecondsNanos(b, tag, nanos/1e9, int32(nanos%1e9))
}

// appendSecondsNanos appends the two fields Timestamp and Duration share,
// as a message of at most 22 bytes: its length always takes one byte.
func appendSecondsNanos(b []byte, tag uint64, seconds int64, nanos int32) []byte {
	b = appendTag(b, tag)
	at := len(b)
	b = append(b, 0)
	b = appendVarintField(b, secondsField, uint64(seconds))
	b = appendVarintField(b, nanosField, uint64(int64(nanos)))
	b[at] = byte(len(b) - at - 1)
	return b
}
