package loadgen

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/snoopd/snoopd/distcache"
	"github.com/snoopd/snoopd/internal/histogram"
)

// Run applies the load cfg describes and reports what happened. It returns
// an error without a report when cfg is unusable. When ctx is cancelled it
// stops promptly, abandoning requests in flight, and returns the partial
// report together with ctx's error. Failures of the server (refused or
// broken connections, timeouts, wrong answers) do not end the run; they
// are counted in the report.
func Run(ctx context.Context, cfg Config) (Report, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return Report{}, err
	}
	rs := &runState{
		cfg:       cfg,
		key:       dataKey(cfg.Seed, cfg.IDPrefix),
		timeoutMS: uint32(cfg.SessionTimeout.Milliseconds()),
		// A session is checked only while the server must still hold it:
		// the server's clock starts when the ADD arrives (after we sent
		// it), an answer may take up to Timeout, and a server may round
		// its timer to whole seconds.
		expiryMargin: cfg.Timeout + time.Second,
	}
	for op, w := range cfg.Mix {
		rs.weights += w
		rs.cum[op] = rs.weights
	}
	if cfg.Rate > 0 {
		rs.pace = &pacer{interval: time.Duration(float64(time.Second) / cfg.Rate)}
	}
	workers := make([]*worker, cfg.Conns)
	for i := range workers {
		lo, hi := i*cfg.Sessions/cfg.Conns, (i+1)*cfg.Sessions/cfg.Conns
		workers[i] = newWorker(ctx, rs, i, lo, hi)
	}

	rs.start = time.Now()
	if cfg.Duration > 0 {
		rs.deadline = rs.start.Add(cfg.Duration)
	}
	var wg sync.WaitGroup
	for _, w := range workers {
		wg.Go(w.run)
	}
	wg.Wait()
	elapsed := time.Since(rs.start)

	rep := newReport(cfg, elapsed, workers)
	if err := ctx.Err(); err != nil {
		rep.Interrupted = true
		return rep, err
	}
	return rep, nil
}

// runState is what the workers of one run share. Only the atomics and the
// pacer are written during the run.
type runState struct {
	cfg          Config
	key          uint64
	timeoutMS    uint32
	expiryMargin time.Duration
	weights      int
	cum          [distcache.NumOps]int // cumulative Mix weights
	start        time.Time
	deadline     time.Time // zero without a Duration
	pace         *pacer    // nil without a Rate
	claimed      atomic.Int64
	errors       atomic.Int64
}

// claim reserves the next operation, or reports that the run is over.
func (rs *runState) claim(now time.Time) bool {
	if !rs.deadline.IsZero() && !now.Before(rs.deadline) {
		return false
	}
	if rs.cfg.MaxErrors > 0 && rs.errors.Load() >= rs.cfg.MaxErrors {
		return false
	}
	return rs.cfg.Ops == 0 || rs.claimed.Add(1) <= rs.cfg.Ops
}

// pacer hands out send times spaced by interval over all workers. A slot
// never lies in the past: time the server spent being slow is not made up
// for later with a burst.
type pacer struct {
	mu       sync.Mutex
	interval time.Duration
	next     time.Time
}

func (p *pacer) reserve(now time.Time) time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.next.Before(now) {
		p.next = now
	}
	t := p.next
	p.next = t.Add(p.interval)
	return t
}

// Session model states, for Verify.
const (
	stAbsent  uint8 = iota // the server must not have the session
	stPresent              // the server must have version `version`
	stUnknown              // after a failure or near expiry: not checked until a REMOVE
)

// session is a worker's model of one of its session ids. Only the worker
// owning the id ever touches it on the server, and it updates the model in
// request order as it sends, which is the order the server applies them.
type session struct {
	state   uint8
	version uint32 // of the data last added (or attempted)
	// epoch changes whenever the model is found wrong, so answers to
	// requests planned with the old model are not checked against it.
	epoch uint32
	added time.Duration // since the run started, for expiry
}

// flight is a request in flight and what its answer must be.
type flight struct {
	op      distcache.Op
	check   bool // Verify, with a known model
	hit     bool // GET: a hit with data `version` is expected
	want    distcache.Status
	sess    int32
	version uint32
	epoch   uint32
}

// Result indexes: a status byte, or resHit for a GET that returned data.
const (
	resHit     = 256
	numResults = 257
)

// stats is one worker's share of the report; merged after the run.
type stats struct {
	ops        int64
	unanswered int64
	dials      int64
	errors     int64
	results    [distcache.NumOps][numResults]int64
	lat        [distcache.NumOps]histogram.Snapshot
	dial       histogram.Snapshot
	opLat      histogram.Snapshot // per-op mode only: dial start to answer
	causes     map[string]*ErrorCause
	order      []string // causes in order of first occurrence
	samples    []string
}

// worker runs one connection's (or one stream of connections') share of
// the load over its own slice of the session ids.
type worker struct {
	ctx context.Context
	rs  *runState
	cfg *Config
	rng *rand.Rand

	first int      // global index of sessions[0]
	ids   [][]byte // session ids, one backing array
	sess  []session

	client    Client
	connected bool
	dialFails int
	dialStart time.Time // of the current connection, for OpLatency
	buf       []byte    // ADD payload
	timer     *time.Timer

	flights []flight // ring, capacity Pipeline
	fhead   int
	flen    int

	// mu guards conn and cancelled, which the context's AfterFunc uses to
	// close the connection of a worker blocked in a read or write.
	mu        sync.Mutex
	conn      net.Conn
	cancelled bool

	st stats
}

func newWorker(ctx context.Context, rs *runState, i, lo, hi int) *worker {
	cfg := &rs.cfg
	w := &worker{
		ctx:     ctx,
		rs:      rs,
		cfg:     cfg,
		rng:     rand.New(rand.NewPCG(cfg.Seed, uint64(i)+1)),
		first:   lo,
		ids:     make([][]byte, hi-lo),
		sess:    make([]session, hi-lo),
		flights: make([]flight, cfg.Pipeline),
	}
	idLen := len(sessionID(nil, cfg.IDPrefix, 0, cfg.Sessions))
	backing := make([]byte, 0, idLen*(hi-lo))
	for j := range w.ids {
		start := len(backing)
		backing = sessionID(backing, cfg.IDPrefix, lo+j, cfg.Sessions)
		w.ids[j] = backing[start:len(backing):len(backing)]
	}
	w.buf = make([]byte, 0, addOverhead+idLen+cfg.MaxData)
	return w
}

func (w *worker) run() {
	stop := context.AfterFunc(w.ctx, func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		w.cancelled = true
		if w.conn != nil {
			w.conn.Close()
		}
	})
	defer stop()
	defer w.disconnect()
	if w.cfg.Persistent {
		w.runPersistent()
	} else {
		w.runPerOp()
	}
}

// runPersistent keeps up to Pipeline requests in flight on one connection,
// sending a new request as each answer arrives.
func (w *worker) runPersistent() {
	stopping := false
	for w.ctx.Err() == nil {
		for !stopping && w.flen < w.cfg.Pipeline && w.ctx.Err() == nil {
			if !w.rs.claim(time.Now()) || !w.pace() {
				stopping = true
				break
			}
			if !w.connected && !w.connect() {
				continue // the failed dial used up the claimed operation
			}
			w.send()
		}
		if w.flen == 0 {
			if stopping {
				return
			}
			continue
		}
		r, err := w.client.Recv()
		if err != nil {
			w.connFailed(err)
			continue
		}
		w.handle(r)
	}
	w.abandon()
}

// runPerOp opens a connection for every operation, like dc_test without
// -persistent.
func (w *worker) runPerOp() {
	for w.ctx.Err() == nil {
		if !w.rs.claim(time.Now()) || !w.pace() {
			return
		}
		if !w.connect() {
			continue
		}
		if !w.send() {
			continue
		}
		r, err := w.client.Recv()
		if err != nil {
			w.connFailed(err)
			continue
		}
		// From the dial, not from connect's backoff: the backoff is the
		// load generator's own pacing, not a wait the server causes.
		w.st.opLat.Record(r.at.Sub(w.dialStart))
		w.handle(r)
		w.disconnect()
	}
}

// pace waits for the next send slot when a Rate is set, taking in answers
// meanwhile. It returns false when the run should stop instead: cancelled,
// or the slot lies beyond the Duration.
func (w *worker) pace() bool {
	if w.rs.pace == nil {
		return true
	}
	t := w.rs.pace.reserve(time.Now())
	if !w.rs.deadline.IsZero() && !t.Before(w.rs.deadline) {
		return false
	}
	for {
		now := time.Now()
		if !now.Before(t) {
			return true
		}
		if w.flen > 0 {
			r, ok, err := w.client.recv(t)
			switch {
			case err != nil:
				w.connFailed(err)
			case ok:
				w.handle(r)
			}
			if w.ctx.Err() != nil {
				return false
			}
			continue
		}
		if !w.sleep(t.Sub(now)) {
			return false
		}
	}
}

// sleep waits for d, or less when ctx is cancelled (then it returns false).
func (w *worker) sleep(d time.Duration) bool {
	if w.timer == nil {
		w.timer = time.NewTimer(d)
	} else {
		w.timer.Reset(d)
	}
	select {
	case <-w.ctx.Done():
		w.timer.Stop()
		return false
	case <-w.timer.C:
		return true
	}
}

// connect dials, backing off after consecutive failures so that a dead
// server is not hammered. A failure is counted as an error.
func (w *worker) connect() bool {
	if w.dialFails > 0 {
		backoff := min(10*time.Millisecond<<min(w.dialFails-1, 10), 250*time.Millisecond)
		if !w.sleep(backoff) {
			return false
		}
	}
	t0 := time.Now()
	err := w.client.dial(w.ctx, w.cfg.Addr, w.cfg.Timeout)
	if err != nil {
		if w.ctx.Err() == nil {
			w.dialFails++
			w.fail("dial "+classify(err), err.Error())
		}
		return false
	}
	w.st.dial.Record(time.Since(t0))
	w.st.dials++
	w.dialStart = t0
	w.dialFails = 0
	w.mu.Lock()
	w.conn = w.client.conn
	cancelled := w.cancelled
	w.mu.Unlock()
	if cancelled {
		// The AfterFunc ran before the connection was registered.
		w.client.conn.Close()
	}
	w.connected = true
	return true
}

func (w *worker) disconnect() {
	if !w.connected {
		return
	}
	w.mu.Lock()
	w.conn = nil
	w.mu.Unlock()
	w.client.Close()
	w.connected = false
}

// connFailed handles the loss of the connection: requests in flight are
// lost, and their sessions' state on the server is unknown.
func (w *worker) connFailed(err error) {
	w.disconnect()
	if w.ctx.Err() != nil {
		w.abandon() // cancelled: our own doing, not the server's fault
		return
	}
	what := "conn"
	var oe *OpError
	if errors.As(err, &oe) && oe.Stage != "dial" {
		what = oe.Op.String()
	}
	w.fail(what+" "+classify(err), err.Error())
	w.abandon()
}

// abandon drops the requests in flight.
func (w *worker) abandon() {
	for ; w.flen > 0; w.flen-- {
		f := &w.flights[w.fhead]
		w.forget(f.sess)
		w.st.unanswered++
		w.fhead = (w.fhead + 1) % len(w.flights)
	}
}

// forget marks a session's state on the server unknown.
func (w *worker) forget(s int32) {
	w.sess[s].state = stUnknown
	w.sess[s].epoch++
}

// send picks an operation and a session, plans the expected answer from
// the model, updates the model as the server will, and queues the request.
// It returns false if the connection failed.
func (w *worker) send() bool {
	var op distcache.Op
	for x := w.rng.IntN(w.rs.weights); x >= w.rs.cum[op]; op++ {
	}
	s := int32(w.rng.IntN(len(w.sess)))
	se := &w.sess[s]
	f := flight{op: op, sess: s, epoch: se.epoch}
	now := time.Since(w.rs.start)
	if se.state == stPresent && now >= se.added+w.cfg.SessionTimeout-w.rs.expiryMargin {
		se.state = stUnknown // it may be expiring on the server
	}
	f.check = w.cfg.Verify && se.state != stUnknown
	present := se.state == stPresent
	payload := w.ids[s]

	switch op {
	case distcache.OpAdd:
		version := se.version + 1
		sp := specFor(w.rs.key, w.first+int(s), version, w.cfg.MinData, w.cfg.MaxData)
		w.buf = distcache.AppendAddRequest(w.buf[:0], w.rs.timeoutMS, payload, nil)
		w.buf = appendData(w.buf, sp)
		payload = w.buf
		f.want = distcache.StatusOK
		switch se.state {
		case stAbsent:
			se.state, se.version, se.added = stPresent, version, now
		case stPresent:
			f.want = distcache.StatusAddExists
		default:
			// Stored or refused as existing: the answer would tell, but
			// requests behind this one are planned before it arrives.
			se.version = version
		}
	case distcache.OpGet:
		f.hit, f.version = present, se.version
		f.want = distcache.StatusNotOK
	case distcache.OpRemove, distcache.OpHave:
		f.want = distcache.StatusNotOK
		if present {
			f.want = distcache.StatusOK
		}
		if op == distcache.OpRemove {
			// Whatever the server held, it holds nothing now: this is
			// how an unknown session becomes known again.
			se.state = stAbsent
		}
	}
	// The flight is queued first so that a failure below forgets its
	// session along with the others in flight.
	w.flights[(w.fhead+w.flen)%len(w.flights)] = f
	w.flen++
	if _, err := w.client.Send(op, payload); err != nil {
		w.connFailed(err)
		return false
	}
	return true
}

// handle accounts for and checks the answer to the oldest flight.
func (w *worker) handle(r Reply) {
	f := w.flights[w.fhead]
	w.fhead = (w.fhead + 1) % len(w.flights)
	w.flen--

	w.st.ops++
	w.st.lat[f.op].Record(r.Latency)
	resp, err := distcache.ParseResponse(f.op, r.Message.Payload)
	if err != nil {
		w.forget(f.sess)
		w.fail(f.op.String()+" malformed", fmt.Sprintf("%s %q: %v", f.op, w.ids[f.sess], err))
		return
	}
	res := int(resp.Status)
	if resp.Hit {
		res = resHit
	}
	w.st.results[f.op][res]++
	se := &w.sess[f.sess]
	if !f.check || f.epoch != se.epoch {
		return
	}
	var cause, detail string
	switch {
	case f.op == distcache.OpGet && f.hit:
		sp := specFor(w.rs.key, w.first+int(f.sess), f.version, w.cfg.MinData, w.cfg.MaxData)
		if !resp.Hit {
			cause, detail = "unexpected-miss", fmt.Sprintf("want a hit with %d bytes (version %d), got status %d (%s)",
				sp.n, f.version, uint8(resp.Status), resp.Status)
		} else if at := diffData(resp.Data, sp); at >= 0 {
			cause, detail = "wrong-data", fmt.Sprintf("want %d bytes (version %d), got %d bytes differing from offset %d",
				sp.n, f.version, len(resp.Data), at)
		}
	case f.op == distcache.OpGet && resp.Hit:
		cause, detail = "unexpected-hit", fmt.Sprintf("want a miss (status 1), got %d bytes of data", len(resp.Data))
	case resp.Status != f.want:
		cause, detail = "wrong-status", fmt.Sprintf("want status %d (%s), got %d (%s)",
			uint8(f.want), f.want, uint8(resp.Status), resp.Status)
	}
	if cause != "" {
		w.forget(f.sess)
		w.fail(f.op.String()+" "+cause, fmt.Sprintf("verify %s %q: %s", f.op, w.ids[f.sess], detail))
	}
}

// fail counts an error under its cause and keeps its message if there is
// room among the samples or it is the first of its cause.
func (w *worker) fail(cause, msg string) {
	w.rs.errors.Add(1)
	w.st.errors++
	if w.st.causes == nil {
		w.st.causes = make(map[string]*ErrorCause)
	}
	c := w.st.causes[cause]
	if c == nil {
		c = &ErrorCause{Cause: cause, Example: msg}
		w.st.causes[cause] = c
		w.st.order = append(w.st.order, cause)
	}
	c.Count++
	if len(w.st.samples) < MaxErrorSamples {
		w.st.samples = append(w.st.samples, msg)
	}
}

// classify names the cause of a connection-level error in one stable word.
func classify(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused"
	case errors.Is(err, syscall.ENOENT):
		return "no-socket"
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return "unreachable"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return "reset"
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "cut"
	case errors.Is(err, io.EOF):
		return "closed"
	case errors.Is(err, distcache.ErrCorrupt):
		return "corrupt"
	case errors.Is(err, ErrUnexpectedResponse):
		return "out-of-step"
	case errors.Is(err, distcache.ErrMalformedPayload):
		return "malformed"
	}
	return "io"
}
