package proxy

import (
	"math"
	"time"

	"github.com/snoopd/snoopd/distcache"
	"github.com/snoopd/snoopd/match"
)

// The decisions of a compiled fault set on the messages of a connection,
// and what a fault makes of a message it applies to.

// decide returns the fault that applies to a message of direction dir
// whose transaction, as far as it is known, v describes; nil if none.
// Faults are tried in order; the first that matches and wins its draw
// applies. Called on any of the proxy's loops.
func (fs *faultSet) decide(dir distcache.Direction, v *match.View, now int64) *fault {
	bit := uint8(1) << (dir - 1)
	for _, f := range fs.faults {
		if f.dirs&bit == 0 || (!f.anyOp && (!v.Op.Valid() || !f.ops[v.Op])) {
			continue
		}
		if f.until != 0 && now >= f.until {
			continue
		}
		if f.spec.Budget > 0 && f.matched.Load() >= f.spec.Budget {
			continue
		}
		if f.m != nil && !f.m.Match(v) {
			continue
		}
		if f.draw() {
			return f
		}
	}
	return nil
}

// draw counts a message f matched and reports whether f applies to it:
// none once the budget is spent (checked again here, in order with the
// other loops' draws), else as its draw says.
func (f *fault) draw() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.spec.Budget > 0 && f.matched.Load() >= f.spec.Budget {
		return false
	}
	f.matched.Add(1)
	if f.cut != math.MaxUint64 && (f.cut == 0 || f.rng.Uint64() >= f.cut) {
		return false
	}
	f.applied.Add(1)
	return true
}

// delay returns how long a latency fault holds a message: Delay ± Jitter,
// uniformly, drawn from the fault's sequence; never negative.
func (f *fault) delay() time.Duration {
	d := f.spec.Delay
	if j := f.spec.Jitter; j > 0 {
		f.mu.Lock()
		d += time.Duration(f.rng.Int64N(int64(2*j)+1)) - j
		f.mu.Unlock()
	}
	return max(d, 0)
}

// answer returns the frame that replaces the server's answer for a miss
// or error fault: one complete frame whose payload is the status byte.
func (f *fault) answer(uid uint32, op distcache.Op) []byte {
	return distcache.AppendMessage(nil, true, uid, op, []byte{byte(f.spec.Status)})
}

// damage changes the first frame header of msg as a corrupt fault does.
func (f *fault) damage(msg []byte) {
	if len(msg) < distcache.HeaderSize {
		return
	}
	switch f.spec.Field {
	case FieldVersion:
		copy(msg[0:4], []byte{0x00, 0x10, 0x00, 0x00})
	case FieldIsResponse:
		msg[4] = 0
	case FieldRequestUID:
		for i := 5; i < 9; i++ {
			msg[i] = ^msg[i]
		}
	case FieldOp:
		msg[10] = (msg[10] + 1) % distcache.NumOps
	case FieldComplete:
		msg[11] = 2
	case FieldDataLen:
		msg[12], msg[13] = 0xff, 0xff
	}
}

// replaced rewrites t to what the client got from fault f: its answer's
// status, result and sizes.
func (t *Transaction) replaced(f *fault) {
	t.Status, t.Hit, t.ResponseSize, t.ResponseFrames, t.ResponseMalformed = f.spec.Status, false, 1, 1, false
	if t.Op == distcache.OpGet {
		t.DataLen, t.HasDigest, t.Digest, t.Data, t.DataTruncated = 0, false, [distcache.DigestSize]byte{}, nil, false
	}
}

// closes reports whether f closes the connection instead of forwarding
// the message it applies to.
func (f *fault) closes() bool {
	return f.spec.Type == FaultDrop || f.spec.Type == FaultReset
}

// inspectFaulty is inspect with the fault step: the verdicts on the
// chunk's messages are left in fx.ends.
func (c *conn) inspectFaulty(h *half, chunk []byte, now time.Time, fx *faultStep) forwarded {
	f := forwarded{n: len(chunk)}
	var valid int
	valid, f.err = c.decode(h, chunk, now, fx)
	if f.err != nil && c.set.opts.OnCorrupt == CloseOnCorrupt {
		f.n = valid
	}
	if isLoopEcho(f.err) {
		f.n = 0
	}
	if n := len(fx.ends); n > 0 && fx.ends[n-1].close {
		f.n = fx.ends[n-1].off
	}
	c.count(h, f, now)
	return f
}
