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
	DefaultHistory   = 10000
	DefaultQueueSize = 1024
	DefaultInterval  = 10 * time.Millisecond
	// dispatchChunk bounds how many events the dispatcher copies out of
	// the ring per lock hold, so publishers never wait long.
	dispatchChunk = 256
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

// Hub fans events out from the proxies to watchers. Its methods are safe
// for concurrent use.
type Hub struct {
	cfg Config

	mu         sync.Mutex
	ring       []proxy.EventCopy
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
		ring:     make([]proxy.EventCopy, cfg.History),
		watchers: map[*Watcher]struct{}{},
		kick:     make(chan struct{}, 1),
		done:     make(chan struct{}),
	}
	h.wg.Add(1)
	go h.dispatchLoop()
	return h
}

// Publish records e. It never blocks on a watcher; it does not keep e.
func (h *Hub) Publish(e *proxy.Event) {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return
	}
	n := uint64(len(h.ring))
	slot := &h.ring[h.seq%n]
	slot.Set(e)
	h.inOrder(&slot.Event)
	h.seq++
	// Wake the dispatcher early only when the ring is half way to
	// overrunning what it has not handed out yet.
	kick := len(h.watchers) > 0 && h.seq-h.dispatched >= n/2
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

// WatchOptions configure a watcher.
type WatchOptions struct {
	// Filter selects events; nil takes all.
	Filter Filter
	// History starts the watcher with up to this many of the most recent
	// matching events.
	History int
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
		h.historyLocked(w, min(opts.History, opts.QueueSize))
	}
	h.watchers[w] = struct{}{}
	return w
}

// historyLocked queues the last n matching events the ring still holds,
// oldest first.
func (h *Hub) historyLocked(w *Watcher, n int) {
	size := uint64(len(h.ring))
	oldest := uint64(0)
	if h.seq > size {
		oldest = h.seq - size
	}
	var picked []uint64
	for k := h.seq; k > oldest && len(picked) < n; k-- {
		if w.wants(h.ring[(k-1)%size].Get()) {
			picked = append(picked, k-1)
		}
	}
	for i := len(picked) - 1; i >= 0; i-- {
		w.push(h.ring[picked[i]%size].Get())
	}
	w.history = len(picked)
	if len(picked) > 0 {
		w.signal()
	}
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
	var batch []proxy.EventCopy
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
			batch = make([]proxy.EventCopy, 0, dispatchChunk)
		}
		batch = batch[:0]
		for k := from; k < to; k++ {
			batch = append(batch, proxy.EventCopy{})
			batch[len(batch)-1].Set(h.ring[k%size].Get())
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

// Watcher receives events through its own bounded queue.
type Watcher struct {
	h      *Hub
	filter Filter
	limit  int
	from   uint64 // first event sequence number this watcher takes live
	// history is the number of events queued from history when the
	// watcher was made; they are the first its Next returns.
	history int

	mu      sync.Mutex
	queue   []proxy.EventCopy
	out     []proxy.EventCopy
	ptrs    []*proxy.Event
	dropped uint64
	closed  bool
	notify  chan struct{}
}

func (w *Watcher) wants(e *proxy.Event) bool {
	return w.filter == nil || w.filter(e)
}

// push appends e to the queue or counts it dropped; w.mu or the hub's lock
// (before the watcher is registered) must be held.
func (w *Watcher) push(e *proxy.Event) {
	if len(w.queue) >= w.limit {
		w.dropped++
		return
	}
	w.queue = append(w.queue, proxy.EventCopy{})
	w.queue[len(w.queue)-1].Set(e)
}

func (w *Watcher) signal() {
	select {
	case w.notify <- struct{}{}:
	default:
	}
}

// deliver filters a batch of events starting at sequence from into the
// queue; lost events (a ring overrun) count as dropped.
func (w *Watcher) deliver(batch []proxy.EventCopy, from, lost uint64) {
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
		if e := batch[i].Get(); w.wants(e) {
			w.push(e)
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
	// Events are the matching events, oldest first. They are valid until
	// the next call of Next.
	Events []*proxy.Event
	// Dropped counts the matching events this watcher lost since the last
	// batch because its queue was full (plus any the hub lost before
	// filtering, if the whole ring was overrun). They came before Events.
	Dropped uint64
}

// Next waits until events or a drop notice are available, or ctx is done,
// or the watcher is closed (ErrClosed, after anything still queued).
func (w *Watcher) Next(ctx context.Context) (Batch, error) {
	for {
		w.mu.Lock()
		if len(w.queue) > 0 || w.dropped > 0 {
			w.queue, w.out = w.out[:0], w.queue
			b := Batch{Dropped: w.dropped}
			w.dropped = 0
			w.mu.Unlock()
			// Only Next touches out and ptrs, so no lock is needed here.
			w.ptrs = w.ptrs[:0]
			for i := range w.out {
				w.ptrs = append(w.ptrs, w.out[i].Get())
			}
			b.Events = w.ptrs
			return b, nil
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

// History is the number of events from history the watcher started with;
// Next returns them first, before any live event.
func (w *Watcher) History() int { return w.history }

// Backlog reports what waits for the next Next: events queued, and
// matching events dropped because the queue was full.
func (w *Watcher) Backlog() (queued int, dropped uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.queue), w.dropped
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
		w.queue, w.dropped = nil, 0
	}
	w.mu.Unlock()
	w.signal()
}
