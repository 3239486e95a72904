package daemon

import (
	"net"
	"testing"

	"github.com/snoopd/snoopd/distcache"
)

func TestSameSocket(t *testing.T) {
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
		{tcp("127.0.0.1", 9090), "IP:localhost:9090", true},
		{&net.UnixAddr{Name: "/run/s.sock", Net: "unix"}, "UNIX:/run/s.sock", true},
		{&net.UnixAddr{Name: "/run/s.sock", Net: "unix"}, "UNIX:/run/t.sock", false},
		{&net.UnixAddr{Name: "/run/s.sock", Net: "unix"}, "IP:127.0.0.1:9090", false},
	} {
		if got := sameSocket(c.n, distcache.MustParseAddr(c.a)); got != c.want {
			t.Errorf("sameSocket(%v, %s) = %v", c.n, c.a, got)
		}
	}
}
