package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/snoopd/snoopd/distcache"
	"github.com/snoopd/snoopd/internal/waitgroup"
)

// ErrStopped is returned by operations on a stopped proxy.
var ErrStopped = errors.New("proxy stopped")

// settings are what a new connection copies from its proxy when it is
// accepted; changing them affects only connections accepted later.
type settings struct {
	server  *target
	opts    Options
	buffers *sync.Pool // of *[]byte, opts.BufferSize long (goroutine engine)
	spares  sparePool  // nil while the proxy does not listen
}

// sparePool is an engine's pool of server connections dialled ahead of
// the clients that will use them.
type sparePool interface {
	start()
	close()
}

// newSettings makes the settings for server and opts, reusing old's buffer
// pool when the size allows. Spares are made by the engine.
func newSettings(server *target, opts Options, old *settings) *settings {
	s := &settings{server: server, opts: opts.withDefaults()}
	if old != nil && old.opts.BufferSize == s.opts.BufferSize {
		s.buffers = old.buffers
	} else {
		size := s.opts.BufferSize
		s.buffers = &sync.Pool{New: func() any { b := make([]byte, size); return &b }}
	}
	return s
}

// swapSettings installs settings made by next from the current ones. A
// listening proxy gets a fresh pool of spare server connections for them
// and the old pool is closed.
func (p *Proxy) swapSettings(next func(old *settings) *settings) {
	p.mu.Lock()
	defer p.mu.Unlock()
	old := p.current.Load()
	s := next(old)
	p.installLocked(old, s)
}

// resetSparesLocked gives the current settings a fresh pool of spares if
// the proxy listens, or none if it does not, and closes the old pool.
func (p *Proxy) resetSparesLocked() {
	old := p.current.Load()
	s := *old
	p.installLocked(old, &s)
}

func (p *Proxy) installLocked(old, s *settings) {
	s.spares = nil
	if p.ln != nil && s.opts.Spares > 0 {
		s.spares = p.engine.newSpares(p, s)
	}
	p.current.Store(s)
	if old.spares != nil {
		old.spares.close()
	}
	if s.spares != nil {
		s.spares.start()
	}
}

// Proxy is one named snoop proxy. Its methods are safe for concurrent use.
type Proxy struct {
	name   string
	sink   Sink
	ids    *atomic.Uint64
	stats  counters
	engine Engine

	current atomic.Pointer[settings]
	// faults is nil while the proxy has none: connections read it once
	// per read (see fault.go). faultMu orders SetFaults calls.
	faults  atomic.Pointer[faultSet]
	faultMu sync.Mutex

	// ctx is cancelled by Stop, to abandon dials in progress.
	ctx    context.Context
	cancel context.CancelFunc

	mu        sync.Mutex
	listen    distcache.Addr // as configured; port 0 stays 0
	bound     distcache.Addr // the real address of the last bind
	enabled   bool
	stopped   bool
	ln        net.Listener  // the first of the engine's listeners, for its address
	lnStop    func()        // ends accepting on ln and closes it (the engine's)
	lnDone    chan struct{} // closed when accepting on ln has ended
	conns     map[uint64]*conn
	connsGone *sync.Cond // signalled when conns shrinks

	wg waitgroup.Group // the accept loops and every connection

	acceptErrs  atomic.Int64 // accept failures (out of descriptors), for the log
	lastAcceptW atomic.Int64 // when the last accept failure was logged (UnixNano)

	// echoes, loopAt, loopUnlogged and lastLoopW detect and report a
	// forwarding loop through another daemon (echo.go); refills bounds
	// the rate of spare dials (spares.go).
	echoes       echoTable
	loopAt       atomic.Int64 // when the last echo was closed (UnixNano)
	loopUnlogged atomic.Int64
	lastLoopW    atomic.Int64
	refills      dialBucket
	logf         func(format string, args ...any)
}

// New checks cfg and returns a proxy that is not yet listening; call Start.
// The sink receives every event; nil discards them.
func New(cfg Config, sink Sink) (*Proxy, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if sink == nil {
		sink = Discard
	}
	ids := cfg.ConnIDs
	if ids == nil {
		ids = new(atomic.Uint64)
	}
	eng := cfg.Engine
	if eng == nil {
		eng = &ownedEngine{}
	}
	p := &Proxy{
		name:    cfg.Name,
		sink:    sink,
		ids:     ids,
		engine:  eng,
		listen:  cfg.Listen,
		enabled: cfg.Enabled,
		conns:   map[uint64]*conn{},
		logf:    cfg.Logf,
	}
	p.connsGone = sync.NewCond(&p.mu)
	p.ctx, p.cancel = context.WithCancel(context.Background())
	p.current.Store(newSettings(newTarget(cfg.Server), cfg.Options, nil))
	if err := p.SetFaults(cfg.Faults); err != nil {
		return nil, err
	}
	return p, nil
}

// Name returns the proxy's name.
func (p *Proxy) Name() string { return p.name }

// Start binds the listen address, if the proxy is enabled, and starts
// accepting. A bind error (address in use, permission, bad path) is
// returned here, not later.
func (p *Proxy) Start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped {
		return ErrStopped
	}
	if !p.enabled || p.ln != nil {
		return nil
	}
	return p.bindLocked()
}

func (p *Proxy) bindLocked() error {
	addr := p.listen
	// Re-enabling a proxy that asked for port 0 keeps the port it got, so
	// its clients can find it again.
	if !p.bound.IsZero() && addr.Network() == distcache.NetworkTCP && addr.Port() == 0 {
		addr = p.bound
	}
	lns, err := p.engine.listen(addr, p.current.Load().opts.SocketMode)
	if err != nil {
		return fmt.Errorf("proxy %q: %w", p.name, err)
	}
	closeAll := func() {
		for _, ln := range lns {
			ln.Close()
		}
	}
	ln := lns[0]
	bound, err := distcache.AddrFromNet(ln.Addr())
	if err != nil {
		closeAll()
		return fmt.Errorf("proxy %q: %w", p.name, err)
	}
	if addr.Network() == distcache.NetworkTCP && addr.Host() != "" && bound.Host() != addr.Host() {
		// Keep the host as the user typed it (a name stays a name); only
		// the port is news.
		bound = addr.WithPort(bound.Port())
	}
	done := make(chan struct{})
	stop, err := p.engine.serve(p, lns, done)
	if err != nil {
		closeAll()
		return fmt.Errorf("proxy %q: %w", p.name, err)
	}
	ownListeners.add(ln.Addr(), p)
	p.ln, p.bound, p.lnStop, p.lnDone = ln, bound, stop, done
	p.resetSparesLocked()
	return nil
}

// Addr returns the address the proxy listens on, with a port 0 replaced by
// the real port. Before the first bind it is the configured address.
func (p *Proxy) Addr() distcache.Addr {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.bound.IsZero() {
		return p.bound
	}
	return p.listen
}

// Listening reports whether the proxy currently accepts connections.
func (p *Proxy) Listening() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.ln != nil
}

// Config returns the proxy's current configuration.
func (p *Proxy) Config() Config {
	s := p.current.Load()
	p.mu.Lock()
	defer p.mu.Unlock()
	return Config{Name: p.name, Listen: p.listen, Server: s.server.addr, Enabled: p.enabled, Options: s.opts, ConnIDs: p.ids, Faults: p.Faults()}
}

// Enable starts listening again after Disable.
func (p *Proxy) Enable() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped {
		return ErrStopped
	}
	p.enabled = true
	if p.ln != nil {
		return nil
	}
	if err := p.bindLocked(); err != nil {
		p.enabled = false
		return err
	}
	return nil
}

// Disable closes the listener, so new clients are refused by the system;
// with closeConns it also closes every live connection. It returns once
// the accept loop has ended.
func (p *Proxy) Disable(closeConns bool) {
	p.mu.Lock()
	p.enabled = false
	done := p.closeListenerLocked()
	var victims []*conn
	if closeConns {
		victims = p.connListLocked()
	}
	p.mu.Unlock()
	for _, c := range victims {
		c.kill("proxy disabled")
	}
	if done != nil {
		<-done
	}
}

func (p *Proxy) closeListenerLocked() chan struct{} {
	if p.ln == nil {
		return nil
	}
	ownListeners.remove(p.ln.Addr())
	p.lnStop()
	p.ln, p.lnStop = nil, nil
	p.resetSparesLocked()
	return p.lnDone
}

// SetServer changes the server address for connections accepted from now
// on; live connections keep theirs.
func (p *Proxy) SetServer(addr distcache.Addr) error {
	if addr.IsZero() || !addr.CanConnect() {
		return fmt.Errorf("%w: proxy %q: server address %q cannot be connected to", ErrInvalidConfig, p.name, addr)
	}
	p.swapSettings(func(old *settings) *settings { return newSettings(newTarget(addr), old.opts, old) })
	// A chain through this proxy goes elsewhere now: the targets that
	// checked it must look again.
	ownListeners.version.Add(1)
	return nil
}

// SetOptions changes the options for connections accepted from now on. A
// new socket mode applies at the next bind.
func (p *Proxy) SetOptions(o Options) error {
	if o.MaxConns < 0 || o.OnCorrupt > PassThrough {
		return fmt.Errorf("%w: proxy %q: bad options", ErrInvalidConfig, p.name)
	}
	p.swapSettings(func(old *settings) *settings { return newSettings(old.server, o, old) })
	return nil
}

// Stats returns a snapshot of the proxy's counters.
func (p *Proxy) Stats() Stats {
	s := p.stats.snapshot()
	s.Faults = p.faults.Load().stats()
	return s
}

// ReadStats fills *s as Stats would, reusing its storage, for an exporter
// that reads many proxies in turn into one Stats: the Results maps are
// kept (an op without counts may be left with an empty map) and Faults
// is refilled in place. The latency histograms are read only when latency
// is set; otherwise s.Latency and s.LatencyOf are left as they were, which
// spares copying five 9 KiB histograms per proxy.
func (p *Proxy) ReadStats(s *Stats, latency bool) {
	if s.Results == nil {
		s.Results = map[distcache.Op]map[string]int64{}
	}
	p.stats.read(s, latency)
	s.Faults = p.faults.Load().appendStats(s.Faults[:0])
}

// ConnInfo describes a live connection.
type ConnInfo struct {
	ID           uint64
	Client       string
	Opened       time.Time
	BytesUp      int64
	BytesDown    int64
	Transactions int64
	Pending      int // requests waiting for their response
}

// Conns lists the live connections, oldest first.
func (p *Proxy) Conns() []ConnInfo {
	p.mu.Lock()
	list := p.connListLocked()
	p.mu.Unlock()
	out := make([]ConnInfo, 0, len(list))
	for _, c := range list {
		out = append(out, c.info())
	}
	return out
}

func (p *Proxy) connListLocked() []*conn {
	list := make([]*conn, 0, len(p.conns))
	for _, c := range p.conns {
		list = append(list, c)
	}
	sort.Slice(list, func(i, j int) bool { return list[i].id < list[j].id })
	return list
}

// CloseConn closes one live connection; it reports whether the id was
// found.
func (p *Proxy) CloseConn(id uint64) bool {
	p.mu.Lock()
	c := p.conns[id]
	p.mu.Unlock()
	if c == nil {
		return false
	}
	c.kill("closed by operator")
	return true
}

// Stop closes the listener and every connection and waits until all of the
// proxy's goroutines have ended or ctx is done. A stopped proxy cannot be
// started again.
func (p *Proxy) Stop(ctx context.Context) error {
	p.mu.Lock()
	p.stopped = true
	p.enabled = false
	p.closeListenerLocked()
	// The last listener's end, however it was closed (here, by Disable
	// or by Drain): a unix socket's file is gone once it is closed.
	lnDone := p.lnDone
	victims := p.connListLocked()
	p.mu.Unlock()
	p.cancel()
	for _, c := range victims {
		c.kill("proxy stopped")
	}
	if lnDone != nil {
		select {
		case <-lnDone:
		case <-ctx.Done():
			return fmt.Errorf("proxy %q: stop: %w", p.name, ctx.Err())
		}
	}
	if err := p.wait(ctx); err != nil {
		return err
	}
	if own, ok := p.engine.(*ownedEngine); ok {
		// Nothing runs on it any more.
		own.Close()
	}
	return nil
}

// Drain stops accepting, lets live connections finish on their own until
// ctx is done, then stops the proxy (closing what is left).
func (p *Proxy) Drain(ctx context.Context) error {
	p.mu.Lock()
	p.enabled = false
	p.closeListenerLocked()
	stop := context.AfterFunc(ctx, func() {
		p.mu.Lock()
		p.connsGone.Broadcast()
		p.mu.Unlock()
	})
	for len(p.conns) > 0 && ctx.Err() == nil {
		p.connsGone.Wait()
	}
	p.mu.Unlock()
	stop()
	// The drain deadline has passed (or nothing is left): finish with a
	// short grace for the goroutines to notice their closed sockets.
	stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	return p.Stop(stopCtx)
}

func (p *Proxy) wait(ctx context.Context) error {
	if err := p.wg.Wait(ctx); err != nil {
		return fmt.Errorf("proxy %q: stop: %w", p.name, err)
	}
	return nil
}

// refusal says why a new client must be closed at once, or "": the
// connection limit, or the file descriptors the data path may hold
// (extra is how many more it needs). A client it lets in is counted as
// active at once, in one step with the check against the limit, so that
// loops admitting clients at the same time cannot together pass it;
// register keeps that count, and a caller that refuses the client after
// all gives it back with unadmit.
func (p *Proxy) refusal(s *settings, extra int64) string {
	if max := int64(s.opts.MaxConns); max > 0 {
		for {
			n := p.stats.connsActive.Load()
			if n >= max {
				return fmt.Sprintf("connection limit %d reached", max)
			}
			if p.stats.connsActive.CompareAndSwap(n, n+1) {
				break
			}
		}
	} else {
		p.stats.connsActive.Add(1)
	}
	// The client's descriptor is counted already; its server needs one.
	if !fdsAvailable(extra) {
		p.unadmit()
		return fmt.Sprintf("file descriptor limit reached (%d held by the data path)", dataFDs.Load())
	}
	return ""
}

// unadmit gives back the place refusal counted for a client that is not
// served after all.
func (p *Proxy) unadmit() { p.stats.connsActive.Add(-1) }

// refused counts and reports a client closed at once.
func (p *Proxy) refused(id uint64, clientAddr string, now time.Time, reason string) {
	// Count before reporting, so whoever sees the event sees the count.
	p.stats.connsRefused.Add(1)
	p.sink.Publish(&Event{Kind: KindConnRefused, Time: now, Proxy: p.name, ConnID: id, Client: clientAddr,
		Err: errors.New(reason)})
}

// noteAcceptError logs a failed accept (out of file descriptors, mostly)
// at most once per acceptLogEvery, with the count since the last line.
func (p *Proxy) noteAcceptError(err error) {
	n := p.acceptErrs.Add(1)
	now := time.Now().UnixNano()
	last := p.lastAcceptW.Load()
	if p.logf == nil || now-last < int64(acceptLogEvery) || !p.lastAcceptW.CompareAndSwap(last, now) {
		return
	}
	p.acceptErrs.Add(-n)
	p.logf("proxy %q: accept failed %d times (%v); backing off, clients wait in the listen backlog or are refused", p.name, n, plainErr(err))
}

// acceptLogEvery spaces the log lines about failed accepts.
const acceptLogEvery = 10 * time.Second

// register adds a new connection that refusal let in, unless the proxy
// has stopped (then its place is given back).
func (p *Proxy) register(c *conn) bool {
	p.mu.Lock()
	if p.stopped {
		p.mu.Unlock()
		p.unadmit()
		return false
	}
	p.conns[c.id] = c
	p.wg.Add(1)
	p.mu.Unlock()
	p.stats.connsTotal.Add(1)
	return true
}

// forget removes a finished connection. The engine's own bookkeeping of
// it ends with a wg.Done of its own.
func (p *Proxy) forget(c *conn) {
	c.forgetFirst()
	p.mu.Lock()
	delete(p.conns, c.id)
	p.connsGone.Broadcast()
	p.mu.Unlock()
	p.stats.connsActive.Add(-1)
}

func remoteString(c net.Conn) string {
	if a := c.RemoteAddr(); a != nil && a.String() != "" && a.String() != "@" {
		return a.String()
	}
	// Unix socket clients are usually unnamed.
	return "unix"
}
