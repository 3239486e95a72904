package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/snoopd/snoopd/daemon/hub"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
	"github.com/snoopd/snoopd/internal/version"
	"github.com/snoopd/snoopd/proxy"
)

// Version is the daemon's version, reported by GetDaemonInfo: the one
// version of both binaries (package internal/version, which says how a
// build sets it).
var Version = version.String()

// stopTimeout bounds how long stopping one proxy may take before the
// daemon moves on; its goroutines end when their sockets close.
const stopTimeout = 10 * time.Second

// Config configures a Daemon.
type Config struct {
	// StateDir, if set, is where proxies created through the API are
	// saved, so they survive a restart.
	StateDir string
	// History is the number of recent events kept for history; 0 means
	// hub.DefaultHistory.
	History int
	// QueueSize and WatchBuffer bound the log of encoded events every
	// event stream reads from, in events and in bytes: how far a stream
	// may fall behind before it loses events (hub.Config's LogRecords
	// and LogBytes); 0 means the hub's defaults.
	QueueSize   int
	WatchBuffer int
	// WatchInterval is the longest an event waits before the event
	// streams get it (hub.Config's Interval); 0 means hub.DefaultInterval.
	WatchInterval time.Duration
	// Logger receives the daemon's logs; nil discards them.
	Logger *slog.Logger
	// Apply is a declared proxy set (snoopd --config) applied at start,
	// after the saved proxies are restored. If it fails, New fails, and
	// the state file is left as it was.
	Apply []*snoopv1.ProxySpec
	// Engine serves the connections of every proxy. Nil means an engine
	// the daemon makes and closes itself, of the kind snoopd runs by
	// default (proxy.DefaultEngine: event loops on Linux); an engine given
	// here belongs to the caller, who closes it after Close.
	Engine proxy.Engine
	// FDLimit is the process's descriptor limit (soft RLIMIT_NOFILE), for
	// GetDaemonInfo; 0 when unknown.
	FDLimit uint64
	// MaxWatchers bounds the concurrent event streams; 0 means
	// DefaultMaxWatchers.
	MaxWatchers int
	// MaxDrain bounds any delete's drain; 0 means DefaultMaxDrain.
	MaxDrain time.Duration
	// Name is the daemon's name in a fleet (snoopd --daemon-name), for
	// GetDaemonInfo and exported events.
	Name string
	// StateLock, if set, is StateDir's lock, already taken
	// (LockStateDir). New takes it over, and releases it if it fails.
	StateLock *StateLock
	// OwnListeners are the process's own sockets besides the proxies'
	// (the control API, the metrics endpoint), so that a proxy refused
	// an address one of them holds is told which.
	OwnListeners []OwnListener
}

// OwnListener is a socket of the daemon's process that is not a proxy's.
type OwnListener struct {
	What string   // how the operator set it: "--metrics-listen", "--control"
	Addr net.Addr // as bound
}

// newEngineName is the engine New makes when Config.Engine is nil: the
// one snoopd runs. The package's tests set it to run once more on the
// goroutine engine, as the proxy package's do.
var newEngineName = proxy.DefaultEngine

// Defaults for Config fields left zero.
const (
	// DefaultMaxWatchers bounds the event streams: each one that stops
	// reading holds its last batch and what gRPC buffers (up to about
	// 3 MB of RSS under heavy load; README, --max-watchers).
	DefaultMaxWatchers = 64
	// DefaultMaxDrain bounds a delete's drain, whatever the caller asked.
	DefaultMaxDrain = 5 * time.Minute
)

// ErrApplyAtStart is wrapped by New's error when Config.Apply failed.
var ErrApplyAtStart = errors.New("applying the declared proxies failed")

// Daemon hosts named proxies and the event hub. Its methods are safe for
// concurrent use.
type Daemon struct {
	cfg     Config
	log     *slog.Logger
	hub     *hub.Hub
	ids     atomic.Uint64
	started time.Time
	engine  proxy.Engine
	// ownEngine marks an engine New made, which Close closes.
	ownEngine bool

	// reg is the registry of proxies, with its own lock (registry.go).
	reg *registry

	// mu guards the rest, which is not the registry's.
	mu        sync.Mutex
	endpoints []string
	watching  int          // event streams open (see acquireWatcher)
	export    ExportSource // nil without --export
}

// New starts a daemon. With a state dir it restores the saved proxies: a
// damaged state file is an error (and is left untouched); a proxy whose
// address cannot be bound any more is kept, in the failed state, so the
// operator can see it and enable it again.
func New(cfg Config) (_ *Daemon, err error) {
	defer func() {
		if err != nil {
			cfg.StateLock.Release()
		}
	}()
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.MaxWatchers <= 0 {
		cfg.MaxWatchers = DefaultMaxWatchers
	}
	if cfg.MaxDrain <= 0 {
		cfg.MaxDrain = DefaultMaxDrain
	}
	d := &Daemon{
		cfg:     cfg,
		log:     log,
		hub:     hub.New(hub.Config{History: cfg.History, LogRecords: cfg.QueueSize, LogBytes: cfg.WatchBuffer, Interval: cfg.WatchInterval, NewEncoder: NewEventEncoder}),
		started: time.Now(),
		reg:     newRegistry(log),
		engine:  cfg.Engine,
	}
	if d.engine == nil {
		eng, err := proxy.NewEngine(newEngineName, 0)
		if err != nil {
			d.hub.Close()
			return nil, fmt.Errorf("data path engine: %w", err)
		}
		d.engine, d.ownEngine = eng, true
	}
	var st *stateFile
	var newEnds bool
	if cfg.StateDir != "" {
		var specs []*snoopv1.ProxySpec
		var ports map[string]int
		st, specs, ports, err = openState(cfg.StateDir, log, cfg.StateLock)
		if err != nil {
			d.closeEngine()
			d.hub.Close()
			return nil, err
		}
		newEnds = d.restoreAll(specs, ports)
	}
	// The registry has no state file yet, so applying saves nothing: a
	// start that fails here leaves the state file untouched.
	if len(cfg.Apply) > 0 {
		if _, err := d.ApplyProxies(context.Background(), cfg.Apply, false, false); err != nil {
			d.abort(st)
			return nil, fmt.Errorf("%w: %w", ErrApplyAtStart, err)
		}
	}
	d.reg.state = st
	if len(cfg.Apply) > 0 {
		// The declared set is in force only if it is saved, like any
		// other change.
		if err := d.reg.save(); err != nil {
			d.abort(st)
			return nil, fmt.Errorf("%w: %w", ErrApplyAtStart, err)
		}
	} else if newEnds {
		// Faults saved without an end (by a snoopd that did not keep
		// them) got one now; saved, it holds across the next restart.
		if err := d.reg.save(); err != nil {
			log.Warn("the ends given to restored faults could not be saved; another restart gives them new ones", "err", err)
		}
	}
	return d, nil
}

// abort stops whatever New started, without saving, and lets go of the
// state dir.
func (d *Daemon) abort(st *stateFile) {
	ps, _ := d.shut()
	stopAll(context.Background(), ps)
	d.closeEngine()
	d.hub.Close()
	if st != nil {
		st.close()
	}
}

// closeEngine closes the engine if the daemon made it.
func (d *Daemon) closeEngine() error {
	if !d.ownEngine {
		return nil
	}
	if err := d.engine.Close(); err != nil {
		return fmt.Errorf("data path engine: %w", err)
	}
	return nil
}

// shut marks the daemon closed and returns its proxies, or false if it
// was closed already.
func (d *Daemon) shut() (ps []runner, ok bool) {
	d.reg.locked(func(h held) error {
		ps, ok = h.shut()
		return nil
	})
	return ps, ok
}

// stopAll stops proxies in parallel, each within stopTimeout, so one
// wedged proxy delays shutdown by that much at most.
func stopAll(ctx context.Context, ps []runner) error {
	var wg sync.WaitGroup
	errs := make(chan error, len(ps))
	for _, p := range ps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sctx, cancel := context.WithTimeout(ctx, stopTimeout)
			defer cancel()
			if err := p.Stop(sctx); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	var err error
	for e := range errs {
		err = errors.Join(err, e)
	}
	return err
}

// Hub is the daemon's event hub.
func (d *Daemon) Hub() *hub.Hub { return d.hub }

// SetEndpoints records the control endpoints, for GetDaemonInfo.
func (d *Daemon) SetEndpoints(eps []string) {
	d.mu.Lock()
	d.endpoints = append([]string(nil), eps...)
	d.mu.Unlock()
}

// Close stops every proxy (in parallel, each within a deadline), ends the
// event streams and saves the state one last time.
func (d *Daemon) Close(ctx context.Context) error {
	ps, ok := d.shut()
	if !ok {
		return nil
	}
	err := stopAll(ctx, ps)
	err = errors.Join(err, d.closeEngine())
	d.hub.Close()
	err = errors.Join(err, d.reg.save())
	if d.reg.state != nil {
		d.reg.state.close()
	}
	return err
}

// Info describes the daemon.
func (d *Daemon) Info() *snoopv1.GetDaemonInfoResponse {
	st := d.Stats()
	d.mu.Lock()
	eps := append([]string(nil), d.endpoints...)
	export := d.export
	d.mu.Unlock()
	history, queue, buffer := d.cfg.History, d.cfg.QueueSize, d.cfg.WatchBuffer
	if history <= 0 {
		history = hub.DefaultHistory
	}
	if queue <= 0 {
		queue = hub.DefaultLogRecords
	}
	if buffer <= 0 {
		buffer = hub.DefaultLogBytes
	}
	interval := d.cfg.WatchInterval
	if interval <= 0 {
		interval = hub.DefaultInterval
	}
	return &snoopv1.GetDaemonInfoResponse{
		Version:          st.Version,
		StartTime:        timestamppb.New(st.Started),
		ControlEndpoints: eps,
		Proxies:          int32(st.Proxies),
		Watchers:         int32(st.Watchers),
		EventsPublished:  st.EventsPublished,
		HistorySize:      uint32(history),
		WatcherQueueSize: uint32(queue),
		WatchBufferBytes: uint64(buffer),
		WatchInterval:    durationpb.New(interval),
		StateDir:         d.cfg.StateDir,
		Engine:           d.engine.Name(),
		Loops:            uint32(max(d.engine.Loops(), 0)),
		FdLimit:          d.cfg.FDLimit,
		MaxWatchers:      uint32(d.cfg.MaxWatchers),
		Name:             d.cfg.Name,
		Export:           exportStats(export),
	}
}

func exportStats(x ExportSource) *snoopv1.ExportStats {
	if x == nil {
		return nil
	}
	return x.Stats()
}
