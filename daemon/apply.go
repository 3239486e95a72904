package daemon

import (
	"context"
	"fmt"
	"sort"

	"google.golang.org/protobuf/proto"

	"github.com/snoopd/snoopd/daemon/hub"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
	"github.com/snoopd/snoopd/proxy"
)

// planned is one step of an apply.
type planned struct {
	name   string
	action snoopv1.ApplyAction
	spec   *snoopv1.ProxySpec // the declared spec, normalised (nil for removals)
	cfg    proxy.Config
	e      *entry // the existing proxy, reserved (nil for creations)
}

// ApplyProxies makes the set of proxies match specs. Every spec is
// validated, and every proxy it touches reserved, before anything
// changes. Unchanged proxies keep their connections; a changed listen
// address restarts the proxy; other changes happen in place. With prune,
// proxies not declared are deleted. A bind that fails half way through
// stops the apply with an error; what was applied until then stays (and
// is saved), and applying again finishes the job.
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
		steps = append(steps, &planned{name: spec.GetName(), spec: spec, cfg: cfg})
	}

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
	sort.Slice(steps, func(i, j int) bool { return steps[i].name < steps[j].name })
	results := make([]*snoopv1.ApplyResult, 0, len(steps))
	for _, s := range steps {
		results = append(results, &snoopv1.ApplyResult{Name: s.name, Action: s.action})
	}
	if dryRun {
		d.mu.Unlock()
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

	var failed error
	for _, s := range steps {
		if failed == nil {
			failed = d.applyStep(s)
		}
		d.mu.Lock()
		if s.e != nil {
			s.e.busy = false
		} else if e := d.proxies[s.name]; e != nil && e.placeholder {
			delete(d.proxies, s.name) // a creation that failed or never ran
		}
		d.mu.Unlock()
	}
	d.saveLogged()
	if failed != nil {
		return nil, failed
	}
	d.log.Info("applied proxy set", "declared", len(specs), "prune", prune)
	return results, nil
}

func (d *Daemon) applyStep(s *planned) error {
	switch s.action {
	case snoopv1.ApplyAction_APPLY_ACTION_CREATED:
		e, err := d.start(s.spec, s.cfg, false)
		if err != nil {
			return fmt.Errorf("apply: create %q: %w", s.name, err)
		}
		d.mu.Lock()
		d.proxies[s.name] = e
		d.mu.Unlock()
		d.log.Info("created proxy", "proxy", s.name, "listen", e.p.Addr().String(), "server", s.spec.GetServer())
	case snoopv1.ApplyAction_APPLY_ACTION_CHANGED:
		if s.e.spec.GetListen() == s.spec.GetListen() {
			if err := d.change(s.e, s.spec, s.cfg, false); err != nil {
				return fmt.Errorf("apply: change %q: %w", s.name, err)
			}
			return nil
		}
		// A new listen address: the old proxy goes, a new one comes.
		d.stop(s.e, 0)
		e, err := d.start(s.spec, s.cfg, false)
		d.mu.Lock()
		if err != nil {
			delete(d.proxies, s.name)
			d.mu.Unlock()
			return fmt.Errorf("apply: move %q to %s: %w", s.name, s.spec.GetListen(), err)
		}
		// The reservation moves to the new entry; the caller releases
		// s.e, which is no longer in the registry.
		d.proxies[s.name] = e
		d.mu.Unlock()
		d.log.Info("moved proxy", "proxy", s.name, "listen", e.p.Addr().String())
	case snoopv1.ApplyAction_APPLY_ACTION_REMOVED:
		d.stop(s.e, 0)
		d.mu.Lock()
		delete(d.proxies, s.name)
		d.mu.Unlock()
		d.log.Info("deleted proxy", "proxy", s.name)
	}
	return nil
}
