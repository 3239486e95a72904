// Package hub is the daemon's event hub: every proxy publishes into it,
// it keeps a bounded history, and it hands each event, encoded once, to
// any number of watchers (the watch streams and the export).
//
// It has three parts, each with a lock of its own, so that nothing a
// watcher does (an expensive filter, a history read, a client that stops
// reading) can hold up a proxy:
//
//   - The ring. A publisher copies its event into a preallocated ring
//     under a lock that only publishers, the dispatcher (for a few
//     counters) and history reads (to copy at most dispatchChunk events)
//     ever hold, and returns; it never waits for a watcher and never runs
//     a filter. The ring is also the history.
//   - The dispatcher. One goroutine encodes new events straight from the
//     ring, a chunk at a time, each once into its wire form (a Record:
//     the snoop.v1.Event's protobuf bytes and the view filters run on),
//     and appends them to the log. It reads a chunk outside the lock:
//     publishers leave the chunk's slots alone meanwhile (an event that
//     would take one, a whole ring ahead of the dispatcher, is dropped
//     and counted instead), so a dispatcher descheduled mid-chunk holds
//     up no publisher. It works, and wakes, only while a watcher
//     exists, so a daemon nobody watches spends nothing on encoding, and
//     only while events come: after an interval that brought none it
//     sleeps until the next publisher wakes it. It carves the records
//     from large buffers, which it carves again once their records are
//     out of the log and out of every batch a watcher may still read,
//     and lets go of when the last watcher goes.
//   - The log. Records shared by every watcher, bounded in bytes and in
//     records. Each watcher reads it at its own pace through a cursor of
//     its own, on its own goroutine, and runs its filter there: an
//     expensive filter costs its own watcher time, and a watcher that
//     falls behind the log's start loses the oldest of its events, never
//     another watcher's. It is told how many it lost.
//
// A watcher's history is read from the ring in chunks: each chunk is
// copied under the ring's lock and filtered and encoded outside it, on the
// watcher's goroutine, into buffers the read reuses for every batch, so
// that it holds one batch at a time however long the history.
package hub

import (
	"context"
	"errors"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/snoopd/snoopd/match"
	"github.com/snoopd/snoopd/proxy"
)

// Defaults for Config fields left zero.
const (
	DefaultHistory = 10000
	// DefaultLogBytes and DefaultLogRecords bound the log every watcher
	// reads from: how far a watcher may fall behind before it loses
	// events. 16 MiB holds about 45,000 transactions without captured
	// data (a record is about 370 bytes with its encoding), several
	// seconds of lag for a tail at tens of thousands of transactions a
	// second; the log is shared, so this is the memory of all watchers
	// together, and it is freed when the last one goes.
	DefaultLogBytes   = 16 << 20
	DefaultLogRecords = 1 << 16
	// DefaultInterval is the longest an event waits for the dispatcher.
	// Every round wakes the dispatcher, each watcher's goroutine and its
	// stream's writer, and the watching process, and each wake-up costs
	// the Go runtime on both sides whatever the round carries. At 100
	// transactions a second, watching cost snoopd 100 µs and a JSON tail
	// 175 µs of CPU a transaction at 10 ms, 25 and 50 µs at 50 ms; beside
	// one serial client the tail took 2.6–2.9 µs a transaction at 10 ms,
	// 1.2–1.5 µs at 50 ms (docs/benchmarks.md, "How often watchers are
	// woken"). 50 ms is still below what a person watching notices.
	DefaultInterval = 50 * time.Millisecond
	// kickAfter is how many undispatched events make a publisher wake
	// the dispatcher before its interval is over. It bounds a dispatch
	// round at high rates (above about 20,000 events a second the
	// rounds come sooner than the interval); below it, rates are low
	// enough for the interval alone. Rounds are kept as large as the
	// interval allows: at 256, a busy tail was woken several times as
	// often for the same events (docs/benchmarks.md, "Watching for less").
	kickAfter = 1024
	// dispatchChunk bounds how many events the dispatcher reads out of
	// the ring at a time (publishers leave them alone meanwhile), and how
	// many a history read copies out per hold of its lock, so publishers
	// never wait long.
	dispatchChunk = 256
	// minRing is the fewest slots the ring has, whatever the history
	// kept: publishers must get this far ahead of a chunk the dispatcher
	// reads before they drop an event rather than overwrite it (a
	// dispatcher descheduled for as long as the ring takes to fill).
	// History reads stop at Config.History events back.
	minRing = 16 * dispatchChunk
	// MaxBatch is the most records one Next returns. It bounds what a
	// watcher holds besides its place in the log, and what its reader
	// sends at once.
	MaxBatch = 256
)

// ErrClosed is returned by Watcher.Next once the hub or the watcher is
// closed.
var ErrClosed = errors.New("event hub closed")

// Encoder renders events in their wire form. The hub asks Config.NewEncoder
// for one per goroutine that encodes (the dispatcher, each history read),
// so an Encoder may keep scratch state.
type Encoder interface {
	// AppendEvent appends e's wire form, stamped with the instance of the
	// proxy that published it, without captured session data.
	AppendEvent(dst []byte, e *proxy.Event, instance string) []byte
	// AppendData appends the wire form of an event that holds only e's
	// captured session data, so that AppendEvent's bytes followed by
	// these decode as the event with its data (protobuf merges a message
	// field that appears twice). It appends nothing when e carries no
	// data.
	AppendData(dst []byte, e *proxy.Event) []byte
}

// Config sizes a Hub.
type Config struct {
	// History is the number of recent events kept (and the ring the
	// dispatcher drains).
	History int
	// LogBytes and LogRecords bound the log of encoded events the
	// watchers read from.
	LogBytes, LogRecords int
	// Interval is how often the dispatcher hands new events to watchers.
	Interval time.Duration
	// NewEncoder returns an Encoder; it must be set.
	NewEncoder func() Encoder
}

// Record is one event as watchers get it: encoded once, shared by all of
// them, and never changed. Its slices must not be modified.
type Record struct {
	// Seq numbers events in publication order.
	Seq uint64
	// Instance is the instance of the proxy that published the event
	// ("" when published with Hub.Publish).
	Instance string
	// View is what filters see; its SessionID is shared too.
	View match.View
	// Wire is the event in its wire form, without captured session data.
	Wire []byte
	// Data, for an event that carries captured session data, is the
	// Encoder's AppendData form: Wire followed by Data is the event with
	// its data.
	Data []byte
}

// recordOverhead is what a Record costs the log besides its bytes.
const recordOverhead = int(unsafe.Sizeof(Record{}))

func (r *Record) size() int { return recordOverhead + len(r.Wire) + len(r.Data) }

// slot is one event of the ring and the instance of the proxy that
// published it (a string shared by all of that proxy's events, so keeping
// it costs no allocation).
type slot struct {
	ev   proxy.EventCopy
	inst string
}

// Hub fans events out from the proxies to watchers. Its methods are safe
// for concurrent use.
type Hub struct {
	cfg Config

	// mu guards the ring. Publishers hold it to copy one event in, the
	// dispatcher to take or give back a chunk, history reads to copy at
	// most dispatchChunk events out. Nothing else, so a publisher waits
	// microseconds at most.
	mu         sync.Mutex
	ring       []slot
	seq        uint64 // events in the ring's order; event k is ring[k%len(ring)]
	dispatched uint64 // events the dispatcher took (or skipped)
	// While reading is set, the dispatcher reads ring[readFrom%len:]
	// onwards without the lock, and publishers must not write there: an
	// event that would (seq a whole ring past readFrom) is dropped, and
	// counted in unplaced. told is how many of those watchers were told.
	reading  bool
	readFrom uint64
	unplaced uint64
	told     uint64
	watching int // open watchers: the dispatcher encodes only while there are some
	// idle is set while the dispatcher sleeps without a ticker, because
	// nobody watches or because a whole interval brought no event; the
	// next publisher wakes it.
	idle     bool
	closed   bool
	lastTime int64 // the latest event time published, in Unix nanoseconds

	log eventLog

	kick      chan struct{}
	done      chan struct{}
	rounds    atomic.Uint64 // the dispatcher's wake-ups, for tests
	closeOnce sync.Once
	wg        sync.WaitGroup
}

var _ proxy.Sink = (*Hub)(nil)

// New returns a running hub; Close stops it.
func New(cfg Config) *Hub {
	if cfg.NewEncoder == nil {
		panic("hub: Config.NewEncoder is nil")
	}
	if cfg.History <= 0 {
		cfg.History = DefaultHistory
	}
	if cfg.LogBytes <= 0 {
		cfg.LogBytes = DefaultLogBytes
	}
	if cfg.LogRecords <= 0 {
		cfg.LogRecords = DefaultLogRecords
	}
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	h := &Hub{
		cfg:  cfg,
		ring: make([]slot, max(cfg.History, minRing)),
		log:  eventLog{maxBytes: cfg.LogBytes, maxRecords: cfg.LogRecords},
		kick: make(chan struct{}, 1),
		done: make(chan struct{}),
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
// beside the event (Record.Instance).
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
	if h.reading && h.seq >= h.readFrom+n {
		// Its slot is one the dispatcher is reading: the dispatcher
		// has fallen a whole ring behind (descheduled for the time
		// the ring takes to fill). Overwriting would lose an event
		// anyway; this loses the new one, without waiting for it.
		h.unplaced++
		h.mu.Unlock()
		return
	}
	s := &h.ring[h.seq%n]
	s.ev.Set(e)
	s.inst = inst
	h.inOrder(&s.ev.Event)
	h.seq++
	// Wake the dispatcher early only when a round's worth of events
	// waits (or the ring is half way to overrunning what it has not
	// taken, if it is that small); once per round, since the kick
	// channel holds one. A dispatcher that went idle is woken by the
	// first event after the lull: that costs a publisher a wake-up, but
	// only once per quiet interval.
	kick := h.watching > 0 && (h.idle || h.seq-h.dispatched >= min(kickAfter, n/2))
	if kick {
		h.idle = false
	}
	h.mu.Unlock()
	if kick {
		h.wake()
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

// oldestKept is the sequence number of the oldest event of the history:
// the ring may hold more (minRing), but history reads go Config.History
// events back. Call it with mu held.
func (h *Hub) oldestKept() uint64 {
	if keep := uint64(h.cfg.History); h.seq > keep {
		return h.seq - keep
	}
	return 0
}

// Published returns the number of events published so far.
func (h *Hub) Published() uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.seq + h.unplaced
}

// Watchers returns the number of open watchers.
func (h *Hub) Watchers() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.watching
}

// Close stops the dispatcher and ends every watcher: their Next returns
// what the log still holds for them, then ErrClosed.
func (h *Hub) Close() {
	h.closeOnce.Do(h.close)
}

func (h *Hub) close() {
	close(h.done)
	h.wg.Wait()
	h.mu.Lock()
	h.closed = true // no more events come in
	h.mu.Unlock()
	// Hand out the last events first; the dispatcher has stopped, so
	// this goroutine is the only one encoding.
	d := newDispatcher(h)
	for d.chunk() {
	}
	h.log.closeAll()
}

// Filter decides whether a watcher wants an event. Quick must be cheap
// and bounded (flag filters: no expression): the dispatcher runs it on the
// events a watcher loses by falling behind, to count them. Full is the
// whole filter; it runs on the watcher's own goroutine, on every event it
// reads. Nil functions keep everything.
type Filter struct {
	Quick func(*match.View) bool
	Full  func(*match.View) bool
}

func (f *Filter) quick(v *match.View) bool { return f.Quick == nil || f.Quick(v) }
func (f *Filter) full(v *match.View) bool  { return f.Full == nil || f.Full(v) }

// HistoryFilter decides whether a watcher wants an event of the history,
// knowing the instance of the proxy that published it.
type HistoryFilter func(v *match.View, instance string) bool

// WatchOptions configure a watcher.
type WatchOptions struct {
	// Filter selects events; the zero Filter takes all.
	Filter Filter
	// History starts the watcher with up to this many of the most recent
	// matching events. They do not go through the log, so any number
	// may be asked for; Next returns them first, and reports how many of
	// those asked for were not there (Batch.HistoryMissing).
	History int
	// HistoryFilter, if set, further selects the history's events (for
	// instance, only those of the proxies' current instances).
	HistoryFilter HistoryFilter
}

// Watch registers a watcher. Close it when done.
func (h *Hub) Watch(opts WatchOptions) *Watcher {
	w := &Watcher{h: h, filter: opts.Filter, notify: make(chan struct{}, 1)}
	h.mu.Lock()
	defer h.mu.Unlock()
	w.from = h.seq
	if h.closed {
		w.closed, w.gone = true, true
		return w
	}
	if opts.History > 0 {
		w.hist = &history{asked: uint64(opts.History), filter: opts.HistoryFilter}
	}
	h.log.join(w)
	if h.watching == 0 {
		// The dispatcher slept while nobody watched: what was published
		// meanwhile is no watcher's (history reads come from the ring).
		h.dispatched = h.seq
		h.wake()
	}
	h.watching++
	return w
}

// wake rouses the dispatcher (once: the channel holds one).
func (h *Hub) wake() {
	select {
	case h.kick <- struct{}{}:
	default:
	}
}

func (h *Hub) dispatchLoop() {
	defer h.wg.Done()
	d := newDispatcher(h)
	t := time.NewTicker(h.cfg.Interval)
	defer t.Stop()
	tick := t.C
	for {
		select {
		case <-tick:
		case <-h.kick:
		case <-h.done:
			return
		}
		h.rounds.Add(1)
		moved := false
		for d.chunk() {
			moved = true
		}
		// While nobody watches there is nothing to hand out, and while
		// nothing is published a ticker would wake the daemon a hundred
		// times a second for nothing: the dispatcher then sleeps until
		// Watch or the next publisher wakes it.
		switch idle := h.goIdle(moved); {
		case idle && tick != nil:
			t.Stop()
			tick = nil
		case !idle && tick == nil:
			t.Reset(h.cfg.Interval)
			tick = t.C
		}
	}
}

// goIdle reports whether the dispatcher may sleep without a ticker after
// a round that moved events or not, and if so marks it idle, for the next
// publisher to wake.
func (h *Hub) goIdle(moved bool) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.idle = h.watching == 0 || (!moved && h.dispatched == h.seq)
	return h.idle
}

// dispatcher moves events from the ring to the log, encoding each once.
type dispatcher struct {
	h     *Hub
	enc   Encoder
	arena arena
	recs  []Record
}

func newDispatcher(h *Hub) *dispatcher {
	d := &dispatcher{h: h, enc: h.cfg.NewEncoder()}
	d.arena.recycle = true
	return d
}

// chunk moves up to dispatchChunk new events from the ring to the log and
// reports whether there were any. It holds the ring's lock only to take
// the chunk and to give it back: it encodes the events where they are,
// while publishers leave their slots alone.
func (d *dispatcher) chunk() bool {
	h := d.h
	h.mu.Lock()
	if h.watching == 0 {
		h.dispatched = h.seq
		h.mu.Unlock()
		// The last watcher took the log with it: so go the buffers
		// the records were carved from.
		d.arena.release()
		return false
	}
	if h.dispatched == h.seq {
		h.mu.Unlock()
		return false
	}
	size := uint64(len(h.ring))
	var lostFrom, lost uint64
	if h.seq-h.dispatched > size {
		// Overrun: the ring went round before the dispatcher came.
		lostFrom, lost = h.dispatched, h.seq-size-h.dispatched
		h.dispatched = h.seq - size
	}
	from := h.dispatched
	to := min(h.seq, from+dispatchChunk)
	h.dispatched = to
	h.reading, h.readFrom = true, from
	h.mu.Unlock()

	d.recs = d.recs[:0]
	// This chunk's records are in no log yet: the arena must not take
	// them for free whatever the log said.
	d.arena.mark = min(d.arena.mark, from)
	for k := from; k < to; k++ {
		// Publishers write no slot of the chunk until reading is
		// cleared, and a slot never moves: its event may be read in
		// place, by history reads too (which only read it).
		s := &h.ring[k%size]
		d.recs = append(d.recs, Record{})
		d.arena.record(&d.recs[len(d.recs)-1], d.enc, s.ev.InPlace(), s.inst, k)
	}

	h.mu.Lock()
	h.reading = false
	unplaced := h.unplaced - h.told
	h.told = h.unplaced
	h.mu.Unlock()
	h.log.append(d.recs, lostFrom, lost, unplaced, &d.arena)
	clear(d.recs)
	return true
}

// arena hands out the byte slices of records, carved from large buffers,
// so that encoding an event costs no allocation of its own. A buffer is
// freed by the collector once no record refers to it, unless the arena
// keeps its buffers (see reuse) or recycles them (see recycle).
type arena struct {
	buf []byte
	// kept are the buffers of a reusing arena, carved again from the
	// first after reuse; next is the one to carve once buf is full.
	kept [][]byte
	next int
	keep bool

	// recycle marks the dispatcher's arena, which carves its buffers
	// again once nothing can read what was carved from them: at 90,000
	// events a second, leaving each full buffer to the collector made
	// some 33 MB of garbage a second. Records are carved in sequence
	// order, so the buffers free up in the order they were filled.
	recycle bool
	// carved[head:] are the buffers filled before buf, oldest first,
	// each with the sequence numbers of its records.
	carved []carvedBuffer
	head   int
	// first and last are the sequence numbers of buf's first and last
	// records; empty says buf has none yet.
	first, last uint64
	empty       bool
	// mark, held and abandoned are what the log last told
	// (eventLog.told): no record numbered below mark is in the log;
	// held are the watchers' last batches, abandoned those of watchers
	// closed since, which they may still be reading. A buffer out of the
	// log that one of them overlaps goes to the collector instead.
	mark      uint64
	held      []seqRange
	abandoned []seqRange
}

// carvedBuffer is a buffer a recycling arena filled, and the sequence
// numbers of its first and last records.
type carvedBuffer struct {
	buf         []byte
	first, last uint64
}

// seqRange is the sequence numbers of a batch, first to last.
type seqRange struct{ first, last uint64 }

func (r seqRange) overlaps(first, last uint64) bool { return r.first <= last && r.last >= first }

// reuse starts carving again from the first of the arena's buffers,
// which it keeps from now on: the records carved before must no longer be
// used. A history read does this for each batch (a Batch's records are
// valid until the next Next), so that it holds one batch's bytes however
// long the history, instead of leaving the collector a copy of every
// event it sent.
func (a *arena) reuse() {
	a.keep = true
	a.next = 0
	a.buf = nil
}

// release leaves every buffer of a recycling arena to the collector: the
// log is gone, and with it the reason to keep them.
func (a *arena) release() {
	if a.buf == nil && len(a.carved) == 0 {
		return
	}
	a.buf, a.empty = nil, true
	a.carved, a.head = nil, 0
	a.held, a.abandoned = nil, nil
}

// arenaSize is the size of the arena's buffers.
const arenaSize = 64 << 10

// record encodes e into r, a zero Record, in place: a Record is some 250
// bytes, and each copy of one shows.
func (a *arena) record(r *Record, enc Encoder, e *proxy.Event, inst string, seq uint64) {
	r.Seq, r.Instance = seq, inst
	e.MatchView(&r.View)
	need := 512 + len(e.Proxy) + len(e.Client) + len(inst)
	if e.Err != nil {
		need += 256
	}
	if e.Tx != nil {
		need += len(e.Tx.Data) + len(e.Tx.SessionID)
	}
	if cap(a.buf)-len(a.buf) < need {
		a.fresh(need)
	}
	b := a.buf
	start := len(b)
	b = enc.AppendEvent(b, e, inst)
	r.Wire = b[start:len(b):len(b)]
	if sid := r.View.SessionID; len(sid) > 0 {
		start = len(b)
		b = append(b, sid...)
		r.View.SessionID = b[start:len(b):len(b)]
	}
	start = len(b)
	b = enc.AppendData(b, e)
	if len(b) > start {
		r.Data = b[start:len(b):len(b)]
	}
	// If an append outgrew the buffer, b is a new one holding a copy:
	// carry on in it (the records before keep the old one alive). This
	// record is the first of the new one.
	if a.recycle && cap(b) != cap(a.buf) {
		a.seal()
	}
	a.buf = b
	if a.empty || !a.recycle {
		a.first, a.empty = seq, false
	}
	a.last = seq
}

// fresh makes buf a buffer with room for need bytes.
func (a *arena) fresh(need int) {
	if a.recycle {
		a.seal()
		if need <= arenaSize {
			if b := a.recycled(); b != nil {
				a.buf = b
				return
			}
		}
	}
	a.buf = nil
	for a.keep && a.buf == nil && a.next < len(a.kept) {
		if b := a.kept[a.next]; cap(b) >= need {
			a.buf = b[:0]
		}
		a.next++
	}
	if a.buf == nil {
		a.buf = make([]byte, 0, max(arenaSize, need))
		if a.keep {
			a.kept = append(a.kept, a.buf)
			a.next = len(a.kept)
		}
	}
}

// seal puts buf, if anything was carved from it, behind the buffers
// filled before it, and starts an empty one.
func (a *arena) seal() {
	if a.buf != nil && !a.empty {
		a.carved = append(a.carved, carvedBuffer{buf: a.buf, first: a.first, last: a.last})
	}
	a.buf, a.empty = nil, true
}

// recycled returns the oldest filled buffer, emptied, once its records
// are out of the log, if no watcher's batch may still read them and it is
// of the arena's size. Others out of the log go to the collector: one a
// batch reads (a watcher that stops reading pins no more than its batch)
// or a larger one, made for a large event. So what is kept is the log's
// worth of buffers and no more. It returns nil if the oldest buffer is
// still in the log.
func (a *arena) recycled() []byte {
	for a.head < len(a.carved) && a.carved[a.head].last < a.mark {
		c := a.carved[a.head]
		a.carved[a.head] = carvedBuffer{}
		a.head++
		if a.head == len(a.carved) {
			a.carved, a.head = a.carved[:0], 0
		} else if a.head >= 64 && 2*a.head >= len(a.carved) {
			n := copy(a.carved, a.carved[a.head:])
			clear(a.carved[n:])
			a.carved, a.head = a.carved[:n], 0
		}
		pinned := false
		for _, r := range a.held {
			pinned = pinned || r.overlaps(c.first, c.last)
		}
		// Buffers come in sequence order: an abandoned batch that
		// ends in c has no part in those after it.
		kept := a.abandoned[:0]
		for _, r := range a.abandoned {
			pinned = pinned || r.overlaps(c.first, c.last)
			if r.last > c.last {
				kept = append(kept, r)
			}
		}
		a.abandoned = kept
		if !pinned && cap(c.buf) == arenaSize {
			return c.buf[:0]
		}
	}
	return nil
}

// eventLog is the records every watcher reads, oldest first: a ring that
// grows by doubling up to maxRecords, and holds at most maxBytes.
type eventLog struct {
	mu         sync.Mutex
	recs       []Record
	start      int    // index of the oldest record
	n          int    // records held
	head       uint64 // position of the next record; the oldest is head-n
	bytes      int
	maxBytes   int
	maxRecords int
	// watchers is replaced, never changed in place, so a copy taken
	// under mu may be walked after.
	watchers []*Watcher
	// abandoned are the batches of watchers that left while they may
	// still have been reading them, for the dispatcher's arena to take.
	abandoned []seqRange
}

func (l *eventLog) join(w *Watcher) {
	l.mu.Lock()
	w.cursor = l.head
	l.watchers = append(slices.Clip(l.watchers), w)
	l.mu.Unlock()
}

// leave removes w and marks it gone, keeping what waited for it (for
// Backlog); the last watcher to go frees the records. It reports whether
// w was still there.
func (l *eventLog) leave(w *Watcher) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !w.gone {
		w.left = l.backlogLocked(w)
	}
	if w.holding {
		// Close may come from another goroutine than the one
		// reading the last batch: its bytes must stay as they are.
		l.abandoned = append(l.abandoned, w.held)
		w.holding = false
	}
	w.closed, w.gone = true, true
	i := slices.Index(l.watchers, w)
	if i < 0 {
		return false
	}
	l.watchers = slices.Delete(slices.Clone(l.watchers), i, i+1)
	if len(l.watchers) == 0 {
		l.recs, l.start, l.n, l.bytes = nil, 0, 0, 0
	}
	return true
}

func (l *eventLog) closeAll() {
	l.mu.Lock()
	ws := l.watchers
	for _, w := range ws {
		w.closed = true
	}
	l.mu.Unlock()
	for _, w := range ws {
		w.signal()
	}
}

// append adds the dispatcher's records, evicting the oldest as the bounds
// require; events the ring lost before they were dispatched ([lostFrom,
// lostFrom+lost)) count as dropped for every watcher that wanted them, and
// those it never held (unplaced, published while the dispatcher was a
// ring behind) for every watcher. It then tells the dispatcher's arena
// what nothing reads any more.
func (l *eventLog) append(recs []Record, lostFrom, lost, unplaced uint64, a *arena) {
	l.mu.Lock()
	defer l.told(a)
	ws := l.watchers
	if len(ws) == 0 {
		l.mu.Unlock()
		return
	}
	for _, w := range ws {
		if end := lostFrom + lost; lost > 0 && end > w.from {
			w.lost += end - max(lostFrom, w.from)
		}
		w.lost += unplaced
	}
	for i := range recs {
		r := &recs[i]
		sz := r.size()
		for l.n > 0 && (l.n >= l.maxRecords || l.bytes+sz > l.maxBytes) {
			l.evict()
		}
		if l.n == len(l.recs) {
			l.grow()
		}
		l.recs[(l.start+l.n)%len(l.recs)] = *r
		l.n++
		l.head++
		l.bytes += sz
	}
	l.mu.Unlock()
	for _, w := range ws {
		w.signal()
	}
}

// told tells the arena what nothing reads any more: the sequence number
// of the oldest record in the log (records are appended and evicted in
// sequence order, so none below it is there), the batches watchers may
// still be reading (each until its next Next), and those of watchers that
// left since it last asked (after Close too: Close may come from another
// goroutine than the one reading).
func (l *eventLog) told(a *arena) {
	l.mu.Lock()
	defer l.mu.Unlock()
	a.mark = math.MaxUint64
	if l.n > 0 {
		a.mark = l.recs[l.start].Seq
	}
	a.held = a.held[:0]
	for _, w := range l.watchers {
		if w.holding {
			a.held = append(a.held, w.held)
		}
	}
	a.abandoned = append(a.abandoned, l.abandoned...)
	clear(l.abandoned)
	l.abandoned = l.abandoned[:0]
}

// evict drops the oldest record. A watcher that had not read it loses it:
// counted if its quick filter wanted it.
func (l *eventLog) evict() {
	r := &l.recs[l.start]
	pos := l.head - uint64(l.n)
	for _, w := range l.watchers {
		if w.cursor <= pos && r.Seq >= w.from && w.filter.quick(&r.View) {
			w.lost++
		}
	}
	l.bytes -= r.size()
	*r = Record{}
	l.start = (l.start + 1) % len(l.recs)
	l.n--
}

func (l *eventLog) grow() {
	size := min(l.maxRecords, max(1024, 2*len(l.recs)))
	recs := make([]Record, size)
	touchPages(recs)
	for i := 0; i < l.n; i++ {
		recs[i] = l.recs[(l.start+i)%len(l.recs)]
	}
	l.recs, l.start = recs, 0
}

// touchPages writes to every page of recs, a fresh array, on the
// dispatcher. An array the system has not given pages yet reads as zeros.
// Left so, the collector's scan (the records hold pointers) or a write
// barrier reads each page first, which maps it to the shared zero page;
// the first record written to it then has the page copied and the TLB of
// every CPU the process runs on flushed, an interrupt for the event
// loops, thousands of times in a watch's first pass over a full log
// (docs/benchmarks.md, "A fresh log without TLB flushes"). Seq holds no
// pointer, so writing it needs no write barrier, which would read the
// page first.
func touchPages(recs []Record) {
	const perPage = 4096 / int(unsafe.Sizeof(Record{}))
	for i := 0; i < len(recs); i += max(1, perPage) {
		recs[i].Seq = 0
	}
}

// read copies up to MaxBatch records from w's cursor onto out and moves
// the cursor past them; it also hands over w's count of lost events. A
// watcher that fell behind the log's start resumes at it (what it missed
// was counted when it was evicted).
func (l *eventLog) read(w *Watcher, out []Record) (_ []Record, lost uint64, closed bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if w.gone {
		return out, 0, true
	}
	if oldest := l.head - uint64(l.n); w.cursor < oldest {
		w.cursor = oldest
	}
	k := min(MaxBatch, int(l.head-w.cursor))
	at := l.start + int(w.cursor-(l.head-uint64(l.n)))
	for i := 0; i < k; i++ {
		out = append(out, l.recs[(at+i)%len(l.recs)])
	}
	// The batch before is done with; this one is read until the next.
	w.holding = k > 0
	if k > 0 {
		w.held = seqRange{out[len(out)-k].Seq, out[len(out)-1].Seq}
	}
	w.cursor += uint64(k)
	lost, w.lost = w.lost, 0
	return out, lost, w.closed
}

// backlog counts what waits for w: the records after its cursor that its
// quick filter keeps, and the events it lost.
func (l *eventLog) backlog(w *Watcher) (queued int, lost uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if w.gone {
		return w.left, w.lost
	}
	return l.backlogLocked(w), w.lost
}

// backlogLocked counts the records after w's cursor that its quick filter
// keeps. l.mu is held.
func (l *eventLog) backlogLocked(w *Watcher) (queued int) {
	oldest := l.head - uint64(l.n)
	for pos := max(w.cursor, oldest); pos < l.head; pos++ {
		r := &l.recs[(l.start+int(pos-oldest))%len(l.recs)]
		if r.Seq >= w.from && w.filter.quick(&r.View) {
			queued++
		}
	}
	return queued
}

// history is what remains of a watcher's history to hand out. Only the
// watcher's goroutine (Next) touches it.
type history struct {
	asked  uint64
	filter HistoryFilter
	picked []uint64 // sequence numbers of the matching events, oldest first
	chosen bool     // picked is complete
	next   int      // picked[next] is the next to hand out
	lost   uint64   // picked events the ring overwrote before they were read
	// evicted is how many events were published before the oldest one
	// the ring held when the walk for history reached it short of what
	// was asked: events that existed and may have matched, but are gone.
	evicted uint64
	enc     Encoder
	arena   arena
	copies  []slot
	seqs    []uint64 // the copies' sequence numbers
}

// Watcher receives events from the log, through a cursor of its own.
type Watcher struct {
	h      *Hub
	filter Filter
	from   uint64 // first event sequence number this watcher takes live
	notify chan struct{}
	// hist is the history still to hand out; nil when none was asked for
	// or all of it (and its end) has been returned.
	hist *history

	// Guarded by h.log.mu.
	cursor uint64 // the log position of the next record to read
	lost   uint64 // events lost since the last Next
	closed bool   // by the hub (what the log holds is still read) or by Close
	gone   bool   // closed by Close: nothing more is read
	left   int    // with gone: what backlog counted queued at Close
	// holding says the records of the last read, numbered held, may
	// still be read by the caller of Next.
	holding bool
	held    seqRange

	// Only Next touches this: the records it last returned.
	out []Record
}

func (w *Watcher) signal() {
	select {
	case w.notify <- struct{}{}:
	default:
	}
}

// Batch is what one Next returns.
type Batch struct {
	// Records are the matching events, oldest first, at most MaxBatch.
	// They are valid until the next call of Next.
	Records []Record
	// Dropped counts the events this watcher lost since the last batch
	// because it fell behind the log (those its quick filter keeps; its
	// expression, if any, never ran on them), plus any the hub lost
	// before encoding them, if the whole ring was overrun. They came
	// before Records.
	Dropped uint64
	// HistoryEnd marks the batch that ends the history the watcher asked
	// for: Records (possibly none) are its last events, and every later
	// batch is live. Batches before it hold only history.
	HistoryEnd bool
	// HistoryMissing, with HistoryEnd, counts the history events asked
	// for that existed but were gone: published before the ring's oldest
	// event (an upper bound with a filter, which never saw them), or
	// overwritten before this watcher read them.
	HistoryMissing uint64
	// HistoryBeyond, with HistoryEnd, counts the history events asked for
	// beyond all that ever happened (and matched): a request for more
	// than there was, not a loss.
	HistoryBeyond uint64
}

// Next waits until events or a drop notice are available, or ctx is done,
// or the watcher is closed (ErrClosed, after anything still held for it).
// A watcher that asked for history gets it first, in batches of its own.
// The watcher's filter runs here, on the caller's goroutine.
func (w *Watcher) Next(ctx context.Context) (Batch, error) {
	if w.hist != nil {
		return w.nextHistory(ctx)
	}
	for {
		var lost uint64
		var closed bool
		w.out, lost, closed = w.h.log.read(w, w.out[:0])
		read := len(w.out)
		kept := w.out[:0]
		for i := range w.out {
			r := &w.out[i]
			if r.Seq >= w.from && w.filter.full(&r.View) {
				if len(kept) < i {
					kept = append(kept, *r)
				} else {
					kept = kept[:i+1] // in its place already
				}
			}
		}
		clear(w.out[len(kept):])
		w.out = kept
		if len(kept) > 0 || lost > 0 {
			if read == MaxBatch {
				// More may wait without a new signal.
				w.signal()
			}
			return Batch{Records: kept, Dropped: lost}, nil
		}
		if read > 0 {
			continue // none of them matched; look again
		}
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

// nextHistory returns the next batch of the history: it first picks the
// matching events, newest first, then reads them forward. Each step holds
// the ring's lock only to copy a chunk of events; filtering and encoding
// happen outside it.
func (w *Watcher) nextHistory(ctx context.Context) (Batch, error) {
	hs := w.hist
	if w.isClosed() {
		w.hist = nil
		return Batch{}, ErrClosed
	}
	if hs.enc == nil {
		hs.enc = w.h.cfg.NewEncoder()
		hs.copies = make([]slot, dispatchChunk)
	}
	if !hs.chosen {
		if err := w.pickHistory(ctx); err != nil {
			return Batch{}, err
		}
	}
	// The records of the previous batch are done with: carve this
	// batch's from the same buffers.
	hs.arena.reuse()
	clear(w.out)
	w.out = w.out[:0]
	h := w.h
	for hs.next < len(hs.picked) && len(w.out) == 0 {
		h.mu.Lock()
		size, oldest := uint64(len(h.ring)), h.oldestKept()
		seqs := hs.seqs[:0]
		n := 0
		for hs.next < len(hs.picked) && n < MaxBatch {
			k := hs.picked[hs.next]
			hs.next++
			if k < oldest {
				hs.lost++
				continue
			}
			s := &h.ring[k%size]
			hs.copies[n].ev.Set(s.ev.InPlace())
			hs.copies[n].inst = s.inst
			seqs = append(seqs, k)
			n++
		}
		h.mu.Unlock()
		hs.seqs = seqs
		for i := range n {
			w.out = append(w.out, Record{})
			hs.arena.record(&w.out[len(w.out)-1], hs.enc, hs.copies[i].ev.Get(), hs.copies[i].inst, seqs[i])
			hs.copies[i] = slot{}
		}
	}
	var b Batch
	b.Records = w.out
	if hs.next == len(hs.picked) {
		b.HistoryEnd = true
		// Of what was asked and not found, the part the evicted events
		// could have held is missing; the rest is more than ever
		// happened (or matched).
		short := hs.asked - uint64(len(hs.picked))
		evicted := min(short, hs.evicted)
		b.HistoryMissing = hs.lost + evicted
		b.HistoryBeyond = short - evicted
		w.hist = nil
		// Live events may have come meanwhile: make sure the next Next
		// looks.
		w.signal()
	}
	return b, nil
}

// pickHistory finds the last asked matching events the ring holds from
// before the watcher joined, walking back a chunk at a time, and records
// their sequence numbers (8 bytes an event, not the events). It stops
// early if ctx ends.
func (w *Watcher) pickHistory(ctx context.Context) error {
	hs := w.hist
	h := w.h
	var picked []uint64
	k := w.from
	for uint64(len(picked)) < hs.asked {
		if err := ctx.Err(); err != nil {
			return err
		}
		h.mu.Lock()
		size, oldest := uint64(len(h.ring)), h.oldestKept()
		if k <= oldest {
			hs.evicted = oldest
			h.mu.Unlock()
			break
		}
		lo := max(oldest, k-min(k, dispatchChunk))
		for j := lo; j < k; j++ {
			s := &h.ring[j%size]
			hs.copies[j-lo].ev.Set(s.ev.InPlace())
			hs.copies[j-lo].inst = s.inst
		}
		h.mu.Unlock()
		var v match.View
		for j := k; j > lo && uint64(len(picked)) < hs.asked; j-- {
			s := &hs.copies[j-1-lo]
			s.ev.Get().MatchView(&v)
			if w.filter.full(&v) && (hs.filter == nil || hs.filter(&v, s.inst)) {
				picked = append(picked, j-1)
			}
		}
		clear(hs.copies)
		k = lo
	}
	slices.Reverse(picked)
	hs.picked, hs.chosen = picked, true
	return nil
}

func (w *Watcher) isClosed() bool {
	w.h.log.mu.Lock()
	defer w.h.log.mu.Unlock()
	return w.closed
}

// Backlog reports what waits for the next Next: events behind the
// watcher's cursor that its quick filter keeps, and events it lost. After
// Close it reports what waited when the watcher closed, and no longer
// changes: the records appended for other watchers since are not its.
func (w *Watcher) Backlog() (queued int, dropped uint64) {
	return w.h.log.backlog(w)
}

// Close unregisters the watcher; a Next in progress returns ErrClosed.
func (w *Watcher) Close() {
	if w.h.log.leave(w) {
		w.h.mu.Lock()
		w.h.watching--
		last := w.h.watching == 0
		w.h.mu.Unlock()
		if last {
			// An idle dispatcher has no ticker to notice: wake it to let
			// go of its buffers.
			w.h.wake()
		}
	}
	w.signal()
}
