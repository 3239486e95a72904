package pcapout

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"net"
	"net/netip"

	"github.com/snoopd/snoopd/distcache"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
)

// MadeUpPort is the TCP port of a made-up server address: 9001, the port
// the distcache tools' documentation and this project's examples give a
// dc_server, and the Wireshark dissector's default port.
const MadeUpPort = 9001

// Proxy is what the Writer needs to know of a proxy to address its
// connections.
type Proxy struct {
	// Server is the server's address. The zero value makes one up from
	// the proxy's name, as UnixServer does from a path.
	Server netip.AddrPort
	// ListenPath is the unix socket path the proxy listens on, if it
	// listens on one: its clients, which have no address, get addresses
	// made up from it and their connection ids (UnixClient).
	ListenPath string
}

// Describe returns what the Writer needs of p: its server's address (a
// host name resolved with the system's resolver, falling back to a
// made-up address when it does not resolve) and its listen path.
func Describe(ctx context.Context, p *snoopv1.Proxy) Proxy {
	out := Proxy{ListenPath: p.GetListenPath()}
	a, err := distcache.ParseAddr(p.GetSpec().GetServer())
	if err != nil {
		return out
	}
	if a.Network() == distcache.NetworkUnix {
		out.Server = UnixServer(a.Path())
		return out
	}
	if ip, err := netip.ParseAddr(a.Host()); err == nil {
		out.Server = netip.AddrPortFrom(ip.Unmap(), uint16(a.Port()))
		return out
	}
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", a.Host())
	if err != nil || len(ips) == 0 {
		// A server that does not resolve here still gets one stable
		// address, with its own port.
		made := UnixServer(a.String())
		out.Server = netip.AddrPortFrom(made.Addr(), uint16(a.Port()))
		return out
	}
	out.Server = netip.AddrPortFrom(ips[0].Unmap(), uint16(a.Port()))
	return out
}

// UnixServer is the made-up address of a server on the unix socket path:
// 127.A.B.C:9001, where A, B and C are the first three bytes of the
// SHA-256 of the path. The same path always gets the same address.
func UnixServer(path string) netip.AddrPort {
	h := sha256.Sum256([]byte(path))
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, h[0], h[1], h[2]}), MadeUpPort)
}

// UnixClient is the made-up address of a client without one (a unix
// socket's), from key (the proxy's listen path, or its name) and the
// connection id: 127.A.B.C:P, where A, B and C are the first three bytes
// of the SHA-256 of key, a zero byte and the id as 8 big-endian bytes,
// and P is 49152 plus the next two bytes modulo 16384 (the ephemeral
// range).
func UnixClient(key string, connID uint64) netip.AddrPort {
	b := make([]byte, 0, len(key)+9)
	b = append(b, key...)
	b = append(b, 0)
	b = binary.BigEndian.AppendUint64(b, connID)
	h := sha256.Sum256(b)
	port := 49152 + binary.BigEndian.Uint16(h[3:5])%16384
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, h[0], h[1], h[2]}), port)
}
