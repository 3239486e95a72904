package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/snoopd/snoopd/daemon/hub"
	"github.com/snoopd/snoopd/distcache"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
	"github.com/snoopd/snoopd/internal/histogram"
	"github.com/snoopd/snoopd/proxy"
)

// Version is the daemon's version, reported by GetDaemonInfo. Builds may
// set it with -ldflags "-X github.com/snoopd/snoopd/daemon.Version=...".
var Version = "0.1.0-dev"

// stopTimeout bounds how long stopping one proxy may take before the
// daemon moves on; its goroutines end when their sockets close.
const stopTimeout = 10 * time.Second

// Config configures a Daemon.
type Config struct {
	// StateDir, if set, is where proxies created through the API are
	// saved, so they survive a restart.
	StateDir string
	// History and QueueSize size the event hub (see hub.Config).
	History   int
	QueueSize int
	// Logger receives the daemon's logs; nil discards them.
	Logger *slog.Logger
	// Apply is a declared proxy set (snoopd --config) applied at start,
	// after the saved proxies are restored. If it fails, New fails, and
	// the state file is left as it was.
	Apply []*snoopv1.ProxySpec
	// Engine serves the connections of every proxy. Nil means a
	// goroutine engine the daemon makes and closes itself; an engine
	// given here belongs to the caller, who closes it after Close.
	Engine proxy.Engine
	// FDLimit is the process's descriptor limit (soft RLIMIT_NOFILE), for
	// GetDaemonInfo; 0 when unknown.
	FDLimit uint64
	// Name is the daemon's name in a fleet (snoopd --daemon-name), for
	// GetDaemonInfo and exported events.
	Name string
}

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

	mu        sync.Mutex
	proxies   map[string]*entry
	endpoints []string
	closed    bool
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
	// reserved by a create still binding.
	busy, placeholder bool
}

// New starts a daemon. With a state dir it restores the saved proxies: a
// damaged state file is an error (and is left untouched); a proxy whose
// address cannot be bound any more is kept, in the failed state, so the
// operator can see it and enable it again.
func New(cfg Config) (*Daemon, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	d := &Daemon{
		cfg:     cfg,
		log:     log,
		hub:     hub.New(hub.Config{History: cfg.History, QueueSize: cfg.QueueSize}),
		started: time.Now(),
		proxies: map[string]*entry{},
		engine:  cfg.Engine,
	}
	if d.engine == nil {
		eng, err := proxy.NewEngine(proxy.EngineGoroutines, 0)
		if err != nil {
			d.hub.Close()
			return nil, fmt.Errorf("data path engine: %w", err)
		}
		d.engine, d.ownEngine = eng, true
	}
	var st *stateFile
	if cfg.StateDir != "" {
		var specs []*snoopv1.ProxySpec
		var err error
		st, specs, err = openState(cfg.StateDir)
		if err != nil {
			d.closeEngine()
			d.hub.Close()
			return nil, err
		}
		d.restoreAll(specs)
	}
	// d.state is still nil, so applying saves nothing: a start that fails
	// here leaves the state file untouched.
	if len(cfg.Apply) > 0 {
		if _, err := d.ApplyProxies(context.Background(), cfg.Apply, false, false); err != nil {
			d.abort()
			return nil, fmt.Errorf("%w: %w", ErrApplyAtStart, err)
		}
	}
	d.state = st
	if len(cfg.Apply) > 0 {
		d.saveLogged()
	}
	return d, nil
}

// abort stops whatever New started, without saving.
func (d *Daemon) abort() {
	ps, _ := d.shut()
	stopAll(context.Background(), ps)
	d.closeEngine()
	d.hub.Close()
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

// restoreAll brings back the saved proxies. A proxy whose server is a
// listener of the set (a proxy loop: a state file written before loops
// were refused, or edited by hand) is kept failed and never started, so
// it does not dial; the others start.
func (d *Daemon) restoreAll(specs []*snoopv1.ProxySpec) {
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
		ok = append(ok, saved{norm, cfg})
		nodes = append(nodes, nodeFor(cfg.Name, cfg.Server, cfg.Listen))
	}
	local := machineIPs()
	for i, s := range ok {
		var loopErr error
		if l := findLoop(nodes, i, local); l != nil {
			loopErr = errors.New(l.serverReason())
		}
		d.restore(s.spec, s.cfg, loopErr)
	}
}

// restore brings back a saved proxy, normalised; with loopErr it stays
// failed with that error and is not started.
func (d *Daemon) restore(norm *snoopv1.ProxySpec, cfg proxy.Config, loopErr error) {
	p, err := d.newProxy(cfg)
	if err != nil {
		d.log.Error("saved proxy is invalid; skipped", "proxy", cfg.Name, "err", err)
		return
	}
	e := &entry{spec: norm, p: p, created: time.Now()}
	if loopErr != nil {
		e.bindErr = loopErr
		d.log.Error("restored proxy forms a proxy loop; it stays failed, not started, until its server is changed", "proxy", cfg.Name, "err", loopErr)
	} else if err := p.Start(); err != nil {
		e.bindErr = err
		d.log.Warn("restored proxy cannot listen; it stays failed until enabled again", "proxy", cfg.Name, "err", err)
	} else {
		d.log.Info("restored proxy", "proxy", cfg.Name, "listen", p.Addr().String(), "server", norm.GetServer())
	}
	d.mu.Lock()
	d.proxies[cfg.Name] = e
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
	return errors.Join(err, d.save())
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

func (d *Daemon) create(in *snoopv1.ProxySpec, ephemeral bool) (*snoopv1.Proxy, error) {
	spec, cfg, err := normalize(in)
	if err != nil {
		return nil, prefixField("spec", err)
	}
	name := spec.GetName()
	local := machineIPs()
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil, hub.ErrClosed
	}
	if _, ok := d.proxies[name]; ok {
		d.mu.Unlock()
		return nil, fmt.Errorf("proxy %q: %w", name, ErrExists)
	}
	nodes := append(d.loopNodesLocked(nil), nodeFor(name, cfg.Server, cfg.Listen))
	isNew := make([]bool, len(nodes))
	isNew[len(nodes)-1] = true
	if err := loopError(nodes, isNew, isNew, func(_ int, f string) string { return "spec." + f }, local); err != nil {
		d.mu.Unlock()
		return nil, err
	}
	d.proxies[name] = &entry{busy: true, placeholder: true}
	d.mu.Unlock()

	e, err := d.start(spec, cfg, ephemeral)
	d.mu.Lock()
	if err != nil {
		delete(d.proxies, name)
		d.mu.Unlock()
		return nil, err
	}
	d.proxies[name] = e
	d.mu.Unlock()
	d.log.Info("created proxy", "proxy", name, "listen", e.p.Addr().String(), "server", spec.GetServer(), "enabled", spec.GetEnabled())
	d.saveLogged()
	return d.describe(e), nil
}

// start makes and binds a proxy; no registry lock is held.
func (d *Daemon) start(spec *snoopv1.ProxySpec, cfg proxy.Config, ephemeral bool) (*entry, error) {
	p, err := d.newProxy(cfg)
	if err != nil {
		return nil, err
	}
	if err := p.Start(); err != nil {
		p.Stop(context.Background())
		return nil, err
	}
	return &entry{spec: spec, p: p, created: time.Now(), ephemeral: ephemeral}, nil
}

// newProxy makes a proxy of this daemon: its connection ids come from
// the daemon's counter, its connections are served by the daemon's
// engine and its events go to the hub.
func (d *Daemon) newProxy(cfg proxy.Config) (*proxy.Proxy, error) {
	cfg.ConnIDs = &d.ids
	cfg.Engine = d.engine
	return proxy.New(cfg, d.hub)
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
		return nil, fmt.Errorf("proxy %q: %w", name, ErrNotFound)
	case e.busy:
		return nil, fmt.Errorf("proxy %q is being changed by another request; try again: %w", name, ErrBusy)
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
		return nil, fmt.Errorf("proxy %q: %w", name, ErrNotFound)
	}
	return d.describe(e), nil
}

// ListProxies describes every proxy, sorted by name.
func (d *Daemon) ListProxies() []*snoopv1.Proxy {
	d.mu.Lock()
	es := make([]*entry, 0, len(d.proxies))
	for _, e := range d.proxies {
		if !e.placeholder {
			es = append(es, e)
		}
	}
	d.mu.Unlock()
	out := make([]*snoopv1.Proxy, 0, len(es))
	for _, e := range es {
		out = append(out, d.describe(e))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].GetSpec().GetName() < out[j].GetSpec().GetName() })
	return out
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
	spec, cfg, err := normalize(merged)
	if err != nil {
		return nil, prefixField("spec", err)
	}
	local := machineIPs()
	d.mu.Lock()
	nodes := append(d.loopNodesLocked(map[string]bool{spec.GetName(): true}), nodeFor(spec.GetName(), cfg.Server, cfg.Listen, e.p.Addr()))
	d.mu.Unlock()
	// The listen address does not change, so only the server can make a
	// loop; a failed proxy already pointing here is not this update's.
	changed := make([]bool, len(nodes))
	changed[len(nodes)-1] = true
	if err := loopError(nodes, changed, make([]bool, len(nodes)), func(_ int, f string) string { return "spec." + f }, local); err != nil {
		return nil, err
	}
	if err := d.change(e, spec, cfg, closeConns); err != nil {
		return nil, err
	}
	d.saveLogged()
	return d.describe(e), nil
}

// change moves a running proxy from e.spec to spec (same name and listen
// address). e must be reserved.
func (d *Daemon) change(e *entry, spec *snoopv1.ProxySpec, cfg proxy.Config, closeConns bool) error {
	old := e.spec
	if spec.GetEnabled() && (!old.GetEnabled() || !e.p.Listening()) {
		if err := e.p.Enable(); err != nil {
			d.mu.Lock()
			e.bindErr = err
			d.mu.Unlock()
			return err
		}
	}
	if spec.GetServer() != old.GetServer() {
		if err := e.p.SetServer(cfg.Server); err != nil {
			return err
		}
	}
	if err := e.p.SetOptions(cfg.Options); err != nil {
		return err
	}
	if !spec.GetEnabled() && (old.GetEnabled() || closeConns) {
		e.p.Disable(closeConns)
	}
	d.mu.Lock()
	e.spec = spec
	e.bindErr = nil
	d.mu.Unlock()
	d.log.Info("updated proxy", "proxy", spec.GetName(), "server", spec.GetServer(), "enabled", spec.GetEnabled())
	return nil
}

// DeleteProxy stops a proxy: it stops accepting at once, lets live
// connections run for up to drain, then closes them, and forgets it.
func (d *Daemon) DeleteProxy(ctx context.Context, name string, drain time.Duration) error {
	e, err := d.reserve(name)
	if err != nil {
		return err
	}
	d.stop(e, drain)
	d.mu.Lock()
	delete(d.proxies, name)
	d.mu.Unlock()
	d.log.Info("deleted proxy", "proxy", name)
	d.saveLogged()
	return nil
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
		return fmt.Errorf("proxy %q has no live connection %d: %w", name, id, ErrNotFound)
	}
	return nil
}

func (d *Daemon) lookup(name string) (*entry, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	e, ok := d.proxies[name]
	if !ok || e.placeholder {
		return nil, fmt.Errorf("proxy %q: %w", name, ErrNotFound)
	}
	return e, nil
}

// Info describes the daemon.
func (d *Daemon) Info() *snoopv1.GetDaemonInfoResponse {
	d.mu.Lock()
	n := 0
	for _, e := range d.proxies {
		if !e.placeholder {
			n++
		}
	}
	eps := append([]string(nil), d.endpoints...)
	export := d.export
	d.mu.Unlock()
	history, queue := d.cfg.History, d.cfg.QueueSize
	if history <= 0 {
		history = hub.DefaultHistory
	}
	if queue <= 0 {
		queue = hub.DefaultQueueSize
	}
	return &snoopv1.GetDaemonInfoResponse{
		Version:          Version,
		StartTime:        timestamppb.New(d.started),
		ControlEndpoints: eps,
		Proxies:          int32(n),
		Watchers:         int32(d.hub.Watchers()),
		EventsPublished:  d.hub.Published(),
		HistorySize:      uint32(history),
		WatcherQueueSize: uint32(queue),
		StateDir:         d.cfg.StateDir,
		Engine:           d.engine.Name(),
		Loops:            uint32(max(d.engine.Loops(), 0)),
		FdLimit:          d.cfg.FDLimit,
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

// LatencyHistograms returns each proxy's latency histogram by name, for
// exporters that need the buckets rather than the API's percentiles.
func (d *Daemon) LatencyHistograms() map[string]*histogram.Snapshot {
	d.mu.Lock()
	es := make(map[string]*entry, len(d.proxies))
	for name, e := range d.proxies {
		if !e.placeholder {
			es[name] = e
		}
	}
	d.mu.Unlock()
	out := make(map[string]*histogram.Snapshot, len(es))
	for name, e := range es {
		s := e.p.Stats().Latency
		out[name] = &s
	}
	return out
}

// describe renders a proxy for the API.
func (d *Daemon) describe(e *entry) *snoopv1.Proxy {
	d.mu.Lock()
	spec, bindErr := e.spec, e.bindErr
	d.mu.Unlock()
	out := &snoopv1.Proxy{
		Spec:          proto.Clone(spec).(*snoopv1.ProxySpec),
		ListenAddress: e.p.Addr().String(),
		Counters:      counters(e.p.Stats()),
		CreateTime:    timestamppb.New(e.created),
	}
	switch {
	case e.p.Listening():
		out.State = snoopv1.ProxyState_PROXY_STATE_LISTENING
	case !spec.GetEnabled():
		out.State = snoopv1.ProxyState_PROXY_STATE_DISABLED
	default:
		out.State = snoopv1.ProxyState_PROXY_STATE_FAILED
		if bindErr != nil {
			out.Error = bindErr.Error()
		} else {
			out.Error = "not listening"
		}
	}
	return out
}

// loopNodesLocked is the loop check's view of the registry, without the
// proxies in skip and without names still being created. d.mu is held.
func (d *Daemon) loopNodesLocked(skip map[string]bool) []loopNode {
	names := make([]string, 0, len(d.proxies))
	for name, e := range d.proxies {
		if !e.placeholder && !skip[name] {
			names = append(names, name)
		}
	}
	// Sorted, so that which proxy a message names does not depend on map
	// order when two could match.
	sort.Strings(names)
	nodes := make([]loopNode, 0, len(names)+1)
	for _, name := range names {
		e := d.proxies[name]
		nodes = append(nodes, entryNode(name, e.spec, e.p.Addr()))
	}
	return nodes
}

// entryNode is the loop check's view of a registered proxy: its declared
// addresses and the address it is bound to.
func entryNode(name string, spec *snoopv1.ProxySpec, bound distcache.Addr) loopNode {
	// The spec was normalised, so both parse; a failure leaves a zero
	// address, which matches nothing.
	listen, _ := distcache.ParseListenAddr(spec.GetListen())
	server, _ := distcache.ParseConnectAddr(spec.GetServer())
	return nodeFor(name, server, listen, bound)
}
