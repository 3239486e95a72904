package proxy

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/snoopd/snoopd/distcache"
	"github.com/snoopd/snoopd/match"
	"github.com/snoopd/snoopd/vocab"
)

// assembler turns the two byte streams of one connection into its events:
// transactions (a request paired with its response), orphans (a response
// no pending request matches), unanswered requests (pending at close) and
// protocol errors. It is the one place requests meet responses; both
// engines, the fault path and the Observer feed it, each with their own
// way of getting the bytes.
//
// It owns: the decoder and payload scanner of each direction (a half),
// the requests awaiting a response (pending, in order of arrival, paired
// by request_uid and operation, so pipelined requests and two requests
// with one uid but different operations each find their own answer), the
// echo check of the connection's first request (echo.go, when echo is
// set) and the counters a transaction adds to.
//
// Invariants: only the client->server half appends to pending and only
// the server->client half (or the close, once both have stopped) removes
// from it, so an index found under mu stays valid for the response
// direction while it works on it unlocked; every event goes to the sink
// only after the bytes it was decoded from were forwarded (flush), and
// holds no memory the assembler reuses (detach); a transaction is counted
// once, when the client's view of it is final (account).
//
// The fault hook is one optional step at each message's end (faultStep):
// the verdict on the message, which the engine's fault layer then carries
// out; with it a response's transaction is counted by that layer, once
// the time its answer is held is known.
type assembler struct {
	proxy  string // the name in the events
	id     uint64
	client string
	stats  *counters
	sink   Sink
	// capture keeps the captured data of transactions (Options.CaptureData,
	// up to captureLimit bytes).
	capture      bool
	captureLimit int
	// echo, if set, is the proxy whose echo table sees the connection's
	// first request (echo.go); nil for an observer, which forwards
	// nothing and so cannot be part of a loop.
	echo *Proxy

	transactions atomic.Int64

	// mu guards the requests awaiting a response, shared by the two
	// directions (in the goroutine engine they run in parallel).
	mu      sync.Mutex
	pending []pendingRequest

	// upBroken: requests are no longer decoded (the proxy's passthrough
	// after a protocol error), so a response without a request is not
	// reported as an orphan.
	upBroken atomic.Bool

	// firstSeen is set once the first request is decoded (by the
	// client-to-server direction only); echoKey is that request's entry
	// in the proxy's echo table while it is unanswered (see echo.go).
	firstSeen bool
	echoKey   atomic.Uint64
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

// half is the decoding state of one direction.
type half struct {
	dir      distcache.Direction
	decoding bool
	dec      distcache.Decoder
	scan     distcache.PayloadScanner
	msgStart time.Time
	// started, if set, holds when the message partly through began
	// (UnixNano; 0 between messages), for a reader on another goroutine
	// (the proxy's timeouts).
	started *atomic.Int64
	frames  int64       // frames completed since the last flush to the counters
	out     []EventCopy // events of the current chunk, out[:nout]
	nout    int
}

// initHalf readies h to decode dir with the assembler's capture options.
func (a *assembler) initHalf(h *half, dir distcache.Direction) {
	h.dir, h.decoding = dir, true
	h.dec.Reset(dir)
	scanOpts := distcache.ScanOptions{Digest: true}
	if a.capture {
		scanOpts.CaptureLimit = a.captureLimit
	}
	h.scan.SetOptions(scanOpts)
}

// faultStep is the fault hook of decode: at each message's end it decides
// which fault applies (the faults' filters see the message's transaction
// so far) and records the verdict in ends, for the engine's fault layer.
type faultStep struct {
	fs   *faultSet
	ends []faultEnd
	view match.View
}

// The fault verdict on one message, found by decode with a faultStep.
type faultEnd struct {
	off   int    // the message ends before chunk[off]
	f     *fault // nil: forward as it is
	uid   uint32
	op    distcache.Op
	close bool // the verdict closes the connection: the rest of the chunk is not decoded
	// tx is the answer's transaction, as its index in h.out plus one; 0
	// for a request, or an answer that makes none.
	tx int
}

// decode runs the chunk through the direction's decoder and returns how
// many leading bytes are valid. Completed requests are queued at once (the
// response may race back); completed transactions wait in h.out until the
// chunk has been forwarded, so publishing never delays the bytes. With fx
// it also decides on every message's faults, and stops after a verdict
// that closes the connection.
func (a *assembler) decode(h *half, chunk []byte, now time.Time, fx *faultStep) (int, error) {
	consumed := 0
	for p := chunk; len(p) > 0; {
		n, end, err := a.step(h, p, now)
		consumed += n
		if err != nil {
			return consumed, err
		}
		p = p[n:]
		if !end {
			continue
		}
		if err := a.messageDone(h, now, fx, consumed); err != nil {
			return consumed, err
		}
		if fx != nil {
			if e := fx.ends[len(fx.ends)-1]; e.close {
				return consumed, nil
			}
		}
	}
	return consumed, nil
}

// messageDone handles the message h just completed, which ended at off in
// the chunk: a request is queued, a response paired.
func (a *assembler) messageDone(h *half, now time.Time, fx *faultStep, off int) error {
	var e faultEnd
	if fx != nil {
		hd := h.dec.Header()
		e = faultEnd{off: off, uid: hd.RequestUID, op: hd.Op}
	}
	if h.dir == distcache.ClientToServer {
		if fx != nil {
			a.requestView(h, &fx.view, now)
			e.f = fx.fs.decide(h.dir, &fx.view, now.UnixNano())
		}
		if err := a.requestDone(h, e.f); err != nil {
			return err
		}
	} else {
		e.f, e.tx = a.responseDone(h, now, fx)
	}
	if fx != nil {
		e.close = e.f != nil && e.f.closes()
		fx.ends = append(fx.ends, e)
	}
	return nil
}

// step decodes the next piece of p (at most one frame's header or data):
// it times the message a piece starts, feeds the payload scanner and
// counts finished frames. end reports that the piece finished a message,
// whose header and summary the decoder and scanner then hold.
func (a *assembler) step(h *half, p []byte, now time.Time) (n int, end bool, err error) {
	if !h.dec.InMessage() {
		h.msgStart = now
		if h.started != nil {
			h.started.Store(now.UnixNano())
		}
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
	if s.MessageEnd && h.started != nil {
		h.started.Store(0)
	}
	return n, s.MessageEnd, nil
}

// pendingLocked returns the index of the pending request a response with
// uid and op answers, or len(a.pending) for none. a.mu is held.
func (a *assembler) pendingLocked(uid uint32, op distcache.Op) int {
	i := 0
	for i < len(a.pending) && (a.pending[i].uid != uid || a.pending[i].op != op) {
		i++
	}
	return i
}

// requestDone queues the request just decoded in h, touched by fault f
// (nil: none); for the connection's first, it returns errLoopEcho instead
// when the request came back around a forwarding loop (see echo.go).
func (a *assembler) requestDone(h *half, f *fault) error {
	if !a.firstSeen {
		a.firstSeen = true
		if a.echo != nil && a.firstRequest(requestKey(h), h.msgStart.UnixNano()) {
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
	a.mu.Lock()
	// Built in place: a local pendingRequest would escape to the heap on
	// every request.
	a.pending = append(a.pending, pendingRequest{uid: hd.RequestUID, op: hd.Op, start: h.msgStart, frames: h.dec.MessageFrames(), fault: f})
	r := &a.pending[len(a.pending)-1]
	r.summary = sum
	r.idLen = copy(r.id[:], sum.SessionID)
	// The id lives in r.id; it is re-sliced where it is used (request),
	// because the queue moves its entries.
	r.summary.SessionID = nil
	r.summary.Data = data
	a.mu.Unlock()
	return nil
}

// responseDone pairs the response just decoded in h with its request and
// leaves the transaction in h.out. With fx it decides on the answer first:
// an answer a drop or reset takes is never delivered, so it makes no
// transaction; its request stays pending, to be reported unanswered (with
// the fault's name) when the connection closes. It returns the answer's
// fault and its transaction's place in h.out plus one (0: none).
func (a *assembler) responseDone(h *half, now time.Time, fx *faultStep) (*fault, int) {
	hd := h.dec.Header()
	resp := h.scan.Summary()
	frames := h.dec.MessageFrames()

	a.mu.Lock()
	i := a.pendingLocked(hd.RequestUID, hd.Op)
	orphan := i == len(a.pending)
	if orphan && a.upBroken.Load() {
		// Requests are no longer decoded (passthrough after a protocol
		// error), so every response would look orphaned.
		a.mu.Unlock()
		return nil, 0
	}
	t := a.txEvent(h.nextOut(), now)
	var reqFault *fault
	if orphan {
		t.Transaction = distcache.NewTransaction(hd.Op, hd.RequestUID, distcache.PayloadSummary{}, resp, 0, frames)
		t.Orphan = true
		t.Start = now
	} else {
		req := &a.pending[i]
		reqFault = req.fault
		t.Transaction = distcache.NewTransaction(req.op, req.uid, req.request(), resp, req.frames, frames)
		t.Start = req.start
		t.Latency = now.Sub(req.start)
		t.ServerLatency = t.Latency - req.held
	}
	// Detach before the queue shifts: the id still lives in the request.
	a.detach(t)
	if !orphan && fx == nil {
		a.pending = append(a.pending[:i], a.pending[i+1:]...)
	}
	a.mu.Unlock()

	var f *fault
	if fx != nil {
		// Decided unlocked: a filter may take its time, and the index
		// stays valid (only this direction removes requests).
		ev := &h.out[h.nout-1].Event
		ev.Tx = t
		ev.MatchView(&fx.view)
		f = fx.fs.decide(h.dir, &fx.view, now.UnixNano())
		if f != nil && f.closes() {
			// Not delivered: no transaction now; the request is reported
			// unanswered when the fault closes the connection.
			h.nout--
			if !orphan {
				a.mu.Lock()
				a.pending[i].fault = f
				a.mu.Unlock()
			}
			return f, 0
		}
		if !orphan {
			a.mu.Lock()
			a.pending = append(a.pending[:i], a.pending[i+1:]...)
			a.mu.Unlock()
		}
	}
	switch {
	case f != nil:
		t.Fault = f.spec.Name
		if f.spec.Type == FaultMiss || f.spec.Type == FaultError {
			t.replaced(f)
		}
	case reqFault != nil:
		t.Fault = reqFault.spec.Name
	}
	if a.echoKey.Load() != 0 {
		// The first request is answered (a server answers in order):
		// whatever comes later with its fingerprint is no echo of it.
		a.forgetFirst()
	}
	if fx == nil {
		// Count now, publish after forwarding: a client that has its
		// answer sees it in the counters, and the sink never delays the
		// bytes. Under faults the fault layer counts it once the
		// answer's way to the client (a hold is part of the latency) is
		// known.
		a.account(t)
	}
	return f, h.nout
}

// requestView fills v with what is known of a transaction when its request
// is whole: no answer yet, so its result reads "unanswered".
func (a *assembler) requestView(h *half, v *match.View, now time.Time) {
	hd := h.dec.Header()
	sum := h.scan.Summary()
	*v = match.View{Proxy: a.proxy, Conn: a.id, Kind: KindTransaction, Time: now,
		Op: hd.Op, Result: vocab.ResultUnanswered, SessionID: sum.SessionID, ReqBytes: int64(sum.Size)}
}

func (a *assembler) event(kind EventKind, now time.Time) *Event {
	return &Event{Kind: kind, Time: now, Proxy: a.proxy, ConnID: a.id, Client: a.client}
}

// txEvent fills the event part of a transaction event in e.
func (a *assembler) txEvent(e *EventCopy, now time.Time) *Transaction {
	e.Event = Event{Kind: KindTransaction, Time: now, Proxy: a.proxy, ConnID: a.id, Client: a.client}
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
func (a *assembler) detach(t *Transaction) {
	n := copy(t.idBuf[:], t.SessionID)
	t.SessionID = t.idBuf[:n:n]
	if t.Data != nil && a.capture {
		t.Data = append([]byte(nil), t.Data...)
	} else {
		t.Data = nil
	}
}

// flush publishes the events a chunk completed.
func (a *assembler) flush(h *half) {
	for i := range h.out[:h.nout] {
		e := &h.out[i]
		e.Event.Tx = &e.tx
		a.sink.Publish(&e.Event)
		e.tx.Data = nil // let captured data go
	}
	h.nout = 0
}

// account adds a transaction to the counters.
func (a *assembler) account(t *Transaction) {
	op := t.Op
	if !op.Valid() {
		return
	}
	a.stats.results[op][t.Outcome()].Add(1)
	if !t.Unanswered && !t.Orphan {
		a.transactions.Add(1)
		a.stats.latency[op].Record(t.Latency)
	}
}

// protocolError counts and reports a protocol error in h's direction and
// what policy did about it.
func (a *assembler) protocolError(h *half, err error, policy CorruptPolicy, now time.Time) {
	a.stats.protocolErrors.Add(1)
	e := a.event(KindProtocolError, now)
	e.Err, e.Direction, e.Policy = err, h.dir, policy
	a.sink.Publish(e)
}

// unanswered reports, counted, the requests that never got a response;
// called once both directions have stopped.
func (a *assembler) unanswered(now time.Time) {
	a.mu.Lock()
	pending := a.pending
	a.pending = nil
	a.mu.Unlock()
	var scratch EventCopy
	for i := range pending {
		r := &pending[i]
		t := a.txEvent(&scratch, now)
		t.Transaction = distcache.NewTransaction(r.op, r.uid, r.request(), distcache.PayloadSummary{}, r.frames, 0)
		t.Start = r.start
		t.Unanswered = true
		if r.fault != nil {
			t.Fault = r.fault.spec.Name
		}
		a.detach(t)
		a.account(t)
		scratch.Event.Tx = t
		a.sink.Publish(&scratch.Event)
	}
}

// pendingCount is the number of requests awaiting a response.
func (a *assembler) pendingCount() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.pending)
}

// oldestPending is when the oldest unanswered request started; zero if
// none is.
func (a *assembler) oldestPending() time.Time {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.pending) == 0 {
		return time.Time{}
	}
	return a.pending[0].start
}

// addHeld adds d to the time faults held the pending request uid/op on
// its way to the server.
func (a *assembler) addHeld(uid uint32, op distcache.Op, d time.Duration) {
	a.mu.Lock()
	if i := a.pendingLocked(uid, op); i < len(a.pending) {
		a.pending[i].held += d
	}
	a.mu.Unlock()
}
