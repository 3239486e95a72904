package apijson

import (
	"encoding/base64"
	"errors"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
)

// The encoder writes what protojson writes: the fields of the .proto
// file in declaration order, zero values left out, 64-bit integers as
// strings, enums by name, bytes in padded standard base64, timestamps and
// durations with 0, 3, 6 or 9 fractional digits, strings escaped as
// protojson escapes them. What it does not reproduce exactly (invalid
// UTF-8, an enum number without a name, a time outside protojson's range)
// makes it fail with errSlow, and the caller starts again with
// AppendProto. Its tests set every field of these messages, so a field
// added to the .proto and not here fails them.

// errSlow makes an encoder step hand the value back to AppendProto.
var errSlow = errors.New("not encodable by the fast path")

// appendResponse appends a WatchEventsResponse with these fields.
func appendResponse(b []byte, k Keys, ev *snoopv1.Event, dropped uint64, historyDone bool, historyMissing uint32, historyBeyond uint64, events []*snoopv1.Event) ([]byte, error) {
	o := obj{b: append(b, '{'), camel: k == CamelKeys}
	if ev != nil {
		o.key("event")
		if err := o.event(ev); err != nil {
			return b, err
		}
	}
	o.uint64("dropped", dropped)
	o.bool("history_done", historyDone)
	o.uint32("history_missing", historyMissing)
	o.uint64("history_beyond", historyBeyond)
	if len(events) > 0 {
		o.key("events")
		o.b = append(o.b, '[')
		for i, ev := range events {
			if i > 0 {
				o.b = append(o.b, ',')
			}
			if err := o.event(ev); err != nil {
				return b, err
			}
		}
		o.b = append(o.b, ']')
	}
	return append(o.b, '}'), nil
}

// obj appends the members of a JSON object, putting commas between them.
type obj struct {
	b     []byte
	more  bool // a member was written: the next needs a comma
	camel bool // keys in lowerCamelCase (CamelKeys)
}

// key writes the member name k, a field's name in the .proto file, in
// the object's key style.
func (o *obj) key(k string) {
	if o.more {
		o.b = append(o.b, ',')
	}
	o.more = true
	o.b = append(o.b, '"')
	if o.camel {
		o.b = appendCamel(o.b, k)
	} else {
		o.b = append(o.b, k...)
	}
	o.b = append(o.b, '"', ':')
}

// appendCamel writes a field name as protojson's JSON name for it, by the
// rule protoc uses: each '_' is dropped and a lower-case letter after it
// raised (session_id_length: sessionIdLength).
func appendCamel(b []byte, name string) []byte {
	for {
		i := strings.IndexByte(name, '_')
		if i < 0 {
			return append(b, name...)
		}
		b = append(b, name[:i]...)
		name = name[i+1:]
		if name != "" && 'a' <= name[0] && name[0] <= 'z' {
			b = append(b, name[0]-('a'-'A'))
			name = name[1:]
		}
	}
}

func (o *obj) str(k, v string) error {
	if v == "" {
		return nil
	}
	o.key(k)
	var err error
	o.b, err = appendJSONString(o.b, v)
	return err
}

func (o *obj) uint32(k string, v uint32) {
	if v != 0 {
		o.key(k)
		o.b = appendUint(o.b, uint64(v))
	}
}

func (o *obj) uint64(k string, v uint64) {
	if v != 0 {
		o.key(k)
		o.b = append(o.b, '"')
		o.b = appendUint(o.b, v)
		o.b = append(o.b, '"')
	}
}

func (o *obj) int64(k string, v int64) {
	if v != 0 {
		o.key(k)
		o.b = append(o.b, '"')
		o.b = strconv.AppendInt(o.b, v, 10)
		o.b = append(o.b, '"')
	}
}

func (o *obj) bool(k string, v bool) {
	if v {
		o.key(k)
		o.b = append(o.b, "true"...)
	}
}

func (o *obj) bytes(k string, v []byte) {
	if len(v) > 0 {
		o.key(k)
		o.b = append(o.b, '"')
		o.b = base64.StdEncoding.AppendEncode(o.b, v)
		o.b = append(o.b, '"')
	}
}

// enum writes an enum by name; a number without a name goes the slow way
// (protojson would write the number).
func (o *obj) enum(k string, v int32, names map[int32]string) error {
	if v == 0 {
		return nil
	}
	name, ok := names[v]
	if !ok {
		return errSlow
	}
	o.key(k)
	o.b = append(o.b, '"')
	o.b = append(o.b, name...)
	o.b = append(o.b, '"')
	return nil
}

func (o *obj) timestamp(k string, ts *timestamppb.Timestamp) error {
	if ts == nil {
		return nil
	}
	o.key(k)
	var err error
	o.b, err = appendTimestamp(o.b, ts.GetSeconds(), ts.GetNanos())
	return err
}

func (o *obj) duration(k string, d *durationpb.Duration) error {
	if d == nil {
		return nil
	}
	o.key(k)
	var err error
	o.b, err = appendDuration(o.b, d.GetSeconds(), d.GetNanos())
	return err
}

// open starts a nested object under k; close ends it.
func (o *obj) open(k string) obj {
	o.key(k)
	return obj{b: append(o.b, '{'), camel: o.camel}
}

func (o *obj) close(inner obj) {
	o.b = append(inner.b, '}')
}

// event writes ev as a JSON object (a value: the key, if any, is written).
func (o *obj) event(ev *snoopv1.Event) error {
	e := obj{b: append(o.b, '{'), camel: o.camel}
	if err := e.enum("kind", int32(ev.GetKind()), snoopv1.EventKind_name); err != nil {
		return err
	}
	if err := e.timestamp("time", ev.GetTime()); err != nil {
		return err
	}
	if err := e.str("proxy", ev.GetProxy()); err != nil {
		return err
	}
	e.uint64("connection_id", ev.GetConnectionId())
	if err := e.str("client", ev.GetClient()); err != nil {
		return err
	}
	if tx := ev.GetTransaction(); tx != nil {
		t := e.open("transaction")
		if err := t.transaction(tx); err != nil {
			return err
		}
		e.close(t)
	}
	if c := ev.GetClosed(); c != nil {
		t := e.open("closed")
		t.int64("bytes_up", c.GetBytesUp())
		t.int64("bytes_down", c.GetBytesDown())
		if err := t.duration("duration", c.GetDuration()); err != nil {
			return err
		}
		t.int64("transactions", c.GetTransactions())
		if err := t.str("reason", c.GetReason()); err != nil {
			return err
		}
		e.close(t)
	}
	if pe := ev.GetProtocolError(); pe != nil {
		t := e.open("protocol_error")
		for _, f := range [...]struct{ k, v string }{{"rule", pe.GetRule()}, {"direction", pe.GetDirection()}, {"field", pe.GetField()}} {
			if err := t.str(f.k, f.v); err != nil {
				return err
			}
		}
		t.int64("offset", pe.GetOffset())
		t.int64("frame", pe.GetFrame())
		if err := t.str("message", pe.GetMessage()); err != nil {
			return err
		}
		if err := t.enum("policy", int32(pe.GetPolicy()), snoopv1.CorruptPolicy_name); err != nil {
			return err
		}
		e.close(t)
	}
	if err := e.str("error", ev.GetError()); err != nil {
		return err
	}
	if err := e.str("proxy_instance", ev.GetProxyInstance()); err != nil {
		return err
	}
	if err := e.str("daemon", ev.GetDaemon()); err != nil {
		return err
	}
	if err := e.timestamp("end_time", ev.GetEndTime()); err != nil {
		return err
	}
	if g := ev.GetCaptureGap(); g != nil {
		t := e.open("capture_gap")
		if err := t.str("direction", g.GetDirection()); err != nil {
			return err
		}
		t.int64("first_offset", g.GetFirstOffset())
		t.int64("last_offset", g.GetLastOffset())
		t.int64("bytes_missing", g.GetBytesMissing())
		e.close(t)
	}
	o.b = append(e.b, '}')
	return nil
}

func (t *obj) transaction(tx *snoopv1.Transaction) error {
	if err := t.enum("op", int32(tx.GetOp()), snoopv1.Op_name); err != nil {
		return err
	}
	t.uint32("request_uid", tx.GetRequestUid())
	t.bytes("session_id", tx.GetSessionId())
	t.uint32("session_id_length", tx.GetSessionIdLength())
	t.uint32("timeout_ms", tx.GetTimeoutMs())
	t.uint32("request_size", tx.GetRequestSize())
	t.uint32("response_size", tx.GetResponseSize())
	t.uint32("request_frames", tx.GetRequestFrames())
	t.uint32("response_frames", tx.GetResponseFrames())
	if err := t.str("result", tx.GetResult()); err != nil {
		return err
	}
	t.uint32("status", tx.GetStatus())
	t.uint32("data_length", tx.GetDataLength())
	t.bytes("data_digest", tx.GetDataDigest())
	t.bytes("data", tx.GetData())
	t.bool("data_truncated", tx.GetDataTruncated())
	if err := t.timestamp("start_time", tx.GetStartTime()); err != nil {
		return err
	}
	if err := t.duration("latency", tx.GetLatency()); err != nil {
		return err
	}
	if f := tx.GetFault(); f != "" {
		if err := t.str("fault", f); err != nil {
			return err
		}
	}
	return t.duration("server_latency", tx.GetServerLatency())
}

// The ranges protojson accepts (google.protobuf.Timestamp: years 1 to
// 9999; Duration: ±10,000 years).
const (
	minTimestampSeconds = -62135596800
	maxTimestampSeconds = 253402300799
	maxDurationSeconds  = 315576000000
)

// appendTimestamp writes an RFC 3339 time in UTC with 0, 3, 6 or 9
// fractional digits, as protojson does.
func appendTimestamp(b []byte, secs int64, nanos int32) ([]byte, error) {
	if secs < minTimestampSeconds || secs > maxTimestampSeconds || nanos < 0 || nanos >= 1e9 {
		return b, errSlow
	}
	b = append(b, '"')
	b = appendSeconds(b, secs)
	b = appendFraction(b, nanos)
	return append(b, 'Z', '"'), nil
}

// lastSecond is the last second appendSeconds formatted: the times of a
// stream's events fall in few distinct seconds (an event has three, and
// thousands of events share a second), and formatting a date is most of
// what writing a timestamp costs.
var lastSecond atomic.Pointer[formattedSecond]

type formattedSecond struct {
	secs int64
	text [len("2006-01-02T15:04:05")]byte
}

// appendSeconds writes secs, Unix seconds, as 2006-01-02T15:04:05 in UTC.
func appendSeconds(b []byte, secs int64) []byte {
	if f := lastSecond.Load(); f != nil && f.secs == secs {
		return append(b, f.text[:]...)
	}
	f := &formattedSecond{secs: secs}
	time.Unix(secs, 0).UTC().AppendFormat(f.text[:0], "2006-01-02T15:04:05")
	lastSecond.Store(f)
	return append(b, f.text[:]...)
}

// appendDuration writes seconds with 0, 3, 6 or 9 fractional digits and
// an "s", as protojson does.
func appendDuration(b []byte, secs int64, nanos int32) ([]byte, error) {
	if secs < -maxDurationSeconds || secs > maxDurationSeconds || nanos <= -1e9 || nanos >= 1e9 ||
		(secs > 0 && nanos < 0) || (secs < 0 && nanos > 0) {
		return b, errSlow
	}
	b = append(b, '"')
	if secs < 0 || nanos < 0 {
		b = append(b, '-')
		secs, nanos = -secs, -nanos
	}
	b = appendUint(b, uint64(secs))
	b = appendFraction(b, nanos)
	return append(b, 's', '"'), nil
}

// appendFraction writes nanos (0 ≤ nanos < 1e9) as a fraction of a second
// in the fewest of 0, 3, 6 or 9 digits that hold it exactly, two digits
// at a time.
func appendFraction(b []byte, nanos int32) []byte {
	if nanos == 0 {
		return b
	}
	v, digits := uint32(nanos), 9
	switch {
	case v%1e6 == 0:
		v, digits = v/1e6, 3
	case v%1e3 == 0:
		v, digits = v/1e3, 6
	}
	var d [10]byte
	d[0] = '.'
	i := digits
	for ; i >= 2; i -= 2 {
		q := v / 100
		r := (v - q*100) * 2
		d[i-1], d[i] = digitPairs[r], digitPairs[r+1]
		v = q
	}
	if i == 1 {
		d[1] = byte('0' + v)
	}
	return append(b, d[:digits+1]...)
}

// digitPairs are 00 to 99, for writing numbers two digits at a time.
const digitPairs = "00010203040506070809101112131415161718192021222324252627282930313233343536373839404142434445464748495051525354555657585960616263646566676869707172737475767778798081828384858687888990919293949596979899"

// appendUint writes v in decimal: strconv.AppendUint, with the small
// numbers most fields hold (sizes, counts, uids) written directly.
func appendUint(b []byte, v uint64) []byte {
	switch {
	case v < 10:
		return append(b, byte('0'+v))
	case v < 100:
		return append(b, digitPairs[2*v], digitPairs[2*v+1])
	case v < 1000:
		q := v / 100
		r := 2 * (v - 100*q)
		return append(b, byte('0'+q), digitPairs[r], digitPairs[r+1])
	}
	return strconv.AppendUint(b, v, 10)
}

// plainJSON marks the bytes a JSON string holds as they are: printable
// ASCII but '"' and '\\'.
var plainJSON = func() (t [256]bool) {
	for c := ' '; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// appendJSONString writes s as a JSON string escaped exactly as protojson
// escapes it: '"', '\\' and control characters only, the common ones as
// \b \f \n \r \t and the rest as \u00XX; invalid UTF-8 goes the slow way
// (protojson refuses it).
func appendJSONString(b []byte, s string) ([]byte, error) {
	b = append(b, '"')
	for len(s) > 0 {
		i := 0
		for i < len(s) && plainJSON[s[i]] {
			i++
		}
		b = append(b, s[:i]...)
		s = s[i:]
		if len(s) == 0 {
			break
		}
		c := s[0]
		if c >= utf8.RuneSelf {
			r, n := utf8.DecodeRuneInString(s)
			if r == utf8.RuneError && n == 1 {
				return b, errSlow
			}
			b = append(b, s[:n]...)
			s = s[n:]
			continue
		}
		b = append(b, '\\')
		switch c {
		case '"', '\\':
			b = append(b, c)
		case '\b':
			b = append(b, 'b')
		case '\f':
			b = append(b, 'f')
		case '\n':
			b = append(b, 'n')
		case '\r':
			b = append(b, 'r')
		case '\t':
			b = append(b, 't')
		default:
			const hexDigits = "0123456789abcdef"
			b = append(b, 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		}
		s = s[1:]
	}
	return append(b, '"'), nil
}
