package daemon

import (
	"errors"
	"fmt"
	"net"

	"github.com/snoopd/snoopd/distcache"
	"github.com/snoopd/snoopd/proxy"
)

// explainInUse adds to an address-in-use error who holds the address.
func (d *Daemon) explainInUse(name string, a distcache.Addr, err error) error {
	if !errors.Is(err, proxy.ErrAddrInUse) {
		return err
	}
	holder, known := d.holderOf(name, a)
	if known {
		// The bind's own words guess at another process; it is this one.
		return fmt.Errorf("listen on %s: %w: %s", a, proxy.ErrAddrInUse, holder)
	}
	return fmt.Errorf("%w: %s", err, holder)
}

// holderOf says who holds listen address a that proxy name could not
// bind: another proxy of this daemon or one of the daemon's own sockets
// (known is then true), or (neither) another process, with the command
// that names it. An operator told only "address in use" has to find out
// which of the three it is, and the remedy differs for each.
func (d *Daemon) holderOf(name string, a distcache.Addr) (holder string, known bool) {
	d.mu.Lock()
	d.addrs.listeners(a, func(e *entry) bool {
		n := e.spec.GetName()
		if n == name || e.placeholder {
			return true
		}
		holder = fmt.Sprintf("proxy %s of this daemon listens there (remove it or move it first)", quote(n))
		return false
	})
	d.mu.Unlock()
	if holder != "" {
		return holder, true
	}
	for _, l := range d.cfg.OwnListeners {
		if sameSocket(l.Addr, a) {
			return fmt.Sprintf("this snoopd's own %s listens there", l.What), true
		}
	}
	switch a.Network() {
	case distcache.NetworkTCP:
		return fmt.Sprintf("another process listens there (ss -ltnp 'sport = :%d' names it)", a.Port()), false
	case distcache.NetworkUnix:
		return fmt.Sprintf("another process listens there (ss -lxp 'src %s' names it)", a.Path()), false
	}
	return "another process holds it", false
}

// sameSocket reports whether a listener bound at n takes listen address
// a: the same unix path, or the same TCP port with the same address or a
// wildcard on either side.
func sameSocket(n net.Addr, a distcache.Addr) bool {
	switch n := n.(type) {
	case *net.UnixAddr:
		return a.Network() == distcache.NetworkUnix && n.Name == a.Path()
	case *net.TCPAddr:
		if a.Network() != distcache.NetworkTCP || n.Port != a.Port() {
			return false
		}
		// A host name (localhost) is taken to be this host's: it is
		// where a listen address points.
		ip := net.ParseIP(a.Host())
		return a.Host() == "" || ip == nil || ip.IsUnspecified() || n.IP.IsUnspecified() || n.IP.Equal(ip)
	}
	return false
}
