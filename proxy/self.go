package proxy

import (
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/snoopd/snoopd/distcache"
)

// ownListeners is the set of addresses this process's proxies listen on,
// each with its proxy, so that a proxy whose traffic would come back to
// it through them (its own listener, or a chain of proxies that leads
// back: a host name that resolves to us, a wildcard listener reached
// through an interface address, a state file written before the daemon
// refused such proxies) is caught when it dials, instead of feeding
// itself connections until the process runs out of descriptors. A chain
// of proxies that ends at a real server is followed and let through.
var ownListeners = &listenerSet{tcps: map[netip.AddrPort]*Proxy{}, unixes: map[string]*Proxy{}, interfaces: interfaceAddrs}

// localRefresh is how old this host's interface addresses may be before
// a dial reads them again: an address added to an interface after a
// proxy bound a wildcard address must be seen as this host's.
const localRefresh = 5 * time.Second

type listenerSet struct {
	mu     sync.RWMutex
	tcps   map[netip.AddrPort]*Proxy // bound address → its proxy
	unixes map[string]*Proxy         // cleaned path → its proxy
	local  []netip.Addr              // this host's interface addresses
	// localAt is when local was read; interfaces reads them.
	localAt    time.Time
	interfaces func() []netip.Addr
	// version changes with every add and remove, and whenever a proxy's
	// server changes or a host name is resolved again (a chain may go
	// elsewhere now), so targets can cache their answer; it starts at 1
	// (0 marks "never checked").
	version atomic.Uint64
}

func init() { ownListeners.version.Store(1) }

// add records that proxy listens on ln.
func (s *listenerSet) add(ln net.Addr, proxy *Proxy) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch a := ln.(type) {
	case *net.TCPAddr:
		ap := a.AddrPort()
		s.tcps[netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())] = proxy
		// A listener's IPv4 address comes as ::ffff:a.b.c.d.
		if ap.Addr().Unmap().IsUnspecified() && s.local == nil {
			s.local, s.localAt = s.interfaces(), time.Now()
		}
	case *net.UnixAddr:
		s.unixes[filepath.Clean(a.Name)] = proxy
	}
	s.version.Add(1)
}

// remove forgets ln.
func (s *listenerSet) remove(ln net.Addr) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch a := ln.(type) {
	case *net.TCPAddr:
		ap := a.AddrPort()
		delete(s.tcps, netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()))
	case *net.UnixAddr:
		delete(s.unixes, filepath.Clean(a.Name))
	}
	s.version.Add(1)
}

// tcp returns the proxy listening on dst, directly or on a wildcard
// address that covers it.
func (s *listenerSet) tcp(dst netip.AddrPort) (*Proxy, bool) {
	dst = netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())
	s.mu.RLock()
	defer s.mu.RUnlock()
	if p, ok := s.tcps[dst]; ok {
		return p, true
	}
	for _, any := range []netip.Addr{netip.IPv4Unspecified(), netip.IPv6Unspecified()} {
		p, ok := s.tcps[netip.AddrPortFrom(any, dst.Port())]
		if ok && s.isLocal(dst.Addr()) {
			return p, true
		}
	}
	return nil, false
}

// unix returns the proxy listening on path.
func (s *listenerSet) unix(path string) (*Proxy, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	p, ok := s.unixes[filepath.Clean(path)]
	return p, ok
}

// arrivals returns the proxies whose listeners dialling t arrives at:
// at its unix path, or at any of the TCP candidates cands.
func (s *listenerSet) arrivals(t *target, cands []string) []*Proxy {
	if t.addr.Network() == distcache.NetworkUnix {
		if p, ok := s.unix(t.addr.Path()); ok {
			return []*Proxy{p}
		}
		return nil
	}
	var out []*Proxy
	for _, c := range cands {
		ap, err := netip.ParseAddrPort(c)
		if err != nil {
			continue
		}
		if p, ok := s.tcp(ap); ok && !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out
}

// loop follows dialling t, at candidates cands, through this process's
// proxies: each listener it arrives at is a proxy, whose own server is
// followed in turn. It returns the names of a chain that comes back to a
// proxy it went through (the first proxy arrived at first, the one met
// twice last), or nil when every chain ends at an address no proxy here
// listens on: a chain in front of a real server. A proxy whose server is
// a host name it has not resolved yet is taken for the end of its chain:
// when it dials, it resolves the name and checks its own chain, so a
// loop behind it costs at most one connection per proxy of the loop
// before it is caught.
func (s *listenerSet) loop(t *target, cands []string) []string {
	const onPath, done = 1, 2
	state := map[*Proxy]int{}
	var path []*Proxy
	var visit func(p *Proxy) []string
	visit = func(p *Proxy) []string {
		switch state[p] {
		case onPath:
			var names []string
			for _, q := range path[slices.Index(path, p):] {
				names = append(names, q.name)
			}
			return append(names, p.name)
		case done:
			return nil
		}
		state[p] = onPath
		path = append(path, p)
		next := p.current.Load().server
		for _, q := range s.arrivals(next, next.cached()) {
			if names := visit(q); names != nil {
				return names
			}
		}
		path = path[:len(path)-1]
		state[p] = done
		return nil
	}
	for _, p := range s.arrivals(t, cands) {
		if names := visit(p); names != nil {
			return names
		}
	}
	return nil
}

// refreshLocal reads the interface addresses again when a wildcard
// listener needs them and they are older than localRefresh, and changes
// the version when they changed, so that targets check again.
func (s *listenerSet) refreshLocal(now time.Time) {
	s.mu.RLock()
	stale := s.local != nil && now.Sub(s.localAt) >= localRefresh
	s.mu.RUnlock()
	if !stale {
		return
	}
	addrs := s.interfaces()
	s.mu.Lock()
	defer s.mu.Unlock()
	if now.Sub(s.localAt) < localRefresh {
		return // another dial just did
	}
	changed := !slices.Equal(addrs, s.local)
	s.local, s.localAt = addrs, now
	if changed {
		s.version.Add(1)
	}
}

func (s *listenerSet) isLocal(ip netip.Addr) bool {
	if ip.IsLoopback() || ip.IsUnspecified() {
		return true
	}
	for _, l := range s.local {
		if l == ip {
			return true
		}
	}
	return false
}

func interfaceAddrs() []netip.Addr {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return []netip.Addr{}
	}
	out := make([]netip.Addr, 0, len(addrs))
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(n.IP); ok {
				out = append(out, ip.Unmap())
			}
		}
	}
	return out
}
