package proxy

import (
	"context"
	"errors"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/snoopd/snoopd/internal/waitgroup"
)

// spares keeps a few server connections dialled ahead of the clients that
// will need them. A client that opens a connection per operation (the
// usual way to use distcache) otherwise waits for the proxy's own connect
// to the server on every operation: on loopback that is most of what a
// naive proxy adds. One filler goroutine at a time tops the pool up. Each
// spare has a goroutine parked in the runtime's poller until the spare is
// readable: a spare the server closes (or writes to, which a distcache
// server never does unasked) is closed and replaced at once, and checked
// again when it is handed out, so a server restart costs a fresh dial,
// not a failed client.
type spares struct {
	stats   *counters
	target  *target
	want    int
	timeout time.Duration
	ctx     context.Context
	wg      *waitgroup.Group
	bucket  *dialBucket // the proxy's bound on refills

	mu      sync.Mutex
	conns   []*gspare
	filling bool
	closed  bool
	// young counts the spares in a row that their server closed young
	// (see spareYoung); after too many, refills wait until holdUntil.
	young     int
	holdUntil time.Time
	// timer refills once a back-off has passed, with no client needed.
	timer *time.Timer
	// failedAt and retry back off refilling after a failed dial, so a
	// server that is down is not hammered by the proxy on top of its
	// clients; retry doubles with each failure in a row, up to
	// spareRetryMax.
	failedAt time.Time
	retry    time.Duration
}

// Spare refills back off from spareRetryMin, doubling, to spareRetryMax.
const (
	spareRetryMin = time.Second
	spareRetryMax = time.Minute
)

// nextRetry is the back-off after one more failure in a row.
func nextRetry(d time.Duration) time.Duration {
	return min(max(2*d, spareRetryMin), spareRetryMax)
}

// spareYoung is how long a spare must have lived for its server closing
// it to be an ordinary end (a restart, an idle timeout) that is replaced
// at once. A server that closes spares younger than this is turning the
// proxy away in its own way (at its connection limit, or not a distcache
// server at all): redialling at once would be a dial loop at full speed
// against it (about 20,000 dials a second from snoopd on loopback), so
// once more spares in a row than the pool holds die young, refills back
// off as after failed dials. A spare handed to a client, or one that dies
// older, ends the row.
const spareYoung = time.Second

// countYoung is the number of young deaths in a row after a spare that
// lived age died, given n before it.
func countYoung(n int, age time.Duration) int {
	if age >= spareYoung {
		return 0
	}
	return n + 1
}

// youngBackoff is the wait before refilling a pool of want spares after n
// young deaths in a row: none for the first want (one pool's worth, as
// when a server restarts just after the pool filled), then from
// spareRetryMin doubling to spareRetryMax.
func youngBackoff(n, want int) time.Duration {
	if n <= want {
		return 0
	}
	return min(spareRetryMin<<min(n-want-1, 7), spareRetryMax)
}

// Refills of a proxy's spares are bounded by a token bucket shared by its
// pools (all its loops): refillRate dials a second, in bursts of up to
// refillBurst. A refill follows a client that took a spare and spoke, so
// in ordinary use the rate is the proxy's rate of new clients, and the
// bound is about what one proxy takes in all: on a two-core machine
// `dcload -persistent=false -conns 32 -ops 40000` through one proxy of
// the epoll engine made 11,431 connections a second, one worker 5,018.
// Past the bound clients dial their own server, as with --spares 0:
// slower by a connect, never refused. What it stops is the proxy's own
// dials running away when something turns each of them into another
// client (a loop), at the 20,000 a second loopback allows (spareYoung).
// The burst refills pools of up to refillBurst at once after a restart of
// the server.
const (
	refillRate  = 10000
	refillBurst = 128
)

// dialBucket is a token bucket kept as the time its next token is due
// (the generic cell rate algorithm), so taking one is a compare-and-swap.
type dialBucket struct {
	tat atomic.Int64 // UnixNano when the bucket is full again, or earlier
}

// take takes a token at now (UnixNano) and returns 0, or returns how long
// to wait until one is due, taking nothing.
func (b *dialBucket) take(now int64) time.Duration {
	const interval = int64(time.Second) / refillRate
	for {
		tat := b.tat.Load()
		next := max(tat, now) + interval
		if over := next - now - refillBurst*interval; over > 0 {
			return time.Duration(over)
		}
		if b.tat.CompareAndSwap(tat, next) {
			return 0
		}
	}
}

func newSpares(ctx context.Context, wg *waitgroup.Group, t *target, want int, timeout time.Duration, st *counters, b *dialBucket) *spares {
	return &spares{target: t, want: want, timeout: timeout, ctx: ctx, wg: wg, stats: st, bucket: b}
}

// goSpares returns the goroutine engine's spares of s, or nil.
func (s *settings) goSpares() *spares {
	sp, _ := s.spares.(*spares)
	return sp
}

// start fills the pool ahead of the first client.
func (s *spares) start() {
	if s == nil || s.want == 0 {
		return
	}
	s.mu.Lock()
	s.refillLocked()
	s.mu.Unlock()
}

// takeConn returns a live spare connection or nil. It does not refill:
// the taker calls refill once its client has sent its first bytes, so a
// client that never speaks (one end of a loop of spares dialled into each
// other, across two daemons) costs no new dial.
func (s *spares) takeConn() net.Conn {
	if s == nil || s.want == 0 {
		return nil
	}
	for {
		s.mu.Lock()
		if len(s.conns) == 0 {
			s.mu.Unlock()
			return nil
		}
		g := s.conns[len(s.conns)-1]
		s.conns = s.conns[:len(s.conns)-1]
		s.mu.Unlock()
		// Stop its watcher before the client's traffic can make it
		// readable: a deadline in the past wakes the watcher's wait.
		g.c.SetReadDeadline(time.Unix(1, 0))
		<-g.done
		g.c.SetReadDeadline(time.Time{})
		if alive(g.c) {
			s.mu.Lock()
			s.young = 0
			s.mu.Unlock()
			return g.c
		}
		s.stats.sparesLost.Add(1)
		g.c.Close()
		dataFDs.Add(-1)
	}
}

// refill tops the pool up; a client that spoke calls it.
func (s *spares) refill() {
	if s == nil || s.want == 0 {
		return
	}
	s.mu.Lock()
	s.refillLocked()
	s.mu.Unlock()
}

// gspare is one spare connection of the goroutine engine and its watcher.
type gspare struct {
	c    net.Conn
	upAt time.Time
	done chan struct{} // closed when the watcher has returned
}

// watch waits, parked in the poller, until g is readable: its server
// closed it or wrote to it. Then it takes g out of the pool, closes it and
// refills, unless g was taken meanwhile (its taker checks it) or the pool
// closed it.
func (s *spares) watch(g *gspare) {
	defer s.wg.Done()
	defer close(g.done)
	if !waitReadable(g.c) {
		return
	}
	s.mu.Lock()
	i := slices.Index(s.conns, g)
	if i < 0 {
		s.mu.Unlock()
		return
	}
	s.conns = slices.Delete(s.conns, i, i+1)
	s.stats.sparesLost.Add(1)
	s.young = countYoung(s.young, time.Since(g.upAt))
	s.holdUntil = time.Now().Add(youngBackoff(s.young, s.want))
	s.refillLocked()
	s.mu.Unlock()
	g.c.Close()
	dataFDs.Add(-1)
}

// refillLocked starts the filler if the pool is short and none runs, or,
// while the pool backs off, sets the timer to try again when it ends.
func (s *spares) refillLocked() {
	if s.closed || s.filling || len(s.conns) >= s.want {
		return
	}
	now := time.Now()
	if wait := max(s.failedAt.Add(s.retry).Sub(now), s.holdUntil.Sub(now)); wait > 0 {
		if s.timer == nil {
			s.timer = time.AfterFunc(wait, s.retryFill)
		} else {
			s.timer.Reset(wait)
		}
		return
	}
	s.filling = true
	s.wg.Add(1)
	go s.fill()
}

// retryFill is the back-off timer's refill.
func (s *spares) retryFill() {
	s.mu.Lock()
	s.refillLocked()
	s.mu.Unlock()
}

func (s *spares) fill() {
	defer s.wg.Done()
	for {
		s.mu.Lock()
		if s.closed || len(s.conns) >= s.want || time.Now().Before(s.holdUntil) {
			s.filling = false
			s.refillLocked() // sets the timer if held
			s.mu.Unlock()
			return
		}
		if wait := s.bucket.take(time.Now().UnixNano()); wait > 0 {
			s.holdUntil = time.Now().Add(wait)
			s.filling = false
			s.refillLocked() // sets the timer
			s.mu.Unlock()
			return
		}
		s.mu.Unlock()
		// The spare's descriptor is counted before it is dialled, like
		// a client's server (admitGoroutines).
		if !reserveFDs(1) {
			s.mu.Lock()
			s.failedAt, s.retry = time.Now(), spareRetryMin
			s.filling = false
			s.refillLocked()
			s.mu.Unlock()
			return
		}
		c, err := s.target.dial(s.ctx, s.timeout, s.stats)
		s.mu.Lock()
		if err != nil {
			dataFDs.Add(-1)
			s.stats.spareFailures.Add(1)
			s.failedAt, s.retry = time.Now(), nextRetry(s.retry)
			s.filling = false
			s.refillLocked()
			s.mu.Unlock()
			return
		}
		s.retry = 0
		s.stats.spareDials.Add(1)
		if s.closed {
			s.mu.Unlock()
			c.Close()
			dataFDs.Add(-1)
			return
		}
		g := &gspare{c: c, upAt: time.Now(), done: make(chan struct{})}
		s.conns = append(s.conns, g)
		s.wg.Add(1)
		go s.watch(g)
		s.mu.Unlock()
	}
}

// close closes the spares and stops refilling; a filler in flight closes
// what it dials.
func (s *spares) close() {
	if s == nil {
		return
	}
	s.mu.Lock()
	s.closed = true
	if s.timer != nil {
		s.timer.Stop()
	}
	conns := s.conns
	s.conns = nil
	s.mu.Unlock()
	for _, g := range conns {
		// Closing wakes its watcher, which finds it gone from the pool.
		g.c.Close()
		dataFDs.Add(-1)
	}
}

// waitReadable blocks until c is readable (end of stream, an error or
// bytes; none are consumed) and reports true, or returns false once c's
// read deadline passes or c is closed.
func waitReadable(c net.Conn) bool {
	readable, _, err := peek(c, true)
	return err == nil && readable
}

// alive reports whether an idle connection is still open: a peek that
// would block means nothing arrived, which is what an idle distcache server
// connection looks like. End of stream, an error or unsolicited bytes all
// make the spare unusable.
func alive(c net.Conn) bool {
	readable, _, err := peek(c, false)
	return err == nil && !readable
}

// peekData waits, parked in the runtime's poller, until c is readable
// and reports whether it has bytes (rather than an end of stream or an
// error), consuming none; err is set when c's read deadline passes or c
// is closed. A connection that is not a socket has bytes, as far as it
// can tell.
func peekData(c net.Conn) (data bool, err error) {
	if _, ok := c.(syscall.Conn); !ok {
		return true, nil
	}
	_, data, err = peek(c, true)
	return data && err == nil, err
}

// peek looks at c's socket without consuming anything: it reports whether
// it is readable (end of stream, an error or bytes), and whether what is
// there is bytes, waiting in the runtime's poller until it is readable if
// wait. A connection that is not a socket is never readable.
func peek(c net.Conn, wait bool) (readable, data bool, err error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false, false, nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false, false, err
	}
	var b [1]byte
	err = rc.Read(func(fd uintptr) bool {
		n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		readable = !errors.Is(err, syscall.EAGAIN)
		data = readable && err == nil && n > 0
		return readable || !wait // false parks in the poller
	})
	return readable, data, err
}
