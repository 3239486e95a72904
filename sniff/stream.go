package sniff

import "bytes"

// segmentOverhead is what one held segment costs beyond its bytes (its
// slice header, offsets and a share of the slice of segments). It is
// charged against the buffer bound so that many tiny segments cannot
// hold more memory than the bound says.
const segmentOverhead = 64

// stream puts the segments of one direction of one TCP connection back
// in order. Its invariants:
//
//   - offset is the stream offset (bytes from the direction's start, the
//     byte after the SYN or the first byte seen) of the next byte to hand
//     on; every byte before it was handed on or skipped, exactly once.
//   - held is sorted by start, its segments never overlap, and every one
//     starts after offset: what touches offset is handed on at once.
//   - heldBytes is the bytes and overhead of held, and stays at or below
//     the bound a caller passes to add (skipping holes to get there).
//   - A byte range has one owner: the first copy that arrived. A later
//     copy of bytes still held is compared with it (a difference is
//     counted), a later copy of bytes already handed on is dropped
//     unseen, since they are no longer kept.
//   - A hole ends, as a skip, in one of three ways: the bytes held past
//     it exceed the bound, the peer acknowledges bytes past it (acked),
//     or the stream is flushed at the connection's end.
//   - Sequence numbers are read relative to offset as a signed 32-bit
//     distance, so they wrap freely; a segment more than 2 GiB behind is
//     taken for an old one.
type stream struct {
	started bool
	base    uint32 // the sequence number of stream offset 0
	offset  int64  // the stream offset of the next byte to hand on

	held      []segment
	heldBytes int

	finSeen   bool
	finOffset int64 // the stream offset of the FIN, once seen
}

// segment is bytes held until the bytes before them arrive. A lost
// segment holds no bytes: the capture said they exist but cut them off
// (the snap length), so when its turn comes it is skipped as a gap.
type segment struct {
	start int64
	data  []byte
	lost  int // the length of a lost segment; 0 for one with data
}

func (g *segment) end() int64 {
	if g.lost > 0 {
		return g.start + int64(g.lost)
	}
	return g.start + int64(len(g.data))
}

func (g *segment) cost() int { return len(g.data) + segmentOverhead }

// streamOut receives what a stream hands on, in stream order.
type streamOut interface {
	// deliver hands on the bytes at the stream's offset. p is only valid
	// during the call.
	deliver(p []byte)
	// skip reports that the bytes [first, last] will never come.
	skip(first, last int64)
}

// counts are what a stream noticed about the copies it was given.
type counts struct {
	retransmitted int64 // bytes that arrived again
	conflicts     int64 // later copies whose bytes differed from the first
}

// start sets the sequence number of stream offset 0.
func (s *stream) start(seq uint32) {
	s.started, s.base = true, seq
}

// offsetOf returns the stream offset of sequence number seq.
func (s *stream) offsetOf(seq uint32) int64 {
	return s.offset + int64(int32(seq-(s.base+uint32(s.offset))))
}

// add takes a segment: data at sequence number seq, followed by lost
// bytes the capture cut off. It hands on what is now in order and keeps
// the rest, skipping the first hole for as long as more than bound bytes
// are held.
func (s *stream) add(seq uint32, data []byte, lost int, bound int, out streamOut, c *counts) {
	start := s.offsetOf(seq)
	end := start + int64(len(data)) + int64(lost)
	if s.finSeen && end > s.finOffset {
		// Nothing follows a FIN; bytes claimed past it are not the stream's.
		end = s.finOffset
		if start+int64(len(data)) > end {
			data = data[:max(0, end-start)]
		}
		lost = int(max(0, end-start-int64(len(data))))
	}
	if end <= s.offset {
		c.retransmitted += end - start
		return
	}
	if start < s.offset {
		cut := s.offset - start
		c.retransmitted += min(cut, int64(len(data)))
		if cut >= int64(len(data)) {
			lost -= int(cut - int64(len(data)))
			data = nil
		} else {
			data = data[cut:]
		}
		start = s.offset
	}
	if len(data) > 0 && start == s.offset && len(s.held) == 0 {
		// The common case: in order, nothing held. No copy.
		out.deliver(data)
		s.offset += int64(len(data))
		start, data = s.offset, nil
	}
	if len(data) > 0 {
		s.hold(segment{start: start, data: data}, c)
	}
	if lost > 0 {
		s.hold(segment{start: start + int64(len(data)), lost: lost}, c)
	}
	s.drain(out)
	for s.heldBytes > bound && len(s.held) > 0 {
		s.skipHole(out)
	}
}

// hold keeps the parts of g that no earlier copy owns: a segment with
// data owns its range against later copies and takes over a lost
// segment's; a lost segment only fills what nothing covers.
func (s *stream) hold(g segment, c *counts) {
	if g.lost == 0 {
		s.carveLost(g.start, g.end())
	}
	// Walk the held segments that overlap g, keeping the gaps between
	// them; the new pieces are collected and merged in afterwards.
	var pieces []segment
	at := g.start
	for i := range s.held {
		h := &s.held[i]
		if h.end() <= at {
			continue
		}
		if h.start >= g.end() {
			break
		}
		if h.start > at {
			pieces = append(pieces, g.slice(at, h.start))
		}
		if g.lost == 0 && h.lost == 0 {
			// The overlap of two copies: the first stays; count a difference.
			lo, hi := max(at, h.start), min(g.end(), h.end())
			c.retransmitted += hi - lo
			if !bytes.Equal(g.data[lo-g.start:hi-g.start], h.data[lo-h.start:hi-h.start]) {
				c.conflicts++
			}
		}
		at = h.end()
	}
	if at < g.end() {
		pieces = append(pieces, g.slice(at, g.end()))
	}
	for _, p := range pieces {
		if p.lost == 0 {
			// The caller's bytes are only lent for the call.
			p.data = bytes.Clone(p.data)
		}
		s.insert(p)
	}
}

// slice returns the part [lo, hi) of g.
func (g segment) slice(lo, hi int64) segment {
	if g.lost > 0 {
		return segment{start: lo, lost: int(hi - lo)}
	}
	return segment{start: lo, data: g.data[lo-g.start : hi-g.start]}
}

// carveLost removes the range [lo, hi) from the lost segments held.
func (s *stream) carveLost(lo, hi int64) {
	var kept []segment
	changed := false
	for _, h := range s.held {
		if h.lost == 0 || h.end() <= lo || h.start >= hi {
			kept = append(kept, h)
			continue
		}
		changed = true
		s.heldBytes -= h.cost()
		if h.start < lo {
			kept = append(kept, segment{start: h.start, lost: int(lo - h.start)})
			s.heldBytes += segmentOverhead
		}
		if h.end() > hi {
			kept = append(kept, segment{start: hi, lost: int(h.end() - hi)})
			s.heldBytes += segmentOverhead
		}
	}
	if changed {
		s.held = kept
	}
}

// insert puts g, which overlaps nothing held, in its place.
func (s *stream) insert(g segment) {
	i := len(s.held)
	for i > 0 && s.held[i-1].start > g.start {
		i--
	}
	s.held = append(s.held, segment{})
	copy(s.held[i+1:], s.held[i:])
	s.held[i] = g
	s.heldBytes += g.cost()
}

// drain hands on the held segments that now start at offset.
func (s *stream) drain(out streamOut) {
	n := 0
	for n < len(s.held) && s.held[n].start <= s.offset {
		h := &s.held[n]
		if h.lost > 0 {
			out.skip(h.start, h.end()-1)
		} else {
			out.deliver(h.data)
		}
		s.offset = h.end()
		s.heldBytes -= h.cost()
		n++
	}
	if n > 0 {
		// Clear what moved out so the bytes it held can be collected.
		m := copy(s.held, s.held[n:])
		clear(s.held[m:])
		s.held = s.held[:m]
	}
}

// skipHole gives up on the bytes before the first held segment and hands
// on what follows them.
func (s *stream) skipHole(out streamOut) {
	if first := s.held[0].start; first > s.offset {
		out.skip(s.offset, first-1)
		s.offset = first
	}
	s.drain(out)
}

// maxAckJump bounds how far ahead of the stream an acknowledgement is
// believed: further is a stray or forged ACK, not a record of lost bytes.
const maxAckJump = 1 << 30

// acked takes the peer's acknowledgement of sequence number ack: every
// byte before it reached the peer, so a hole before it is a gap now, and
// the bytes held after the hole are handed on up to it and beyond, as far
// as they are in order. A FIN's own sequence number is not a byte.
func (s *stream) acked(ack uint32, out streamOut) {
	if !s.started {
		return
	}
	to := s.offsetOf(ack)
	if s.finSeen && to > s.finOffset {
		to = s.finOffset
	}
	if to <= s.offset || to-s.offset > maxAckJump {
		return
	}
	for len(s.held) > 0 && s.held[0].start < to {
		s.skipHole(out)
	}
	if s.offset < to {
		out.skip(s.offset, to-1)
		s.offset = to
	}
}

// fin records the sequence number of a FIN: the stream ends there.
func (s *stream) fin(seq uint32) {
	if s.finSeen {
		return
	}
	at := s.offsetOf(seq)
	if at < s.offset {
		// A FIN behind bytes already handed on cannot be; keep the stream
		// open rather than cut what came.
		return
	}
	s.finSeen, s.finOffset = true, at
}

// finished reports whether a FIN was seen and every byte before it was
// handed on or skipped.
func (s *stream) finished() bool { return s.finSeen && s.offset >= s.finOffset }

// flush ends the stream: it skips every hole, hands on every held byte,
// and skips the bytes missing before a FIN that was seen.
func (s *stream) flush(out streamOut) {
	for len(s.held) > 0 {
		s.skipHole(out)
	}
	if s.finSeen && s.offset < s.finOffset {
		out.skip(s.offset, s.finOffset-1)
		s.offset = s.finOffset
	}
}
