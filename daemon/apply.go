package daemon

import (
	"context"
	"errors"
	"fmt"
	"sort"

	"google.golang.org/protobuf/proto"

	"github.com/snoopd/snoopd/daemon/hub"
	"github.com/snoopd/snoopd/distcache"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
	"github.com/snoopd/snoopd/internal/listen"
	"github.com/snoopd/snoopd/proxy"
)

// planned is one step of an apply.
type planned struct {
	name   string
	idx    int // the declared spec's index in the request (creations and changes)
	action snoopv1.ApplyAction
	spec   *snoopv1.ProxySpec // the declared spec, normalised (nil for removals)
	cfg    proxy.Config
	e      *entry // the existing proxy, reserved (nil for creations)
}

// ApplyProxies makes the set of proxies match specs. Every spec is
// validated, and every proxy it touches reserved, before anything
// changes. Unchanged proxies keep their connections; a changed listen
// address restarts the proxy; other changes happen in place. With prune,
// proxies not declared are deleted. New listeners are bound before any
// existing proxy is touched, so an address in use fails the apply with
// nothing changed (see execute for the one exception).
func (d *Daemon) ApplyProxies(ctx context.Context, specs []*snoopv1.ProxySpec, prune, dryRun bool) ([]*snoopv1.ApplyResult, error) {
	declared := map[string]bool{}
	var steps []*planned
	for i, in := range specs {
		spec, cfg, err := normalize(in)
		if err != nil {
			return nil, prefixField(fmt.Sprintf("proxies[%d]", i), err)
		}
		if declared[spec.GetName()] {
			return nil, &FieldError{Field: fmt.Sprintf("proxies[%d].name", i), Reason: fmt.Sprintf("%q is declared twice", spec.GetName())}
		}
		declared[spec.GetName()] = true
		steps = append(steps, &planned{name: spec.GetName(), idx: i, spec: spec, cfg: cfg})
	}
	local := machineIPs()

	// Plan and reserve under one lock hold, so the plan is what happens.
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil, hub.ErrClosed
	}
	for _, s := range steps {
		e, ok := d.proxies[s.name]
		switch {
		case !ok:
			s.action = snoopv1.ApplyAction_APPLY_ACTION_CREATED
		case e.busy:
			d.mu.Unlock()
			return nil, fmt.Errorf("proxy %q is being changed by another request; try again: %w", s.name, ErrBusy)
		case proto.Equal(e.spec, s.spec) && e.bindErr == nil:
			s.action, s.e = snoopv1.ApplyAction_APPLY_ACTION_UNCHANGED, e
		default:
			s.action, s.e = snoopv1.ApplyAction_APPLY_ACTION_CHANGED, e
		}
	}
	if prune {
		for name, e := range d.proxies {
			if declared[name] || e.ephemeral {
				continue
			}
			if e.busy {
				d.mu.Unlock()
				return nil, fmt.Errorf("proxy %q is being changed by another request; try again: %w", name, ErrBusy)
			}
			steps = append(steps, &planned{name: name, action: snoopv1.ApplyAction_APPLY_ACTION_REMOVED, e: e})
		}
	}
	if err := d.applyLoopsLocked(steps, declared, prune, local); err != nil {
		d.mu.Unlock()
		return nil, err
	}
	sort.Slice(steps, func(i, j int) bool { return steps[i].name < steps[j].name })
	results := make([]*snoopv1.ApplyResult, 0, len(steps))
	for _, s := range steps {
		results = append(results, &snoopv1.ApplyResult{Name: s.name, Action: s.action})
	}
	if dryRun {
		d.mu.Unlock()
		for i, s := range steps {
			results[i].Proxy = d.wouldBe(s)
		}
		return results, nil
	}
	for _, s := range steps {
		if s.e != nil {
			s.e.busy = true
		} else {
			d.proxies[s.name] = &entry{busy: true, placeholder: true}
		}
	}
	d.mu.Unlock()

	err := d.execute(steps)
	// Release: busy marks off, placeholders of creations that did not
	// happen removed.
	d.mu.Lock()
	for _, s := range steps {
		if s.e != nil {
			s.e.busy = false
		} else if e := d.proxies[s.name]; e != nil && e.placeholder {
			delete(d.proxies, s.name)
		}
	}
	d.mu.Unlock()
	if err != nil {
		return nil, err
	}
	d.saveLogged()
	d.log.Info("applied proxy set", "declared", len(specs), "prune", prune)
	for _, r := range results {
		if r.GetAction() == snoopv1.ApplyAction_APPLY_ACTION_REMOVED {
			continue
		}
		// Another request may have deleted it since; its result then
		// says what the apply did, without the proxy.
		if p, err := d.GetProxy(r.GetName()); err == nil {
			r.Proxy = p
		}
	}
	return results, nil
}

// moves reports whether a change gives the proxy a new listen address,
// which takes a new proxy rather than a change in place.
func (s *planned) moves() bool {
	return s.action == snoopv1.ApplyAction_APPLY_ACTION_CHANGED && s.e.spec.GetListen() != s.spec.GetListen()
}

// execute carries out a reserved plan in two phases. First every new
// listener (creations and moves) is bound while the existing proxies are
// untouched, so the usual failure, an address in use, changes nothing:
// what was bound is closed again and the error returned. Then the plan is
// committed: moved proxies swap over, in-place changes and removals
// happen. A move whose new address only clashes with its own old one
// (0.0.0.0:9001 to 127.0.0.1:9001) binds in the second phase, after the
// old proxy stopped; if that bind fails, the proxy is gone, and the error
// says so.
func (d *Daemon) execute(steps []*planned) error {
	started := map[string]*entry{}
	for _, s := range steps {
		if s.action != snoopv1.ApplyAction_APPLY_ACTION_CREATED && !s.moves() {
			continue
		}
		e, err := d.start(s.spec, s.cfg, false)
		if err != nil && s.moves() && errors.Is(err, listen.ErrAddrInUse) {
			continue // perhaps its own old address: the commit phase binds it
		}
		if err != nil {
			for _, e := range started {
				d.stop(e, 0)
			}
			return fmt.Errorf("apply: nothing changed: proxy %q cannot listen on %s: %w", s.name, s.spec.GetListen(), err)
		}
		started[s.name] = e
	}

	var errs []error
	for _, s := range steps {
		switch {
		case s.action == snoopv1.ApplyAction_APPLY_ACTION_CREATED:
			d.install(s.name, started[s.name])
			d.log.Info("created proxy", "proxy", s.name, "listen", started[s.name].p.Addr().String(), "server", s.spec.GetServer())
		case s.moves():
			d.stop(s.e, 0)
			e := started[s.name]
			if e == nil { // a late move
				var err error
				if e, err = d.start(s.spec, s.cfg, false); err != nil {
					d.mu.Lock()
					delete(d.proxies, s.name)
					d.mu.Unlock()
					errs = append(errs, fmt.Errorf("apply: proxy %q stopped but cannot listen on %s: %w", s.name, s.spec.GetListen(), err))
					continue
				}
			}
			d.install(s.name, e)
			d.log.Info("moved proxy", "proxy", s.name, "listen", e.p.Addr().String())
		case s.action == snoopv1.ApplyAction_APPLY_ACTION_CHANGED:
			if err := d.change(s.e, s.spec, s.cfg, false); err != nil {
				errs = append(errs, fmt.Errorf("apply: change %q: %w", s.name, err))
			}
		case s.action == snoopv1.ApplyAction_APPLY_ACTION_REMOVED:
			d.stop(s.e, 0)
			d.mu.Lock()
			delete(d.proxies, s.name)
			d.mu.Unlock()
			d.log.Info("deleted proxy", "proxy", s.name)
		}
	}
	if len(errs) > 0 {
		// Part of the plan happened: save that, and report the rest.
		d.saveLogged()
		return errors.Join(errs...)
	}
	return nil
}

// install puts a started proxy in the registry under name. A moved
// proxy's reservation stays on the old entry, which the caller releases
// after it has left the registry.
func (d *Daemon) install(name string, e *entry) {
	d.mu.Lock()
	d.proxies[name] = e
	d.mu.Unlock()
}

// applyLoopsLocked refuses a plan after which a declared proxy would take
// part in a proxy loop, looking at the whole set the apply leaves: the
// declared proxies (at their declared addresses, and the bound one of a
// proxy that keeps its listen address) and the registered proxies the
// apply does not touch. d.mu is held.
func (d *Daemon) applyLoopsLocked(steps []*planned, declared map[string]bool, prune bool, local localIPs) error {
	var nodes []loopNode
	var idx []int
	var checkServer, newListen []bool
	for _, s := range steps {
		if s.spec == nil {
			continue
		}
		var bound distcache.Addr
		if s.e != nil && !s.moves() {
			bound = s.e.p.Addr()
		}
		nodes = append(nodes, nodeFor(s.name, s.cfg.Server, s.cfg.Listen, bound))
		idx = append(idx, s.idx)
		checkServer = append(checkServer, true)
		newListen = append(newListen, s.e == nil || s.moves())
	}
	skip := map[string]bool{}
	for name, e := range d.proxies {
		// Pruned proxies are gone after the apply; ephemeral ones stay.
		if declared[name] || (prune && !e.ephemeral) {
			skip[name] = true
		}
	}
	for _, n := range d.loopNodesLocked(skip) {
		nodes = append(nodes, n)
		checkServer, newListen = append(checkServer, false), append(newListen, false)
	}
	return loopError(nodes, checkServer, newListen, func(i int, f string) string { return fmt.Sprintf("proxies[%d].%s", idx[i], f) }, local)
}

// wouldBe is the proxy a dry run's step would leave, without counters:
// an unchanged proxy as it is; a changed one with its new spec (its
// address too, if it moves); a new one at its declared address, whose
// port 0 the bind would replace. Nil for a removal.
func (d *Daemon) wouldBe(s *planned) *snoopv1.Proxy {
	if s.spec == nil {
		return nil
	}
	var out *snoopv1.Proxy
	listen := s.cfg.Listen
	if s.e != nil {
		out = d.describe(s.e)
		out.Counters = nil
		if !s.moves() {
			listen = s.e.p.Addr()
		}
	} else {
		out = &snoopv1.Proxy{}
	}
	if s.action == snoopv1.ApplyAction_APPLY_ACTION_UNCHANGED {
		return out
	}
	out.Spec = proto.Clone(s.spec).(*snoopv1.ProxySpec)
	out.ListenAddress, out.ListenHost, out.ListenPort, out.ListenPath = listen.String(), "", 0, ""
	fillAnswer(out, s.spec, listen)
	out.Error = ""
	out.State = snoopv1.ProxyState_PROXY_STATE_LISTENING
	if !s.spec.GetEnabled() {
		out.State = snoopv1.ProxyState_PROXY_STATE_DISABLED
	}
	if s.moves() {
		// A move starts a new proxy.
		out.CreateTime, out.InstanceId = nil, ""
	}
	return out
}
