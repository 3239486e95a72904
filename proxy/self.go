package proxy

import (
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// ownListeners is the set of addresses this process's proxies listen on,
// so that a proxy whose server turns out to be one of them (a host name
// that resolves to us, a state file written before the daemon refused
// such proxies) is caught when it dials, instead of feeding itself
// connections until the process runs out of descriptors.
var ownListeners = &listenerSet{tcps: map[netip.AddrPort]string{}, unixes: map[string]string{}, interfaces: interfaceAddrs}

// localRefresh is how old this host's interface addresses may be before
// a dial reads them again: an address added to an interface after a
// proxy bound a wildcard address must be seen as this host's.
const localRefresh = 5 * time.Second

type listenerSet struct {
	mu     sync.RWMutex
	tcps   map[netip.AddrPort]string // bound address → proxy name
	unixes map[string]string         // cleaned path → proxy name
	local  []netip.Addr              // this host's interface addresses
	// localAt is when local was read; interfaces reads them.
	localAt    time.Time
	interfaces func() []netip.Addr
	// version changes with every add and remove, so targets can cache
	// their answer; it starts at 1 (0 marks "never checked").
	version atomic.Uint64
}

func init() { ownListeners.version.Store(1) }

// add records that proxy listens on ln.
func (s *listenerSet) add(ln net.Addr, proxy string) {
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
func (s *listenerSet) tcp(dst netip.AddrPort) (string, bool) {
	dst = netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())
	s.mu.RLock()
	defer s.mu.RUnlock()
	if name, ok := s.tcps[dst]; ok {
		return name, true
	}
	for _, any := range []netip.Addr{netip.IPv4Unspecified(), netip.IPv6Unspecified()} {
		name, ok := s.tcps[netip.AddrPortFrom(any, dst.Port())]
		if ok && s.isLocal(dst.Addr()) {
			return name, true
		}
	}
	return "", false
}

// unix returns the proxy listening on path.
func (s *listenerSet) unix(path string) (string, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	name, ok := s.unixes[filepath.Clean(path)]
	return name, ok
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
