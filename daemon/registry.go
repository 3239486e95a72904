package daemon

import (
	"fmt"
	"iter"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"

	"github.com/snoopd/snoopd/daemon/hub"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
)

// The registry holds the named proxies, and a change is the one way to
// change it. Every create, update, delete, apply and restore is a change
// that goes through the same steps: reserve the names it touches, build
// (bind listeners, outside the lock), record and save (commit), then
// carry out what cannot be undone and release. What holds throughout,
// and what registry_test.go checks:
//
//   - The lock. registry.mu guards the map of proxies, their order and
//     address index, closed, and each entry's mutable fields (spec,
//     bindErr, note, busy, placeholder, removing, deleting and the caches
//     of its addresses and JSON). Code reads or writes them only through
//     a held, which registry.locked alone makes, for the length of its
//     callback; a held is never kept past it. An entry's p, created,
//     instance and ephemeral are set before it is registered and never
//     change, so they are read without the lock. The registry's lock is
//     taken before the state file's, never the other way; no proxy binds,
//     drains or stops while it is held, so a wedged proxy cannot freeze
//     the API.
//
//   - Reservation. A change reserves every name it touches before it
//     binds anything: a registered proxy by marking it busy, a new name by
//     a placeholder (an entry with a spec and no proxy, filed in the
//     address index at its declared addresses, so that the checks of
//     other changes count it). Another change of a reserved name is
//     refused (ErrBusy; for a placeholder, the name exists), but for a
//     delete of a proxy another delete drains, which joins it; so from
//     reserve to release, one change alone writes a name's entry
//     (TestReservationExcludesOtherChanges).
//
//   - Readers. Readers (lookup, live, the counts) pass over placeholders:
//     a reader sees a name only once its proxy is made, with p set, and
//     then until it is dropped; never a proxy half made. A proxy recorded
//     but not yet saved is visible; if the save fails, it is taken back
//     (TestReadersNeverSeeAHalfMadeProxy).
//
//   - Record and undo. commit makes a change's writes in one lock hold,
//     after the checks that must see the registry as it is then (a proxy
//     loop, a kept address), and takes the state file's ticket in the
//     same hold, so a snapshot holds a change whole or not at all. Each
//     write (put, respec, markRemoving) logs how to undo itself; if the
//     save fails, the log runs newest first under the lock and puts back
//     exactly what the writes replaced, which reservation keeps unchanged
//     meanwhile (TestFailedSaveUndoesExactlyTheChangesWrites). Unbinding
//     what the change bound is its caller's, after; what it writes once
//     saved (a removal carried out, a late move's new proxy) and the
//     error of a bind that failed are facts, and are not undone
//     (TestFailedStartLeavesNoTrace).
//
//   - Release. release lets go of every entry the change reserved or
//     installed (busy off) and drops, from the names it reserved, its own
//     placeholders that never got a proxy; an entry another change has
//     put under the same name since is left alone
//     (TestReleaseLeavesAnotherChangesEntryAlone). All of it together,
//     under concurrent changes of the same and different names, is
//     TestConcurrentChangesKeepTheRegistryWhole's.
type registry struct {
	// state, if set, is where committed changes are saved; log tells of
	// failed saves. Both are set before the registry is shared.
	state *stateFile
	log   *slog.Logger

	mu      sync.Mutex
	proxies map[string]*entry
	addrs   addrIndex // the proxies' addresses (see addrindex.go)
	// order is the registry sorted by name, for the state file's
	// snapshots, which would otherwise sort it each time.
	order  []named
	closed bool
}

func newRegistry(log *slog.Logger) *registry {
	return &registry{log: log, proxies: map[string]*entry{}, addrs: newAddrIndex()}
}

// held is the registry while its lock is held: the receiver of whatever
// reads or writes what the lock guards. Only registry.locked makes one.
type held struct{ r *registry }

// locked runs f with the registry's lock held, and returns f's error.
func (r *registry) locked(f func(h held) error) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return f(held{r})
}

// get is the entry under name, placeholders included.
func (h held) get(name string) (*entry, bool) {
	e, ok := h.r.proxies[name]
	return e, ok
}

// lookup is the proxy registered under name; a placeholder is no proxy.
func (h held) lookup(name string) (*entry, error) {
	e, ok := h.r.proxies[name]
	if !ok || e.placeholder {
		return nil, proxyNotFound(name)
	}
	return e, nil
}

// reservable is the registered proxy name, free for a change to
// reserve, or the deletion draining it (a delete joins it, others are
// refused). Not once the registry is closed, nor while another change
// holds the proxy.
func (h held) reservable(name string) (*entry, *deletion, error) {
	if h.r.closed {
		return nil, nil, hub.ErrClosed
	}
	e, err := h.lookup(name)
	switch {
	case err != nil:
		return nil, nil, err
	case e.deleting != nil:
		return e, e.deleting, nil
	case e.busy:
		return nil, nil, errBeingChanged(name)
	}
	return e, nil, nil
}

// live is every registered proxy, without placeholders, in no order.
func (h held) live() []*entry {
	es := make([]*entry, 0, len(h.r.proxies))
	for _, e := range h.r.proxies {
		if !e.placeholder {
			es = append(es, e)
		}
	}
	return es
}

// entries is every entry by name, placeholders included, in no order.
func (h held) entries() iter.Seq2[string, *entry] { return maps.All(h.r.proxies) }

// isClosed reports whether the daemon has shut down the registry.
func (h held) isClosed() bool { return h.r.closed }

// shut closes the registry to changes and returns its proxies to stop,
// or false if it was closed already.
func (h held) shut() ([]runner, bool) {
	if h.r.closed {
		return nil, false
	}
	h.r.closed = true
	var ps []runner
	for _, e := range h.r.proxies {
		if e.p != nil {
			ps = append(ps, e.p)
		}
	}
	return ps, true
}

// named is one proxy of the registry in name order (see registry.order).
type named struct {
	name string
	e    *entry
}

// orderAt is where name is, or would be, in the order.
func (h held) orderAt(name string) (int, bool) {
	return slices.BinarySearchFunc(h.r.order, name, func(n named, name string) int { return strings.Compare(n.name, name) })
}

// put registers e under name, in place of what was there. Only a change
// calls it (see change.put, change.install).
func (h held) put(name string, e *entry) {
	r := h.r
	if old := r.proxies[name]; old != nil && old != e {
		h.unindex(old)
	}
	r.proxies[name] = e
	h.index(e)
	if i, ok := h.orderAt(name); ok {
		r.order[i].e = e
	} else {
		r.order = slices.Insert(r.order, i, named{name, e})
	}
}

// drop takes name out of the registry. Only a change calls it.
func (h held) drop(name string) {
	r := h.r
	if e := r.proxies[name]; e != nil {
		h.unindex(e)
	}
	delete(r.proxies, name)
	if i, ok := h.orderAt(name); ok {
		r.order = slices.Delete(r.order, i, i+1)
	}
}

// setSpec gives a proxy a new spec in place, filing it again under its
// new server. Only a change calls it.
func (h held) setSpec(e *entry, spec *snoopv1.ProxySpec) {
	indexed := e.keys.indexed
	h.unindex(e)
	e.spec = spec
	if indexed {
		h.index(e)
	}
}

// errBeingChanged is the refusal of a change of a name another change
// holds.
func errBeingChanged(name string) error {
	return fmt.Errorf("proxy %s is being changed by another request; try again: %w", quote(name), ErrBusy)
}

// change is one request's change of the registry, from reservation to
// release (see the invariants above). It is used by one goroutine.
type change struct {
	r *registry
	// owned is every entry the change reserved, placed as a placeholder
	// or installed, by name: what release lets go of.
	owned []named
	// undo puts back, newest last, the writes commit recorded.
	undo     []func(h held)
	released bool
}

// begin starts a change; reserve, under the lock, what it touches.
func (r *registry) begin() *change { return &change{r: r} }

// reserve marks the registered proxy e, under name, as this change's.
// The caller has checked that no other change holds it (e.busy).
func (c *change) reserve(_ held, name string, e *entry) {
	e.busy = true
	c.owned = append(c.owned, named{name, e})
}

// reserveName reserves a name that is free for a proxy to be created
// with spec: a placeholder (see placeholderFor) holds it until commit
// puts the proxy in its place, or release drops it.
func (c *change) reserveName(h held, spec *snoopv1.ProxySpec) {
	p := placeholderFor(spec)
	h.put(spec.GetName(), p)
	c.owned = append(c.owned, named{spec.GetName(), p})
}

// reserveExisting is a change that reserves the proxy name, for an
// update.
func (r *registry) reserveExisting(name string) (*change, *entry, error) {
	c := r.begin()
	var e *entry
	err := r.locked(func(h held) error {
		var del *deletion
		var err error
		switch e, del, err = h.reservable(name); {
		case err != nil:
			return err
		case del != nil:
			return fmt.Errorf("proxy %q is being deleted (draining its connections); delete it again, or with force, to close them now: %w", name, ErrBusy)
		}
		c.reserve(h, name, e)
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	return c, e, nil
}

// reserveDelete is a change that reserves the proxy name for a delete,
// or the delete already running on it (running).
func (r *registry) reserveDelete(name string) (_ *change, _ *entry, _ *deletion, running bool, _ error) {
	c := r.begin()
	var e *entry
	var del *deletion
	err := r.locked(func(h held) error {
		var err error
		switch e, del, err = h.reservable(name); {
		case err != nil:
			return err
		case del != nil:
			running = true
			return nil
		}
		c.reserve(h, name, e)
		del = &deletion{force: make(chan struct{}), done: make(chan struct{})}
		e.deleting = del
		return nil
	})
	if err != nil {
		return nil, nil, nil, false, err
	}
	return c, e, del, running, nil
}

// reserveNew is a change that reserves spec's name for a new proxy, after
// check, in the same lock hold: a change checked after this one sees the
// placeholder.
func (r *registry) reserveNew(spec *snoopv1.ProxySpec, check func(h held) error) (*change, error) {
	c := r.begin()
	err := r.locked(func(h held) error {
		if h.isClosed() {
			return hub.ErrClosed
		}
		if _, ok := h.get(spec.GetName()); ok {
			return proxyExists(spec.GetName())
		}
		if err := check(h); err != nil {
			return err
		}
		c.reserveName(h, spec)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return c, nil
}

// put records e, a proxy made for a name this change reserved, under
// name; undone, what was there comes back.
func (c *change) put(h held, name string, e *entry) {
	old := h.r.proxies[name]
	c.install(h, name, e)
	c.undo = append(c.undo, func(h held) {
		if old != nil {
			h.put(name, old)
		} else {
			h.drop(name)
		}
	})
}

// install puts e under name for good, outside of commit: a proxy that
// replaces a reserved one after the change was saved (a late move), or
// one restored at start. e is this change's until release.
func (c *change) install(h held, name string, e *entry) {
	e.busy = true
	h.put(name, e)
	c.owned = append(c.owned, named{name, e})
}

// respec records spec for the reserved proxy e, whose bind error and
// note it clears; undone, all three come back.
func (c *change) respec(h held, e *entry, spec *snoopv1.ProxySpec) {
	old, oldErr, oldNote := e.spec, e.bindErr, e.note
	h.setSpec(e, spec)
	e.bindErr, e.note = nil, ""
	c.undo = append(c.undo, func(h held) {
		h.setSpec(e, old)
		e.bindErr, e.note = oldErr, oldNote
	})
}

// markRemoving records that the reserved proxy e is to be removed: the
// state file leaves it out. Undone, it is kept again.
func (c *change) markRemoving(_ held, e *entry) {
	e.removing = true
	c.undo = append(c.undo, func(held) { e.removing = false })
}

// commit runs record under the lock (its checks, then its writes through
// put, respec and markRemoving) and saves the result, unless save is
// false (a proxy the state file leaves out). It returns once the writes
// are durable; if record refuses, or the save fails (ErrNotSaved), the
// writes are undone and the error returned.
func (c *change) commit(save bool, record func(h held) error) error {
	var t uint64
	err := c.r.locked(func(h held) error {
		from := len(c.undo)
		if err := record(h); err != nil {
			undoAll(h, c.undo[from:])
			c.undo = c.undo[:from]
			return err
		}
		if save {
			undo := slices.Clone(c.undo[from:])
			t = h.ticket(func() {
				c.r.locked(func(h held) error { undoAll(h, undo); return nil })
			})
		}
		return nil
	})
	if err != nil {
		return err
	}
	return c.r.persist(t)
}

// undoAll runs undos newest first.
func undoAll(h held, undos []func(h held)) {
	for i := len(undos) - 1; i >= 0; i-- {
		undos[i](h)
	}
}

// remove carries out a saved removal: name leaves the registry, if it
// still holds one of this change's entries.
func (c *change) remove(name string) {
	c.r.locked(func(h held) error {
		if e, ok := h.get(name); ok && c.owns(name, e) {
			h.drop(name)
		}
		return nil
	})
}

// owns reports whether e, under name, is this change's.
func (c *change) owns(name string, e *entry) bool {
	return slices.Contains(c.owned, named{name, e})
}

// release ends the change (see the invariants above). Once is enough; a
// second call does nothing, so a caller may defer it and release early.
func (c *change) release() {
	c.r.locked(func(h held) error { c.releaseHeld(h); return nil })
}

// releaseHeld is release for a caller that holds the lock already.
func (c *change) releaseHeld(h held) {
	if c.released {
		return
	}
	c.released = true
	for _, n := range c.owned {
		n.e.busy = false
		if cur, ok := h.get(n.name); ok && cur == n.e && n.e.placeholder {
			h.drop(n.name)
		}
	}
}
