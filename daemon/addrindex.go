package daemon

import (
	"github.com/snoopd/snoopd/distcache"
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
// or two halves of a loop created at once would both pass. A proxy
// declared on TCP port 0 that has no port yet (it never bound) is kept
// aside, unsettled, and filed under its port once it has one. It is
// guarded by the registry's lock, so read and kept through held, and in
// step with the map by held.put, held.drop and held.setSpec, the only
// ways the registry changes.
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

// index files e.
func (h held) index(e *entry) {
	x := &h.r.addrs
	if e.keys.indexed || e.spec == nil {
		return
	}
	e.keys.indexed = true
	listen, server := h.addrsOf(e)
	if k, ok := keyOf(listen); ok {
		e.keys.listens = append(e.keys.listens, k)
		addTo(x.listens, k, e)
	}
	if e.p != nil && !isTap(e.spec) { // a placeholder has not bound yet; a tap never does
		h.indexBound(e)
	}
	if k, ok := keyOf(server); ok {
		e.keys.server, e.keys.hasServer = k, true
		addTo(x.servers, k, e)
	}
}

// indexBound files e under its bound address, or as unsettled while it
// has no port yet.
func (h held) indexBound(e *entry) {
	x := &h.r.addrs
	bound := h.boundAddr(e)
	if e.bound.IsZero() {
		x.unsettled[e] = struct{}{}
		return
	}
	if k, ok := keyOf(bound); ok && (len(e.keys.listens) == 0 || e.keys.listens[0] != k) {
		e.keys.listens = append(e.keys.listens, k)
		addTo(x.listens, k, e)
	}
}

// unindex takes e out.
func (h held) unindex(e *entry) {
	x := &h.r.addrs
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
// by nothing.
func (h held) settle() {
	x := &h.r.addrs
	for e := range x.unsettled {
		h.boundAddr(e)
		if !e.bound.IsZero() {
			delete(x.unsettled, e)
			h.indexBound(e)
		}
	}
}

// listeners calls f with each proxy a listen address of which (as
// configured or as bound) has a's key, until f returns false: every
// proxy whose listener a reaches or clashes with, and perhaps others.
func (h held) listeners(a distcache.Addr, f func(*entry) bool) {
	x := &h.r.addrs
	h.settle()
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
// perhaps others.
func (h held) serversAt(a distcache.Addr, f func(*entry) bool) {
	x := &h.r.addrs
	if k, ok := keyOf(a); ok {
		for e := range x.servers[k] {
			if !f(e) {
				return
			}
		}
	}
}

// addrsOf is e's spec's addresses, parsed once per spec rather than once
// per proxy per check: checks and snapshots look at every proxy. The
// spec was normalised, so both parse; a failure leaves a zero address,
// which matches nothing. A tap has neither: it listens nowhere, and its
// server gets nothing from it, so no clash or loop check counts it.
func (h held) addrsOf(e *entry) (listen, server distcache.Addr) {
	if e.addrsOf != e.spec {
		e.listen, e.server = distcache.Addr{}, distcache.Addr{}
		if !isTap(e.spec) {
			e.listen, _ = distcache.ParseListenAddr(e.spec.GetListen())
			e.server, _ = distcache.ParseConnectAddr(e.spec.GetServer())
		}
		e.addrsOf = e.spec
	}
	return e.listen, e.server
}

// boundAddr is e.p.Addr(), without asking the proxy once the answer is
// final: a proxy's address changes only when a port 0 gets its port, and
// then never again (re-enabling keeps the port). Checks that look at
// every proxy use it. A placeholder's is its declared address.
func (h held) boundAddr(e *entry) distcache.Addr {
	if e.p == nil {
		listen, _ := h.addrsOf(e)
		return listen
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
