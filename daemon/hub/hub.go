// Package hub is the daemon's event hub: every proxy publishes into it,
// it keeps a bounded history, and it hands events to any number of
// watchers, each through a bounded queue of its own.
//
// Publishing is the proxies' business and must cost them next to nothing:
// Publish copies the event into a preallocated ring under a short lock and
// returns; it never waits for a watcher and never wakes one. A dispatcher
// goroutine drains the ring every few milliseconds, applies each watcher's
// filter and appends to the watcher's queue. A watcher whose queue is full
// loses events, and only that watcher: it is told exactly how many matching
// events it missed. Batching the hand-off this way means a steady trickle
// of transactions does not wake a goroutine per event, which on a busy
// machine costs more than forwarding the bytes.
//
// What a watcher that stops reading holds is bounded: its queue (QueueSize
// events, grown only as far as it fills) and the batch Next last returned
// (at most MaxBatch events). History is not queued: a watcher reads it
// straight from the ring, MaxBatch events at a time, so a watch may ask for
// all of the history however small its queue.
package hub

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/snoopd/snoopd/proxy"
)

// Defaults for Config fields left zero.
const (
	DefaultHistory = 10000
	// DefaultQueueSize holds two of the largest dispatch rounds (see
	// kickAfter), so a reader that keeps up never drops however busy
	// the proxies are, and a stream that stops reading holds well under
	// 1 MB.
	DefaultQueueSize = 512
	DefaultInterval  = 10 * time.Millisecond
	// kickAfter is how many undispatched events make a publisher wake
	// the dispatcher before its interval is over. It bounds a dispatch
	// round at high rates (at 100,000 events a second an interval is
	// 1,000 events), and so the queue a watcher needs; below it, rates
	// are low enough for the interval alone.
	kickAfter = 256
	// dispatchChunk bounds how many events the dispatcher copies out of
	// the ring per lock hold, so publishers never wait long.
	dispatchChunk = 256
	// MaxBatch is the most events one Next returns. It bounds the second
	// buffer a watcher holds besides its queue, and what its reader
	// converts at once.
	MaxBatch = 256
)

// ErrClosed is returned by Watcher.Next once the hub or the watcher is
// closed.
var ErrClosed = errors.New("event hub closed")

// Config sizes a Hub.
type Config struct {
	// History is the number of recent events kept (and the ring the
	// dispatcher drains).
	History int
	// QueueSize is the default bound of a watcher's queue.
	QueueSize int
	// Interval is how often the dispatcher hands new events to watchers.
	Interval time.Duration
}

// slot is one kept event and the instance of the proxy that published it
// (a string shared by all of that proxy's events, so keeping it costs no
// allocation).
type slot struct {
	ev   proxy.EventCopy
	inst string
}

// Hub fans events out from the proxies to watchers. Its methods are safe
// for concurrent use.
type Hub struct {
	cfg Config

	mu         sync.Mutex
	ring       []slot
	seq        uint64 // events published; event k is ring[k%len(ring)]
	dispatched uint64 // events handed to watchers
	watchers   map[*Watcher]struct{}
	closed     bool
	lastTime   int64 // the latest event time published, in Unix nanoseconds

	kick      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup
}

var _ proxy.Sink = (*Hub)(nil)

// New returns a running hub; Close stops it.
func New(cfg Config) *Hub {
	if cfg.History <= 0 {
		cfg.History = DefaultHistory
	}
	if cfg.QueueSize <= 0 {
		cfg.QueueSize = DefaultQueueSize
	}
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	h := &Hub{
		cfg:      cfg,
		ring:     make([]slot, cfg.History),
		watchers: map[*Watcher]struct{}{},
		kick:     make(chan struct{}, 1),
		done:     make(chan struct{}),
	}
	h.wg.Add(1)
	go h.dispatchLoop()
	return h
}

// Publish records e, from no particular proxy instance. It never blocks
// on a watcher; it does not keep e.
func (h *Hub) Publish(e *proxy.Event) { h.publish(e, "") }

// Publisher returns a sink that records each event with instance, the id
// of the proxy incarnation that publishes through it; watchers get it back
// beside the event (Batch.Instances).
func (h *Hub) Publisher(instance string) proxy.Sink {
	return &stamper{h: h, inst: instance}
}

// stamper is a proxy's sink: the hub plus the proxy's instance id.
type stamper struct {
	h    *Hub
	inst string
}

func (s *stamper) Publish(e *proxy.Event) { s.h.publish(e, s.inst) }

func (h *Hub) publish(e *proxy.Event, inst string) {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return
	}
	n := uint64(len(h.ring))
	s := &h.ring[h.seq%n]
	s.ev.Set(e)
	s.inst = inst
	h.inOrder(&s.ev.Event)
	h.seq++
	// Wake the dispatcher early only when a round's worth of events
	// waits (or the ring is half way to overrunning what it has not
	// handed out, if it is that small); once per round, since the kick
	// channel holds one.
	kick := len(h.watchers) > 0 && h.seq-h.dispatched >= min(kickAfter, n/2)
	h.mu.Unlock()
	if kick {
		select {
		case h.kick <- struct{}{}:
		default:
		}
	}
}

// inOrder keeps event times in publication order. An event is stamped when
// the proxy sees it and published after the bytes are forwarded, so two
// connections (or engines' loops) can publish in the other order than they
// stamped, by microseconds. Streams and captures must never go back in
// time, so such an event takes the time of the one published before it.
// A transaction's start is its own (Tx.Start) and is not touched.
func (h *Hub) inOrder(e *proxy.Event) {
	t := e.Time.UnixNano()
	if t < h.lastTime {
		e.Time = time.Unix(0, h.lastTime)
		return
	}
	h.lastTime = t
}

// Published returns the number of events published so far.
func (h *Hub) Published() uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.seq
}

// Watchers returns the number of open watchers.
func (h *Hub) Watchers() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.watchers)
}

// Close stops the dispatcher and ends every watcher: their Next returns
// what is still queued, then ErrClosed.
func (h *Hub) Close() {
	h.closeOnce.Do(h.close)
}

func (h *Hub) close() {
	close(h.done)
	h.wg.Wait()
	h.mu.Lock()
	h.dispatchLocked() // hand out the last events first
	h.closed = true
	ws := h.watcherListLocked()
	h.mu.Unlock()
	for _, w := range ws {
		w.close(true)
	}
}

// Filter decides whether a watcher wants an event.
type Filter func(*proxy.Event) bool

// HistoryFilter decides whether a watcher wants an event of the history,
// knowing the instance of the proxy that published it.
type HistoryFilter func(e *proxy.Event, instance string) bool

// WatchOptions configure a watcher.
type WatchOptions struct {
	// Filter selects events; nil takes all.
	Filter Filter
	// History starts the watcher with up to this many of the most recent
	// matching events. They do not go through the queue, so any number
	// may be asked for; Next returns them first, and reports how many of
	// those asked for were not there (Batch.HistoryMissing).
	History int
	// HistoryFilter, if set, further selects the history's events (for
	// instance, only those of the proxies' current instances).
	HistoryFilter HistoryFilter
	// QueueSize bounds the watcher's queue; 0 takes the hub's default.
	QueueSize int
}

// Watch registers a watcher. Close it when done.
func (h *Hub) Watch(opts WatchOptions) *Watcher {
	if opts.QueueSize <= 0 {
		opts.QueueSize = h.cfg.QueueSize
	}
	w := &Watcher{h: h, filter: opts.Filter, limit: opts.QueueSize, notify: make(chan struct{}, 1)}
	h.mu.Lock()
	defer h.mu.Unlock()
	w.from = h.seq
	if h.closed {
		w.closed = true
		return w
	}
	if opts.History > 0 {
		h.pickHistoryLocked(w, opts.History, opts.HistoryFilter)
	}
	h.watchers[w] = struct{}{}
	return w
}

// pickHistoryLocked finds the last n matching events the ring holds and
// records their sequence numbers, oldest first, for Next to read from the
// ring. Only the numbers are kept (8 bytes an event), not the events.
func (h *Hub) pickHistoryLocked(w *Watcher, n int, hf HistoryFilter) {
	size := uint64(len(h.ring))
	oldest := uint64(0)
	if h.seq > size {
		oldest = h.seq - size
	}
	var picked []uint64
	for k := h.seq; k > oldest && len(picked) < n; k-- {
		s := &h.ring[(k-1)%size]
		e := s.ev.Get()
		if w.wants(e) && (hf == nil || hf(e, s.inst)) {
			picked = append(picked, k-1)
		}
	}
	for i, j := 0, len(picked)-1; i < j; i, j = i+1, j-1 {
		picked[i], picked[j] = picked[j], picked[i]
	}
	w.hist = &history{asked: uint64(n), picked: picked}
}

func (h *Hub) watcherListLocked() []*Watcher {
	ws := make([]*Watcher, 0, len(h.watchers))
	for w := range h.watchers {
		ws = append(ws, w)
	}
	return ws
}

func (h *Hub) dispatchLoop() {
	defer h.wg.Done()
	t := time.NewTicker(h.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-h.kick:
		case <-h.done:
			return
		}
		h.mu.Lock()
		h.dispatchLocked()
		h.mu.Unlock()
	}
}

// dispatchLocked hands the events published since the last round to the
// watchers. It copies them out in chunks and releases the lock in between,
// so publishers wait for at most one chunk.
func (h *Hub) dispatchLocked() {
	var batch []slot
	for h.dispatched < h.seq {
		if len(h.watchers) == 0 {
			h.dispatched = h.seq
			return
		}
		size := uint64(len(h.ring))
		var lost uint64
		if h.seq-h.dispatched > size {
			// Overrun: the ring went round before the dispatcher came.
			lost = h.seq - size - h.dispatched
			h.dispatched = h.seq - size
		}
		from := h.dispatched
		to := min(h.seq, from+dispatchChunk)
		if batch == nil {
			batch = make([]slot, 0, dispatchChunk)
		}
		batch = batch[:0]
		for k := from; k < to; k++ {
			batch = append(batch, slot{})
			s := &h.ring[k%size]
			batch[len(batch)-1].ev.Set(s.ev.Get())
			batch[len(batch)-1].inst = s.inst
		}
		h.dispatched = to
		ws := h.watcherListLocked()
		h.mu.Unlock()
		for _, w := range ws {
			w.deliver(batch, from, lost)
		}
		h.mu.Lock()
	}
}

// history is what remains of a watcher's history to hand out.
type history struct {
	asked  uint64   // events asked for
	picked []uint64 // sequence numbers of the matching events, oldest first
	next   int      // picked[next] is the next to hand out
	lost   uint64   // picked events the ring overwrote before they were read
}

// Watcher receives events through its own bounded queue.
type Watcher struct {
	h      *Hub
	filter Filter
	limit  int
	from   uint64 // first event sequence number this watcher takes live
	// hist is the history still to hand out; nil when none was asked for
	// or all of it (and its end) has been returned. Only Next touches it.
	hist *history

	mu      sync.Mutex
	queue   queue
	dropped uint64
	closed  bool
	notify  chan struct{}

	// Only Next touches these: the batch it last returned.
	out   []slot
	ptrs  []*proxy.Event
	insts []string
}

func (w *Watcher) wants(e *proxy.Event) bool {
	return w.filter == nil || w.filter(e)
}

func (w *Watcher) signal() {
	select {
	case w.notify <- struct{}{}:
	default:
	}
}

// deliver filters a batch of events starting at sequence from into the
// queue; lost events (a ring overrun) count as dropped.
func (w *Watcher) deliver(batch []slot, from, lost uint64) {
	added := false
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return
	}
	if lost > 0 && from > w.from {
		w.dropped += lost
		added = true
	}
	for i := range batch {
		if from+uint64(i) < w.from {
			continue // before this watcher joined; history covered it
		}
		if e := batch[i].ev.Get(); w.wants(e) {
			if !w.queue.push(e, batch[i].inst, w.limit) {
				w.dropped++
			}
			added = true
		}
	}
	w.mu.Unlock()
	if added {
		w.signal()
	}
}

// Batch is what one Next returns.
type Batch struct {
	// Events are the matching events, oldest first, at most MaxBatch.
	// They are valid until the next call of Next.
	Events []*proxy.Event
	// Instances holds, for each event in Events, the instance of the
	// proxy that published it ("" when published with Hub.Publish).
	Instances []string
	// Dropped counts the matching events this watcher lost since the last
	// batch because its queue was full (plus any the hub lost before
	// filtering, if the whole ring was overrun). They came before Events.
	Dropped uint64
	// HistoryEnd marks the batch that ends the history the watcher asked
	// for: Events (possibly none) are its last events, and every later
	// batch is live. Batches before it hold only history.
	HistoryEnd bool
	// HistoryMissing, with HistoryEnd, counts the history events asked
	// for that were not handed out: the ring held fewer matching events,
	// or overwrote some before this watcher read them.
	HistoryMissing uint64
}

// Next waits until events or a drop notice are available, or ctx is done,
// or the watcher is closed (ErrClosed, after anything still queued). A
// watcher that asked for history gets it first, in batches of its own.
func (w *Watcher) Next(ctx context.Context) (Batch, error) {
	if w.hist != nil {
		return w.nextHistory()
	}
	for {
		w.mu.Lock()
		if w.queue.n > 0 || w.dropped > 0 {
			w.out = w.queue.pop(w.out[:0], MaxBatch)
			b := Batch{Dropped: w.dropped}
			w.dropped = 0
			more := w.queue.n > 0
			w.mu.Unlock()
			if more {
				// What is left needs no new signal to be read.
				w.signal()
			}
			return w.fill(b), nil
		}
		closed := w.closed
		w.mu.Unlock()
		if closed {
			return Batch{}, ErrClosed
		}
		select {
		case <-w.notify:
		case <-ctx.Done():
			return Batch{}, ctx.Err()
		}
	}
}

// nextHistory returns the next batch of the history, read from the ring
// under the hub's lock (as the dispatcher reads it).
func (w *Watcher) nextHistory() (Batch, error) {
	hs := w.hist
	h := w.h
	w.mu.Lock()
	closed := w.closed
	w.mu.Unlock()
	if closed {
		w.hist = nil
		return Batch{}, ErrClosed
	}
	w.out = w.out[:0]
	h.mu.Lock()
	size := uint64(len(h.ring))
	oldest := uint64(0)
	if h.seq > size {
		oldest = h.seq - size
	}
	for hs.next < len(hs.picked) && len(w.out) < MaxBatch {
		k := hs.picked[hs.next]
		hs.next++
		if k < oldest {
			hs.lost++
			continue
		}
		s := &h.ring[k%size]
		w.out = append(w.out, slot{inst: s.inst})
		w.out[len(w.out)-1].ev.Set(s.ev.Get())
	}
	h.mu.Unlock()
	var b Batch
	if hs.next == len(hs.picked) {
		b.HistoryEnd = true
		b.HistoryMissing = hs.asked - (uint64(len(hs.picked)) - hs.lost)
		w.hist = nil
		// Live events may have queued meanwhile: make sure the next
		// Next looks.
		w.signal()
	}
	return w.fill(b), nil
}

// fill points b at the events in w.out.
func (w *Watcher) fill(b Batch) Batch {
	w.ptrs, w.insts = w.ptrs[:0], w.insts[:0]
	for i := range w.out {
		w.ptrs = append(w.ptrs, w.out[i].ev.Get())
		w.insts = append(w.insts, w.out[i].inst)
	}
	b.Events, b.Instances = w.ptrs, w.insts
	return b
}

// Backlog reports what waits for the next Next: events queued, and
// matching events dropped because the queue was full.
func (w *Watcher) Backlog() (queued int, dropped uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.queue.n, w.dropped
}

// Close unregisters the watcher; a Next in progress returns ErrClosed.
func (w *Watcher) Close() {
	w.h.mu.Lock()
	delete(w.h.watchers, w)
	w.h.mu.Unlock()
	w.close(false)
}

// close marks the watcher closed; keep leaves queued events for Next.
func (w *Watcher) close(keep bool) {
	w.mu.Lock()
	w.closed = true
	if !keep {
		w.queue, w.dropped = queue{}, 0
	}
	w.mu.Unlock()
	w.signal()
}

// queue is a watcher's FIFO of events: a ring that grows, by doubling, up
// to the watcher's limit as it fills, so a watcher that keeps up holds
// little and one that stops reading holds at most its limit.
type queue struct {
	buf     []slot
	head, n int
}

// push appends e, or reports false when the queue holds limit events.
func (q *queue) push(e *proxy.Event, inst string, limit int) bool {
	if q.n >= limit {
		return false
	}
	if q.n == len(q.buf) {
		q.grow(min(limit, max(16, 2*len(q.buf))))
	}
	s := &q.buf[(q.head+q.n)%len(q.buf)]
	s.ev.Set(e)
	s.inst = inst
	q.n++
	return true
}

// grow moves the events into a ring of size slots, oldest first.
func (q *queue) grow(size int) {
	buf := make([]slot, size)
	for i := 0; i < q.n; i++ {
		// A value copy: EventCopy.Get re-aims its pointers at the copy.
		buf[i] = q.buf[(q.head+i)%len(q.buf)]
	}
	q.buf, q.head = buf, 0
}

// pop moves up to max events, oldest first, onto out and returns it.
func (q *queue) pop(out []slot, max int) []slot {
	for q.n > 0 && len(out) < max {
		s := &q.buf[q.head]
		out = append(out, *s)
		// Let go of what the event points to (captured data, errors).
		*s = slot{}
		q.head = (q.head + 1) % len(q.buf)
		q.n--
	}
	return out
}
