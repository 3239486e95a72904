package daemon

import (
	"net"
	"testing"

	"github.com/snoopd/snoopd/distcache"
)

// TestOwnListenersClashAsProxiesDo: the daemon's own sockets are matched
// against a listen address by the rule that decides whether two proxies'
// addresses clash (listenClash), through the address they were bound at.
func TestOwnListenersClashAsProxiesDo(t *testing.T) {
	tcp := func(ip string, port int) net.Addr { return &net.TCPAddr{IP: net.ParseIP(ip), Port: port} }
	for _, c := range []struct {
		n    net.Addr
		a    string
		want bool
	}{
		{tcp("127.0.0.1", 9090), "IP:127.0.0.1:9090", true},
		{tcp("127.0.0.1", 9090), "IP:127.0.0.2:9090", false},
		{tcp("127.0.0.1", 9090), "IP:127.0.0.1:9091", false},
		{tcp("0.0.0.0", 9090), "IP:127.0.0.1:9090", true},
		{tcp("127.0.0.1", 9090), "IP:9090", true},
		{&net.UnixAddr{Name: "/run/s.sock", Net: "unix"}, "UNIX:/run/s.sock", true},
		{&net.UnixAddr{Name: "/run/s.sock", Net: "unix"}, "UNIX:/run/t.sock", false},
		{&net.UnixAddr{Name: "/run/s.sock", Net: "unix"}, "IP:127.0.0.1:9090", false},
	} {
		d := &Daemon{cfg: Config{OwnListeners: []OwnListener{{What: "--metrics-listen", Addr: c.n}}}, reg: newRegistry(nil)}
		_, own := d.holderOf("p", distcache.MustParseAddr(c.a))
		if own != c.want {
			t.Errorf("%v against %s: own listener %v, want %v", c.n, c.a, own, c.want)
		}
	}
}
