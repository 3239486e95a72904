package daemon

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/snoopd/snoopd/distcache"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
	"github.com/snoopd/snoopd/proxy"
)

// entry is one proxy in the registry. p, created, instance and ephemeral
// are set before it is registered and never change; every other field is
// guarded by the registry's lock (see registry.go).
type entry struct {
	spec      *snoopv1.ProxySpec // normalised
	p         runner             // a *proxy.Proxy, or a *tapRunner for a tap
	created   time.Time
	bindErr   error // why an enabled proxy is not listening
	ephemeral bool  // not saved in the state dir (the demo proxy)
	// busy marks a proxy a change holds; placeholder marks a name
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
	// they were parsed from (see held.addrsOf).
	listen, server distcache.Addr
	addrsOf        *snoopv1.ProxySpec
	// bound caches p.Addr() once it cannot change any more (see
	// held.boundAddr).
	bound distcache.Addr
	// keys is where the entry is filed in the address index.
	keys entryKeys
}

// placeholderFor is the entry that reserves the name of a proxy being
// created with spec until it is bound. It is filed in the address index
// under spec's addresses, so the loop checks made while it binds count
// it as a proxy already.
func placeholderFor(spec *snoopv1.ProxySpec) *entry {
	return &entry{spec: spec, busy: true, placeholder: true}
}

// start makes and binds a proxy, or starts a tap's capture; no registry
// lock is held. A tap that cannot capture is refused with a FieldError
// (see startCapture).
func (d *Daemon) start(spec *snoopv1.ProxySpec, cfg proxy.Config, ephemeral bool) (*entry, error) {
	inst := newInstanceID()
	p, err := d.newRunner(spec, cfg, inst)
	if err != nil {
		return nil, err
	}
	if err := p.Start(); err != nil {
		p.Stop(context.Background())
		if isTap(spec) {
			return nil, err
		}
		return nil, listenError(cfg.Name, cfg.Listen, d.explainInUse(cfg.Name, cfg.Listen, err))
	}
	return &entry{spec: spec, p: p, created: time.Now(), ephemeral: ephemeral, instance: inst}, nil
}

// newRunner makes, without starting it, what spec declares: a tap, or a
// proxy (see newProxy). A tap's connections are numbered from the
// daemon's counter too, and its events go to the hub the same way.
func (d *Daemon) newRunner(spec *snoopv1.ProxySpec, cfg proxy.Config, instance string) (runner, error) {
	if isTap(spec) {
		return newTapRunner(cfg, spec.GetTapInterface(), &d.ids, d.hub.Publisher(instance)), nil
	}
	return d.newProxy(cfg, instance)
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

// failedEntry is a proxy that is registered but does not listen, with
// bindErr saying why; the error is bindErr, or why it could not be made.
func (d *Daemon) failedEntry(spec *snoopv1.ProxySpec, cfg proxy.Config, bindErr error) (*entry, error) {
	inst := newInstanceID()
	p, err := d.newRunner(spec, cfg, inst)
	if err != nil {
		return nil, err
	}
	return &entry{spec: spec, p: p, created: time.Now(), bindErr: bindErr, instance: inst}, bindErr
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

// describe renders a proxy for the API.
func (d *Daemon) describe(e *entry) *snoopv1.Proxy {
	spec, state, bindErr := d.proxyState(e)
	var del *deletion
	var note string
	d.reg.locked(func(held) error { del, note = e.deleting, e.note; return nil })
	out := &snoopv1.Proxy{
		Spec:          proto.Clone(spec).(*snoopv1.ProxySpec),
		ListenAddress: e.p.Addr().String(),
		Counters:      counters(e.p.Stats()),
		CreateTime:    timestamppb.New(e.created),
		State:         state.api(),
		InstanceId:    e.instance,
		Conditions:    e.p.Conditions(time.Now()),
		Kind:          kindOf(spec),
	}
	if t, ok := e.p.(*tapRunner); ok {
		out.Counters.Tap = tapCounters(t.TapStats())
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
