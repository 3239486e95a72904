package proxy

import (
	"time"

	"golang.org/x/sys/unix"
)

// lsparesSet is a proxy's spares on the epoll engine: a pool on every
// loop, indexed by the loop's idx, so a connection takes a spare on its
// own loop's thread. Each pool has its own share of the proxy's spares
// (spareShare) and its own back-off.
type lsparesSet struct {
	pools []*lspares
}

func (set *lsparesSet) start() {
	for _, sp := range set.pools {
		sp.start()
	}
}

func (set *lsparesSet) close() {
	for _, sp := range set.pools {
		sp.close()
	}
}

// lspares is the epoll engine's pool of spare server connections on one
// loop, owned by that loop. Ready spares stay watched: a spare the server closes
// (or writes to, which a distcache server never does unasked) is closed
// and replaced at once, never handed to a client.
type lspares struct {
	l    *loop
	p    *Proxy
	s    *settings
	want int

	ready []*lspare
	// dialing are the spares whose connect is under way.
	dialing   []*lspare
	resolving bool
	closed    bool
	// After a failed dial (or a loop) refills wait retry, doubling up to
	// spareRetryMax, so a server that is down is not hammered.
	retry   time.Duration
	nextTry int64
	tm      timerEntry
	// young counts the spares in a row that their server closed young
	// (see spareYoung).
	young int
}

type lspare struct {
	sp         *lspares
	fd         int
	gen        uint32
	connecting bool
	tm         timerEntry // the dial deadline
	upAt       int64      // when it connected
}

// start fills the pool on its loop. The pool counts in the proxy's wait
// group from here until it is shut, so that Stop returns once every
// spare's descriptor is closed and counted back (DataFDs).
func (sp *lspares) start() {
	sp.p.wg.Add(1)
	sp.l.post(sp.fill)
}

func (sp *lspares) close() { sp.l.post(sp.shut) }

// shut closes the pool's spares, ready or still connecting.
func (sp *lspares) shut() {
	sp.closed = true
	sp.l.timers.remove(&sp.tm)
	for _, s := range sp.ready {
		s.release()
	}
	for _, s := range sp.dialing {
		s.connecting = false
		s.release()
	}
	sp.ready, sp.dialing = nil, nil
	sp.p.wg.Done()
}

// connected takes s off the list of spares still connecting.
func (sp *lspares) connected(s *lspare) {
	s.connecting = false
	for i, d := range sp.dialing {
		if d == s {
			sp.dialing = append(sp.dialing[:i], sp.dialing[i+1:]...)
			return
		}
	}
}

// take hands out a ready spare's descriptor, or -1. The descriptor stays
// registered, watched for input, level-triggered. The caller refills the
// pool (fill) once its client's first request is on its way, so the new
// dial is not in that request's path, and a client that never speaks
// (a spare of another daemon whose proxy leads here) costs no new dial.
func (sp *lspares) take() int {
	if sp.closed || len(sp.ready) == 0 {
		return -1
	}
	s := sp.ready[len(sp.ready)-1]
	sp.ready[len(sp.ready)-1] = nil
	sp.ready = sp.ready[:len(sp.ready)-1]
	fd := s.fd
	s.fd = -1
	sp.young = 0
	return fd
}

// resolved carries on filling once the server's name is looked up.
func (sp *lspares) resolved(err error) {
	sp.resolving = false
	if err != nil {
		sp.failed(time.Now().UnixNano())
		return
	}
	sp.fill()
}

// fill dials until the pool is full, unless it is backing off.
func (sp *lspares) fill() {
	now := sp.l.now.UnixNano()
	if sp.l.now.IsZero() {
		now = time.Now().UnixNano()
	}
	for !sp.closed && !sp.resolving && len(sp.ready)+len(sp.dialing) < sp.want {
		if now < sp.nextTry {
			sp.l.timers.schedule(&sp.tm, sp.nextTry)
			return
		}
		if !fdsAvailable(1) {
			sp.backoff(now, spareRetryMin)
			return
		}
		if wait := sp.p.refills.take(now); wait > 0 {
			// The proxy's refill bound (refillRate): try again when a
			// token is due, without counting a failure.
			sp.l.timers.schedule(&sp.tm, now+int64(wait))
			return
		}
		cands, err := sp.l.dialAddrs(sp.p, sp.s.server, sp.s.opts.DialTimeout, sp)
		if err != nil {
			sp.failed(now)
			return
		}
		if cands == nil {
			sp.resolving = true // until resolved
			return
		}
		// Counted before the socket exists, in one step with the check
		// against the bound (connectSocket).
		if !reserveFDs(1) {
			sp.backoff(now, spareRetryMin)
			return
		}
		// Spares try the first candidate only; a client's dial walks
		// them all and reorders them for next time.
		fd, done, err := connectSocket(sp.l, cands[0])
		if err != nil {
			dataFDs.Add(-1)
			sp.failed(now)
			return
		}
		s := &lspare{sp: sp, fd: fd, connecting: !done}
		s.tm.owner = s
		// A connected spare is watched the way a connection's server side
		// is (level-triggered input), so a client takes it over without a
		// system call; one still connecting waits for the writable edge.
		events := uint32(unix.EPOLLIN)
		if !done {
			events = unix.EPOLLOUT | unix.EPOLLET
		}
		gen, err := sp.l.add(fd, s, events)
		if err != nil {
			unix.Close(fd)
			dataFDs.Add(-1)
			sp.failed(now)
			return
		}
		s.gen = gen
		if done {
			s.upAt = now
			sp.p.stats.spareDials.Add(1)
			sp.ready = append(sp.ready, s)
			sp.retry = 0
			continue
		}
		sp.dialing = append(sp.dialing, s)
		sp.l.timers.schedule(&s.tm, now+int64(sp.s.opts.DialTimeout))
	}
}

// failed counts a failed dial and backs the refills off after a failure
// in a row.
func (sp *lspares) failed(now int64) {
	sp.p.stats.spareFailures.Add(1)
	sp.backoff(now, nextRetry(sp.retry))
}

func (sp *lspares) backoff(now int64, d time.Duration) {
	sp.retry = d
	sp.nextTry = now + int64(d)
	if !sp.closed {
		sp.l.timers.schedule(&sp.tm, sp.nextTry)
	}
}

func (sp *lspares) onTimer(int64) { sp.fill() }

func (s *lspare) onEvent(ev uint32) {
	sp := s.sp
	if s.fd < 0 {
		return
	}
	if s.connecting {
		sp.connected(s)
		sp.l.timers.remove(&s.tm)
		if err := connectOutcome(s.fd, ev); err != nil || sp.closed {
			s.release()
			if !sp.closed {
				sp.failed(sp.l.now.UnixNano())
			}
			return
		}
		gen, err := sp.l.rebind(s.fd, s, unix.EPOLLIN)
		s.gen = gen
		if err != nil {
			s.release()
			sp.failed(sp.l.now.UnixNano())
			return
		}
		s.upAt = sp.l.now.UnixNano()
		sp.p.stats.spareDials.Add(1)
		sp.ready = append(sp.ready, s)
		sp.retry = 0
		return
	}
	if ev&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) == 0 {
		// Only "writable": the edge every new socket reports once (a
		// unix connect completes before it is registered).
		return
	}
	// A ready spare heard from its server: end of stream, an error or
	// bytes nobody asked for. It is useless; replace it.
	for i, r := range sp.ready {
		if r == s {
			sp.ready = append(sp.ready[:i], sp.ready[i+1:]...)
			break
		}
	}
	s.release()
	sp.p.stats.sparesLost.Add(1)
	now := sp.l.now.UnixNano()
	if wait := sp.afterDeath(now - s.upAt); wait > 0 {
		sp.backoff(now, wait)
		return
	}
	sp.fill()
}

// afterDeath counts a spare that lived age and returns how long to wait
// before refilling: 0 (at once), or a back-off once more spares in a row
// than the pool holds died young.
func (sp *lspares) afterDeath(age int64) time.Duration {
	sp.young = countYoung(sp.young, time.Duration(age))
	return youngBackoff(sp.young, sp.want)
}

// onTimer is the dial deadline.
func (s *lspare) onTimer(now int64) {
	if !s.connecting || s.fd < 0 {
		return
	}
	s.sp.connected(s)
	s.release()
	s.sp.failed(now)
}

func (s *lspare) release() {
	s.sp.l.timers.remove(&s.tm)
	if s.fd >= 0 {
		s.sp.l.release(s.fd)
		dataFDs.Add(-1)
		s.fd = -1
	}
}
