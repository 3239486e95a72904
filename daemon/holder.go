package daemon

import (
	"errors"
	"fmt"

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
	d.reg.locked(func(h held) error {
		h.listeners(a, func(e *entry) bool {
			n := e.spec.GetName()
			// The index files proxies by port or path: the address itself
			// must clash, as keptAddr checks it.
			if n == name || e.placeholder || e.p == nil || !listenClash(a, h.boundAddr(e)) {
				return true
			}
			holder = fmt.Sprintf("proxy %s of this daemon listens there (remove it or move it first)", quote(n))
			return false
		})
		return nil
	})
	if holder != "" {
		return holder, true
	}
	for _, l := range d.cfg.OwnListeners {
		if at, err := distcache.AddrFromNet(l.Addr); err == nil && listenClash(at, a) {
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
