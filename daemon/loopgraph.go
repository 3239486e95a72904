package daemon

import (
	"maps"
	"slices"
	"sort"

	"github.com/snoopd/snoopd/distcache"
	"github.com/snoopd/snoopd/proxy"
)

// The registry as a graph for the loop checks (loop.go): each proxy a
// node, with an edge from a proxy to the ones whose listener its server
// reaches. These walks pick the part of the registry a check must see,
// through the address index, so that a check costs the chains it
// follows rather than the number of proxies. Proxies still being created
// are in the graph, at their declared addresses (see placeholderFor):
// two halves of a loop created at once must see each other.

// nodeOf is the loop check's view of the registered proxy e.
func (h held) nodeOf(e *entry) loopNode {
	listen, server := h.addrsOf(e)
	return nodeFor(e.spec.GetName(), server, listen, h.boundAddr(e))
}

// mayLoop reports whether a new proxy could take part in a proxy loop:
// its server reaches a registered proxy's listener (or its own), or a
// registered proxy's server reaches its listen address. Only then does
// create run the full check. It looks only at the proxies filed under
// the new server's and listen address's ports or paths (see addrIndex),
// so creating the ten-thousandth proxy costs what creating the first
// did.
func (h held) mayLoop(cfg proxy.Config, local localIPs) bool {
	if reaches(cfg.Server, cfg.Listen, local) {
		return true
	}
	may := false
	h.listeners(cfg.Server, func(e *entry) bool {
		listen, _ := h.addrsOf(e)
		bound := h.boundAddr(e)
		may = reaches(cfg.Server, listen, local) || (bound != listen && reaches(cfg.Server, bound, local))
		return !may
	})
	if may {
		return true
	}
	h.serversAt(cfg.Listen, func(e *entry) bool {
		_, server := h.addrsOf(e)
		may = reaches(server, cfg.Listen, local)
		return !may
	})
	return may
}

// loopNodes is the loop check's view of the whole registry, without the
// proxies in skip, sorted by name, so that which proxy a message names
// does not depend on map order when two could match.
func (h held) loopNodes(skip map[string]bool) []loopNode {
	names := make([]string, 0, len(h.r.proxies))
	for name, e := range h.r.proxies {
		if e.spec != nil && !skip[name] {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	nodes := make([]loopNode, 0, len(names)+1)
	for _, name := range names {
		nodes = append(nodes, h.nodeOf(h.r.proxies[name]))
	}
	return nodes
}

// loop returns the loop n, a proxy being created (fresh) or changed,
// would take part in, as an error on its field "spec.server", or nil.
// The registered proxy of n's name, if any, is left out: n is what it
// becomes.
func (h held) loop(n loopNode, fresh bool, local localIPs) error {
	nodes := h.loopNodesAround(n, fresh, map[string]bool{n.name: true}, local)
	check := make([]bool, len(nodes))
	check[len(nodes)-1] = true
	return loopError(nodes, check, func(_ int, f string) string { return "spec." + f }, local)
}

// loopNodesAround is the part of the graph that a change of one proxy,
// n, can make a loop in: n itself (last), and, sorted by name as
// loopNodes sorts them, the registered proxies its server leads to,
// those whose server reaches one of n's listeners when n is new (fresh),
// and every proxy their servers lead to, in turn. Every listener a
// server of the part reaches is in it, so findLoop and loopError answer
// on it what they answer on the whole graph. The proxies in skip are
// left out.
func (h held) loopNodesAround(n loopNode, fresh bool, skip map[string]bool, local localIPs) []loopNode {
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
		node := h.nodeOf(e)
		if match(node) {
			in[name] = node
			queue = append(queue, node)
		}
		return true
	}
	reachedBy := func(server distcache.Addr) {
		h.listeners(server, func(e *entry) bool {
			return visit(e, func(node loopNode) bool {
				return slices.ContainsFunc(node.listens, func(l distcache.Addr) bool { return reaches(server, l, local) })
			})
		})
	}
	reachedBy(n.server)
	if fresh {
		for _, l := range n.listens {
			h.serversAt(l, func(e *entry) bool {
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

// leadsToProxy reports whether e's server is filed under a listener of
// the registry's address index: the cheap test before chain, which reads
// the interface addresses.
func (h held) leadsToProxy(e *entry) bool {
	_, server := h.addrsOf(e)
	maybe := false
	h.listeners(server, func(*entry) bool { maybe = true; return false })
	return maybe
}

// chain is the chain e's traffic goes through when its server is a
// listener of this daemon (Proxy.chain): the names of the proxies, e's
// first, and the server the last one declares, or "" when the chain
// comes back to a proxy it went through. Nil when the chain is e alone.
func (h held) chain(e *entry, local localIPs) ([]string, string) {
	name := e.spec.GetName()
	nodes := h.loopNodesAround(h.nodeOf(e), false, map[string]bool{name: true}, local)
	names, end, loop := newLoopSet(nodes, local).chain(len(nodes) - 1)
	switch {
	case len(names) == 1:
		return nil, ""
	case loop:
		return names, ""
	}
	return names, nodes[end].server.String()
}

// chainOf is held.chain for describe: nil at once when e's server is no
// listener here, which the index answers without reading the interface
// addresses, and those read without the lock otherwise.
func (d *Daemon) chainOf(e *entry) (names []string, server string) {
	var maybe bool
	d.reg.locked(func(h held) error { maybe = h.leadsToProxy(e); return nil })
	if !maybe {
		return nil, ""
	}
	local := machineIPs()
	d.reg.locked(func(h held) error { names, server = h.chain(e, local); return nil })
	return names, server
}
