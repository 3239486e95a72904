package daemon

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"strings"

	"github.com/snoopd/snoopd/distcache"
)

// Proxy loops. A proxy whose traffic comes back to itself, through its
// own listener or through a chain of other proxies of the same daemon
// (a → b → a), would dial itself: every client connection, and every
// spare, takes another, until the daemon runs out of descriptors. Such a
// proxy is refused when it is configured. A chain that ends at a server
// that is not one of ours (a fault proxy in front of a recording one) is
// no loop, and is allowed. Host names are not resolved here (a resolver
// may be slow, or answer differently later): they are compared as
// written, plus "localhost"; whatever gets past this is caught by the
// data path when it dials.

// localIPs tells whether an IP is one of this machine's: loopback,
// unspecified, or an address of a local interface.
type localIPs func(netip.Addr) bool

// machineIPs returns the local IPs of this machine, as the interfaces
// report them now.
func machineIPs() localIPs {
	set := map[netip.Addr]bool{}
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok {
				if ip, ok := netip.AddrFromSlice(n.IP); ok {
					set[ip.Unmap()] = true
				}
			}
		}
	}
	return func(ip netip.Addr) bool {
		ip = ip.Unmap()
		return ip.IsLoopback() || ip.IsUnspecified() || set[ip]
	}
}

// reaches reports whether dialling server would arrive at a listener
// bound to listen. TCP: the ports are equal (port 0 never matches: it is
// no port yet), and either the hosts name the same thing (IP literals
// compared as IPs, names case-insensitively, "localhost" as the loopback
// addresses), or listen is a wildcard (no host, 0.0.0.0, ::) and server
// is local: localhost, a loopback or unspecified IP, or an IP of a local
// interface. A server at 0.0.0.0 or :: counts as localhost, since that
// is where connecting to it arrives. Unix: the cleaned paths are equal.
func reaches(server, listen distcache.Addr, local localIPs) bool {
	if server.Network() != listen.Network() {
		return false
	}
	if server.Network() == distcache.NetworkUnix {
		return cleanPath(server.Path()) == cleanPath(listen.Path())
	}
	if listen.Port() == 0 || server.Port() != listen.Port() {
		return false
	}
	lh, sh := normHost(listen.Host()), normHost(server.Host())
	lip, lerr := netip.ParseAddr(lh)
	sip, serr := netip.ParseAddr(sh)
	if serr == nil && sip.IsUnspecified() {
		// Connecting to 0.0.0.0 or :: reaches this machine's loopback.
		sh, serr = "localhost", errors.New("not an IP")
	}
	if lh == "" || (lerr == nil && lip.IsUnspecified()) {
		return sh == "localhost" || (serr == nil && local(sip))
	}
	switch {
	case lerr == nil && serr == nil:
		return lip.Unmap() == sip.Unmap()
	case sh == "localhost" && lerr == nil:
		return isLocalhostIP(lip)
	case lh == "localhost" && serr == nil:
		return isLocalhostIP(sip)
	}
	return lh == sh
}

// isLocalhostIP reports whether ip is one "localhost" names.
func isLocalhostIP(ip netip.Addr) bool {
	ip = ip.Unmap()
	return ip == netip.IPv6Loopback() || ip == netip.AddrFrom4([4]byte{127, 0, 0, 1})
}

// normHost is a host for comparison: lower case, no trailing dot, no
// IPv6 zone.
func normHost(h string) string {
	h = strings.ToLower(strings.TrimSuffix(h, "."))
	if i := strings.IndexByte(h, '%'); i >= 0 {
		h = h[:i]
	}
	return h
}

// cleanPath is a unix socket path for comparison. Abstract sockets ("@")
// are names, not paths, and are compared as written.
func cleanPath(p string) string {
	if strings.HasPrefix(p, "@") {
		return p
	}
	return filepath.Clean(p)
}

// loopNode is one proxy as the loop check sees it.
type loopNode struct {
	name    string
	listens []distcache.Addr // the configured address, and the bound one when it differs
	server  distcache.Addr
}

// nodeFor makes the loop check's view of a proxy.
func nodeFor(name string, server distcache.Addr, listens ...distcache.Addr) loopNode {
	n := loopNode{name: name, server: server}
	for _, a := range listens {
		if !a.IsZero() && (len(n.listens) == 0 || n.listens[0] != a) {
			n.listens = append(n.listens, a)
		}
	}
	return n
}

// proxyLoop is a chain of proxies that comes back to a proxy it went
// through: the names its traffic would go through, from the first proxy
// on, ending at the first proxy met twice.
type proxyLoop struct {
	server distcache.Addr
	chain  []string
}

// String is the chain, "a → b → a".
func (l *proxyLoop) String() string { return "a proxy loop " + strings.Join(l.chain, " → ") }

// serverReason explains the loop from its first proxy's side.
func (l *proxyLoop) serverReason() string {
	if l.chain[1] == l.chain[0] {
		return fmt.Sprintf("server %s is the listen address of proxy %q itself: %s", l.server, l.chain[0], l)
	}
	return fmt.Sprintf("server %s is the listen address of proxy %q (this daemon): %s", l.server, l.chain[1], l)
}

// loopSet is the proxies a loop check looks at, with their listeners
// indexed by network and port (unix sockets: by path). reaches never
// matches across ports or paths, so following a server looks at the few
// listeners that could be it: checking every proxy of a set of N, at
// start-up or in an apply, costs O(N), not O(N²).
type loopSet struct {
	nodes  []loopNode
	local  localIPs
	byPort map[portKey][]int
	byPath map[string][]int
}

type portKey struct {
	network distcache.Network
	port    int
}

func newLoopSet(nodes []loopNode, local localIPs) *loopSet {
	s := &loopSet{nodes: nodes, local: local, byPort: map[portKey][]int{}, byPath: map[string][]int{}}
	for j, n := range nodes {
		for _, l := range n.listens {
			if l.Network() == distcache.NetworkUnix {
				s.byPath[cleanPath(l.Path())] = append(s.byPath[cleanPath(l.Path())], j)
			} else if l.Port() != 0 {
				k := portKey{l.Network(), l.Port()}
				s.byPort[k] = append(s.byPort[k], j)
			}
		}
	}
	return s
}

// target returns the first node (in the set's order) with a listener
// that dialling server arrives at and that want accepts (nil: any), or -1.
func (s *loopSet) target(server distcache.Addr, want func(j int) bool) int {
	var cands []int
	if server.Network() == distcache.NetworkUnix {
		cands = s.byPath[cleanPath(server.Path())]
	} else {
		cands = s.byPort[portKey{server.Network(), server.Port()}]
	}
	for _, j := range cands {
		if want != nil && !want(j) {
			continue
		}
		for _, l := range s.nodes[j].listens {
			if reaches(server, l, s.local) {
				return j
			}
		}
	}
	return -1
}

// chain follows node i's server through the set: the names of the
// proxies its traffic goes through, from node i on, ending at the first
// one met twice (loop true) or at one whose server is not a listener of
// the set (end is the index of that last proxy).
func (s *loopSet) chain(i int) (names []string, end int, loop bool) {
	names = []string{s.nodes[i].name}
	seen := map[int]bool{i: true}
	for cur := i; ; {
		next := s.target(s.nodes[cur].server, nil)
		if next < 0 {
			return names, cur, false
		}
		names = append(names, s.nodes[next].name)
		if seen[next] {
			return names, next, true
		}
		seen[next] = true
		cur = next
	}
}

// findLoop returns the loop node i's traffic runs into, or nil when its
// chain ends at a server that is not a listener of the set: a chain of
// proxies in front of a real server is no loop.
func (s *loopSet) findLoop(i int) *proxyLoop {
	names, _, loop := s.chain(i)
	if !loop {
		return nil
	}
	return &proxyLoop{server: s.nodes[i].server, chain: names}
}

// loopError returns the error for the first loop a proxy in check takes
// part in (its field "server"), or nil. Only a proxy being changed can
// make a new loop, and every loop a change makes goes through the
// changed proxy's own chain: a new listener closes a loop only for
// traffic that comes from its own server. field gives the path of a
// node's field in the request.
func loopError(nodes []loopNode, check []bool, field func(i int, f string) string, local localIPs) error {
	set := newLoopSet(nodes, local)
	for i := range nodes {
		if !check[i] {
			continue
		}
		if l := set.findLoop(i); l != nil {
			return &FieldError{Field: field(i, "server"), Reason: l.serverReason()}
		}
	}
	return nil
}
