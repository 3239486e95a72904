package daemon

import (
	"encoding/binary"
	"math"

	"google.golang.org/grpc"
	"google.golang.org/grpc/mem"
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
// event is a length-prefixed field holding the record's bytes) straight
// into a buffer of the server's responsePool, sized first, and goes out
// as a preEncoded message that the server's codec hands to gRPC as it
// is. So sending an event costs one copy of its bytes, whatever the
// number of watchers.
type eventSender struct {
	stream      grpc.ServerStream
	buffers     mem.BufferPool
	includeData bool
	// maxBatch is the most events per response; 1 sends each event in
	// a response of its own, in WatchEventsResponse.event.
	maxBatch int
}

func newEventSender(stream grpc.ServerStream, req *snoopv1.WatchEventsRequest, buffers mem.BufferPool) *eventSender {
	return &eventSender{
		stream:      stream,
		buffers:     buffers,
		includeData: req.GetIncludeData(),
		maxBatch:    int(max(1, min(req.GetMaxBatch(), maxWatchBatch))),
	}
}

// buffer returns an empty buffer for a response of n bytes.
func (s *eventSender) buffer(n int) *[]byte {
	b := s.buffers.Get(n)
	*b = (*b)[:0]
	return b
}

// send sends the response in b, which gRPC gives back to the pool.
func (s *eventSender) send(b *[]byte) error {
	return s.stream.SendMsg(&preEncoded{b: b, pool: s.buffers})
}

// events sends recs in order, as many per response as allowed. It never
// waits for more events to fill a batch.
func (s *eventSender) events(recs []hub.Record) error {
	if s.maxBatch <= 1 {
		for i := range recs {
			b := s.buffer(s.recordSize(&recs[i]))
			*b = appendRecord(*b, respEvent, &recs[i], s.includeData)
			if err := s.send(b); err != nil {
				return err
			}
		}
		return nil
	}
	for len(recs) > 0 {
		n, size := 0, 0
		for n < len(recs) && n < s.maxBatch && size < maxBatchBytes {
			size += s.recordSize(&recs[n])
			n++
		}
		b := s.buffer(size)
		for i := range recs[:n] {
			*b = appendRecord(*b, respEvents, &recs[i], s.includeData)
		}
		if err := s.send(b); err != nil {
			return err
		}
		recs = recs[n:]
	}
	return nil
}

// recordSize is the size of r as a field of a response (event or
// events, both one-byte tags).
func (s *eventSender) recordSize(r *hub.Record) int {
	n := len(r.Wire)
	if s.includeData {
		n += len(r.Data)
	}
	return 1 + protowire.SizeVarint(uint64(n)) + n
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

// noticeSize bounds the size of a notice: three varint fields.
const noticeSize = 3 * (1 + binary.MaxVarintLen64)

// dropped sends a drop notice.
func (s *eventSender) dropped(n uint64) error {
	b := s.buffer(noticeSize)
	*b = protowire.AppendTag(*b, respDropped, protowire.VarintType)
	*b = protowire.AppendVarint(*b, n)
	return s.send(b)
}

// historyDone sends the end-of-history notice, with the numbers of
// history events asked for and not sent: those that were gone, and those
// beyond what ever happened.
func (s *eventSender) historyDone(missing, beyond uint64) error {
	b := s.buffer(noticeSize)
	*b = protowire.AppendTag(*b, respHistoryDone, protowire.VarintType)
	*b = protowire.AppendVarint(*b, 1)
	if m := min(missing, math.MaxUint32); m > 0 {
		*b = protowire.AppendTag(*b, respHistoryMissing, protowire.VarintType)
		*b = protowire.AppendVarint(*b, m)
	}
	if beyond > 0 {
		*b = protowire.AppendTag(*b, respHistoryBeyond, protowire.VarintType)
		*b = protowire.AppendVarint(*b, beyond)
	}
	return s.send(b)
}

// apiEvent is the storage of one event in API form, filled in place (the
// conversion every consumer of events shares).
type apiEvent = apievent.Builder

// toAPIEvent renders an event for a watcher in messages of its own, which
// the caller may keep.
func toAPIEvent(e *proxy.Event, includeData bool) *snoopv1.Event {
	return apievent.New(e, includeData)
}
