package sniff

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/snoopd/snoopd/distcache"
)

// Server says which end of a TCP connection is the distcache server: a
// port, and the addresses that port is on (none: any address).
type Server struct {
	Port  uint16
	Addrs []netip.Addr
}

// ParseServer reads a server address as snoopctl's --server takes it:
// the distcache forms (IP:host:port, host:port, [v6]:port, tcp://...;
// see distcache.ParseAddr), or a bare port, which makes any address
// with that port the server's side. A host name is looked up, and every
// address it has counts.
func ParseServer(ctx context.Context, s string) (Server, error) {
	if n, err := strconv.ParseUint(s, 10, 16); err == nil {
		if n == 0 {
			return Server{}, fmt.Errorf("server %q: port 0 is no server's port (example: 9001, IP:10.0.0.5:9001)", s)
		}
		return Server{Port: uint16(n)}, nil
	}
	a, err := distcache.ParseAddr(s)
	if err != nil {
		return Server{}, fmt.Errorf("server: %w", err)
	}
	if a.Network() != distcache.NetworkTCP {
		return Server{}, fmt.Errorf("server %q: a capture holds TCP only, not a unix socket (example: IP:10.0.0.5:9001)", s)
	}
	if a.Port() == 0 {
		return Server{}, fmt.Errorf("server %q: port 0 is no server's port (example: IP:10.0.0.5:9001)", s)
	}
	srv := Server{Port: uint16(a.Port())}
	host := a.Host()
	if host == "" {
		return srv, nil // IP:port: every address
	}
	if ip, err := netip.ParseAddr(strings.Trim(host, "[]")); err == nil {
		if !ip.IsUnspecified() {
			srv.Addrs = []netip.Addr{ip.Unmap()}
		}
		return srv, nil
	}
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return Server{}, fmt.Errorf("server %q: look up %s: %w (give an IP address instead)", s, host, err)
	}
	for _, ip := range ips {
		srv.Addrs = append(srv.Addrs, ip.Unmap())
	}
	return srv, nil
}

// Is reports whether ap is the server's end.
func (s Server) Is(ap netip.AddrPort) bool {
	if ap.Port() != s.Port {
		return false
	}
	if len(s.Addrs) == 0 {
		return true
	}
	ip := ap.Addr().Unmap()
	for _, a := range s.Addrs {
		if a == ip {
			return true
		}
	}
	return false
}

// String writes the server as a filter would read: "port 9001" or
// "10.0.0.5:9001".
func (s Server) String() string {
	if len(s.Addrs) == 0 {
		return "port " + strconv.Itoa(int(s.Port))
	}
	parts := make([]string, len(s.Addrs))
	for i, a := range s.Addrs {
		parts[i] = netip.AddrPortFrom(a, s.Port).String()
	}
	return strings.Join(parts, ", ")
}
