package proxy

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/snoopd/snoopd/distcache"
)

// conn is one proxied client connection as both engines share it: the
// decoding of each direction, the pairing of requests with responses, the
// counters and the events. How the bytes move (two goroutines, or an event
// loop that owns both sockets) is the engine's; the engine calls decode,
// flush and report, and installs kill, which closes the connection from
// any goroutine.
type conn struct {
	p          *Proxy
	id         uint64
	clientAddr string
	opened     time.Time
	set        *settings

	bytesUp, bytesDown atomic.Int64
	transactions       atomic.Int64

	// mu guards the requests awaiting a response, shared by the two
	// directions (in the goroutine engine they run in parallel).
	mu      sync.Mutex
	pending []pendingRequest

	reasonOnce sync.Once
	reason     string
	upBroken   atomic.Bool // client->server decoding stopped (passthrough)
	// midMessage is set, per direction (index Direction-1), while a
	// message is partly through; a direction that stopped decoding after
	// a protocol error counts as undecided and sets it too.
	midMessage [2]atomic.Bool

	// For the timeouts: when the last byte moved either way, and when the
	// message partly through in each direction began (0: none), as
	// UnixNano of the times the engine passes in (checkTimeouts compares
	// them with its own).
	lastIO   atomic.Int64
	msgStart [2]atomic.Int64

	// firstSeen is set once the first request is decoded (by the
	// client-to-server direction only); echoKey is that request's entry
	// in the proxy's echo table while it is unanswered (see echo.go).
	firstSeen bool
	echoKey   atomic.Uint64

	// kill closes the connection; the first reason given is reported.
	kill func(reason string)
	// recheckFaults, if set, makes the connection look at the messages
	// faults hold, soon (a fault left the set: they go at once). Safe
	// from any goroutine.
	recheckFaults func()
}

// pendingRequest is a request whose response has not arrived.
type pendingRequest struct {
	uid     uint32
	op      distcache.Op
	start   time.Time
	frames  int
	summary distcache.PayloadSummary // SessionID left nil: see request
	id      [distcache.MaxSessionIDLen]byte
	idLen   int
	fault   *fault // the fault that touched the request, if any
	// held is how long faults held the request (or what was queued
	// before it) on its way to the server: part of the latency, not of
	// the server's.
	held time.Duration
}

// request returns the summary with its session id, aliasing r.
func (r *pendingRequest) request() distcache.PayloadSummary {
	s := r.summary
	s.SessionID = r.id[:r.idLen:r.idLen]
	return s
}

func (c *conn) init(p *Proxy, id uint64, clientAddr string, s *settings, now time.Time) {
	c.p, c.id, c.clientAddr, c.set, c.opened = p, id, clientAddr, s, now
	c.lastIO.Store(now.UnixNano())
}

func (c *conn) info() ConnInfo {
	c.mu.Lock()
	pending := len(c.pending)
	c.mu.Unlock()
	return ConnInfo{
		ID: c.id, Client: c.clientAddr, Opened: c.opened,
		BytesUp: c.bytesUp.Load(), BytesDown: c.bytesDown.Load(),
		Transactions: c.transactions.Load(), Pending: pending,
	}
}

func (c *conn) event(kind EventKind, now time.Time) *Event {
	return &Event{Kind: kind, Time: now, Proxy: c.p.name, ConnID: c.id, Client: c.clientAddr}
}

// idle reports whether the connection is between transactions: every
// request answered, no message partly through in either direction, and
// both directions still decoded (otherwise the proxy cannot tell).
func (c *conn) idle() bool {
	if c.midMessage[0].Load() || c.midMessage[1].Load() {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.pending) == 0
}

func (c *conn) setReason(r string) {
	c.reasonOnce.Do(func() { c.reason = r })
}

// half is the decoding state of one direction.
type half struct {
	dir      distcache.Direction
	decoding bool
	dec      distcache.Decoder
	scan     distcache.PayloadScanner
	msgStart time.Time
	frames   int64       // frames completed since the last flush to the counters
	out      []EventCopy // events of the current chunk, out[:nout]
	nout     int
}

// initHalf readies h to decode dir with the connection's options.
func (c *conn) initHalf(h *half, dir distcache.Direction) {
	h.dir, h.decoding = dir, true
	h.dec.Reset(dir)
	scanOpts := distcache.ScanOptions{Digest: true}
	if c.set.opts.CaptureData {
		scanOpts.CaptureLimit = c.set.opts.CaptureLimit
	}
	h.scan.SetOptions(scanOpts)
}

// forwarded is what the engine does with a chunk it read from one side:
// how many leading bytes to forward, and the protocol error, if any, to
// handle once they are written (see afterForward).
type forwarded struct {
	n   int
	err error
}

// inspect decodes chunk, read from h's source at now, updates the
// counters and returns how much of it to forward. The engine writes that
// much, then calls afterForward.
func (c *conn) inspect(h *half, chunk []byte, now time.Time) forwarded {
	f := forwarded{n: len(chunk)}
	if h.decoding {
		var valid int
		valid, f.err = c.decode(h, chunk, now)
		if f.err != nil && c.set.opts.OnCorrupt == CloseOnCorrupt {
			f.n = valid
		}
		if isLoopEcho(f.err) {
			f.n = 0 // the connection's first request: nothing before it
		}
	}
	c.count(h, f, now)
	return f
}

// count adds what a chunk carried to the counters.
func (c *conn) count(h *half, f forwarded, now time.Time) {
	st := &c.p.stats
	// Count before writing: once the far side has the bytes, a reader of
	// the counters must see them.
	if h.frames > 0 {
		if h.dir == distcache.ClientToServer {
			st.framesUp.Add(h.frames)
		} else {
			st.framesDown.Add(h.frames)
		}
		h.frames = 0
	}
	if f.n > 0 {
		if h.dir == distcache.ClientToServer {
			st.bytesUp.Add(int64(f.n))
			c.bytesUp.Add(int64(f.n))
		} else {
			st.bytesDown.Add(int64(f.n))
			c.bytesDown.Add(int64(f.n))
		}
	}
	c.lastIO.Store(now.UnixNano())
}

// afterForward publishes what the chunk completed and handles its protocol
// error. It reports false when the connection must close (the close policy
// met a protocol error, its reason set); the engine then closes it.
func (c *conn) afterForward(h *half, f forwarded) bool {
	c.flush(h)
	d := h.dir - 1
	c.midMessage[d].Store(!h.decoding || h.dec.InMessage())
	if f.err == nil {
		return true
	}
	if isLoopEcho(f.err) {
		c.setReason(f.err.Error())
		return false
	}
	policy := c.set.opts.OnCorrupt
	c.protocolError(h, f.err, policy)
	if policy == CloseOnCorrupt {
		c.setReason("protocol error " + h.dir.String())
		return false
	}
	h.decoding = false
	c.midMessage[d].Store(true) // undecided from now on
	c.msgStart[d].Store(0)      // nor can a message be timed
	if h.dir == distcache.ClientToServer {
		c.upBroken.Store(true)
	}
	return true
}

// peerName names the peer a direction reads from (src) or writes to.
func peerName(dir distcache.Direction, src bool) string {
	if (dir == distcache.ClientToServer) == src {
		return "client"
	}
	return "server"
}

// plainErr strips the net.OpError wrapping down to the system's words.
func plainErr(err error) error {
	var se *os.SyscallError
	if errors.As(err, &se) {
		return se.Err
	}
	return err
}

// decode runs the chunk through the direction's decoder and returns how
// many leading bytes are valid. Completed requests are queued at once (the
// response may race back); completed transactions wait in h.out until the
// chunk has been forwarded, so publishing never delays the bytes.
func (c *conn) decode(h *half, chunk []byte, now time.Time) (int, error) {
	consumed := 0
	for p := chunk; len(p) > 0; {
		n, end, err := c.step(h, p, now)
		consumed += n
		if err != nil {
			return consumed, err
		}
		if end {
			if h.dir == distcache.ClientToServer {
				if err := c.requestDone(h); err != nil {
					return consumed, err
				}
			} else {
				c.responseDone(h, now)
			}
		}
		p = p[n:]
	}
	return consumed, nil
}

// step decodes the next piece of p (at most one frame's header or data):
// it times the message a piece starts, feeds the payload scanner and
// counts finished frames. end reports that the piece finished a message,
// whose header and summary the decoder and scanner then hold.
func (c *conn) step(h *half, p []byte, now time.Time) (n int, end bool, err error) {
	if !h.dec.InMessage() {
		h.msgStart = now
		c.msgStart[h.dir-1].Store(now.UnixNano())
	}
	n, s, err := h.dec.Next(p)
	if err != nil {
		return n, false, err
	}
	if s.Header && h.dec.MessageFrames() == 1 {
		hd := h.dec.Header()
		h.scan.Start(hd.Op, hd.IsResponse)
	}
	h.scan.Write(s.Data)
	if s.FrameEnd {
		h.frames++
	}
	if s.MessageEnd {
		c.msgStart[h.dir-1].Store(0)
	}
	return n, s.MessageEnd, nil
}

// pendingLocked returns the index of the pending request a response with
// uid and op answers, or len(c.pending) for none. c.mu is held.
func (c *conn) pendingLocked(uid uint32, op distcache.Op) int {
	i := 0
	for i < len(c.pending) && (c.pending[i].uid != uid || c.pending[i].op != op) {
		i++
	}
	return i
}

// requestDone queues the request just decoded in h; for the connection's
// first, it returns errLoopEcho instead when the request came back around
// a forwarding loop (see echo.go).
func (c *conn) requestDone(h *half) error {
	if !c.firstSeen {
		c.firstSeen = true
		if c.firstRequest(requestKey(h), h.msgStart.UnixNano()) {
			return errLoopEcho
		}
	}
	hd := h.dec.Header()
	sum := h.scan.Summary()
	var data []byte
	if sum.Data != nil {
		// Captured data aliases the scanner, which the next request reuses.
		data = append([]byte(nil), sum.Data...)
	}
	c.mu.Lock()
	// Built in place: a local pendingRequest would escape to the heap on
	// every request.
	c.pending = append(c.pending, pendingRequest{uid: hd.RequestUID, op: hd.Op, start: h.msgStart, frames: h.dec.MessageFrames()})
	r := &c.pending[len(c.pending)-1]
	r.summary = sum
	r.idLen = copy(r.id[:], sum.SessionID)
	// The id lives in r.id; it is re-sliced where it is used (request),
	// because the queue moves its entries.
	r.summary.SessionID = nil
	r.summary.Data = data
	c.mu.Unlock()
	return nil
}

func (c *conn) responseDone(h *half, now time.Time) {
	hd := h.dec.Header()
	resp := h.scan.Summary()
	frames := h.dec.MessageFrames()

	c.mu.Lock()
	i := c.pendingLocked(hd.RequestUID, hd.Op)
	var t *Transaction
	if i == len(c.pending) {
		c.mu.Unlock()
		if c.upBroken.Load() {
			// Requests are no longer decoded (passthrough after a
			// protocol error), so every response would look orphaned.
			return
		}
		t = c.txEvent(h.nextOut(), now)
		t.Transaction = distcache.NewTransaction(hd.Op, hd.RequestUID, distcache.PayloadSummary{}, resp, 0, frames)
		t.Orphan = true
		t.Start = now
		c.detach(t)
	} else {
		req := &c.pending[i]
		t = c.txEvent(h.nextOut(), now)
		t.Transaction = distcache.NewTransaction(req.op, req.uid, req.request(), resp, req.frames, frames)
		t.Start = req.start
		t.Latency = now.Sub(req.start)
		t.ServerLatency = t.Latency - req.held
		// Detach before the queue shifts: the id still lives in req.
		c.detach(t)
		c.pending = append(c.pending[:i], c.pending[i+1:]...)
		c.mu.Unlock()
	}
	if c.echoKey.Load() != 0 {
		// The first request is answered (a server answers in order):
		// whatever comes later with its fingerprint is no echo of it.
		c.forgetFirst()
	}
	// Count now, publish after forwarding: a client that has its answer
	// sees it in the counters, and the sink never delays the bytes.
	c.account(t)
}

// txEvent fills the event part of a transaction event in e.
func (c *conn) txEvent(e *EventCopy, now time.Time) *Transaction {
	e.Event = Event{Kind: KindTransaction, Time: now, Proxy: c.p.name, ConnID: c.id, Client: c.clientAddr}
	e.tx = Transaction{}
	return &e.tx
}

// nextOut returns a reusable slot for an event to publish after the chunk
// is forwarded. Sinks copy what they keep, so the slots, and the
// transactions in them, cost no allocation in steady state.
func (h *half) nextOut() *EventCopy {
	if h.nout == len(h.out) {
		h.out = append(h.out, EventCopy{})
	}
	h.nout++
	return &h.out[h.nout-1]
}

// detach copies what t borrows (the session id and captured data, from the
// scanners or a pending request) into memory the event owns.
func (c *conn) detach(t *Transaction) {
	n := copy(t.idBuf[:], t.SessionID)
	t.SessionID = t.idBuf[:n:n]
	if t.Data != nil && c.set.opts.CaptureData {
		t.Data = append([]byte(nil), t.Data...)
	} else {
		t.Data = nil
	}
}

// flush publishes the events a chunk completed.
func (c *conn) flush(h *half) {
	for i := range h.out[:h.nout] {
		e := &h.out[i]
		e.Event.Tx = &e.tx
		c.p.sink.Publish(&e.Event)
		e.tx.Data = nil // let captured data go
	}
	h.nout = 0
}

func (c *conn) account(t *Transaction) {
	op := t.Op
	if !op.Valid() {
		return
	}
	c.p.stats.results[op][t.Outcome()].Add(1)
	if !t.Unanswered && !t.Orphan {
		c.transactions.Add(1)
		c.p.stats.latency[op].Record(t.Latency)
	}
}

func (c *conn) protocolError(h *half, err error, policy CorruptPolicy) {
	c.p.stats.protocolErrors.Add(1)
	e := c.event(KindProtocolError, time.Now())
	e.Err, e.Direction, e.Policy = err, h.dir, policy
	c.p.sink.Publish(e)
}

// report runs once the connection's sockets are closed: it frees the
// connection's slot, reports requests that never got a response, and the
// close itself.
func (c *conn) report() {
	// Free the slot before reporting, so whoever sees the close event
	// can connect again under a connection limit.
	c.p.forget(c)
	now := time.Now()
	c.mu.Lock()
	pending := c.pending
	c.pending = nil
	c.mu.Unlock()
	var scratch EventCopy
	for i := range pending {
		r := &pending[i]
		t := c.txEvent(&scratch, now)
		t.Transaction = distcache.NewTransaction(r.op, r.uid, r.request(), distcache.PayloadSummary{}, r.frames, 0)
		t.Start = r.start
		t.Unanswered = true
		if r.fault != nil {
			t.Fault = r.fault.spec.Name
		}
		c.detach(t)
		c.account(t)
		scratch.Event.Tx = t
		c.p.sink.Publish(&scratch.Event)
	}
	c.setReason("closed")
	e := c.event(KindConnClosed, now)
	e.Closed = &ConnClosed{
		BytesUp: c.bytesUp.Load(), BytesDown: c.bytesDown.Load(),
		Duration: now.Sub(c.opened), Transactions: c.transactions.Load(), Reason: c.reason,
	}
	c.p.sink.Publish(e)
}

// connectFailed reports a connection whose server could not be reached;
// the engine has closed the client.
func (c *conn) connectFailed(err error) {
	c.p.stats.connectFailed.Add(1)
	c.p.forget(c)
	e := c.event(KindConnectFailed, time.Now())
	e.Err = fmt.Errorf("dial server %s: %w", c.set.server.addr, err)
	c.p.sink.Publish(e)
}

// publishOpened reports a connection whose server is connected.
func (c *conn) publishOpened() {
	c.p.sink.Publish(c.event(KindConnOpened, time.Now()))
}

// deadline returns when the connection's next timeout falls due, as
// UnixNano, and what it is; 0 means none is armed. It reads only atomics
// and the pending queue, so the goroutine engine's timer can call it.
func (c *conn) deadline() (int64, string) {
	o := &c.set.opts
	var when int64
	var what string
	arm := func(at int64, d time.Duration, name string) {
		if d <= 0 || at == 0 {
			return
		}
		if t := at + int64(d); when == 0 || t < when {
			when, what = t, name
		}
	}
	for d := range c.msgStart {
		dir := distcache.Direction(d + 1)
		arm(c.msgStart[d].Load(), o.MessageTimeout, "message timeout: "+peerName(dir, true)+" message incomplete after "+o.MessageTimeout.String())
	}
	c.mu.Lock()
	var oldest time.Time
	if len(c.pending) > 0 {
		oldest = c.pending[0].start
	}
	c.mu.Unlock()
	if !oldest.IsZero() {
		arm(oldest.UnixNano(), o.ResponseTimeout, "response timeout: no answer after "+o.ResponseTimeout.String())
	} else if !c.midMessage[0].Load() && !c.midMessage[1].Load() {
		arm(c.lastIO.Load(), o.IdleTimeout, "idle timeout: nothing moved for "+o.IdleTimeout.String())
	}
	return when, what
}

// minTimeout is the shortest timeout armed by the options, 0 for none: a
// connection's next deadline is never nearer than that from now, so the
// engine may check it that often instead of re-arming a timer per message.
func minTimeout(o *Options) time.Duration {
	var m time.Duration
	for _, d := range [...]time.Duration{o.IdleTimeout, o.MessageTimeout, o.ResponseTimeout} {
		if d > 0 && (m == 0 || d < m) {
			m = d
		}
	}
	return m
}

// checkTimeouts returns the timeout that has fallen due at now, counted,
// for the engine to close the connection with; or else when to check
// again (UnixNano; 0: never).
func (c *conn) checkTimeouts(now int64) (next int64, expired string) {
	when, what := c.deadline()
	if when != 0 && when <= now {
		c.p.stats.timeouts.Add(1)
		return 0, what
	}
	if m := minTimeout(&c.set.opts); m > 0 {
		next = now + int64(m)
	}
	if when != 0 && (next == 0 || when < next) {
		next = when
	}
	return next, ""
}
