package apiwire

import (
	"errors"
	"fmt"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
)

// UnmarshalResponse decodes a WatchEventsResponse into r, which must be
// empty, as proto.Unmarshal does for every field the schema has (a message
// field that appears twice is merged, a later scalar wins, unknown fields
// are skipped rather than kept). It exists because a tail reads every
// event of a busy daemon: proto.Unmarshal allocates each nested message of
// each event (an event is eight or more), while this allocates the
// messages of a whole response at once, and reuses a string that repeats
// the one before it in the same field (the proxy, its instance, the
// result), which in a batch of one proxy's events is nearly all of them.
// The tests hold it to proto.Unmarshal over random responses.
func UnmarshalResponse(b []byte, r *snoopv1.WatchEventsResponse) error {
	n, err := countEvents(b)
	if err != nil {
		return err
	}
	d := decoder{store: make([]eventStore, 0, n)}
	return d.response(b, r)
}

// Response is a WatchEventsResponse whose storage is used again by the
// next decode: the bytes it was decoded from, the messages of its events
// and the list of them. A reader that handles each response before it
// decodes the next (and keeps nothing of it) allocates nothing per
// response once the storage has grown to the largest one; a tail of a
// busy daemon spent about a fifth of its CPU allocating and clearing that
// storage afresh. Msg, its events and their byte fields are valid until
// the next Unmarshal.
type Response struct {
	Msg snoopv1.WatchEventsResponse
	// Raw, set before Unmarshal, leaves the events of a response that
	// holds nothing but events in their wire form: Unmarshal puts each
	// event's bytes in Wire, in order, and leaves Msg empty. Any other
	// response (a notice, or events beside other fields) is decoded into
	// Msg as without Raw, and Wire is nil.
	Raw bool
	// Wire holds the events' bytes after a raw Unmarshal, valid until the
	// next.
	Wire [][]byte

	buf    []byte
	store  []eventStore
	events []*snoopv1.Event
}

// Buffer returns the Response's buffer for the n bytes of the next
// response, to copy them into before Unmarshal.
func (x *Response) Buffer(n int) []byte {
	if cap(x.buf) < n {
		x.buf = make([]byte, n)
	}
	x.buf = x.buf[:n]
	return x.buf
}

// Unmarshal decodes b, the slice Buffer returned, into x.Msg as
// UnmarshalResponse does, reusing x's storage.
func (x *Response) Unmarshal(b []byte) error {
	clear(x.Wire)
	x.Wire = x.Wire[:0]
	if x.Raw {
		if ok, err := x.split(b); err != nil || ok {
			x.Msg = snoopv1.WatchEventsResponse{}
			return err
		}
		x.Wire = nil
	}
	n, err := countEvents(b)
	if err != nil {
		return err
	}
	if cap(x.store) < n {
		x.store = make([]eventStore, 0, n)
	}
	clear(x.store[:cap(x.store)])
	x.Msg = snoopv1.WatchEventsResponse{}
	clear(x.events)
	x.Msg.Events = x.events[:0]
	d := decoder{store: x.store[:0]}
	err = d.response(b, &x.Msg)
	x.events = x.Msg.Events
	return err
}

// split puts the events of b in x.Wire and reports whether b holds only
// events: repeated events (field 4), or one event alone (field 1).
func (x *Response) split(b []byte) (ok bool, err error) {
	single, other := 0, false
	err = eachField(b, func(num protowire.Number, typ protowire.Type, v value) error {
		switch {
		case num == 4 && typ == protowire.BytesType:
			x.Wire = append(x.Wire, v.b)
		case num == 1 && typ == protowire.BytesType:
			x.Wire = append(x.Wire, v.b)
			single++
		default:
			other = true
		}
		return nil
	})
	return err == nil && !other && (single == 0 || len(x.Wire) == 1), err
}

// response decodes b into r with d's storage.
func (d *decoder) response(b []byte, r *snoopv1.WatchEventsResponse) error {
	return eachField(b, func(num protowire.Number, typ protowire.Type, v value) (err error) {
		switch {
		case num == 1 && typ == protowire.BytesType:
			if r.Event == nil {
				r.Event = d.newEvent()
			}
			err = d.event(v.b, r.Event)
		case num == 4 && typ == protowire.BytesType:
			ev := d.newEvent()
			r.Events = append(r.Events, ev)
			err = d.event(v.b, ev)
		case num == 2 && typ == protowire.VarintType:
			r.Dropped = v.u
		case num == 3 && typ == protowire.VarintType:
			r.HistoryDone = v.u != 0
		case num == 5 && typ == protowire.VarintType:
			r.HistoryMissing = uint32(v.u)
		case num == 6 && typ == protowire.VarintType:
			r.HistoryBeyond = v.u
		}
		return err
	})
}

// countEvents counts the events of a response, to allocate their messages
// at once.
func countEvents(b []byte) (int, error) {
	n := 0
	err := eachField(b, func(num protowire.Number, typ protowire.Type, _ value) error {
		if (num == 1 || num == 4) && typ == protowire.BytesType {
			n++
		}
		return nil
	})
	return n, err
}

// eventStore holds the messages of one event, allocated together.
type eventStore struct {
	ev                 snoopv1.Event
	tx                 snoopv1.Transaction
	closed             snoopv1.ConnectionClosed
	perr               snoopv1.ProtocolError
	gap                snoopv1.CaptureGap
	time, end, start   timestamppb.Timestamp
	latency, closedDur durationpb.Duration
	server             durationpb.Duration
}

type decoder struct {
	store []eventStore
	// last holds the last string decoded for each string field, so that
	// a repeated value costs no allocation.
	last [lastFields]string
}

// Indices of decoder.last.
const (
	lastProxy = iota
	lastClient
	lastInstance
	lastDaemon
	lastResult
	lastFault
	lastOther
	lastFields
)

func (d *decoder) newEvent() *snoopv1.Event {
	if len(d.store) == cap(d.store) {
		// More events than counted cannot happen; keep going anyway.
		d.store = append(d.store, eventStore{})
	} else {
		d.store = d.store[:len(d.store)+1]
	}
	return &d.store[len(d.store)-1].ev
}

// storeOf returns the storage of an event newEvent made.
func (d *decoder) storeOf(ev *snoopv1.Event) *eventStore {
	for i := len(d.store) - 1; i >= 0; i-- {
		if &d.store[i].ev == ev {
			return &d.store[i]
		}
	}
	panic("apiwire: an event not made by this decoder")
}

var errBadUTF8 = errors.New("string field contains invalid UTF-8")

// str returns b as a string, the last one of its field when equal.
func (d *decoder) str(b []byte, field int) (string, error) {
	if s := d.last[field]; len(s) == len(b) && s == string(b) {
		return s, nil
	}
	if !utf8.Valid(b) {
		return "", errBadUTF8
	}
	s := string(b)
	d.last[field] = s
	return s, nil
}

func (d *decoder) event(b []byte, ev *snoopv1.Event) error {
	st := d.storeOf(ev)
	return eachField(b, func(num protowire.Number, typ protowire.Type, v value) (err error) {
		if typ == protowire.VarintType {
			switch num {
			case 1:
				ev.Kind = snoopv1.EventKind(int32(v.u))
			case 4:
				ev.ConnectionId = v.u
			}
			return nil
		}
		if typ != protowire.BytesType {
			return nil
		}
		switch num {
		case 2:
			ev.Time = &st.time
			err = secondsNanos(v.b, &st.time.Seconds, &st.time.Nanos)
		case 3:
			ev.Proxy, err = d.str(v.b, lastProxy)
		case 5:
			ev.Client, err = d.str(v.b, lastClient)
		case 6:
			ev.Transaction = &st.tx
			err = d.transaction(v.b, st)
		case 7:
			ev.Closed = &st.closed
			err = d.closed(v.b, st)
		case 8:
			ev.ProtocolError = &st.perr
			err = d.protocolError(v.b, &st.perr)
		case 9:
			ev.Error, err = d.str(v.b, lastOther)
		case 10:
			ev.ProxyInstance, err = d.str(v.b, lastInstance)
		case 11:
			ev.Daemon, err = d.str(v.b, lastDaemon)
		case 12:
			ev.EndTime = &st.end
			err = secondsNanos(v.b, &st.end.Seconds, &st.end.Nanos)
		case 13:
			ev.CaptureGap = &st.gap
			err = d.captureGap(v.b, &st.gap)
		}
		return err
	})
}

func (d *decoder) transaction(b []byte, st *eventStore) error {
	t := &st.tx
	return eachField(b, func(num protowire.Number, typ protowire.Type, v value) (err error) {
		if typ == protowire.VarintType {
			switch num {
			case 1:
				t.Op = snoopv1.Op(int32(v.u))
			case 2:
				t.RequestUid = uint32(v.u)
			case 4:
				t.SessionIdLength = uint32(v.u)
			case 5:
				t.TimeoutMs = uint32(v.u)
			case 6:
				t.RequestSize = uint32(v.u)
			case 7:
				t.ResponseSize = uint32(v.u)
			case 8:
				t.RequestFrames = uint32(v.u)
			case 9:
				t.ResponseFrames = uint32(v.u)
			case 11:
				t.Status = uint32(v.u)
			case 12:
				t.DataLength = uint32(v.u)
			case 15:
				t.DataTruncated = v.u != 0
			}
			return nil
		}
		if typ != protowire.BytesType {
			return nil
		}
		switch num {
		case 3:
			t.SessionId = v.b
		case 10:
			t.Result, err = d.str(v.b, lastResult)
		case 13:
			t.DataDigest = v.b
		case 14:
			t.Data = v.b
		case 16:
			t.StartTime = &st.start
			err = secondsNanos(v.b, &st.start.Seconds, &st.start.Nanos)
		case 17:
			t.Latency = &st.latency
			err = secondsNanos(v.b, &st.latency.Seconds, &st.latency.Nanos)
		case 18:
			t.Fault, err = d.str(v.b, lastFault)
		case 19:
			t.ServerLatency = &st.server
			err = secondsNanos(v.b, &st.server.Seconds, &st.server.Nanos)
		}
		return err
	})
}

func (d *decoder) closed(b []byte, st *eventStore) error {
	c := &st.closed
	return eachField(b, func(num protowire.Number, typ protowire.Type, v value) (err error) {
		switch {
		case typ == protowire.VarintType && num == 1:
			c.BytesUp = int64(v.u)
		case typ == protowire.VarintType && num == 2:
			c.BytesDown = int64(v.u)
		case typ == protowire.VarintType && num == 4:
			c.Transactions = int64(v.u)
		case typ == protowire.BytesType && num == 3:
			c.Duration = &st.closedDur
			err = secondsNanos(v.b, &st.closedDur.Seconds, &st.closedDur.Nanos)
		case typ == protowire.BytesType && num == 5:
			c.Reason, err = d.str(v.b, lastOther)
		}
		return err
	})
}

func (d *decoder) protocolError(b []byte, p *snoopv1.ProtocolError) error {
	return eachField(b, func(num protowire.Number, typ protowire.Type, v value) (err error) {
		if typ == protowire.VarintType {
			switch num {
			case 4:
				p.Offset = int64(v.u)
			case 5:
				p.Frame = int64(v.u)
			case 7:
				p.Policy = snoopv1.CorruptPolicy(int32(v.u))
			}
			return nil
		}
		if typ != protowire.BytesType {
			return nil
		}
		switch num {
		case 1:
			p.Rule, err = d.str(v.b, lastOther)
		case 2:
			p.Direction, err = d.str(v.b, lastOther)
		case 3:
			p.Field, err = d.str(v.b, lastOther)
		case 6:
			p.Message, err = d.str(v.b, lastOther)
		}
		return err
	})
}

func (d *decoder) captureGap(b []byte, g *snoopv1.CaptureGap) error {
	return eachField(b, func(num protowire.Number, typ protowire.Type, v value) (err error) {
		switch {
		case typ == protowire.BytesType && num == 1:
			g.Direction, err = d.str(v.b, lastOther)
		case typ == protowire.VarintType && num == 2:
			g.FirstOffset = int64(v.u)
		case typ == protowire.VarintType && num == 3:
			g.LastOffset = int64(v.u)
		case typ == protowire.VarintType && num == 4:
			g.BytesMissing = int64(v.u)
		}
		return err
	})
}

// secondsNanos decodes a Timestamp or a Duration (both are seconds = 1,
// nanos = 2), merging into what is there as a repeated field would.
func secondsNanos(b []byte, seconds *int64, nanos *int32) error {
	return eachField(b, func(num protowire.Number, typ protowire.Type, v value) (err error) {
		if typ != protowire.VarintType {
			return nil
		}
		switch num {
		case 1:
			*seconds = int64(v.u)
		case 2:
			*nanos = int32(v.u)
		}
		return nil
	})
}

// eachField calls f with each field of b, in order, and stops at the
// first error.
func eachField(b []byte, f func(num protowire.Number, typ protowire.Type, v value) error) error {
	for len(b) > 0 {
		num, typ, v, rest, err := consumeField(b)
		if err != nil {
			return err
		}
		b = rest
		if err := f(num, typ, v); err != nil {
			return err
		}
	}
	return nil
}

// value is a field's value: u for a varint, b for a length-delimited one.
type value struct {
	u uint64
	b []byte
}

// consumeField reads one field of b. Fixed-size and group fields are
// skipped whole, as unknown fields are.
func consumeField(b []byte) (protowire.Number, protowire.Type, value, []byte, error) {
	num, typ, n := protowire.ConsumeTag(b)
	if n < 0 {
		return 0, 0, value{}, nil, fmt.Errorf("decoding a response: %w", protowire.ParseError(n))
	}
	b = b[n:]
	var v value
	switch typ {
	case protowire.VarintType:
		v.u, n = protowire.ConsumeVarint(b)
	case protowire.BytesType:
		v.b, n = protowire.ConsumeBytes(b)
		v.b = v.b[:len(v.b):len(v.b)]
	default:
		n = protowire.ConsumeFieldValue(num, typ, b)
	}
	if n < 0 {
		return 0, 0, value{}, nil, fmt.Errorf("decoding a response: field %d: %w", num, protowire.ParseError(n))
	}
	return num, typ, v, b[n:], nil
}
