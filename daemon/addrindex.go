package daemon

import (
	"slices"
	"strings"

	"github.com/snoopd/snoopd/distcache"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
)

// The registry's addresses, indexed, so that the checks a create makes
// (a reserved address, a proxy loop) look at the few proxies that share
// a port or a path with the new one instead of at every proxy: with
// 10,000 proxies, a scan of them all under the registry lock on every
// create made creating them quadratic.

// addrKey is what two addresses must share to clash (listenClash) or for
// one to reach the other (reaches): the TCP port, or the cleaned unix
// path. A TCP port 0 has no key: it is no port yet, and matches nothing.
type addrKey struct {
	unix bool
	port int
	path string
}

// keyOf is a's key, false when it has none.
func keyOf(a distcache.Addr) (addrKey, bool) {
	switch a.Network() {
	case distcache.NetworkTCP:
		if a.Port() == 0 {
			return addrKey{}, false
		}
		return addrKey{port: a.Port()}, true
	case distcache.NetworkUnix:
		return addrKey{unix: true, path: cleanPath(a.Path())}, true
	}
	return addrKey{}, false
}

// addrIndex holds the registered proxies by the keys of their listen
// addresses (as configured, and as bound) and of their servers, and the
// placeholders of proxies being created by the keys of their declared
// addresses: the loop check of one create must see the others in flight,
// or two halves of a loop created at once would both pass. A proxy declared on TCP port 0 that has no port yet (it never
// bound) is kept aside, unsettled, and filed under its port once it has
// one. It is guarded by d.mu, and kept in step by putLocked, dropLocked
// and setSpecLocked, the only ways the registry changes.
type addrIndex struct {
	listens   map[addrKey]map[*entry]struct{}
	servers   map[addrKey]map[*entry]struct{}
	unsettled map[*entry]struct{}
}

// entryKeys is where an entry is filed in the index.
type entryKeys struct {
	indexed   bool
	listens   []addrKey
	server    addrKey
	hasServer bool
}

func newAddrIndex() addrIndex {
	return addrIndex{
		listens:   map[addrKey]map[*entry]struct{}{},
		servers:   map[addrKey]map[*entry]struct{}{},
		unsettled: map[*entry]struct{}{},
	}
}

func addTo(m map[addrKey]map[*entry]struct{}, k addrKey, e *entry) {
	set := m[k]
	if set == nil {
		set = map[*entry]struct{}{}
		m[k] = set
	}
	set[e] = struct{}{}
}

func removeFrom(m map[addrKey]map[*entry]struct{}, k addrKey, e *entry) {
	if set := m[k]; set != nil {
		delete(set, e)
		if len(set) == 0 {
			delete(m, k)
		}
	}
}

// add files e. d.mu is held.
func (x *addrIndex) add(e *entry) {
	if e.keys.indexed || e.spec == nil {
		return
	}
	e.keys.indexed = true
	e.parseAddrsLocked()
	if k, ok := keyOf(e.listen); ok {
		e.keys.listens = append(e.keys.listens, k)
		addTo(x.listens, k, e)
	}
	if e.p != nil { // a placeholder has not bound yet
		x.addBound(e)
	}
	if k, ok := keyOf(e.server); ok {
		e.keys.server, e.keys.hasServer = k, true
		addTo(x.servers, k, e)
	}
}

// addBound files e under its bound address, or as unsettled while it
// has no port yet.
func (x *addrIndex) addBound(e *entry) {
	bound := e.addrLocked()
	if e.bound.IsZero() {
		x.unsettled[e] = struct{}{}
		return
	}
	if k, ok := keyOf(bound); ok && (len(e.keys.listens) == 0 || e.keys.listens[0] != k) {
		e.keys.listens = append(e.keys.listens, k)
		addTo(x.listens, k, e)
	}
}

// remove takes e out. d.mu is held.
func (x *addrIndex) remove(e *entry) {
	if !e.keys.indexed {
		return
	}
	for _, k := range e.keys.listens {
		removeFrom(x.listens, k, e)
	}
	if e.keys.hasServer {
		removeFrom(x.servers, e.keys.server, e)
	}
	delete(x.unsettled, e)
	e.keys = entryKeys{}
}

// settle files the unsettled proxies that have a port by now (one
// enabled since). Those left have none, so clash with and are reached
// by nothing. d.mu is held.
func (x *addrIndex) settle() {
	for e := range x.unsettled {
		e.addrLocked()
		if !e.bound.IsZero() {
			delete(x.unsettled, e)
			x.addBound(e)
		}
	}
}

// listeners calls f with each proxy a listen address of which (as
// configured or as bound) has a's key, until f returns false: every
// proxy whose listener a reaches or clashes with, and perhaps others.
// d.mu is held.
func (x *addrIndex) listeners(a distcache.Addr, f func(*entry) bool) {
	x.settle()
	if k, ok := keyOf(a); ok {
		for e := range x.listens[k] {
			if !f(e) {
				return
			}
		}
	}
}

// serversAt calls f with each proxy whose server has a's key, until f
// returns false: every proxy whose server reaches a listener at a, and
// perhaps others. d.mu is held.
func (x *addrIndex) serversAt(a distcache.Addr, f func(*entry) bool) {
	if k, ok := keyOf(a); ok {
		for e := range x.servers[k] {
			if !f(e) {
				return
			}
		}
	}
}

// named is one proxy of the registry in name order (see Daemon.order).
type named struct {
	name string
	e    *entry
}

// orderAt is where name is, or would be, in d.order. d.mu is held.
func (d *Daemon) orderAt(name string) (int, bool) {
	return slices.BinarySearchFunc(d.order, name, func(n named, name string) int { return strings.Compare(n.name, name) })
}

// putLocked registers e under name, in place of what was there. d.mu is
// held.
func (d *Daemon) putLocked(name string, e *entry) {
	if old := d.proxies[name]; old != nil && old != e {
		d.addrs.remove(old)
	}
	d.proxies[name] = e
	d.addrs.add(e)
	if i, ok := d.orderAt(name); ok {
		d.order[i].e = e
	} else {
		d.order = slices.Insert(d.order, i, named{name, e})
	}
}

// dropLocked takes name out of the registry. d.mu is held.
func (d *Daemon) dropLocked(name string) {
	if e := d.proxies[name]; e != nil {
		d.addrs.remove(e)
	}
	delete(d.proxies, name)
	if i, ok := d.orderAt(name); ok {
		d.order = slices.Delete(d.order, i, i+1)
	}
}

// setSpecLocked gives a proxy a new spec in place, filing it again under
// its new server. d.mu is held.
func (d *Daemon) setSpecLocked(e *entry, spec *snoopv1.ProxySpec) {
	indexed := e.keys.indexed
	d.addrs.remove(e)
	e.spec = spec
	if indexed {
		d.addrs.add(e)
	}
}
