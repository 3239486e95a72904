package cacheserver

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/snoopd/snoopd/distcache"
	"github.com/snoopd/snoopd/internal/waitgroup"
)

// Config configures a Server and the Cache it owns. The zero value is
// ready to use.
type Config struct {
	// MaxSessions is the most sessions stored at once; 0 means
	// DefaultMaxSessions. See Cache for what happens when it is reached.
	MaxSessions int
	// Now is the clock that session expiry is measured by; nil means
	// time.Now. Tests set it to move time forward without sleeping. The
	// server reads it once per chunk of input it reads from a connection,
	// so pipelined requests that arrived together are judged at the same
	// instant.
	Now func() time.Time
	// Logger receives connection events and protocol errors at debug
	// level and listener failures at error level; nil discards them.
	// Session ids and data are never logged.
	Logger *slog.Logger
}

// Stats is a snapshot of a Server's counters.
type Stats struct {
	ConnectionsTotal  uint64 // connections accepted since New
	ConnectionsActive int64  // connections open now
	// Requests counts the requests answered, indexed by distcache.Op.
	Requests [distcache.NumOps]uint64
	GetHits  uint64 // GET requests answered with session data
	// CorruptCloses counts connections closed because they broke the
	// protocol (a *distcache.ProtocolError).
	CorruptCloses uint64
	// CutCloses counts connections whose stream ended inside a message.
	CutCloses uint64
	Sessions  int // unexpired sessions stored now
}

// flushAt bounds the responses a connection buffers before writing. A
// pipelined batch is normally answered with one write when the reader runs
// out of input, but a batch of GETs for large sessions would otherwise
// grow the buffer to megabytes; flushing at 32 KiB keeps it near 64 KiB
// while still costing one write per many small responses.
const flushAt = 32 << 10

// errDraining ends a connection that Shutdown asked to stop once it has
// answered what it read.
var errDraining = errors.New("cacheserver: server shutting down")

// Server is a distcache session cache server: it accepts connections on
// any number of listeners and answers the requests on each, in order, from
// one Cache.
//
// Each connection has one goroutine. It reads whole messages with a
// distcache.Reader, appends each response to a per-connection buffer and
// writes the buffer only when the reader needs more input, so a pipelined
// batch that fits the reader's buffer costs one read and one write, and no
// allocations in steady state.
// A connection that breaks the protocol is closed, as the reference server
// does, after the answers to the requests before the fault are written.
type Server struct {
	cache *Cache
	log   *slog.Logger
	stats counters

	// draining is set by Shutdown; connection goroutines read it without
	// the lock on their way to a read.
	draining atomic.Bool

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	conns     map[*conn]struct{}
	addr      distcache.Addr
	stopped   bool          // Shutdown or Close began: accept nothing more
	stopping  chan struct{} // closed when stopped is set, to end accept backoff
	// wg counts every goroutine the server runs, and Serve calls, so that
	// Close can wait for all of them. Add is only called with mu held and
	// stopped false, so no Add can race with the Wait in Close.
	wg waitgroup.Group
}

// counters are the atomics behind Stats. Requests and hits are added by
// connections once per batch rather than once per request, so many
// connections do not contend on the same cache line for every request.
type counters struct {
	connsTotal  atomic.Uint64
	connsActive atomic.Int64
	requests    [distcache.NumOps]atomic.Uint64
	getHits     atomic.Uint64
	corrupt     atomic.Uint64
	cut         atomic.Uint64
}

// New returns a server with an empty cache, ready to Serve.
func New(cfg Config) *Server {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{
		cache:     NewCache(cfg),
		log:       log,
		listeners: make(map[net.Listener]struct{}),
		conns:     make(map[*conn]struct{}),
		stopping:  make(chan struct{}),
	}
}

// Start listens on addr (see Listen) and serves it in the background with
// a new server. Errors in listening, such as an address in use, are
// returned here rather than from the background goroutine. Close stops the
// server; for a unix socket it also removes the socket file.
func Start(addr distcache.Addr, cfg Config) (*Server, error) {
	l, err := Listen(addr)
	if err != nil {
		return nil, err
	}
	if ta, ok := l.Addr().(*net.TCPAddr); ok {
		// Keep the host as given (a name, or none for every interface)
		// and fill in the port the OS chose for port 0.
		addr = addr.WithPort(ta.Port)
	}
	s := New(cfg)
	s.addListener(l, addr) // cannot fail: nobody else has s yet
	go s.serve(l)
	return s, nil
}

// Cache returns the server's session store, for tests and tools that
// want to inspect or seed it directly.
func (s *Server) Cache() *Cache { return s.cache }

// Addr returns the address the server listens on: the one Start opened,
// with port 0 resolved, or else that of the first listener passed to
// Serve. It is the zero Addr before either.
func (s *Server) Addr() distcache.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addr
}

// Serve accepts connections on l and serves each in its own goroutine. It
// blocks until l fails or the server is closed, and always closes l before
// returning. After Close or Shutdown it returns nil, including when called
// on an already stopped server; otherwise it returns the error that broke
// the accept loop. Transient accept errors, such as running out of file
// descriptors, are retried with a growing delay.
func (s *Server) Serve(l net.Listener) error {
	var addr distcache.Addr
	if a, err := distcache.AddrFromNet(l.Addr()); err == nil {
		addr = a
	}
	if !s.addListener(l, addr) {
		l.Close()
		return nil
	}
	return s.serve(l)
}

// addListener registers l, and counts the serve loop that will run on it,
// unless the server has stopped.
func (s *Server) addListener(l net.Listener, addr distcache.Addr) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return false
	}
	s.listeners[l] = struct{}{}
	if s.addr.IsZero() {
		s.addr = addr
	}
	s.wg.Add(1)
	return true
}

// serve is the accept loop on a registered listener.
func (s *Server) serve(l net.Listener) error {
	defer s.wg.Done()
	defer s.removeListener(l)
	var delay time.Duration
	for {
		nc, err := l.Accept()
		if err != nil {
			if s.isStopped() {
				return nil
			}
			if !isTemporary(err) {
				s.log.Error("cacheserver: accept failed; no longer serving this listener",
					"addr", l.Addr().String(), "err", err)
				return err
			}
			// Back off as net/http does, so a process out of file
			// descriptors does not spin, but stop waiting on Close.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			s.log.Warn("cacheserver: accept failed; retrying", "err", err, "delay", delay)
			t := time.NewTimer(delay)
			select {
			case <-t.C:
			case <-s.stopping:
				t.Stop()
				return nil
			}
			continue
		}
		delay = 0
		s.startConn(nc)
	}
}

// isTemporary reports whether an accept error may go away by itself.
func isTemporary(err error) bool {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	for _, e := range []error{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM,
		syscall.ECONNABORTED, syscall.ECONNRESET} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

func (s *Server) isStopped() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stopped
}

// removeListener forgets l and closes it, unless stop already did both.
func (s *Server) removeListener(l net.Listener) {
	s.mu.Lock()
	_, ok := s.listeners[l]
	delete(s.listeners, l)
	s.mu.Unlock()
	if ok {
		l.Close()
	}
}

// startConn registers nc and starts its goroutine, or closes nc if the
// server stopped meanwhile.
func (s *Server) startConn(nc net.Conn) {
	c := &conn{srv: s, nc: nc}
	// The Reader reads through c, which flushes pending responses right
	// before every read of the network.
	c.r = distcache.NewReader(c, distcache.ClientToServer)
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		nc.Close()
		return
	}
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	s.stats.connsTotal.Add(1)
	s.stats.connsActive.Add(1)
	s.log.Debug("cacheserver: connection opened", "remote", remoteString(nc))
	go c.serve()
}

func (s *Server) removeConn(c *conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

// stopLocked stops accepting: it marks the server stopped and closes every
// listener. It returns the errors of closing them. s.mu must be held.
func (s *Server) stopLocked() error {
	if s.stopped {
		return nil
	}
	s.stopped = true
	close(s.stopping)
	var errs []error
	for l := range s.listeners {
		delete(s.listeners, l)
		if err := l.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Close stops the server at once: it closes every listener and every
// connection, then waits for all goroutines the server started, and for
// running Serve calls, to return. Responses not yet written are lost; use
// Shutdown to finish them first. Close is safe to call more than once and
// concurrently with Shutdown; it returns an error only if closing a
// listener failed.
func (s *Server) Close() error {
	s.mu.Lock()
	err := s.stopLocked()
	for c := range s.conns {
		c.nc.Close()
	}
	s.mu.Unlock()
	s.wg.Wait(context.Background())
	return err
}

// Shutdown stops the server gracefully: it closes the listeners, lets
// every connection write the answers to the requests it has read, and
// closes each connection when it would next wait for input, dropping any
// request that had only partly arrived. If ctx ends first, Shutdown closes
// what is left as Close does and returns ctx.Err(). Either way, every
// goroutine the server started has returned when Shutdown returns.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	err := s.stopLocked()
	s.draining.Store(true)
	for c := range s.conns {
		// Wake connections blocked in a read; conn.Read turns the
		// deadline error into errDraining. Deadlines are used for
		// nothing else, so this cannot clobber one.
		c.nc.SetReadDeadline(time.Unix(1, 0))
	}
	s.mu.Unlock()

	if werr := s.wg.Wait(ctx); werr != nil {
		s.Close()
		return werr
	}
	return err
}

// Stats returns a snapshot of the server's counters. Request counts are
// added once per batch of pipelined requests, before the batch's answers
// are written, so they are exact whenever no answers are pending.
func (s *Server) Stats() Stats {
	st := Stats{
		ConnectionsTotal:  s.stats.connsTotal.Load(),
		ConnectionsActive: s.stats.connsActive.Load(),
		GetHits:           s.stats.getHits.Load(),
		CorruptCloses:     s.stats.corrupt.Load(),
		CutCloses:         s.stats.cut.Load(),
		Sessions:          s.cache.Len(),
	}
	for i := range st.Requests {
		st.Requests[i] = s.stats.requests[i].Load()
	}
	return st
}

// remoteString names a connection's peer for logs. Unix clients are
// unnamed (Go shows them as "" or "@"), so their connections are named by
// the socket they came in on.
func remoteString(nc net.Conn) string {
	if a := nc.RemoteAddr(); a != nil && a.String() != "" && a.String() != "@" {
		return a.String()
	}
	if a := nc.LocalAddr(); a != nil {
		return "unix client of " + a.String()
	}
	return "unknown"
}
