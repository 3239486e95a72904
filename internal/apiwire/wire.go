// Package apiwire writes snoop.v1 messages in the protobuf wire form by
// hand: the events of a busy daemon are encoded once each (for every
// watcher, the export and history alike), and this costs a fraction of the
// generic marshaller. The tests hold it to proto.Marshal.
package apiwire

import (
	"fmt"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
)

// AppendEvent appends ev in the protobuf wire form, the same bytes
// proto.Marshal gives (fields in number order, zero values left out), or
// fails as it does on a string that is not valid UTF-8 (proto3 strings
// must be; a consumer's decoder would reject the whole batch).
//
// It exists because the exporter encodes every event of a busy daemon:
// the generic marshaller walks its field tables and, for a length-prefixed
// message inside a batch, sizes every message twice; this writes each
// field once, sizing a nested message by where it ended. The tests hold it
// to proto.Marshal over random events and over an event with every field
// of the schema set, so a field added to the proto and not here fails
// them.
func AppendEvent(b []byte, ev *snoopv1.Event) ([]byte, error) {
	var bad protowire.Number // a string field that is not UTF-8
	b = appendVarintField(b, 1, uint64(ev.GetKind()))
	b = appendTimestamp(b, 2, ev.GetTime())
	b = appendString(b, 3, ev.GetProxy(), &bad)
	b = appendVarintField(b, 4, ev.GetConnectionId())
	b = appendString(b, 5, ev.GetClient(), &bad)
	if t := ev.GetTransaction(); t != nil {
		at := OpenMessage(&b, 6)
		b = appendTransaction(b, t, &bad)
		b = CloseMessage(b, at)
	}
	if c := ev.GetClosed(); c != nil {
		at := OpenMessage(&b, 7)
		b = appendVarintField(b, 1, uint64(c.GetBytesUp()))
		b = appendVarintField(b, 2, uint64(c.GetBytesDown()))
		b = appendDuration(b, 3, c.GetDuration())
		b = appendVarintField(b, 4, uint64(c.GetTransactions()))
		b = appendString(b, 5, c.GetReason(), &bad)
		b = CloseMessage(b, at)
	}
	if p := ev.GetProtocolError(); p != nil {
		at := OpenMessage(&b, 8)
		b = appendString(b, 1, p.GetRule(), &bad)
		b = appendString(b, 2, p.GetDirection(), &bad)
		b = appendString(b, 3, p.GetField(), &bad)
		b = appendVarintField(b, 4, uint64(p.GetOffset()))
		b = appendVarintField(b, 5, uint64(p.GetFrame()))
		b = appendString(b, 6, p.GetMessage(), &bad)
		b = appendVarintField(b, 7, uint64(p.GetPolicy()))
		b = CloseMessage(b, at)
	}
	b = appendString(b, 9, ev.GetError(), &bad)
	b = appendString(b, 10, ev.GetProxyInstance(), &bad)
	b = appendString(b, 11, ev.GetDaemon(), &bad)
	b = appendTimestamp(b, 12, ev.GetEndTime())
	if g := ev.GetCaptureGap(); g != nil {
		at := OpenMessage(&b, 13)
		b = appendString(b, 1, g.GetDirection(), &bad)
		b = appendVarintField(b, 2, uint64(g.GetFirstOffset()))
		b = appendVarintField(b, 3, uint64(g.GetLastOffset()))
		b = appendVarintField(b, 4, uint64(g.GetBytesMissing()))
		b = CloseMessage(b, at)
	}
	if bad != 0 {
		return b, fmt.Errorf("encoding an event: string field %d is not valid UTF-8", bad)
	}
	return b, nil
}

func appendTransaction(b []byte, t *snoopv1.Transaction, bad *protowire.Number) []byte {
	b = appendVarintField(b, 1, uint64(t.GetOp()))
	b = appendVarintField(b, 2, uint64(t.GetRequestUid()))
	b = appendBytes(b, 3, t.GetSessionId())
	b = appendVarintField(b, 4, uint64(t.GetSessionIdLength()))
	b = appendVarintField(b, 5, uint64(t.GetTimeoutMs()))
	b = appendVarintField(b, 6, uint64(t.GetRequestSize()))
	b = appendVarintField(b, 7, uint64(t.GetResponseSize()))
	b = appendVarintField(b, 8, uint64(t.GetRequestFrames()))
	b = appendVarintField(b, 9, uint64(t.GetResponseFrames()))
	b = appendString(b, 10, t.GetResult(), bad)
	b = appendVarintField(b, 11, uint64(t.GetStatus()))
	b = appendVarintField(b, 12, uint64(t.GetDataLength()))
	b = appendBytes(b, 13, t.GetDataDigest())
	b = appendBytes(b, 14, t.GetData())
	if t.GetDataTruncated() {
		b = appendVarintField(b, 15, 1)
	}
	b = appendTimestamp(b, 16, t.GetStartTime())
	b = appendDuration(b, 17, t.GetLatency())
	b = appendString(b, 18, t.GetFault(), bad)
	b = appendDuration(b, 19, t.GetServerLatency())
	return b
}

// appendVarintField appends a varint field unless it is zero. Signed
// values arrive sign-extended to 64 bits, as protobuf encodes int32,
// int64 and enums.
func appendVarintField(b []byte, num protowire.Number, v uint64) []byte {
	if v == 0 {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.VarintType)
	return protowire.AppendVarint(b, v)
}

func appendString(b []byte, num protowire.Number, s string, bad *protowire.Number) []byte {
	if s == "" {
		return b
	}
	if !utf8.ValidString(s) && *bad == 0 {
		*bad = num
	}
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendString(b, s)
}

func appendBytes(b []byte, num protowire.Number, v []byte) []byte {
	if len(v) == 0 {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendBytes(b, v)
}

// appendTimestamp and appendDuration append a set message field, even an
// empty one (a set field is written though all its fields are zero). The
// two well-known types have the same two fields.
func appendTimestamp(b []byte, num protowire.Number, ts *timestamppb.Timestamp) []byte {
	if ts == nil {
		return b
	}
	return appendSecondsNanos(b, num, ts.GetSeconds(), ts.GetNanos())
}

func appendDuration(b []byte, num protowire.Number, d *durationpb.Duration) []byte {
	if d == nil {
		return b
	}
	return appendSecondsNanos(b, num, d.GetSeconds(), d.GetNanos())
}

func appendSecondsNanos(b []byte, num protowire.Number, seconds int64, nanos int32) []byte {
	at := OpenMessage(&b, num)
	b = appendVarintField(b, 1, uint64(seconds))
	b = appendVarintField(b, 2, uint64(int64(nanos)))
	return CloseMessage(b, at)
}

// OpenMessage starts a length-prefixed field, leaving one byte for the
// length, and returns where that byte is; CloseMessage writes the length
// once the field's contents are appended, moving them when the length
// needs more than one byte (a message of 128 bytes or more: rare, as
// events without session data are smaller).
func OpenMessage(b *[]byte, num protowire.Number) int {
	*b = protowire.AppendTag(*b, num, protowire.BytesType)
	*b = append(*b, 0)
	return len(*b) - 1
}

func CloseMessage(b []byte, at int) []byte {
	n := len(b) - at - 1
	if n < 0x80 {
		b[at] = byte(n)
		return b
	}
	extra := protowire.SizeVarint(uint64(n)) - 1
	b = append(b, make([]byte, extra)...)
	copy(b[at+1+extra:], b[at+1:len(b)-extra])
	protowire.AppendVarint(b[at:at], uint64(n))
	return b
}
