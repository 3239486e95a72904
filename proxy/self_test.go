package proxy

import (
	"net"
	"net/netip"
	"testing"
	"time"
)

// An address added to an interface after a proxy bound a wildcard
// address is seen as this host's once the cached addresses are older than
// localRefresh, and the set's version changes so that targets look again.
func TestWildcardListenerSeesNewInterfaceAddresses(t *testing.T) {
	addrs := []netip.Addr{netip.MustParseAddr("192.0.2.1")}
	s := &listenerSet{tcps: map[netip.AddrPort]*Proxy{}, unixes: map[string]*Proxy{},
		interfaces: func() []netip.Addr { return addrs }}
	s.version.Store(1)
	wild := &Proxy{name: "wild"}
	s.add(&net.TCPAddr{IP: net.IPv4zero, Port: 7000}, wild)
	later := netip.MustParseAddrPort("192.0.2.7:7000")
	if _, ok := s.tcp(later); ok {
		t.Fatal("an address no interface has is taken for this host's")
	}
	addrs = append(addrs, later.Addr())
	ver := s.version.Load()
	s.refreshLocal(s.localAt.Add(time.Second))
	if _, ok := s.tcp(later); ok || s.version.Load() != ver {
		t.Fatal("the addresses were read again before localRefresh passed")
	}
	s.refreshLocal(s.localAt.Add(localRefresh))
	if p, ok := s.tcp(later); !ok || p != wild {
		t.Fatalf("after a refresh, %s is not the wildcard listener's (%v, %v)", later, p, ok)
	}
	if s.version.Load() == ver {
		t.Error("the version did not change with the addresses")
	}
	// Unchanged addresses keep the version: targets keep their answer.
	ver = s.version.Load()
	s.refreshLocal(s.localAt.Add(localRefresh))
	if s.version.Load() != ver {
		t.Error("a refresh that found the same addresses changed the version")
	}
}
