package proxy

import (
	"context"
	"errors"
	"net"
	"sync"
	"syscall"
	"time"
)

// spares keeps a few server connections dialled ahead of the clients that
// will need them. A client that opens a connection per operation (the
// usual way to use distcache) otherwise waits for the proxy's own connect
// to the server on every operation: on loopback that is most of what a
// naive proxy adds. One filler goroutine at a time tops the pool up; a
// spare is checked for life before it is handed out, so a server restart
// costs a fresh dial, not a failed client.
type spares struct {
	stats   *counters
	target  *target
	want    int
	timeout time.Duration
	ctx     context.Context
	wg      *sync.WaitGroup

	mu      sync.Mutex
	conns   []net.Conn
	filling bool
	closed  bool
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

func newSpares(ctx context.Context, wg *sync.WaitGroup, t *target, want int, timeout time.Duration, st *counters) *spares {
	return &spares{target: t, want: want, timeout: timeout, ctx: ctx, wg: wg, stats: st}
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

// takeConn returns a live spare connection or nil, and starts a refill.
func (s *spares) takeConn() net.Conn {
	if s == nil || s.want == 0 {
		return nil
	}
	for {
		s.mu.Lock()
		if len(s.conns) == 0 {
			s.refillLocked()
			s.mu.Unlock()
			return nil
		}
		c := s.conns[len(s.conns)-1]
		s.conns = s.conns[:len(s.conns)-1]
		s.refillLocked()
		s.mu.Unlock()
		if alive(c) {
			return c
		}
		c.Close()
		dataFDs.Add(-1)
	}
}

// refillLocked starts the filler if the pool is short and none runs.
func (s *spares) refillLocked() {
	if s.closed || s.filling || len(s.conns) >= s.want || time.Since(s.failedAt) < s.retry {
		return
	}
	s.filling = true
	s.wg.Add(1)
	go s.fill()
}

func (s *spares) fill() {
	defer s.wg.Done()
	for {
		s.mu.Lock()
		if s.closed || len(s.conns) >= s.want {
			s.filling = false
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
			s.mu.Unlock()
			return
		}
		c, err := s.target.dial(s.ctx, s.timeout, s.stats)
		s.mu.Lock()
		if err != nil {
			dataFDs.Add(-1)
			s.failedAt, s.retry = time.Now(), nextRetry(s.retry)
			s.filling = false
			s.mu.Unlock()
			return
		}
		s.retry = 0
		if s.closed {
			s.mu.Unlock()
			c.Close()
			dataFDs.Add(-1)
			return
		}
		s.conns = append(s.conns, c)
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
	conns := s.conns
	s.conns = nil
	s.mu.Unlock()
	for _, c := range conns {
		c.Close()
		dataFDs.Add(-1)
	}
}

// alive reports whether an idle connection is still open: a peek that
// would block means nothing arrived, which is what an idle distcache server
// connection looks like. End of stream, an error or unsolicited bytes all
// make the spare unusable.
func alive(c net.Conn) bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return true
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	ok = false
	var b [1]byte
	err = rc.Read(func(fd uintptr) bool {
		_, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		ok = errors.Is(err, syscall.EAGAIN)
		return true
	})
	return err == nil && ok
}
