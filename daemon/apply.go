package daemon

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sort"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/snoopd/snoopd/daemon/hub"
	"github.com/snoopd/snoopd/distcache"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
	"github.com/snoopd/snoopd/internal/labels"
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
	move   bool   // a change of the listen address: a new proxy replaces e
}

// ApplyProxies makes the set of proxies match specs. Every spec is
// validated, and every proxy it touches reserved, before anything
// changes. Unchanged proxies keep their connections; a changed listen
// address restarts the proxy; other changes happen in place. With prune,
// proxies not declared are deleted. New listeners are bound before any
// existing proxy is touched, so an address in use fails the apply with
// nothing changed (see execute for the one exception).
func (d *Daemon) ApplyProxies(ctx context.Context, specs []*snoopv1.ProxySpec, prune, dryRun bool) ([]*snoopv1.ApplyResult, error) {
	return d.ApplyProxiesSelected(ctx, specs, prune, "", dryRun)
}

// ApplyProxiesSelected is ApplyProxies whose prune removes only the
// undeclared proxies that pruneSelector selects (labels.ParseSelector),
// so that two scripts that each apply their own set with prune do not
// remove each other's proxies. A selector needs prune, and every declared
// proxy must match it: one that did not would escape the next prune of
// the same apply once it is left out of the file.
func (d *Daemon) ApplyProxiesSelected(ctx context.Context, specs []*snoopv1.ProxySpec, prune bool, pruneSelector string, dryRun bool) ([]*snoopv1.ApplyResult, error) {
	sel, err := labels.ParseSelector(pruneSelector)
	if err != nil {
		return nil, &FieldError{Field: "prune_selector", Reason: err.Error(), Err: err}
	}
	if !sel.Empty() && !prune {
		return nil, &FieldError{Field: "prune_selector", Reason: fmt.Sprintf("%s is set but prune is not; the selector only limits a prune", quote(pruneSelector))}
	}
	declared := map[string]bool{}
	var steps []*planned
	for i, in := range specs {
		spec, cfg, err := validate(in)
		if err != nil {
			return nil, prefixField(fmt.Sprintf("proxies[%d]", i), err)
		}
		if !sel.Matches(spec.GetLabels()) {
			return nil, &FieldError{Field: fmt.Sprintf("proxies[%d].labels", i), Reason: fmt.Sprintf("proxy %s (labels %s) does not match prune_selector %s; give it the labels the selector asks for, or a later apply with this selector would never prune it",
				quote(spec.GetName()), quote(labels.String(spec.GetLabels())), quote(sel.String()))}
		}
		if declared[spec.GetName()] {
			return nil, &FieldError{Field: fmt.Sprintf("proxies[%d].name", i), Reason: fmt.Sprintf("%s is declared twice", quote(spec.GetName()))}
		}
		declared[spec.GetName()] = true
		steps = append(steps, &planned{name: spec.GetName(), idx: i, spec: spec, cfg: cfg})
	}
	local := machineIPs()

	// Plan and reserve under one lock hold, so the plan is what happens.
	c := d.reg.begin()
	var results []*snoopv1.ApplyResult
	var own map[string]distcache.Addr
	err = d.reg.locked(func(h held) error {
		if h.isClosed() {
			return hub.ErrClosed
		}
		now := time.Now()
		for _, s := range steps {
			e, ok := h.get(s.name)
			var cur *snoopv1.ProxySpec
			if ok {
				cur = e.spec
			}
			// Before comparing: a fault declared again unchanged keeps its end.
			fixEnds(s.spec, &s.cfg, cur, now)
			switch {
			case !ok:
				s.action = snoopv1.ApplyAction_APPLY_ACTION_CREATED
			case e.busy:
				return errBeingChanged(s.name)
			case proto.Equal(effectiveSpec(e.spec), effectiveSpec(s.spec)) && e.bindErr == nil:
				s.action, s.e = snoopv1.ApplyAction_APPLY_ACTION_UNCHANGED, e
			default:
				s.action, s.e = snoopv1.ApplyAction_APPLY_ACTION_CHANGED, e
				s.move = e.spec.GetListen() != s.spec.GetListen() || tapRecreated(e.spec, s.spec)
			}
		}
		if prune {
			for name, e := range h.entries() {
				if declared[name] || e.ephemeral || !sel.Matches(e.spec.GetLabels()) {
					continue
				}
				if e.busy {
					return errBeingChanged(name)
				}
				steps = append(steps, &planned{name: name, action: snoopv1.ApplyAction_APPLY_ACTION_REMOVED, e: e})
			}
		}
		if err := h.applyLoops(steps, declared, local); err != nil {
			return err
		}
		if err := h.applyKeptAddrs(steps); err != nil {
			return err
		}
		sort.Slice(steps, func(i, j int) bool { return steps[i].name < steps[j].name })
		results = make([]*snoopv1.ApplyResult, 0, len(steps))
		for _, s := range steps {
			results = append(results, &snoopv1.ApplyResult{Name: s.name, Action: s.action})
		}
		if dryRun {
			// The old addresses of the proxies the plan moves, read under
			// the lock: a move onto its own old address is bound only once
			// the old listener stops (see execute).
			own = map[string]distcache.Addr{}
			for _, s := range steps {
				if s.move {
					own[s.name] = h.boundAddr(s.e)
				}
			}
			return nil
		}
		for _, s := range steps {
			if s.e != nil {
				c.reserve(h, s.name, s.e)
			} else {
				c.reserveName(h, s.spec)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if dryRun {
		if err := d.checkBinds(ctx, steps, own); err != nil {
			return nil, err
		}
		for i, s := range steps {
			results[i].Proxy = d.wouldBe(s)
		}
		return results, nil
	}

	// The changes in place are recorded only once their listeners are
	// bound: the loop check is made again then, in the same lock hold as
	// the commit, to see what other requests changed meanwhile.
	err = d.execute(c, steps, func(h held) error { return h.applyLoops(steps, declared, local) })
	// Busy marks off (of the old entries and of the ones that replaced
	// them), placeholders of creations that did not happen removed.
	c.release()
	if err != nil {
		return nil, err
	}
	d.log.Info("applied proxy set", "declared", len(specs), "prune", prune, "prune_selector", sel.String())
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
func (s *planned) moves() bool { return s.move }

// checkBinds is the dry run's phase 1 of execute: it makes sure every
// listener the plan would bind (creations, moves, proxies it enables) is
// free, without binding it for good, so that a dry run refuses what the
// real apply would, with the same words. own holds the moved proxies' old
// addresses.
func (d *Daemon) checkBinds(ctx context.Context, steps []*planned, own map[string]distcache.Addr) error {
	for _, s := range steps {
		a := s.cfg.Listen
		switch {
		case isTap(s.spec):
			continue // it binds nothing; a capture is opened only for real
		case s.action == snoopv1.ApplyAction_APPLY_ACTION_CREATED || s.move:
		case s.action == snoopv1.ApplyAction_APPLY_ACTION_CHANGED && enabledOf(s.spec) && !s.e.p.Listening():
			a = s.e.p.Addr()
		default:
			continue
		}
		err := listen.Config{}.Check(ctx, a)
		if err == nil || s.move && errors.Is(err, proxy.ErrAddrInUse) && listenClash(a, own[s.name]) {
			continue
		}
		err = d.explainInUse(s.name, a, err)
		field := fmt.Sprintf("proxies[%d].listen", s.idx)
		return fmt.Errorf("apply: nothing would change: proxy %s cannot listen on %s: %w", quote(s.name), s.spec.GetListen(), bindError(field, err))
	}
	return nil
}

// applyKeptAddrs refuses a plan that would put a new listener (a
// creation or a move) on the address of a proxy that is not listening
// and keeps it (see keptAddr): one the plan neither removes nor moves.
func (h held) applyKeptAddrs(steps []*planned) error {
	freed := map[string]bool{}
	for _, s := range steps {
		if s.action == snoopv1.ApplyAction_APPLY_ACTION_REMOVED || s.move {
			freed[s.name] = true
		}
	}
	for _, s := range steps {
		if s.action != snoopv1.ApplyAction_APPLY_ACTION_CREATED && !s.move {
			continue
		}
		skip := map[string]bool{s.name: true}
		maps.Copy(skip, freed)
		if err := h.keptAddr(fmt.Sprintf("proxies[%d].listen", s.idx), s.cfg.Listen, skip); err != nil {
			return err
		}
	}
	return nil
}

// execute carries out a reserved plan in three phases, ordered so that
// what can fail comes before what cannot be undone:
//
//  1. Bind: every new listener (creations and moves) is bound, and every
//     proxy the plan enables is enabled, while nothing else is touched.
//     The usual failure, an address in use, changes nothing: what was
//     bound is closed again and the error returned.
//  2. Record and save: the registry is set to the plan's outcome (new
//     and moved proxies in, new specs recorded, removed proxies marked)
//     and saved. A save that fails is undone in memory, what phase 1
//     bound is closed again, and the error returned: nothing changed.
//     loops, called under the registry lock just before the record, may
//     refuse the plan in the same way.
//  3. Carry out: moved proxies' old listeners and removed proxies stop,
//     changes in place take effect. Nothing here can fail but a move
//     whose new address clashes only with its own old one
//     (0.0.0.0:9001 to 127.0.0.1:9001), which can bind only once the old
//     proxy stopped; if that bind fails, the proxy stays, failed, at its
//     new address (as saved), and the error says so.
func (d *Daemon) execute(c *change, steps []*planned, loops func(h held) error) error {
	started := map[string]*entry{}
	var enabled []*entry
	unbind := func() {
		for _, e := range started {
			d.stop(e, 0)
		}
		for _, e := range enabled {
			e.p.Disable(false)
		}
	}
	for _, s := range steps {
		field := fmt.Sprintf("proxies[%d].listen", s.idx)
		switch {
		case s.action == snoopv1.ApplyAction_APPLY_ACTION_CREATED || s.move:
			e, err := d.start(s.spec, s.cfg, false)
			if err != nil && isTap(s.spec) {
				unbind()
				return fmt.Errorf("apply: nothing changed: tap %s cannot capture: %w", quote(s.name), prefixField(fmt.Sprintf("proxies[%d]", s.idx), err))
			}
			if err != nil && s.move && errors.Is(err, proxy.ErrAddrInUse) {
				continue // perhaps its own old address: phase 3 binds it
			}
			if err != nil {
				unbind()
				return fmt.Errorf("apply: nothing changed: proxy %s cannot listen on %s: %w", quote(s.name), s.spec.GetListen(), bindError(field, err))
			}
			started[s.name] = e
		case s.action == snoopv1.ApplyAction_APPLY_ACTION_CHANGED:
			ok, err := d.prepareChange(s.e, s.spec)
			if errors.Is(err, proxy.ErrFaultsNeedEpoll) {
				unbind()
				return err
			}
			if err != nil && isTap(s.spec) {
				unbind()
				return fmt.Errorf("apply: nothing changed: tap %s cannot capture: %w", quote(s.name), prefixField(fmt.Sprintf("proxies[%d]", s.idx), err))
			}
			if err != nil {
				unbind()
				return fmt.Errorf("apply: nothing changed: proxy %s cannot listen on %s: %w", quote(s.name), s.spec.GetListen(), bindError(field, err))
			}
			if ok {
				enabled = append(enabled, s.e)
			}
		}
	}

	err := c.commit(true, func(h held) error {
		if err := loops(h); err != nil {
			return err
		}
		for _, s := range steps {
			switch e := started[s.name]; {
			case e != nil: // a creation or a move
				c.put(h, s.name, e)
			case s.action == snoopv1.ApplyAction_APPLY_ACTION_CHANGED: // in place, or a late move
				c.respec(h, s.e, s.spec)
			case s.action == snoopv1.ApplyAction_APPLY_ACTION_REMOVED:
				c.markRemoving(h, s.e)
			}
		}
		return nil
	})
	if errors.Is(err, ErrNotSaved) {
		unbind()
		return fmt.Errorf("apply: nothing changed: %w", err)
	}
	if err != nil {
		unbind()
		return err
	}

	var errs []error
	for _, s := range steps {
		switch {
		case s.action == snoopv1.ApplyAction_APPLY_ACTION_CREATED:
			d.log.Info("created proxy", "proxy", s.name, "listen", started[s.name].p.Addr().String(), "server", s.spec.GetServer())
		case s.move:
			d.stop(s.e, 0)
			if started[s.name] == nil { // a late move
				e, err := d.start(s.spec, s.cfg, false)
				if err != nil {
					e, err = d.failedEntry(s.spec, s.cfg, bindError(fmt.Sprintf("proxies[%d].listen", s.idx), err))
					errs = append(errs, fmt.Errorf("apply: proxy %s stopped, but cannot listen on %s; it stays, failed, until enabled again: %w", quote(s.name), s.spec.GetListen(), err))
				}
				if e != nil {
					d.reg.locked(func(h held) error { c.install(h, s.name, e); return nil })
				}
			}
			d.log.Info("moved proxy", "proxy", s.name, "listen", d.proxyAddr(s.name))
		case s.action == snoopv1.ApplyAction_APPLY_ACTION_CHANGED:
			d.finishChange(s.e, s.spec, s.cfg, false)
		case s.action == snoopv1.ApplyAction_APPLY_ACTION_REMOVED:
			d.stop(s.e, 0)
			c.remove(s.name)
			d.log.Info("deleted proxy", "proxy", s.name)
		}
	}
	return errors.Join(errs...)
}

// proxyAddr is the address a registered proxy listens on, for logs.
func (d *Daemon) proxyAddr(name string) string {
	var e *entry
	d.reg.locked(func(h held) error { e, _ = h.get(name); return nil })
	if e == nil || e.p == nil {
		return ""
	}
	return e.p.Addr().String()
}

// applyLoops refuses a plan after which a declared proxy would take
// part in a proxy loop, looking at the whole set the apply leaves: the
// declared proxies (at their declared addresses, and the bound one of a
// proxy that keeps its listen address) and the registered proxies the
// apply does not touch.
func (h held) applyLoops(steps []*planned, declared map[string]bool, local localIPs) error {
	var nodes []loopNode
	var idx []int
	var check []bool
	for _, s := range steps {
		if s.spec == nil {
			continue
		}
		var bound distcache.Addr
		if s.e != nil && !s.moves() {
			bound = s.e.p.Addr()
		}
		nodes = append(nodes, nodeFor(s.name, loopServer(s.spec, s.cfg), s.cfg.Listen, bound))
		idx = append(idx, s.idx)
		check = append(check, true)
	}
	// Declared proxies are in the set as declared, and pruned ones are
	// gone after the apply; the plan's removals are those (not every
	// proxy there is now: a create that began after the plan is not
	// pruned).
	skip := maps.Clone(declared)
	for _, s := range steps {
		if s.action == snoopv1.ApplyAction_APPLY_ACTION_REMOVED {
			skip[s.name] = true
		}
	}
	for _, n := range h.loopNodes(skip) {
		nodes = append(nodes, n)
		check = append(check, false)
	}
	return loopError(nodes, check, func(i int, f string) string { return fmt.Sprintf("proxies[%d].%s", idx[i], f) }, local)
}

// wouldBe is the proxy a dry run's step would leave, without counters:
// an unchanged proxy as it is; a changed one with its new spec (its
// address too, if it moves); a new one at its declared address, whose
// port 0 the bind would replace. No chain: the one a proxy has now may
// not be the one it would have. Nil for a removal.
func (d *Daemon) wouldBe(s *planned) *snoopv1.Proxy {
	if s.spec == nil {
		return nil
	}
	var out *snoopv1.Proxy
	listen := s.cfg.Listen
	if s.e != nil {
		out = d.describe(s.e)
		// The chain is the one now; the apply may change it.
		out.Counters, out.Chain, out.ChainServer = nil, nil, ""
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
	out.Kind = kindOf(s.spec)
	out.ListenAddress, out.ListenHost, out.ListenPort, out.ListenPath = listen.String(), "", 0, ""
	fillAnswer(out, s.spec, listen)
	out.Error = ""
	out.State = snoopv1.ProxyState_PROXY_STATE_LISTENING
	if !enabledOf(s.spec) {
		out.State = snoopv1.ProxyState_PROXY_STATE_DISABLED
	}
	if s.moves() {
		// A move starts a new proxy.
		out.CreateTime, out.InstanceId = nil, ""
	}
	return out
}

// tapRecreated reports whether a change from cur to next takes a new
// tap rather than a change in place: a proxy becoming a tap or the
// other way, another interface, or other capture options, which a
// tap's observer fixes when it is made.
func tapRecreated(cur, next *snoopv1.ProxySpec) bool {
	if !isTap(cur) && !isTap(next) {
		return false
	}
	return cur.GetTapInterface() != next.GetTapInterface() ||
		cur.GetCaptureData() != next.GetCaptureData() || cur.GetCaptureLimit() != next.GetCaptureLimit()
}
