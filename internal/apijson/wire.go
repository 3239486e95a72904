package apijson

import (
	"encoding/base64"
	"fmt"
	"strconv"
	"unsafe"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
)

// AppendEventResponseWire appends what AppendEventResponse appends for
// the event whose protobuf encoding is wire ({"event":{...}}), written
// straight from the wire form: a tail that prints every event of a busy
// daemon as JSON need not decode each into messages first. On its way it
// reads into facts (if not nil) the fields a reader counts, so that it
// need not decode them either. What the walk does not reproduce exactly
// (a field the schema does not have, or of another wire type, a string
// or bytes field that comes twice, a message field in more than two
// parts, invalid UTF-8, and whatever the struct encoder itself leaves to
// protojson) is decoded with proto.Unmarshal and written by
// AppendEventResponse, so the output is the same in every case. Bytes
// that are not an Event are an error, and b is returned as it was.
func AppendEventResponseWire(b, wire []byte, k Keys, facts *Facts) ([]byte, error) {
	o := obj{b: append(b, `{"event":`...), camel: k == CamelKeys}
	var scratch Facts
	if facts == nil {
		facts = &scratch
	}
	if err := o.wireEvent(wire, facts); err == nil {
		return append(o.b, '}'), nil
	}
	ev := new(snoopv1.Event)
	if err := proto.Unmarshal(wire, ev); err != nil {
		return b, fmt.Errorf("decode snoop.v1.Event: %w", err)
	}
	facts.of(ev)
	return AppendEventResponse(b, ev, k)
}

// Facts are the fields of an event that a reader of a stream counts (tail
// summarises what it showed): its kind, proxy and times, and a
// transaction's op, result and latency. Proxy and Result are views of the
// event's bytes, valid as long as they are.
type Facts struct {
	Kind  snoopv1.EventKind
	Proxy []byte
	// Time and EndTime, if Has, as Unix seconds and nanoseconds.
	Time, EndTime Seconds
	// Tx reports a transaction; Op, Result and Latency are its.
	Tx      bool
	Op      snoopv1.Op
	Result  []byte
	Latency Seconds
}

// Seconds is a Timestamp's or a Duration's value, if Has.
type Seconds struct {
	Has   bool
	Secs  int64
	Nanos int32
}

// of sets f from a decoded event.
func (f *Facts) of(ev *snoopv1.Event) {
	sec := func(s, n int64, has bool) Seconds { return Seconds{Has: has, Secs: s, Nanos: int32(n)} }
	*f = Facts{Kind: ev.GetKind(), Proxy: []byte(ev.GetProxy()),
		Time:    sec(ev.GetTime().GetSeconds(), int64(ev.GetTime().GetNanos()), ev.GetTime() != nil),
		EndTime: sec(ev.GetEndTime().GetSeconds(), int64(ev.GetEndTime().GetNanos()), ev.GetEndTime() != nil)}
	if tx := ev.GetTransaction(); tx != nil {
		f.Tx, f.Op, f.Result = true, tx.GetOp(), []byte(tx.GetResult())
		f.Latency = sec(tx.GetLatency().GetSeconds(), int64(tx.GetLatency().GetNanos()), tx.GetLatency() != nil)
	}
}

// maxField is one more than the highest field number of the messages the
// walk writes (Transaction's server_latency, 19).
const maxField = 20

// fieldSet is a message's fields as the wire has them, by number. The
// wire may hold them in any order and a field more than once; protojson
// writes them in declaration order, each once. It is kept small (the walk
// makes one for the event and one for each message in it, cleared each
// time): a length-delimited field is held as its place in the message's
// bytes rather than as a slice.
type fieldSet struct {
	has uint32 // bit n: field n is present
	// v is a varint field's last value, or a length-delimited field's
	// place (see at).
	v [maxField]uint64
	// parts are the message's bytes: one part, or two to be merged.
	parts [2][]byte
	// merged are the places of the second parts of message fields that
	// appear twice, which protobuf merges into the first (the daemon
	// sends captured data that way).
	merged  [2]mergedPart
	nmerged int
}

type mergedPart struct {
	num   int
	place uint64
}

// A place is part<<63 | offset<<32 | length: parts of up to 2 GiB (far
// beyond any message a stream carries; parse leaves larger ones to the
// decoder).
const maxPart = 1 << 31

// at returns the bytes at place.
func (f *fieldSet) at(place uint64) []byte {
	p := f.parts[place>>63]
	off := (place >> 32) & (maxPart - 1)
	return p[off : off+place&(1<<32-1)]
}

// present reports whether field num came.
func (f *fieldSet) present(num int) bool { return f.has&(1<<num) != 0 }

// varint is field num's value, 0 if absent.
func (f *fieldSet) varint(num int) uint64 {
	if !f.present(num) {
		return 0
	}
	return f.v[num]
}

// bytesOf is the length-delimited field num, nil if absent.
func (f *fieldSet) bytesOf(num int) []byte {
	if !f.present(num) {
		return nil
	}
	return f.at(f.v[num])
}

// second returns the second part of the message field num, or nil.
func (f *fieldSet) second(num int) []byte {
	for _, m := range f.merged[:f.nmerged] {
		if m.num == num {
			return f.at(m.place)
		}
	}
	return nil
}

// fieldKind is what a field number of a message holds.
type fieldKind uint8

const (
	noField fieldKind = iota // not in the message
	varintField
	bytesField   // a string or bytes
	messageField // a message: a later value is merged into it
)

// schema gives each field number of a message its kind.
type schema [maxField]fieldKind

// newSchema builds a schema from the field numbers of each kind.
func newSchema(varints, bytes, messages []int) *schema {
	var s schema
	for _, n := range varints {
		s[n] = varintField
	}
	for _, n := range bytes {
		s[n] = bytesField
	}
	for _, n := range messages {
		s[n] = messageField
	}
	return &s
}

// The messages' schemas (snoop.proto); a test holds them to the
// descriptors.
var (
	eventSchema       = newSchema([]int{1, 4}, []int{3, 5, 9, 10, 11}, []int{2, 6, 7, 8, 12, 13})
	transactionSchema = newSchema([]int{1, 2, 4, 5, 6, 7, 8, 9, 11, 12, 15}, []int{3, 10, 13, 14, 18}, []int{16, 17, 19})
	closedSchema      = newSchema([]int{1, 2, 4}, []int{5}, []int{3})
	protoErrSchema    = newSchema([]int{4, 5, 7}, []int{1, 2, 3, 6}, nil)
	gapSchema         = newSchema([]int{2, 3, 4}, []int{1}, nil)
	secondsSchema     = newSchema([]int{1, 2}, nil, nil) // Timestamp and Duration, read by parseSeconds
)

// jkey is a member name as written, in both key styles, with the comma
// that goes before every member but an object's first: `,"request_uid":`
// and `,"requestUid":`. The walk writes each in one append.
type jkey struct{ proto, camel string }

// keyTable is a message's member names by field number.
type keyTable [maxField]jkey

// keysOf builds a message's key table from its descriptor: the names
// protojson writes (its JSON name is the camel one).
func keysOf(md protoreflect.MessageDescriptor) *keyTable {
	var t keyTable
	fields := md.Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		if n := int(fd.Number()); n < maxField {
			t[n] = jkey{`,"` + string(fd.Name()) + `":`, `,"` + fd.JSONName() + `":`}
		}
	}
	return &t
}

var (
	eventKeys       = keysOf((&snoopv1.Event{}).ProtoReflect().Descriptor())
	transactionKeys = keysOf((&snoopv1.Transaction{}).ProtoReflect().Descriptor())
	closedKeys      = keysOf((&snoopv1.ConnectionClosed{}).ProtoReflect().Descriptor())
	protoErrKeys    = keysOf((&snoopv1.ProtocolError{}).ProtoReflect().Descriptor())
	gapKeys         = keysOf((&snoopv1.CaptureGap{}).ProtoReflect().Descriptor())
)

// enumNames are an enum's value names, quoted, by number ("" where a
// number has none).
type enumNames []string

func namesOf(names map[int32]string) enumNames {
	hi := int32(0)
	for n := range names {
		hi = max(hi, n)
	}
	q := make(enumNames, hi+1)
	for n, s := range names {
		if n >= 0 {
			q[n] = strconv.Quote(s)
		}
	}
	return q
}

var (
	eventKindNames = namesOf(snoopv1.EventKind_name)
	opNames        = namesOf(snoopv1.Op_name)
	policyNames    = namesOf(snoopv1.CorruptPolicy_name)
)

// uvarint reads a varint at b[i:], the common one-byte case inline.
func uvarint(b []byte, i int) (uint64, int, error) {
	if i < len(b) && b[i] < 0x80 {
		return uint64(b[i]), i + 1, nil
	}
	v, n := protowire.ConsumeVarint(b[i:])
	if n < 0 {
		return 0, i, errSlow
	}
	return v, i + n, nil
}

// parse reads the fields of a message, given in one part or two to be
// merged (b2 nil for one), into f. It fails with errSlow on anything it
// leaves to the decoder: an unknown field or wire type, a malformed
// field, a string or bytes field that comes twice (the decoder checks
// every string's UTF-8, also of those a later one replaces), a message
// field in more than two parts, or more than two in two parts.
func (f *fieldSet) parse(s *schema, b, b2 []byte) error {
	if len(b) >= maxPart || len(b2) >= maxPart {
		return errSlow
	}
	f.has, f.nmerged, f.parts = 0, 0, [2][]byte{b, b2}
	for part, p := range f.parts {
		for i := 0; i < len(p); {
			var num, typ int
			if c := p[i]; c < 0x80 {
				num, typ = int(c>>3), int(c&7)
				i++
			} else {
				n, t, l := protowire.ConsumeTag(p[i:])
				if l < 0 || n >= maxField {
					return errSlow
				}
				num, typ = int(n), int(t)
				i += l
			}
			if num >= maxField {
				return errSlow
			}
			kind, bit := s[num], uint32(1)<<num
			var err error
			switch {
			case kind == varintField && typ == int(protowire.VarintType):
				f.v[num], i, err = uvarint(p, i)
			case (kind == bytesField || kind == messageField) && typ == int(protowire.BytesType):
				var n uint64
				if n, i, err = uvarint(p, i); err != nil || n > uint64(len(p)-i) {
					return errSlow
				}
				place := uint64(part)<<63 | uint64(i)<<32 | n
				i += int(n)
				switch {
				case f.has&bit == 0:
					f.v[num] = place
				case kind == messageField && f.nmerged < len(f.merged) && f.second(num) == nil:
					f.merged[f.nmerged] = mergedPart{num, place}
					f.nmerged++
				default:
					return errSlow
				}
			default:
				return errSlow
			}
			if err != nil {
				return err
			}
			f.has |= bit
		}
	}
	return nil
}

// unsafeString is b as a string, without a copy, for writing at once.
func unsafeString(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }

// The writers below follow obj.event and obj.transaction field for field,
// converting each wire value as proto.Unmarshal does (a uint32 is the
// varint's low 32 bits, an enum its low 32 bits as a signed number), and
// leave out what protojson leaves out (zero values, absent messages).

// wkey writes a member name from a key table.
func (o *obj) wkey(k *jkey) {
	s := k.proto
	if o.camel {
		s = k.camel
	}
	if !o.more {
		s = s[1:]
	}
	o.more = true
	o.b = append(o.b, s...)
}

func (o *obj) wstr(f *fieldSet, keys *keyTable, num int) error {
	v := f.bytesOf(num)
	if len(v) == 0 {
		return nil
	}
	o.wkey(&keys[num])
	var err error
	o.b, err = appendJSONString(o.b, unsafeString(v))
	return err
}

func (o *obj) wuint32(f *fieldSet, keys *keyTable, num int) {
	if v := uint32(f.varint(num)); v != 0 {
		o.wkey(&keys[num])
		o.b = appendUint(o.b, uint64(v))
	}
}

// wint64 writes an int64 or uint64 field: as a string, as protojson
// writes 64-bit integers.
func (o *obj) wint64(f *fieldSet, keys *keyTable, num int, signed bool) {
	v := f.varint(num)
	if v == 0 {
		return
	}
	o.wkey(&keys[num])
	o.b = append(o.b, '"')
	if signed && int64(v) < 0 {
		o.b = strconv.AppendInt(o.b, int64(v), 10)
	} else {
		o.b = appendUint(o.b, v)
	}
	o.b = append(o.b, '"')
}

func (o *obj) wbytes(f *fieldSet, keys *keyTable, num int) {
	if v := f.bytesOf(num); len(v) > 0 {
		o.wkey(&keys[num])
		o.b = append(o.b, '"')
		o.b = base64.StdEncoding.AppendEncode(o.b, v)
		o.b = append(o.b, '"')
	}
}

func (o *obj) wbool(f *fieldSet, keys *keyTable, num int) {
	if f.varint(num) != 0 {
		o.wkey(&keys[num])
		o.b = append(o.b, "true"...)
	}
}

// wenum writes an enum by name; a number without a name goes the slow
// way (protojson would write the number).
func (o *obj) wenum(f *fieldSet, keys *keyTable, num int, names enumNames) error {
	v := int32(f.varint(num))
	if v == 0 {
		return nil
	}
	if v < 0 || int(v) >= len(names) || names[v] == "" {
		return errSlow
	}
	o.wkey(&keys[num])
	o.b = append(o.b, names[v]...)
	return nil
}

// wopen starts the nested object of field num; close ends it.
func (o *obj) wopen(keys *keyTable, num int) obj {
	o.wkey(&keys[num])
	return obj{b: append(o.b, '{'), camel: o.camel}
}

// wseconds writes a Timestamp (time) or a Duration field, if present, and
// returns its value.
func (o *obj) wseconds(f *fieldSet, keys *keyTable, num int, time bool, memo *secondsMemo) (Seconds, error) {
	if !f.present(num) {
		return Seconds{}, nil
	}
	raw, b2 := f.at(f.v[num]), f.second(num)
	o.wkey(&keys[num])
	if b2 == nil && memo != nil {
		if v, text, ok := memo.find(raw, time); ok {
			o.b = append(o.b, text...)
			return v, nil
		}
	}
	var secs, nanos uint64
	if err := parseSeconds(raw, &secs, &nanos); err != nil {
		return Seconds{}, err
	}
	if b2 != nil {
		if err := parseSeconds(b2, &secs, &nanos); err != nil {
			return Seconds{}, err
		}
	}
	v := Seconds{Has: true, Secs: int64(secs), Nanos: int32(nanos)}
	start := len(o.b)
	var err error
	if time {
		o.b, err = appendTimestamp(o.b, v.Secs, v.Nanos)
	} else {
		o.b, err = appendDuration(o.b, v.Secs, v.Nanos)
	}
	if err == nil && b2 == nil && memo != nil {
		memo.keep(raw, time, v, o.b[start:])
	}
	return v, err
}

// secondsMemo remembers the last times an event's walk wrote: an event's
// times repeat (a transaction's start is the event's time, its server
// latency mostly its latency), and the same bytes need not be read and
// formatted twice.
type secondsMemo struct {
	next int
	e    [2]memoEntry
}

type memoEntry struct {
	raw  []byte // the Timestamp's or Duration's wire bytes
	time bool
	v    Seconds
	n    int
	text [48]byte // what was written, quotes included
}

func (m *secondsMemo) find(raw []byte, time bool) (Seconds, []byte, bool) {
	for i := range m.e {
		if e := &m.e[i]; e.raw != nil && e.time == time && string(e.raw) == string(raw) {
			return e.v, e.text[:e.n], true
		}
	}
	return Seconds{}, nil, false
}

func (m *secondsMemo) keep(raw []byte, time bool, v Seconds, text []byte) {
	if len(text) > len(m.e[0].text) {
		return
	}
	e := &m.e[m.next]
	m.next = (m.next + 1) % len(m.e)
	e.raw, e.time, e.v, e.n = raw, time, v, copy(e.text[:], text)
}

// parseSeconds reads a Timestamp's or a Duration's fields (seconds = 1,
// nanos = 2, both varints), over what a part before set.
func parseSeconds(b []byte, secs, nanos *uint64) error {
	for i := 0; i < len(b); {
		var num int
		if c := b[i]; c < 0x80 {
			if c&7 != byte(protowire.VarintType) {
				return errSlow
			}
			num = int(c >> 3)
			i++
		} else {
			n, typ, l := protowire.ConsumeTag(b[i:])
			if l < 0 || n >= maxField || typ != protowire.VarintType {
				return errSlow
			}
			num = int(n)
			i += l
		}
		if num >= maxField || secondsSchema[num] != varintField {
			return errSlow
		}
		v, next, err := uvarint(b, i)
		if err != nil {
			return err
		}
		i = next
		if num == 1 {
			*secs = v
		} else {
			*nanos = v
		}
	}
	return nil
}

// wireEvent writes the Event wire as obj.event writes the decoded event,
// and sets facts.
func (o *obj) wireEvent(wire []byte, facts *Facts) error {
	var f fieldSet
	if err := f.parse(eventSchema, wire, nil); err != nil {
		return err
	}
	*facts = Facts{Kind: snoopv1.EventKind(int32(f.varint(1))), Proxy: f.bytesOf(3)}
	var err error
	var memo secondsMemo
	e := obj{b: append(o.b, '{'), camel: o.camel}
	ks := eventKeys
	if err := e.wenum(&f, ks, 1, eventKindNames); err != nil {
		return err
	}
	if facts.Time, err = e.wseconds(&f, ks, 2, true, &memo); err != nil {
		return err
	}
	if err := e.wstr(&f, ks, 3); err != nil {
		return err
	}
	e.wint64(&f, ks, 4, false)
	if err := e.wstr(&f, ks, 5); err != nil {
		return err
	}
	var sub fieldSet
	if f.present(6) {
		t := e.wopen(ks, 6)
		if err := t.wireTransaction(&sub, f.bytesOf(6), f.second(6), facts, &memo); err != nil {
			return err
		}
		e.close(t)
	}
	if f.present(7) {
		if err := sub.parse(closedSchema, f.bytesOf(7), f.second(7)); err != nil {
			return err
		}
		t, ck := e.wopen(ks, 7), closedKeys
		t.wint64(&sub, ck, 1, true)
		t.wint64(&sub, ck, 2, true)
		if _, err := t.wseconds(&sub, ck, 3, false, &memo); err != nil {
			return err
		}
		t.wint64(&sub, ck, 4, true)
		if err := t.wstr(&sub, ck, 5); err != nil {
			return err
		}
		e.close(t)
	}
	if f.present(8) {
		if err := sub.parse(protoErrSchema, f.bytesOf(8), f.second(8)); err != nil {
			return err
		}
		t, pk := e.wopen(ks, 8), protoErrKeys
		for _, num := range [...]int{1, 2, 3} { // rule, direction, field
			if err := t.wstr(&sub, pk, num); err != nil {
				return err
			}
		}
		t.wint64(&sub, pk, 4, true)
		t.wint64(&sub, pk, 5, true)
		if err := t.wstr(&sub, pk, 6); err != nil {
			return err
		}
		if err := t.wenum(&sub, pk, 7, policyNames); err != nil {
			return err
		}
		e.close(t)
	}
	for _, num := range [...]int{9, 10, 11} { // error, proxy_instance, daemon
		if err := e.wstr(&f, ks, num); err != nil {
			return err
		}
	}
	if facts.EndTime, err = e.wseconds(&f, ks, 12, true, &memo); err != nil {
		return err
	}
	if f.present(13) {
		if err := sub.parse(gapSchema, f.bytesOf(13), f.second(13)); err != nil {
			return err
		}
		t, gk := e.wopen(ks, 13), gapKeys
		if err := t.wstr(&sub, gk, 1); err != nil {
			return err
		}
		t.wint64(&sub, gk, 2, true)
		t.wint64(&sub, gk, 3, true)
		t.wint64(&sub, gk, 4, true)
		e.close(t)
	}
	o.b = append(e.b, '}')
	return nil
}

// wireTransaction writes a Transaction given in one part or two, parsing
// it into f.
func (t *obj) wireTransaction(f *fieldSet, b, b2 []byte, facts *Facts, memo *secondsMemo) error {
	if err := f.parse(transactionSchema, b, b2); err != nil {
		return err
	}
	facts.Tx, facts.Op, facts.Result = true, snoopv1.Op(int32(f.varint(1))), f.bytesOf(10)
	ks := transactionKeys
	var err error
	if err := t.wenum(f, ks, 1, opNames); err != nil {
		return err
	}
	t.wuint32(f, ks, 2) // request_uid
	t.wbytes(f, ks, 3)  // session_id
	for num := 4; num <= 9; num++ {
		// session_id_length, timeout_ms, request_size, response_size,
		// request_frames, response_frames
		t.wuint32(f, ks, num)
	}
	// result
	if err := t.wstr(f, ks, 10); err != nil {
		return err
	}
	// status, data_length, data_digest, data, data_truncated, start_time
	t.wuint32(f, ks, 11)
	t.wuint32(f, ks, 12)
	t.wbytes(f, ks, 13)
	t.wbytes(f, ks, 14)
	t.wbool(f, ks, 15)
	if _, err := t.wseconds(f, ks, 16, true, memo); err != nil {
		return err
	}
	if facts.Latency, err = t.wseconds(f, ks, 17, false, memo); err != nil {
		return err
	}
	// fault, server_latency
	if err := t.wstr(f, ks, 18); err != nil {
		return err
	}
	_, err = t.wseconds(f, ks, 19, false, memo)
	return err
}
