package daemon

import (
	"math"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/snoopd/snoopd/daemon/hub"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
	"github.com/snoopd/snoopd/internal/apievent"
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

// apiEvent is the storage of one event in API form, filled in place (the
// conversion every consumer of events shares).
type apiEvent = apievent.Builder

// toAPIEvent renders an event for a watcher in messages of its own, which
// the caller may keep.
func toAPIEvent(e *proxy.Event, includeData bool) *snoopv1.Event {
	return apievent.New(e, includeData)
}
