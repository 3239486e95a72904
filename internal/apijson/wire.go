package apijson

import (
	"fmt"
	"unsafe"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

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
	o := obj{b: append(b, '{'), camel: k == CamelKeys}
	o.key("event")
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
// writes them in declaration order, each once.
type fieldSet struct {
	has uint32 // bit n: field n is present
	v   [maxField]wireValue
	// merged are the second parts of message fields that appear twice,
	// which protobuf merges into the first (the daemon sends captured
	// data that way): decoded after v[num].b into the same fields.
	merged [2]struct {
		num int
		b   []byte
	}
}

// wireValue is a field's last value: u for a varint, b for a
// length-delimited field.
type wireValue struct {
	u uint64
	b []byte
}

// second returns the second part of the message field num, or nil.
func (f *fieldSet) second(num int) []byte {
	for _, m := range f.merged {
		if m.num == num {
			return m.b
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

// parse reads the fields of a message, given in one part or two to be
// merged (b2 nil for one), into f. It fails with errSlow on anything it
// leaves to the decoder: an unknown field or wire type, a malformed
// field, a string or bytes field that comes twice (the decoder checks
// every string's UTF-8, also of those a later one replaces), a message
// field in more than two parts, or more than two in two parts.
func (f *fieldSet) parse(s *schema, b, b2 []byte) error {
	merged := 0
	for part := 0; part < 2; part, b = part+1, b2 {
		for len(b) > 0 {
			num, typ, n := protowire.ConsumeTag(b)
			if n < 0 || num >= maxField {
				return errSlow
			}
			kind := s[num]
			b = b[n:]
			v := &f.v[num]
			bit := uint32(1) << num
			switch {
			case kind == varintField && typ == protowire.VarintType:
				v.u, n = protowire.ConsumeVarint(b)
			case (kind == bytesField || kind == messageField) && typ == protowire.BytesType:
				var val []byte
				val, n = protowire.ConsumeBytes(b)
				switch {
				case f.has&bit == 0:
					v.b = val
				case kind == messageField && merged < len(f.merged) && f.second(int(num)) == nil:
					f.merged[merged].num, f.merged[merged].b = int(num), val[:len(val):len(val)]
					merged++
				default:
					return errSlow
				}
			default:
				return errSlow
			}
			if n < 0 {
				return errSlow
			}
			b = b[n:]
			f.has |= bit
		}
	}
	return nil
}

// unsafeString is b as a string, without a copy, for writing at once.
func unsafeString(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }

// The writers below follow obj.event and obj.transaction field for field,
// converting each wire value as proto.Unmarshal does (a uint32 is the
// varint's low 32 bits, an enum its low 32 bits as a signed number).

func (f *fieldSet) present(num int) bool { return f.has&(1<<num) != 0 }

func (f *fieldSet) str(o *obj, k string, num int) error {
	if !f.present(num) {
		return nil
	}
	return o.str(k, unsafeString(f.v[num].b))
}

func (f *fieldSet) uint32(o *obj, k string, num int) { o.uint32(k, uint32(f.v[num].u)) }
func (f *fieldSet) uint64(o *obj, k string, num int) { o.uint64(k, f.v[num].u) }
func (f *fieldSet) int64(o *obj, k string, num int)  { o.int64(k, int64(f.v[num].u)) }

func (f *fieldSet) bytes(o *obj, k string, num int) {
	if f.present(num) {
		o.bytes(k, f.v[num].b)
	}
}

func (f *fieldSet) enum(o *obj, k string, num int, names map[int32]string) error {
	return o.enum(k, int32(f.v[num].u), names)
}

// seconds writes a Timestamp (time) or a Duration field, if present, and
// returns its value.
func (f *fieldSet) seconds(o *obj, k string, num int, time bool) (Seconds, error) {
	if !f.present(num) {
		return Seconds{}, nil
	}
	var secs, nanos uint64
	if err := parseSeconds(f.v[num].b, &secs, &nanos); err != nil {
		return Seconds{}, err
	}
	if b2 := f.second(num); b2 != nil {
		if err := parseSeconds(b2, &secs, &nanos); err != nil {
			return Seconds{}, err
		}
	}
	v := Seconds{Has: true, Secs: int64(secs), Nanos: int32(nanos)}
	o.key(k)
	var err error
	if time {
		o.b, err = appendTimestamp(o.b, v.Secs, v.Nanos)
	} else {
		o.b, err = appendDuration(o.b, v.Secs, v.Nanos)
	}
	return v, err
}

// parseSeconds reads a Timestamp's or a Duration's fields (seconds = 1,
// nanos = 2, both varints), over what a part before set.
func parseSeconds(b []byte, secs, nanos *uint64) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 || num >= maxField || secondsSchema[num] != varintField || typ != protowire.VarintType {
			return errSlow
		}
		b = b[n:]
		v, n := protowire.ConsumeVarint(b)
		if n < 0 {
			return errSlow
		}
		b = b[n:]
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
	*facts = Facts{Kind: snoopv1.EventKind(int32(f.v[1].u)), Proxy: f.v[3].b}
	var err error
	e := obj{b: append(o.b, '{'), camel: o.camel}
	if err := f.enum(&e, "kind", 1, snoopv1.EventKind_name); err != nil {
		return err
	}
	if facts.Time, err = f.seconds(&e, "time", 2, true); err != nil {
		return err
	}
	if err := f.str(&e, "proxy", 3); err != nil {
		return err
	}
	f.uint64(&e, "connection_id", 4)
	if err := f.str(&e, "client", 5); err != nil {
		return err
	}
	if f.present(6) {
		t := e.open("transaction")
		if err := t.wireTransaction(f.v[6].b, f.second(6), facts); err != nil {
			return err
		}
		e.close(t)
	}
	if f.present(7) {
		var c fieldSet
		if err := c.parse(closedSchema, f.v[7].b, f.second(7)); err != nil {
			return err
		}
		t := e.open("closed")
		c.int64(&t, "bytes_up", 1)
		c.int64(&t, "bytes_down", 2)
		if _, err := c.seconds(&t, "duration", 3, false); err != nil {
			return err
		}
		c.int64(&t, "transactions", 4)
		if err := c.str(&t, "reason", 5); err != nil {
			return err
		}
		e.close(t)
	}
	if f.present(8) {
		var p fieldSet
		if err := p.parse(protoErrSchema, f.v[8].b, f.second(8)); err != nil {
			return err
		}
		t := e.open("protocol_error")
		for _, s := range [...]struct {
			k   string
			num int
		}{{"rule", 1}, {"direction", 2}, {"field", 3}} {
			if err := p.str(&t, s.k, s.num); err != nil {
				return err
			}
		}
		p.int64(&t, "offset", 4)
		p.int64(&t, "frame", 5)
		if err := p.str(&t, "message", 6); err != nil {
			return err
		}
		if err := p.enum(&t, "policy", 7, snoopv1.CorruptPolicy_name); err != nil {
			return err
		}
		e.close(t)
	}
	for _, s := range [...]struct {
		k   string
		num int
	}{{"error", 9}, {"proxy_instance", 10}, {"daemon", 11}} {
		if err := f.str(&e, s.k, s.num); err != nil {
			return err
		}
	}
	if facts.EndTime, err = f.seconds(&e, "end_time", 12, true); err != nil {
		return err
	}
	if f.present(13) {
		var g fieldSet
		if err := g.parse(gapSchema, f.v[13].b, f.second(13)); err != nil {
			return err
		}
		t := e.open("capture_gap")
		if err := g.str(&t, "direction", 1); err != nil {
			return err
		}
		g.int64(&t, "first_offset", 2)
		g.int64(&t, "last_offset", 3)
		g.int64(&t, "bytes_missing", 4)
		e.close(t)
	}
	o.b = append(e.b, '}')
	return nil
}

func (t *obj) wireTransaction(b, b2 []byte, facts *Facts) error {
	var f fieldSet
	if err := f.parse(transactionSchema, b, b2); err != nil {
		return err
	}
	facts.Tx, facts.Op, facts.Result = true, snoopv1.Op(int32(f.v[1].u)), f.v[10].b
	var err error
	if err := f.enum(t, "op", 1, snoopv1.Op_name); err != nil {
		return err
	}
	f.uint32(t, "request_uid", 2)
	f.bytes(t, "session_id", 3)
	f.uint32(t, "session_id_length", 4)
	f.uint32(t, "timeout_ms", 5)
	f.uint32(t, "request_size", 6)
	f.uint32(t, "response_size", 7)
	f.uint32(t, "request_frames", 8)
	f.uint32(t, "response_frames", 9)
	if err := f.str(t, "result", 10); err != nil {
		return err
	}
	f.uint32(t, "status", 11)
	f.uint32(t, "data_length", 12)
	f.bytes(t, "data_digest", 13)
	f.bytes(t, "data", 14)
	t.bool("data_truncated", f.v[15].u != 0)
	if _, err := f.seconds(t, "start_time", 16, true); err != nil {
		return err
	}
	if facts.Latency, err = f.seconds(t, "latency", 17, false); err != nil {
		return err
	}
	if err := f.str(t, "fault", 18); err != nil {
		return err
	}
	_, err = f.seconds(t, "server_latency", 19, false)
	return err
}
