package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/snoopd/snoopd/daemon/hub"
	"github.com/snoopd/snoopd/distcache"
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
	state   *stateFile
	engine  proxy.Engine
	// ownEngine marks an engine New made, which Close closes.
	ownEngine bool

	mu      sync.Mutex
	proxies map[string]*entry
	addrs   addrIndex // the proxies' addresses (see addrindex.go)
	// order is the registry sorted by name, for the state file's
	// snapshots, which would otherwise sort it each time.
	order     []named
	endpoints []string
	closed    bool
	watching  int          // event streams open (see acquireWatcher)
	export    ExportSource // nil without --export
}

// entry is one proxy in the registry.
type entry struct {
	spec      *snoopv1.ProxySpec // normalised
	p         *proxy.Proxy
	created   time.Time
	bindErr   error // why an enabled proxy is not listening
	ephemeral bool  // not saved in the state dir (the demo proxy)
	// busy marks a proxy a request is changing; placeholder marks a name
	// reserved by a create still binding (see placeholderFor).
	busy, placeholder bool
	// removing marks a proxy whose deletion is being saved or, once
	// saved, carried out: it is left out of the state file.
	removing bool
	// instance identifies this incarnation of the proxy; its events
	// carry it.
	instance string
	// deleting is set while a delete drains the proxy (see drain.go).
	deleting *deletion
	// note tells the operator something about a listening proxy, shown
	// in Proxy.error: a port 0 proxy that could not have its saved port
	// back.
	note string
	// json is spec rendered for the state file, jsonOf the spec it was
	// rendered from, and portJSON the entry of bound_ports, for the
	// port portOf (see snapshot).
	json     []byte
	jsonOf   *snoopv1.ProxySpec
	portJSON []byte
	portOf   int
	// listen and server are spec's addresses parsed, addrsOf the spec
	// they were parsed from (see loopNodesLocked).
	listen, server distcache.Addr
	addrsOf        *snoopv1.ProxySpec
	// bound caches p.Addr() once it cannot change any more (see
	// addrLocked).
	bound distcache.Addr
	// keys is where the entry is filed in d.addrs.
	keys entryKeys
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
		hub:     hub.New(hub.Config{History: cfg.History, LogRecords: cfg.QueueSize, LogBytes: cfg.WatchBuffer, NewEncoder: NewEventEncoder}),
		started: time.Now(),
		proxies: map[string]*entry{},
		addrs:   newAddrIndex(),
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
	// d.state is still nil, so applying saves nothing: a start that fails
	// here leaves the state file untouched.
	if len(cfg.Apply) > 0 {
		if _, err := d.ApplyProxies(context.Background(), cfg.Apply, false, false); err != nil {
			d.abort(st)
			return nil, fmt.Errorf("%w: %w", ErrApplyAtStart, err)
		}
	}
	d.state = st
	if len(cfg.Apply) > 0 {
		// The declared set is in force only if it is saved, like any
		// other change.
		if err := d.save(); err != nil {
			d.abort(st)
			return nil, fmt.Errorf("%w: %w", ErrApplyAtStart, err)
		}
	} else if newEnds {
		// Faults saved without an end (by a snoopd that did not keep
		// them) got one now; saved, it holds across the next restart.
		if err := d.save(); err != nil {
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
func (d *Daemon) shut() ([]*proxy.Proxy, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, false
	}
	d.closed = true
	var ps []*proxy.Proxy
	for _, e := range d.proxies {
		if e.p != nil {
			ps = append(ps, e.p)
		}
	}
	return ps, true
}

// stopAll stops proxies in parallel, each within stopTimeout, so one
// wedged proxy delays shutdown by that much at most.
func stopAll(ctx context.Context, ps []*proxy.Proxy) error {
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

// restoreAll brings back the saved proxies. A proxy whose chain comes
// back to a proxy it went through (a proxy loop: a state file written
// before loops were refused, or edited by hand) is kept failed and never
// started, so it does not dial; the others start, chains of proxies
// that end at a real server included.
//
// A proxy that breaks a rule new input must follow (validate: a relative
// unix path, saved by an older snoopd) is kept failed with the reason,
// too. A proxy declared on port 0 first tries the port it had (ports).
// It reports whether a saved fault with a duration had no end and was
// given one.
func (d *Daemon) restoreAll(specs []*snoopv1.ProxySpec, ports map[string]int) (newEnds bool) {
	type saved struct {
		spec *snoopv1.ProxySpec
		cfg  proxy.Config
	}
	var ok []saved
	var nodes []loopNode
	for _, spec := range specs {
		norm, cfg, err := normalize(spec)
		if err != nil {
			// The state file was validated on load; this is a bug.
			d.log.Error("saved proxy is invalid; skipped", "proxy", spec.GetName(), "err", err)
			continue
		}
		// Saved faults keep their ends, passed or not: a restart does not
		// start a fault's duration again.
		for _, f := range norm.GetFaults() {
			if f.GetDuration().AsDuration() > 0 && !f.GetEndsAt().IsValid() {
				newEnds = true
			}
		}
		fixEnds(norm, &cfg, norm, time.Now())
		ok = append(ok, saved{norm, cfg})
		nodes = append(nodes, nodeFor(cfg.Name, cfg.Server, cfg.Listen))
	}
	set := newLoopSet(nodes, machineIPs())
	for i, s := range ok {
		var failErr error
		if l := set.findLoop(i); l != nil {
			failErr = errors.New(l.serverReason())
			d.log.Error("restored proxy forms a proxy loop; it stays failed, not started, until its server is changed", "proxy", s.cfg.Name, "err", failErr)
		} else if err := checkAbsolute(s.cfg); err != nil {
			failErr = err
			d.log.Error("restored proxy has a relative unix socket path; it stays failed, not started, until it is moved to an absolute one", "proxy", s.cfg.Name, "err", err)
		}
		d.restore(s.spec, s.cfg, failErr, ports[s.cfg.Name])
	}
	return newEnds
}

// restore brings back a saved proxy, normalised; with failErr it stays
// failed with that error and is not started. A proxy declared on TCP
// port 0 that was bound to savedPort before gets that port again if it is
// free; if not, it takes a new one, and says so in the log and in its
// Proxy.error.
func (d *Daemon) restore(norm *snoopv1.ProxySpec, cfg proxy.Config, failErr error, savedPort int) {
	again, trySaved := cfg, savedPort != 0 && cfg.Listen.Network() == distcache.NetworkTCP && cfg.Listen.Port() == 0
	if trySaved {
		again.Listen = cfg.Listen.WithPort(savedPort)
	}
	inst := newInstanceID()
	p, err := d.newProxy(again, inst)
	if err != nil {
		d.log.Error("saved proxy is invalid; skipped", "proxy", cfg.Name, "err", err)
		return
	}
	e := &entry{spec: norm, p: p, created: time.Now(), instance: inst}
	if failErr != nil {
		e.bindErr = failErr
	} else if err := p.Start(); err != nil && trySaved && errors.Is(err, proxy.ErrAddrInUse) {
		// The saved port is taken: a new one, rather than a failed proxy,
		// since port 0 asked for any port.
		p.Stop(context.Background())
		if p, err = d.newProxy(cfg, inst); err == nil {
			e.p = p
			err = p.Start()
		}
		if err != nil {
			e.bindErr = bindError("listen", err)
			d.log.Warn("restored proxy cannot listen; it stays failed until enabled again", "proxy", cfg.Name, "err", err)
		} else {
			e.note = fmt.Sprintf("port %d, which this proxy had before the restart, is taken; it listens on %s now", savedPort, p.Addr())
			d.log.Warn("restored proxy could not have its port back; it listens on a new one", "proxy", cfg.Name, "port", savedPort, "listen", p.Addr().String())
		}
	} else if err != nil {
		err = d.explainInUse(cfg.Name, cfg.Listen, err)
		e.bindErr = bindError("listen", err)
		d.log.Warn("restored proxy cannot listen; it stays failed until enabled again", "proxy", cfg.Name, "err", err)
	} else {
		d.log.Info("restored proxy", "proxy", cfg.Name, "listen", p.Addr().String(), "server", norm.GetServer())
	}
	d.mu.Lock()
	d.putLocked(cfg.Name, e)
	d.mu.Unlock()
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
	err = errors.Join(err, d.save())
	if d.state != nil {
		d.state.close()
	}
	return err
}

// CreateProxy validates spec, binds the proxy and starts it. The bind
// error, if any, is returned here.
func (d *Daemon) CreateProxy(ctx context.Context, spec *snoopv1.ProxySpec) (*snoopv1.Proxy, error) {
	return d.create(spec, false)
}

// CreateEphemeralProxy is CreateProxy for a proxy that is not saved in
// the state dir (the demo's, whose server lives only as long as the
// process).
func (d *Daemon) CreateEphemeralProxy(spec *snoopv1.ProxySpec) (*snoopv1.Proxy, error) {
	return d.create(spec, true)
}

// A created proxy is bound and started first, then saved: it needs its
// port for the state file. If the save fails, it is stopped and removed
// again, and the call fails; clients it accepted in between are cut.
func (d *Daemon) create(in *snoopv1.ProxySpec, ephemeral bool) (*snoopv1.Proxy, error) {
	if in == nil {
		// validate's own error names "spec", which the prefix below
		// would make "spec.spec".
		return nil, &FieldError{Field: "spec", Reason: "missing: the proxy to create (name, listen, server)"}
	}
	spec, cfg, err := validate(in)
	if err != nil {
		return nil, prefixField("spec", err)
	}
	fixEnds(spec, &cfg, nil, time.Now())
	name := spec.GetName()
	local := machineIPs()
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil, hub.ErrClosed
	}
	if _, ok := d.proxies[name]; ok {
		d.mu.Unlock()
		return nil, proxyExists(name)
	}
	if err := d.reservedLocked("spec.listen", cfg.Listen, nil); err != nil {
		d.mu.Unlock()
		return nil, err
	}
	if d.mayLoopLocked(cfg, local) {
		if err := d.loopLocked(nodeFor(name, cfg.Server, cfg.Listen), true, local); err != nil {
			d.mu.Unlock()
			return nil, err
		}
	}
	// In the same lock hold as the check: a create or an update checked
	// after this one sees this proxy.
	d.putLocked(name, placeholderFor(spec))
	d.mu.Unlock()

	e, err := d.start(spec, cfg, ephemeral)
	d.mu.Lock()
	if err != nil {
		d.dropLocked(name)
		d.mu.Unlock()
		return nil, bindError("spec.listen", err)
	}
	e.busy = true
	d.putLocked(name, e)
	var t uint64
	if !ephemeral {
		t = d.ticketLocked(func() {
			d.mu.Lock()
			d.putLocked(name, placeholderFor(spec))
			d.mu.Unlock()
		})
	}
	d.mu.Unlock()
	if err := d.persist(t); err != nil {
		d.stop(e, 0)
		d.mu.Lock()
		d.dropLocked(name)
		d.mu.Unlock()
		d.log.Warn("created proxy removed again: it could not be saved", "proxy", name, "err", err)
		return nil, err
	}
	d.release(e)
	d.log.Info("created proxy", "proxy", name, "listen", e.p.Addr().String(), "server", spec.GetServer(), "enabled", enabledOf(spec))
	return d.describe(e), nil
}

// placeholderFor is the entry that reserves the name of a proxy being
// created with spec until it is bound. It is filed in the address index
// under spec's addresses, so the loop checks made while it binds count
// it as a proxy already.
func placeholderFor(spec *snoopv1.ProxySpec) *entry {
	return &entry{spec: spec, busy: true, placeholder: true}
}

// start makes and binds a proxy; no registry lock is held.
func (d *Daemon) start(spec *snoopv1.ProxySpec, cfg proxy.Config, ephemeral bool) (*entry, error) {
	inst := newInstanceID()
	p, err := d.newProxy(cfg, inst)
	if err != nil {
		return nil, err
	}
	if err := p.Start(); err != nil {
		p.Stop(context.Background())
		return nil, listenError(cfg.Name, cfg.Listen, d.explainInUse(cfg.Name, cfg.Listen, err))
	}
	return &entry{spec: spec, p: p, created: time.Now(), ephemeral: ephemeral, instance: inst}, nil
}

// newProxy makes a proxy of this daemon: its connection ids come from
// the daemon's counter, its connections are served by the daemon's
// engine and its events go to the hub, stamped with instance.
func (d *Daemon) newProxy(cfg proxy.Config, instance string) (*proxy.Proxy, error) {
	cfg.ConnIDs = &d.ids
	cfg.Engine = d.engine
	// The proxy's rare lines (a forwarding loop, accepts failing for want
	// of descriptors) are warnings: each is about something to fix, and
	// the proxy spaces them itself.
	cfg.Logf = func(format string, args ...any) { d.log.Warn(fmt.Sprintf(format, args...), "proxy", cfg.Name) }
	return proxy.New(cfg, d.hub.Publisher(instance))
}

// reserve marks an existing proxy busy for the caller's change.
func (d *Daemon) reserve(name string) (*entry, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	e, ok := d.proxies[name]
	switch {
	case d.closed:
		return nil, hub.ErrClosed
	case !ok || e.placeholder:
		return nil, proxyNotFound(name)
	case e.deleting != nil:
		return nil, fmt.Errorf("proxy %q is being deleted (draining its connections); delete it again, or with force, to close them now: %w", name, ErrBusy)
	case e.busy:
		return nil, fmt.Errorf("proxy %s is being changed by another request; try again: %w", quote(name), ErrBusy)
	}
	e.busy = true
	return e, nil
}

func (d *Daemon) release(e *entry) {
	d.mu.Lock()
	e.busy = false
	d.mu.Unlock()
}

// GetProxy describes one proxy.
func (d *Daemon) GetProxy(name string) (*snoopv1.Proxy, error) {
	d.mu.Lock()
	e, ok := d.proxies[name]
	d.mu.Unlock()
	if !ok || e.placeholder {
		return nil, proxyNotFound(name)
	}
	return d.describe(e), nil
}

// ListProxies describes every proxy, sorted by name.
func (d *Daemon) ListProxies() []*snoopv1.Proxy {
	es := d.liveEntries()
	out := make([]*snoopv1.Proxy, 0, len(es))
	for _, e := range es {
		out = append(out, d.describe(e))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].GetSpec().GetName() < out[j].GetSpec().GetName() })
	return out
}

// liveEntries returns the proxies' entries, without the placeholders
// of names being created, in no order.
func (d *Daemon) liveEntries() []*entry {
	d.mu.Lock()
	defer d.mu.Unlock()
	es := make([]*entry, 0, len(d.proxies))
	for _, e := range d.proxies {
		if !e.placeholder {
			es = append(es, e)
		}
	}
	return es
}

// UpdateProxy changes the fields of a proxy named in paths, taking their
// values from in. Enabling binds first, so a bind error changes nothing.
func (d *Daemon) UpdateProxy(ctx context.Context, in *snoopv1.ProxySpec, paths []string, closeConns bool) (*snoopv1.Proxy, error) {
	if in == nil || in.GetName() == "" {
		return nil, &FieldError{Field: "spec.name", Reason: "missing: name the proxy to update"}
	}
	e, err := d.reserve(in.GetName())
	if err != nil {
		return nil, err
	}
	defer d.release(e)
	merged, err := applyMask(e.spec, in, paths)
	if err != nil {
		return nil, err
	}
	spec, cfg, err := validate(merged)
	if err != nil {
		return nil, prefixField("spec", err)
	}
	fixEnds(spec, &cfg, e.spec, time.Now())
	local := machineIPs()
	// The listen address does not change, so only the server can make a
	// loop. This first look refuses a loop before anything is bound; the
	// check that counts is made again with the commit, below.
	node := nodeFor(spec.GetName(), cfg.Server, cfg.Listen, e.p.Addr())
	d.mu.Lock()
	err = d.loopLocked(node, false, local)
	d.mu.Unlock()
	if err != nil {
		return nil, err
	}
	// The order makes the one step that can fail, binding, come first,
	// and the one that cannot be undone, closing connections, come last:
	// bind (if enabling), then record and save the new spec, then apply
	// it. A save that fails is undone in memory and unbinds again.
	enabled, err := d.prepareChange(e, spec)
	if errors.Is(err, proxy.ErrFaultsNeedEpoll) {
		return nil, err
	}
	if err != nil {
		return nil, bindError("spec.listen", err)
	}
	d.mu.Lock()
	// The check and the commit are one step: another request that made
	// the other half of a loop since the first look is seen here, and
	// one checked after this sees the new server.
	if err := d.loopLocked(node, false, local); err != nil {
		d.mu.Unlock()
		if enabled {
			e.p.Disable(false)
		}
		return nil, err
	}
	undo := d.recordChangeLocked(e, spec)
	t := d.ticketLocked(undo)
	d.mu.Unlock()
	if err := d.persist(t); err != nil {
		if enabled {
			e.p.Disable(false)
		}
		return nil, err
	}
	d.finishChange(e, spec, cfg, closeConns)
	return d.describe(e), nil
}

// prepareChange binds a reserved proxy that spec enables and that does
// not listen, and reports whether it did. A bind error is recorded.
func (d *Daemon) prepareChange(e *entry, spec *snoopv1.ProxySpec) (bool, error) {
	// Faults are set once the change is saved (finishChange); the one
	// reason they could be refused, the engine, is checked now.
	if len(spec.GetFaults()) > 0 && d.engine.Name() != proxy.EngineEpoll {
		return false, fmt.Errorf("proxy %s: %w", quote(spec.GetName()), proxy.ErrFaultsNeedEpoll)
	}
	if !enabledOf(spec) || e.p.Listening() {
		return false, nil
	}
	if err := e.p.Enable(); err != nil {
		err = d.explainInUse(spec.GetName(), e.p.Addr(), err)
		d.mu.Lock()
		e.bindErr = err
		d.mu.Unlock()
		return false, listenError(spec.GetName(), e.p.Addr(), err)
	}
	return true, nil
}

// recordChangeLocked puts spec in the registry for a reserved proxy and
// returns the undo for a save that fails. d.mu is held.
func (d *Daemon) recordChangeLocked(e *entry, spec *snoopv1.ProxySpec) func() {
	old, oldErr, oldNote := e.spec, e.bindErr, e.note
	d.setSpecLocked(e, spec)
	e.bindErr, e.note = nil, ""
	return func() {
		d.mu.Lock()
		d.setSpecLocked(e, old)
		e.bindErr, e.note = oldErr, oldNote
		d.mu.Unlock()
	}
}

// finishChange makes a reserved proxy run with cfg, once its new spec is
// saved: server and options (which cannot fail, cfg being valid), then
// disabling, which may close connections and so comes last.
func (d *Daemon) finishChange(e *entry, spec *snoopv1.ProxySpec, cfg proxy.Config, closeConns bool) {
	if err := e.p.SetServer(cfg.Server); err != nil {
		d.log.Error("proxy refused a validated server address", "proxy", spec.GetName(), "err", err)
	}
	if err := e.p.SetOptions(cfg.Options); err != nil {
		d.log.Error("proxy refused validated options", "proxy", spec.GetName(), "err", err)
	}
	// Unchanged faults keep their state; the new set reaches live
	// connections at their next read.
	if err := e.p.SetFaults(cfg.Faults); err != nil {
		d.log.Error("proxy refused validated faults", "proxy", spec.GetName(), "err", err)
	}
	if !enabledOf(spec) && (e.p.Listening() || closeConns) {
		e.p.Disable(closeConns)
	}
	d.log.Info("updated proxy", "proxy", spec.GetName(), "server", spec.GetServer(), "enabled", enabledOf(spec))
}

// stop drains and stops a reserved proxy, without the registry lock.
func (d *Daemon) stop(e *entry, drain time.Duration) {
	var err error
	if drain > 0 {
		ctx, cancel := context.WithTimeout(context.Background(), drain)
		err = e.p.Drain(ctx)
		cancel()
	} else {
		ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
		err = e.p.Stop(ctx)
		cancel()
	}
	if err != nil {
		d.log.Warn("proxy did not stop in time; its connections end as their sockets close", "proxy", e.spec.GetName(), "err", err)
	}
}

// Connections lists the live connections of a proxy.
func (d *Daemon) Connections(name string) ([]*snoopv1.Connection, error) {
	e, err := d.lookup(name)
	if err != nil {
		return nil, err
	}
	var out []*snoopv1.Connection
	for _, c := range e.p.Conns() {
		out = append(out, &snoopv1.Connection{
			Id: c.ID, Client: c.Client, OpenTime: timestamppb.New(c.Opened),
			BytesUp: c.BytesUp, BytesDown: c.BytesDown, Transactions: c.Transactions, Pending: int32(c.Pending),
		})
	}
	return out, nil
}

// CloseConnection closes one live connection.
func (d *Daemon) CloseConnection(name string, id uint64) error {
	e, err := d.lookup(name)
	if err != nil {
		return err
	}
	if !e.p.CloseConn(id) {
		return &ResourceError{Type: ConnectionResource, Name: fmt.Sprintf("%s/%d", name, id),
			Err: fmt.Errorf("proxy %s has no live connection %d: %w", quote(name), id, ErrNotFound)}
	}
	return nil
}

func (d *Daemon) lookup(name string) (*entry, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	e, ok := d.proxies[name]
	if !ok || e.placeholder {
		return nil, proxyNotFound(name)
	}
	return e, nil
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

// describe renders a proxy for the API.
func (d *Daemon) describe(e *entry) *snoopv1.Proxy {
	spec, state, bindErr := d.proxyState(e)
	d.mu.Lock()
	del, note := e.deleting, e.note
	d.mu.Unlock()
	out := &snoopv1.Proxy{
		Spec:          proto.Clone(spec).(*snoopv1.ProxySpec),
		ListenAddress: e.p.Addr().String(),
		Counters:      counters(e.p.Stats()),
		CreateTime:    timestamppb.New(e.created),
		State:         state.api(),
		InstanceId:    e.instance,
		Conditions:    e.p.Conditions(time.Now()),
	}
	fillAnswer(out, spec, e.p.Addr())
	out.Chain, out.ChainServer = d.chainOf(e)
	switch {
	case del != nil:
		// Not accepting any more, on the way out: disabled (see
		// proxyState), with the drain in the error field.
		out.Error = drainingNote(e.p, del)
	case state == ProxyListening:
		out.Error = note
	case state == ProxyFailed:
		out.Error = "not listening"
		if bindErr != nil {
			out.Error = bindErr.Error()
		}
	}
	return out
}

// chainOf is the chain e's traffic goes through when its server is a
// listener of this daemon (Proxy.chain): the names of the proxies, e's
// first, and the server the last one declares, or "" when the chain
// comes back to a proxy it went through. Nil when e's server is no
// listener here, which the index answers without reading the interface
// addresses.
func (d *Daemon) chainOf(e *entry) ([]string, string) {
	d.mu.Lock()
	e.parseAddrsLocked()
	maybe := false
	d.addrs.listeners(e.server, func(*entry) bool { maybe = true; return false })
	d.mu.Unlock()
	if !maybe {
		return nil, ""
	}
	local := machineIPs()
	d.mu.Lock()
	defer d.mu.Unlock()
	name := e.spec.GetName()
	nodes := d.loopNodesAroundLocked(nodeFor(name, e.server, e.listen, e.addrLocked()), false, map[string]bool{name: true}, local)
	names, end, loop := newLoopSet(nodes, local).chain(len(nodes) - 1)
	switch {
	case len(names) == 1:
		return nil, ""
	case loop:
		return names, ""
	}
	return names, nodes[end].server.String()
}

// parseAddrsLocked parses the spec's addresses into e.listen and
// e.server, once per spec rather than once per proxy per check: checks
// and snapshots look at every proxy. The spec was normalised, so both
// parse; a failure leaves a zero address, which matches nothing. d.mu is
// held.
func (e *entry) parseAddrsLocked() {
	if e.addrsOf != e.spec {
		e.listen, _ = distcache.ParseListenAddr(e.spec.GetListen())
		e.server, _ = distcache.ParseConnectAddr(e.spec.GetServer())
		e.addrsOf = e.spec
	}
}

// mayLoopLocked reports whether a new proxy could take part in a proxy
// loop: its server reaches a registered proxy's listener (or its own),
// or a registered proxy's server reaches its listen address. Only then
// does create run the full check. It looks only at the proxies filed
// under the new server's and listen address's ports or paths (see
// addrIndex), so creating the ten-thousandth proxy costs what creating
// the first did. d.mu is held.
func (d *Daemon) mayLoopLocked(cfg proxy.Config, local localIPs) bool {
	if reaches(cfg.Server, cfg.Listen, local) {
		return true
	}
	may := false
	d.addrs.listeners(cfg.Server, func(e *entry) bool {
		e.parseAddrsLocked()
		bound := e.addrLocked()
		may = reaches(cfg.Server, e.listen, local) || (bound != e.listen && reaches(cfg.Server, bound, local))
		return !may
	})
	if may {
		return true
	}
	d.addrs.serversAt(cfg.Listen, func(e *entry) bool {
		e.parseAddrsLocked()
		may = reaches(e.server, cfg.Listen, local)
		return !may
	})
	return may
}

// addrLocked is e.p.Addr(), without asking the proxy once the answer is
// final: a proxy's address changes only when a port 0 gets its port, and
// then never again (re-enabling keeps the port). Checks that look at
// every proxy use it. A placeholder's is its declared address. d.mu is
// held.
func (e *entry) addrLocked() distcache.Addr {
	if e.p == nil {
		e.parseAddrsLocked()
		return e.listen
	}
	if !e.bound.IsZero() {
		return e.bound
	}
	a := e.p.Addr()
	if a.Network() != distcache.NetworkTCP || a.Port() != 0 {
		e.bound = a
	}
	return a
}

// loopNodesLocked is the loop check's view of the registry, without the
// proxies in skip; proxies still being created are in it, at their
// declared addresses. d.mu is held.
func (d *Daemon) loopNodesLocked(skip map[string]bool) []loopNode {
	names := make([]string, 0, len(d.proxies))
	for name, e := range d.proxies {
		if e.spec != nil && !skip[name] {
			names = append(names, name)
		}
	}
	// Sorted, so that which proxy a message names does not depend on map
	// order when two could match.
	sort.Strings(names)
	nodes := make([]loopNode, 0, len(names)+1)
	for _, name := range names {
		e := d.proxies[name]
		e.parseAddrsLocked()
		nodes = append(nodes, nodeFor(name, e.server, e.listen, e.addrLocked()))
	}
	return nodes
}

// loopLocked returns the loop n, a proxy being created (fresh) or
// changed, would take part in, as an error on its field "spec.server",
// or nil. The registered proxy of n's name, if any, is left out: n is
// what it becomes. d.mu is held.
func (d *Daemon) loopLocked(n loopNode, fresh bool, local localIPs) error {
	nodes := d.loopNodesAroundLocked(n, fresh, map[string]bool{n.name: true}, local)
	check := make([]bool, len(nodes))
	check[len(nodes)-1] = true
	return loopError(nodes, check, func(_ int, f string) string { return "spec." + f }, local)
}

// loopNodesAroundLocked is the part of the loop check's view that a
// change of one proxy, n, can make a loop in: n itself (last), and,
// sorted by name as loopNodesLocked sorts them, the registered proxies
// its server leads to, those whose server reaches one of n's listeners
// when they are new (fresh), and every proxy their servers lead to, in
// turn. Every listener a server of the part reaches is in it, so
// findLoop and loopError answer on it what they answer on the whole
// set, at the cost of the chains rather than of the registry. The
// proxies in skip are left out; proxies still being created are in it,
// at their declared addresses (see placeholderFor). d.mu is held.
func (d *Daemon) loopNodesAroundLocked(n loopNode, fresh bool, skip map[string]bool, local localIPs) []loopNode {
	in := map[string]loopNode{}
	var queue []loopNode
	visit := func(e *entry, match func(loopNode) bool) bool {
		name := e.spec.GetName()
		if skip[name] {
			return true
		}
		if _, ok := in[name]; ok {
			return true
		}
		e.parseAddrsLocked()
		node := nodeFor(name, e.server, e.listen, e.addrLocked())
		if match(node) {
			in[name] = node
			queue = append(queue, node)
		}
		return true
	}
	reachedBy := func(server distcache.Addr) {
		d.addrs.listeners(server, func(e *entry) bool {
			return visit(e, func(node loopNode) bool {
				return slices.ContainsFunc(node.listens, func(l distcache.Addr) bool { return reaches(server, l, local) })
			})
		})
	}
	reachedBy(n.server)
	if fresh {
		for _, l := range n.listens {
			d.addrs.serversAt(l, func(e *entry) bool {
				return visit(e, func(node loopNode) bool { return reaches(node.server, l, local) })
			})
		}
	}
	for len(queue) > 0 {
		next := queue[0]
		queue = queue[1:]
		reachedBy(next.server)
	}
	names := slices.Sorted(maps.Keys(in))
	nodes := make([]loopNode, 0, len(names)+1)
	for _, name := range names {
		nodes = append(nodes, in[name])
	}
	return append(nodes, n)
}
