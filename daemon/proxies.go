package daemon

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/snoopd/snoopd/distcache"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
	"github.com/snoopd/snoopd/proxy"
)

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
	c, err := d.reg.reserveNew(spec, func(h held) error {
		if isTap(spec) {
			return nil // it listens nowhere and forwards nothing: no clash, no loop
		}
		if err := h.keptAddr("spec.listen", cfg.Listen, nil); err != nil {
			return err
		}
		if h.mayLoop(cfg, local) {
			return h.loop(nodeFor(name, cfg.Server, cfg.Listen), true, local)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	defer c.release()

	e, err := d.start(spec, cfg, ephemeral)
	if err != nil && isTap(spec) {
		return nil, prefixField("spec", err)
	}
	if err != nil {
		return nil, bindError("spec.listen", err)
	}
	if err := c.commit(!ephemeral, func(h held) error { c.put(h, name, e); return nil }); err != nil {
		d.stop(e, 0)
		d.log.Warn("created proxy removed again: it could not be saved", "proxy", name, "err", err)
		return nil, err
	}
	c.release()
	d.log.Info("created proxy", "proxy", name, "listen", e.p.Addr().String(), "server", spec.GetServer(), "enabled", enabledOf(spec))
	return d.describe(e), nil
}

// GetProxy describes one proxy.
func (d *Daemon) GetProxy(name string) (*snoopv1.Proxy, error) {
	e, err := d.lookup(name)
	if err != nil {
		return nil, err
	}
	return d.describe(e), nil
}

// ListProxies describes every proxy, sorted by name.
func (d *Daemon) ListProxies() []*snoopv1.Proxy {
	var es []*entry
	d.reg.locked(func(h held) error { es = h.live(); return nil })
	out := make([]*snoopv1.Proxy, 0, len(es))
	for _, e := range es {
		out = append(out, d.describe(e))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].GetSpec().GetName() < out[j].GetSpec().GetName() })
	return out
}

// lookup is the registered proxy name, for a reader.
func (d *Daemon) lookup(name string) (e *entry, err error) {
	d.reg.locked(func(h held) error { e, err = h.lookup(name); return nil })
	return e, err
}

// UpdateProxy changes the fields of a proxy named in paths, taking their
// values from in. Enabling binds first, so a bind error changes nothing.
func (d *Daemon) UpdateProxy(ctx context.Context, in *snoopv1.ProxySpec, paths []string, closeConns bool) (*snoopv1.Proxy, error) {
	if in == nil || in.GetName() == "" {
		return nil, &FieldError{Field: "spec.name", Reason: "missing: name the proxy to update"}
	}
	c, e, err := d.reg.reserveExisting(in.GetName())
	if err != nil {
		return nil, err
	}
	defer c.release()
	var cur *snoopv1.ProxySpec
	d.reg.locked(func(held) error { cur = e.spec; return nil })
	if err := tapUpdate(cur, in, paths); err != nil {
		return nil, err
	}
	merged, err := applyMask(cur, in, paths)
	if err != nil {
		return nil, err
	}
	spec, cfg, err := validate(merged)
	if err != nil {
		return nil, prefixField("spec", err)
	}
	fixEnds(spec, &cfg, cur, time.Now())
	local := machineIPs()
	// The listen address does not change, so only the server can make a
	// loop. This first look refuses a loop before anything is bound; the
	// check that counts is made again with the commit, below.
	node := nodeFor(spec.GetName(), loopServer(spec, cfg), cfg.Listen, e.p.Addr())
	if err := d.reg.locked(func(h held) error { return h.loop(node, false, local) }); err != nil {
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
	if err != nil && isTap(spec) {
		return nil, prefixField("spec", err)
	}
	if err != nil {
		return nil, bindError("spec.listen", err)
	}
	// The check and the record are one step: another request that made
	// the other half of a loop since the first look is seen here, and
	// one checked after this sees the new server.
	err = c.commit(true, func(h held) error {
		if err := h.loop(node, false, local); err != nil {
			return err
		}
		c.respec(h, e, spec)
		return nil
	})
	if err != nil {
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
		if isTap(spec) {
			d.reg.locked(func(held) error { e.bindErr = err; return nil })
			return false, err
		}
		err = d.explainInUse(spec.GetName(), e.p.Addr(), err)
		// A fact, whatever becomes of the change: not undone.
		d.reg.locked(func(held) error { e.bindErr = err; return nil })
		return false, listenError(spec.GetName(), e.p.Addr(), err)
	}
	return true, nil
}

// finishChange makes a reserved proxy run with cfg, once its new spec is
// saved: server and options (which cannot fail, cfg being valid), then
// disabling, which may close connections and so comes last.
func (d *Daemon) finishChange(e *entry, spec *snoopv1.ProxySpec, cfg proxy.Config, closeConns bool) {
	if err := e.p.SetServer(cfg.Server); err != nil && isTap(spec) {
		// A tap starts a new capture for its new server, which can fail
		// (its host name does not resolve, the interface went away): it
		// stays, failed, saying why, as a proxy that cannot bind does.
		d.reg.locked(func(held) error { e.bindErr = err; return nil })
		d.log.Warn("tap cannot capture for its new server; it stays failed until enabled again", "proxy", spec.GetName(), "err", err)
	} else if err != nil {
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

// tapUpdate refuses the changes of a tap (cur) that a tap cannot make:
// faults, which nothing passing through it could meet (a
// FailedPrecondition: the proxy is the wrong kind, the request is well
// formed), and its capture options, which are fixed when it is made
// (delete and create it, or apply, which does that).
func tapUpdate(cur, in *snoopv1.ProxySpec, paths []string) error {
	if !isTap(cur) {
		return nil
	}
	for _, p := range paths {
		switch {
		case p == "faults" && len(in.GetFaults()) > 0:
			return fmt.Errorf("proxy %s is a tap on %s: %w", quote(cur.GetName()), cur.GetTapInterface(), ErrTapForwardsNothing)
		case p == "capture_data" || p == "capture_limit":
			return &FieldError{Field: "update_mask", Reason: fmt.Sprintf("%q of tap %s cannot be changed in place; delete and create it again (apply does)", p, quote(cur.GetName()))}
		}
	}
	return nil
}

// loopServer is the server a proxy loop check follows from spec: none
// for a tap, whose server gets nothing from it.
func loopServer(spec *snoopv1.ProxySpec, cfg proxy.Config) distcache.Addr {
	if isTap(spec) {
		return distcache.Addr{}
	}
	return cfg.Server
}
