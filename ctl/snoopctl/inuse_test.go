package main

import (
	"net"
	"strconv"
	"strings"
	"testing"
)

// TestAddressInUseNamesTheHolder: a proxy refused its listen address is
// told who holds it, whether another proxy (enabled or disabled), the
// daemon's own metrics endpoint or another process, and is only advised
// to remove a proxy when one holds it.
func TestAddressInUseNamesTheHolder(t *testing.T) {
	free := func() int {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		return l.Addr().(*net.TCPAddr).Port
	}
	metrics := free()
	d := startDaemon(t, "--metrics-listen", "IP:127.0.0.1:"+strconv.Itoa(metrics))
	other, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	on := func(port int) string { return "IP:127.0.0.1:" + strconv.Itoa(port) }
	taken, reserved := free(), free()
	mustCtl(t, d, "add", "first", "--listen", on(taken), "--server", "IP:127.0.0.1:9")
	mustCtl(t, d, "add", "resting", "--listen", on(reserved), "--server", "IP:127.0.0.1:9", "--disabled")
	for _, c := range []struct {
		listen string
		want   string
	}{
		{on(taken), `address in use: proxy "first" of this daemon listens there (remove it or move it first)`},
		{on(reserved), `address in use: proxy "resting" of this daemon keeps it while disabled (remove it or move it first)`},
		{on(metrics), "address in use: this snoopd's own --metrics-listen listens there"},
		{on(other.Addr().(*net.TCPAddr).Port), "address in use: another process listens there (ss -ltnp 'sport = :"},
	} {
		r := runCtl(t, d, "add", "second", "--listen", c.listen, "--server", "IP:127.0.0.1:9")
		if r.code != 1 || !strings.Contains(r.err, c.want) || strings.Count(r.err, "\n") != 1 {
			t.Errorf("add on %s: %v, want one line with %q", c.listen, r, c.want)
		}
		if strings.Contains(c.want, "another process") && strings.Contains(r.err, "remove the old proxy") {
			t.Errorf("add on %s advises removing a proxy: %s", c.listen, r.err)
		}
	}
}
