package proxy

import (
	"sync/atomic"

	"github.com/snoopd/snoopd/distcache"
)

// A direction that lost its place (an observer that started mid-stream,
// or missed bytes) must find where the next message starts before it can
// decode again. Nothing in the stream marks it: a frame header is 14
// bytes of fixed shape, and the bytes of a session can take that shape
// too. The hunter accepts a position only when:
//
//   - a whole valid header starts there, as the first frame of a message
//     in its direction (version 0x0011, is_response of the direction,
//     op_class 0, operation 0..3, complete 0 or 1, data_len at most 2048
//     and exactly 2048 when complete is 0);
//   - the header after its data, when those bytes have arrived, is valid
//     too: a continuation of the same message if complete is 0, else the
//     start of another (once they have not arrived it accepts: the last
//     message before a pause must not wait for the next);
//   - it cannot be a later frame of a longer message. Only ADD requests
//     and GET answers take more than one frame (the others carry a
//     session id or a status byte), so a header of another kind with
//     complete 1 is a message start. For the two long kinds the frame
//     before it must have been seen whole, and ended its message
//     (complete 1); when the bytes before it were lost, or are no frame,
//     it is passed over and the hunt goes on.
//
// Skipped bytes are counted (Stats.ResyncSkippedBytes), never reported as
// protocol errors.

// huntHistory is how many bytes before a position the hunter keeps to see
// the frame that ends there: the longest frame.
const huntHistory = distcache.HeaderSize + distcache.MaxFrameData

// hunter finds the next message start of one direction.
type hunter struct {
	dir distcache.Direction
	// buf holds, since the bytes were last lost, up to huntHistory bytes
	// already passed over (buf[:pos]) and the bytes not judged yet
	// (buf[pos:]). spare is the other buffer: what feed returns aliases
	// the one it used, and the next hunt writes into the other.
	buf, spare []byte
	pos        int
}

// reset forgets every byte: what comes next follows a gap. A buffer
// grown by a large read is let go: a capture may hold many connections.
func (h *hunter) reset() {
	h.buf, h.pos = h.buf[:0], 0
	if cap(h.buf) > 4*huntHistory {
		h.buf = nil
	}
	if cap(h.spare) > 4*huntHistory {
		h.spare = nil
	}
}

// drop forgets every byte and returns how many were not judged yet.
func (h *hunter) drop() int {
	n := len(h.buf) - h.pos
	h.reset()
	return n
}

// feed hunts through p, the next bytes of the direction. When it finds a
// message start it returns the bytes from there on (aliasing the hunter's
// storage until the next feed) and locked; else it keeps what it needs
// and returns nothing. The bytes passed over are added to skipped.
func (h *hunter) feed(p []byte, skipped *atomic.Int64) (rest []byte, locked bool) {
	h.buf = append(h.buf, p...)
	start := h.pos
	for ; len(h.buf)-h.pos >= distcache.HeaderSize; h.pos++ {
		if h.startsMessage(h.pos) {
			skipped.Add(int64(h.pos - start))
			rest = h.buf[h.pos:]
			h.buf, h.spare = h.spare[:0], h.buf
			h.pos = 0
			return rest, true
		}
	}
	skipped.Add(int64(h.pos - start))
	if h.pos > 2*huntHistory {
		// Keep the history only: the bytes before it can no longer be
		// the frame before a header to come.
		cut := h.pos - huntHistory
		n := copy(h.buf, h.buf[cut:])
		h.buf = h.buf[:n]
		h.pos -= cut
	}
	return nil, false
}

// startsMessage reports whether a message starts at buf[i] (see above).
func (h *hunter) startsMessage(i int) bool {
	b := h.buf[i:]
	dl, complete, ok := frameHeader(b, h.dir)
	if !ok {
		return false
	}
	if nx := distcache.HeaderSize + dl; len(b) >= nx+distcache.HeaderSize {
		next := b[nx:]
		if _, _, ok := frameHeader(next, h.dir); !ok || !complete && !sameMessage(b, next) {
			return false
		}
	}
	op := distcache.Op(b[10])
	long := h.dir == distcache.ClientToServer && op == distcache.OpAdd ||
		h.dir == distcache.ServerToClient && op == distcache.OpGet
	if complete && !long {
		return true
	}
	return h.endsMessageAt(i)
}

// endsMessageAt reports whether the bytes before buf[i] end with a whole
// frame that completes its message.
func (h *hunter) endsMessageAt(i int) bool {
	for dl := 0; dl <= distcache.MaxFrameData; dl++ {
		j := i - distcache.HeaderSize - dl
		if j < 0 {
			return false
		}
		if pdl, complete, ok := frameHeader(h.buf[j:], h.dir); ok && pdl == dl {
			return complete
		}
	}
	return false
}

// frameHeader checks that b starts with a frame header that may begin a
// message in dir and returns its data_len and complete flag.
func frameHeader(b []byte, dir distcache.Direction) (dataLen int, complete, ok bool) {
	if len(b) < distcache.HeaderSize {
		return 0, false, false
	}
	if b[0] != byte(distcache.ProtocolVersion>>8) || b[1] != byte(distcache.ProtocolVersion) {
		return 0, false, false
	}
	wantResp := byte(0)
	if dir == distcache.ServerToClient {
		wantResp = 1
	}
	if b[4] != wantResp || b[9] != distcache.ClassUser || b[10] >= distcache.NumOps || b[11] > 1 {
		return 0, false, false
	}
	dataLen = int(b[12])<<8 | int(b[13])
	complete = b[11] == 1
	if dataLen > distcache.MaxFrameData || !complete && dataLen != distcache.MaxFrameData {
		return 0, false, false
	}
	return dataLen, complete, true
}

// sameMessage reports whether headers a and b carry one message's uid and
// operation.
func sameMessage(a, b []byte) bool {
	return a[5] == b[5] && a[6] == b[6] && a[7] == b[7] && a[8] == b[8] && a[10] == b[10]
}
