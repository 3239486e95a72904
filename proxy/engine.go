package proxy

import (
	"fmt"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/snoopd/snoopd/distcache"
)

// Engine serves the connections of the proxies that use it. Two exist: the
// epoll engine (Linux), event loops that each own both sockets of a
// proxied connection and among which every proxy's connections are spread,
// and the portable goroutine engine, two goroutines per connection. One
// engine is shared by all proxies of a daemon.
type Engine interface {
	// Name is "epoll" or "goroutines".
	Name() string
	// Loops is the number of event loops; 0 for the goroutine engine.
	Loops() int
	// Close stops the engine. The proxies using it must be stopped first.
	Close() error

	// listen opens a proxy's listeners on addr: one, or for the epoll
	// engine on a TCP address one per loop, all bound to the same port.
	// The first is the one whose address the proxy reports.
	listen(addr distcache.Addr, mode os.FileMode) ([]net.Listener, error)
	// serve starts accepting p's clients on lns (what listen returned);
	// stop ends it, closes them and closes done once no accept can happen
	// any more. On an error the caller closes lns.
	serve(p *Proxy, lns []net.Listener, done chan struct{}) (stop func(), err error)
	// newSpares makes a pool of spare server connections for s.
	newSpares(p *Proxy, s *settings) sparePool
}

// Engine names.
const (
	EngineEpoll      = "epoll"
	EngineGoroutines = "goroutines"
)

// NewEngine returns the engine called name ("" for DefaultEngine) with the
// given number of event loops (0 for DefaultLoops; ignored by the goroutine
// engine).
func NewEngine(name string, loops int) (Engine, error) {
	if name == "" {
		name = DefaultEngine
	}
	if loops < 0 {
		return nil, fmt.Errorf("%w: %d event loops: want 1 or more (0 for the default)", ErrInvalidConfig, loops)
	}
	switch name {
	case EngineGoroutines:
		return goroutineEngine{}, nil
	case EngineEpoll:
		if loops == 0 {
			loops = DefaultLoops()
		}
		return newEpollEngine(loops)
	}
	return nil, fmt.Errorf("%w: unknown engine %q (want %s or %s)", ErrInvalidConfig, name, EngineEpoll, EngineGoroutines)
}

// ownedEngine is the engine of a proxy made without one (Config.Engine
// nil): DefaultEngine, the one snoopd runs, made when the proxy first
// listens and closed when it stops. A proxy that never listens costs no
// event loops.
type ownedEngine struct {
	mu  sync.Mutex
	eng Engine // nil until the first listen, and after Close
}

func (o *ownedEngine) Name() string { return DefaultEngine }

func (o *ownedEngine) Loops() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.eng == nil {
		return 0
	}
	return o.eng.Loops()
}

func (o *ownedEngine) Close() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.eng == nil {
		return nil
	}
	err := o.eng.Close()
	o.eng = nil
	return err
}

// made returns the engine, making it the first time.
func (o *ownedEngine) made() (Engine, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.eng == nil {
		eng, err := NewEngine(DefaultEngine, 0)
		if err != nil {
			return nil, err
		}
		o.eng = eng
	}
	return o.eng, nil
}

func (o *ownedEngine) listen(addr distcache.Addr, mode os.FileMode) ([]net.Listener, error) {
	eng, err := o.made()
	if err != nil {
		return nil, err
	}
	return eng.listen(addr, mode)
}

func (o *ownedEngine) serve(p *Proxy, lns []net.Listener, done chan struct{}) (func(), error) {
	eng, err := o.made()
	if err != nil {
		return nil, err
	}
	return eng.serve(p, lns, done)
}

func (o *ownedEngine) newSpares(p *Proxy, s *settings) sparePool {
	eng, err := o.made()
	if err != nil {
		return nil
	}
	return eng.newSpares(p, s)
}

// DefaultLoops is the epoll engine's number of loops when none is asked
// for: one per CPU the Go scheduler may run on (runtime.GOMAXPROCS as the
// process started, which follows its CPU affinity and cgroup quota,
// before snoopd raises it to WantProcs). Every proxy's connections are
// spread over all loops, so one busy proxy can use every core;
// docs/benchmarks.md ("One proxy over several loops") has the figures.
func DefaultLoops() int { return startProcs }

// startProcs is GOMAXPROCS when the process started.
var startProcs = runtime.GOMAXPROCS(0)

// RawWaits reports whether the epoll engine's loops, n of them, wait in
// epoll_wait holding their P (see loop.wait): when GOMAXPROCS leaves at
// least one P for the rest of the process, unless SNOOPD_EPOLL_WAIT is
// "runtime". Without a spare P a loop that kept its P while waiting
// would starve the rest of the process. WantProcs says what to set
// GOMAXPROCS to.
func RawWaits(n int) bool {
	return runtime.GOMAXPROCS(0) > n && os.Getenv("SNOOPD_EPOLL_WAIT") != "runtime"
}

// WantProcs is the GOMAXPROCS that serves n event loops best: one P per
// loop, which holds it while it waits for its sockets, and one for
// everything else (the API, the event pipeline, the collector). A
// process that runs the epoll engine sets it before making the engine.
func WantProcs(n int) int { return n + 1 }

// goroutineEngine is the portable engine: two goroutines per connection,
// blocking reads and writes through the runtime's poller.
type goroutineEngine struct{}

func (goroutineEngine) Name() string { return EngineGoroutines }
func (goroutineEngine) Loops() int   { return 0 }
func (goroutineEngine) Close() error { return nil }

func (goroutineEngine) listen(addr distcache.Addr, mode os.FileMode) ([]net.Listener, error) {
	ln, err := Listen(addr, mode)
	if err != nil {
		return nil, err
	}
	return []net.Listener{ln}, nil
}

// serve accepts on the one listener listen opened; the runtime's poller
// already spreads the connections' goroutines over every core.
func (goroutineEngine) serve(p *Proxy, lns []net.Listener, done chan struct{}) (func(), error) {
	ln := lns[0]
	p.wg.Add(1)
	go p.serveGoroutines(ln, done)
	return func() { ln.Close() }, nil
}

func (goroutineEngine) newSpares(p *Proxy, s *settings) sparePool {
	return newSpares(p.ctx, &p.wg, s.server, s.opts.Spares, s.opts.DialTimeout, &p.stats, &p.refills)
}

// dataFDs counts the file descriptors the data path holds (clients,
// servers, spares) in this process; fdLimit, when positive, is the most it
// may hold, so the control plane always has descriptors left.
var dataFDs, fdLimit atomic.Int64

// SetFDLimit bounds the file descriptors all proxies of this process may
// hold together; 0 removes the bound. A daemon sets it a reserve below its
// RLIMIT_NOFILE, so that its control API answers while the data path is
// at its limit: clients over the bound are accepted and closed at once,
// and counted as refused.
func SetFDLimit(n int64) { fdLimit.Store(n) }

// DataFDs returns the number of file descriptors the data path holds.
func DataFDs() int64 { return dataFDs.Load() }

// fdsAvailable reports whether n more data-path descriptors fit under the
// bound.
func fdsAvailable(n int64) bool {
	lim := fdLimit.Load()
	return lim <= 0 || dataFDs.Load()+n <= lim
}

// reserveFDs counts n more data-path descriptors if they fit under the
// bound, in one step, so that callers on different goroutines cannot
// together pass it.
func reserveFDs(n int64) bool {
	lim := fdLimit.Load()
	if lim <= 0 {
		dataFDs.Add(n)
		return true
	}
	for {
		cur := dataFDs.Load()
		if cur+n > lim {
			return false
		}
		if dataFDs.CompareAndSwap(cur, cur+n) {
			return true
		}
	}
}
