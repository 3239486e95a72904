package proxy

import (
	"fmt"
	"time"

	"golang.org/x/sys/unix"
)

// The epoll engine's side of fault injection. A connection reads its
// proxy's fault set once per read; while the set is nil and the
// connection has nothing held, it forwards as it always does. Otherwise
// the read goes through readFaulty: a direction that faults can apply to
// buffers the bytes of its current message (at most one message, about
// 33 KB) and decides at the message's end; every message then goes
// through the direction's queue, which forwards at once what is due and
// holds the rest for the loop's timer heap. While a direction's queue
// holds anything its source is not read (as backpressure does), so
// memory stays bounded and order is kept. A held message remembers the
// fault that holds it: once that fault is over (its --for is up, or it
// left the proxy's set, which SetFaults tells every connection about)
// the message and everything queued behind it go at once, in order.

// lfaults is a connection's fault state, made at its first read under
// faults.
type lfaults struct {
	lc    *lconn
	d     [2]fdir   // by source side: 0 requests, 1 answers
	fx    faultStep // the verdicts of the read in progress
	tm    timerEntry
	stall int64 // UnixNano until which nothing moves either way; 0: none
	// stalls are the stalls in force, each with the fault that made it;
	// stall is the latest end among them.
	stalls []stallHold
	// inRead: a read is in progress, which checks for the end itself.
	inRead bool
}

// fdir is one direction's held bytes.
type fdir struct {
	msg []byte  // the current message so far, not decided yet
	q   []fitem // decided, waiting to be written, in order
	// The bandwidth token bucket: bytes that may go now, as of last.
	tokens float64
	last   int64
	next   int64 // when the head of q may move next (UnixNano); 0: now
}

// fitem is one decided message (or plain bytes) on its way out.
type fitem struct {
	b     []byte
	at    int64  // not before (UnixNano)
	rate  int64  // paced at rate bytes/s; 0: not paced
	close *fault // a drop or reset: close the connection here instead
	by    *fault // the latency, stall or bandwidth fault holding it
}

// stallHold is one stall: nothing moves either way until until, or until
// f is over.
type stallHold struct {
	f     *fault
	until int64
}

func (lc *lconn) faults() *lfaults {
	if lc.fc == nil {
		lc.fc = &lfaults{lc: lc}
		lc.fc.tm.owner = lc.fc
	}
	return lc.fc
}

// readFaulty is read for a connection whose proxy has faults, or that
// still holds bytes of faults since removed.
func (s *lside) readFaulty(fs *faultSet) {
	lc, l := s.lc, s.lc.l
	fc := lc.faults()
	d := &fc.d[s.idx]
	if len(d.q) > 0 || fc.stall != 0 {
		// Held bytes go first; the stream waits in the kernel.
		s.setEvents(s.events &^ unix.EPOLLIN)
		return
	}
	chunk, ok := s.readOnce()
	if !ok {
		return
	}
	if len(chunk) == 0 {
		fc.release(s.idx)
		s.ended()
		return
	}
	h := &lc.h[s.idx]
	bit := uint8(1) << s.idx
	// decide: faults can apply to this direction, so its messages are
	// buffered whole. Either way, while there are faults, transactions
	// are paired by the fault-aware decoder, which names the fault that
	// touched the request in its answer's transaction.
	decide := fs != nil && fs.dirs&bit != 0 && h.decoding
	var f forwarded
	fc.fx.fs, fc.fx.ends = fs, fc.fx.ends[:0]
	if fs != nil && h.decoding {
		f = lc.inspectFaulty(h, chunk, l.now, &fc.fx)
	} else {
		f = lc.inspect(h, chunk, l.now)
	}
	now := l.now.UnixNano()
	prev := 0
	for _, e := range fc.fx.ends {
		fc.message(s.idx, chunk[prev:e.off], e, now)
		prev = e.off
		if e.tx > 0 {
			// Counted now the hold is in its latency; published after
			// forwarding, as without faults.
			lc.account(&h.out[e.tx-1].tx)
		}
	}
	switch rest := chunk[prev:f.n]; {
	case fc.closing():
		// A drop or reset is queued: nothing after it goes on.
	case decide && f.err == nil:
		// The message partly read waits for its end.
		d.msg = append(d.msg, rest...)
	default:
		// Nothing decides on this direction (or a protocol error
		// stopped decoding): the bytes go on as they are.
		fc.plain(s.idx, rest)
	}
	fc.inRead = true
	fc.pump(s.idx)
	fc.inRead = false
	if lc.state != stOpen {
		lc.flush(h)
		return
	}
	if !lc.afterForward(h, f) {
		lc.close(lc.reason)
		return
	}
	if s.idx == 0 && lc.refill != nil {
		lc.refilled()
	}
	if !h.decoding {
		fc.release(s.idx)
	}
	lc.closeIfDone()
}

// closing reports whether a drop or reset is queued: nothing after it is
// forwarded.
func (fc *lfaults) closing() bool {
	for i := range fc.d {
		q := fc.d[i].q
		if len(q) > 0 && q[len(q)-1].close != nil {
			return true
		}
	}
	return false
}

// message queues one whole message: the direction's buffered bytes and
// seg, as the verdict e says.
func (fc *lfaults) message(idx int, seg []byte, e faultEnd, now int64) {
	d := &fc.d[idx]
	f := e.f
	if f == nil {
		// It waits behind whatever is held.
		fc.held(idx, e, fc.wait(idx, 0, now))
		fc.plain(idx, seg)
		return
	}
	it := fitem{}
	switch f.spec.Type {
	case FaultDrop, FaultReset:
		d.msg = d.msg[:0]
		it.close = f
		d.q = append(d.q, it)
		return
	case FaultMiss, FaultError:
		// The server's answer is replaced whole.
		d.msg = d.msg[:0]
		it.b = f.answer(e.uid, e.op)
		fc.held(idx, e, fc.wait(idx, 0, now))
		d.q = append(d.q, it)
		return
	}
	it.b = append(d.msg, seg...)
	d.msg = nil
	switch f.spec.Type {
	case FaultLatency:
		it.at, it.by = f.releaseBy(now+int64(f.delay())), f
	case FaultStall:
		until := f.releaseBy(now + int64(f.spec.Delay))
		fc.stalls = append(fc.stalls, stallHold{f: f, until: until})
		fc.stall = max(fc.stall, until)
		it.at, it.by = until, f
		// Both ways: the other side is not read until the stall ends.
		p := &fc.lc.side[1-idx]
		p.setEvents(p.events &^ unix.EPOLLIN)
	case FaultBandwidth:
		it.rate, it.by = f.spec.Rate, f
	case FaultCorrupt:
		f.damage(it.b)
	}
	fc.held(idx, e, fc.wait(idx, it.at, now))
	d.q = append(d.q, it)
}

// wait is how long a message queued now on side idx's direction, not
// before at, waits to go: until then, until any stall ends, and until
// what is queued before it may go. A bandwidth fault's pacing is not
// foreseen.
func (fc *lfaults) wait(idx int, at, now int64) time.Duration {
	due := max(at, fc.stall)
	for i := range fc.d[idx].q {
		due = max(due, fc.d[idx].q[i].at)
	}
	return time.Duration(max(due-now, 0))
}

// held records that the message of verdict e waits d on its way: a
// request's wait is part of its transaction's latency but not of the
// server's; an answer's adds to the latency its client sees.
func (fc *lfaults) held(idx int, e faultEnd, d time.Duration) {
	if d <= 0 {
		return
	}
	lc := fc.lc
	if idx == 0 {
		lc.addHeld(e.uid, e.op, d)
		return
	}
	if e.tx > 0 {
		if t := &lc.h[1].out[e.tx-1].tx; !t.Orphan {
			t.Latency += d
		}
	}
}

// plain queues bytes no fault decided on (and any buffered before them).
func (fc *lfaults) plain(idx int, b []byte) {
	d := &fc.d[idx]
	if len(d.msg) > 0 {
		b = append(d.msg, b...)
		d.msg = nil
	} else if len(d.q) == 0 {
		// The common case: nothing held, so it goes at once, uncopied.
		if len(b) > 0 {
			fc.send(idx, b)
		}
		return
	} else {
		b = append([]byte(nil), b...)
	}
	if len(b) > 0 {
		d.q = append(d.q, fitem{b: b})
	}
}

// release lets a direction's buffered bytes go as they are: its faults
// can no longer decide (the stream ended or is not decoded any more).
func (fc *lfaults) release(idx int) {
	if len(fc.d[idx].msg) > 0 {
		fc.plain(idx, nil)
		fc.pump(idx)
	}
}

// send writes b towards the peer of side idx; a write error closes the
// connection.
func (fc *lfaults) send(idx int, b []byte) bool {
	lc := fc.lc
	dst := &lc.side[1-idx]
	if werr := dst.send(b); werr != 0 {
		lc.close(fmt.Sprintf("%s write failed: %v", peerName(lc.side[idx].dir(), false), werr))
		return false
	}
	if len(dst.out) > 0 {
		lc.side[idx].setEvents(lc.side[idx].events &^ unix.EPOLLIN)
	}
	return true
}

// pump writes what is due from the queue of side idx's direction, until
// the queue is empty, its head is held, or the peer cannot take more;
// then arms the timer for what is held, and reads the source again once
// nothing is.
func (fc *lfaults) pump(idx int) {
	lc := fc.lc
	d := &fc.d[idx]
	dst := &lc.side[1-idx]
	now := lc.l.now.UnixNano()
	if fc.settle(now) {
		fc.resume(1 - idx)
	}
	d.next = 0
	for len(d.q) > 0 && lc.state == stOpen && len(dst.out) == 0 {
		it := &d.q[0]
		if it.by != nil && it.by.over(now) {
			// Its fault is over: it goes now, unpaced.
			it.at, it.rate, it.by = 0, 0, nil
		}
		if at := max(it.at, fc.stall); at > now {
			d.next = at
			break
		}
		if it.close != nil {
			fc.faultClose(it.close)
			return
		}
		b := it.b
		if it.rate > 0 {
			n := d.take(len(b), it.rate, now)
			if n == 0 {
				d.next = it.by.releaseBy(d.when(len(b), it.rate))
				break
			}
			b = b[:n]
		}
		if !fc.send(idx, b) {
			return
		}
		it.b = it.b[len(b):]
		if len(it.b) == 0 {
			d.q[0] = fitem{}
			d.q = d.q[1:]
		}
	}
	if lc.state != stOpen {
		return
	}
	if len(d.q) == 0 {
		d.q = nil
		fc.resume(idx)
	}
	fc.rearm()
}

// settle drops the stalls that are over (their time came, or their fault
// is over) and reports whether the last one just went.
func (fc *lfaults) settle(now int64) bool {
	if fc.stall == 0 {
		return false
	}
	keep := fc.stalls[:0]
	var until int64
	for _, h := range fc.stalls {
		if now < h.until && !h.f.over(now) {
			keep = append(keep, h)
			until = max(until, h.until)
		}
	}
	clear(fc.stalls[len(keep):])
	fc.stalls, fc.stall = keep, until
	return until == 0
}

// resume reads side idx again if nothing holds it back, and passes on a
// half-close that waited for the held bytes.
func (fc *lfaults) resume(idx int) {
	lc := fc.lc
	src, dst := &lc.side[idx], &lc.side[1-idx]
	if len(fc.d[idx].q) > 0 || fc.stall != 0 || len(dst.out) > 0 {
		return
	}
	if !src.rdClosed {
		src.setEvents(src.events | unix.EPOLLIN)
	} else if dst.shutPending {
		dst.shutPending = false
		unix.Shutdown(dst.fd, unix.SHUT_WR)
	}
	if !fc.inRead {
		lc.closeIfDone()
	}
}

// owes reports whether bytes are held or buffered either way.
func (fc *lfaults) owes() bool {
	return len(fc.d[0].q) > 0 || len(fc.d[1].q) > 0 || len(fc.d[0].msg) > 0 || len(fc.d[1].msg) > 0
}

// holds reports whether side idx's direction has bytes waiting.
func (fc *lfaults) holds(idx int) bool { return len(fc.d[idx].q) > 0 || fc.stall != 0 }

// rearm sets the connection's fault timer to the nearest release.
func (fc *lfaults) rearm() {
	var next int64
	for i := range fc.d {
		if n := fc.d[i].next; n != 0 && (next == 0 || n < next) {
			next = n
		}
	}
	if fc.stall != 0 && (next == 0 || fc.stall < next) {
		next = fc.stall
	}
	if next == 0 {
		fc.lc.l.timers.remove(&fc.tm)
		return
	}
	fc.lc.l.timers.schedule(&fc.tm, next)
}

func (fc *lfaults) onTimer(int64) {
	if fc.lc.state != stOpen {
		return
	}
	fc.pump(0)
	if fc.lc.state == stOpen {
		fc.pump(1)
	}
}

// take spends up to n bytes of the bucket at rate, refilled up to a
// twentieth of a second's worth (at least one frame), and returns how
// many may go now.
func (d *fdir) take(n int, rate, now int64) int {
	burst := max(float64(rate)/20, 2048+14)
	if d.last == 0 {
		d.tokens = burst
	} else {
		d.tokens = min(burst, d.tokens+float64(now-d.last)*float64(rate)/1e9)
	}
	d.last = now
	k := min(n, int(d.tokens))
	d.tokens -= float64(k)
	return k
}

// when is when the bucket will let the next piece of an n-byte message go.
func (d *fdir) when(n int, rate int64) int64 {
	want := min(float64(n), max(float64(rate)/20, 2048+14))
	need := want - d.tokens
	return d.last + int64(need*1e9/float64(rate)) + 1
}

// faultClose closes the connection for a drop or reset fault; a reset
// sends the client a TCP RST (SO_LINGER 0) instead of a FIN.
func (fc *lfaults) faultClose(f *fault) {
	lc := fc.lc
	c := &lc.side[0]
	if f.spec.Type == FaultReset && c.fd >= 0 {
		unix.SetsockoptLinger(c.fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
	}
	// The transactions completed so far are reported before the close.
	lc.flush(&lc.h[0])
	lc.flush(&lc.h[1])
	lc.close(fmt.Sprintf("fault %s: %s", f.spec.Name, f.spec.Type))
}
