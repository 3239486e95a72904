package daemon

import (
	"strings"
	"testing"

	"github.com/snoopd/snoopd/distcache"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
	"github.com/snoopd/snoopd/proxy"
)

// declared is a registry of proxies that are declared but not made (no
// listener, as placeholders are): the graph the loop walks read, with no
// socket. Each proxy is "name listen server".
func declared(t *testing.T, proxies ...string) *registry {
	t.Helper()
	r := newRegistry(nil)
	c := r.begin()
	r.locked(func(h held) error {
		for _, p := range proxies {
			f := strings.Fields(p)
			if len(f) != 3 {
				t.Fatalf("proxy %q: want name listen server", p)
			}
			c.install(h, f[0], &entry{spec: &snoopv1.ProxySpec{Name: f[0], Listen: f[1], Server: f[2]}})
		}
		return nil
	})
	c.release()
	return r
}

// names is the nodes' names, in order, joined by spaces.
func nodeNames(nodes []loopNode) string {
	var s []string
	for _, n := range nodes {
		s = append(s, n.name)
	}
	return strings.Join(s, " ")
}

// TestLoopAroundAChange: the walk from a proxy being created or changed
// takes in exactly the proxies its chain (and, for a new one, the chains
// that end at it) can reach, sorted by name with the changed proxy last,
// and the check on that part finds the loop a check on the whole
// registry finds.
func TestLoopAroundAChange(t *testing.T) {
	for _, c := range []struct {
		name     string
		registry []string
		n        string // "name listen server"
		fresh    bool
		around   string // the names of loopNodesAround
		loop     string // in the error, or "" for none
	}{
		{name: "alone", n: "n IP:127.0.0.1:9001 IP:127.0.0.1:9000", fresh: true, around: "n"},
		{name: "its own listener", n: "n IP:127.0.0.1:9001 IP:localhost:9001", fresh: true, around: "n",
			loop: `proxy "n" itself: a proxy loop n → n`},
		{name: "two proxies", registry: []string{"a IP:127.0.0.1:9002 IP:127.0.0.1:9001"},
			n: "n IP:127.0.0.1:9001 IP:127.0.0.1:9002", fresh: true, around: "a n", loop: "a proxy loop n → a → n"},
		{name: "a chain to a real server", registry: []string{"a IP:127.0.0.1:9002 IP:127.0.0.1:9000"},
			n: "n IP:127.0.0.1:9001 IP:127.0.0.1:9002", fresh: true, around: "a n"},
		{name: "a wildcard listener", registry: []string{"a IP:9002 IP:127.0.0.1:9001"},
			n: "n IP:127.0.0.1:9001 IP:10.1.2.3:9002", fresh: true, around: "a n", loop: "n → a → n"},
		{name: "another host", registry: []string{"a IP:127.0.0.2:9002 IP:127.0.0.1:9009"},
			n: "n IP:127.0.0.1:9001 IP:127.0.0.1:9002", fresh: true, around: "n"},
		{name: "another host, pointing back", registry: []string{"a IP:127.0.0.2:9002 IP:127.0.0.1:9001"},
			n: "n IP:127.0.0.1:9001 IP:127.0.0.1:9002", fresh: true, around: "a n"},
		{name: "unix paths written differently", registry: []string{"a UNIX:/run/a.sock UNIX:/run/./n.sock"},
			n: "n UNIX:/run/n.sock UNIX:/run//a.sock", fresh: true, around: "a n", loop: "n → a → n"},
		{name: "a long loop", registry: []string{
			"a IP:127.0.0.1:9002 IP:127.0.0.1:9003",
			"c IP:127.0.0.1:9004 IP:127.0.0.1:9001",
			"b IP:127.0.0.1:9003 IP:127.0.0.1:9004",
			"x IP:127.0.0.1:9009 IP:127.0.0.1:9000",
		}, n: "n IP:127.0.0.1:9001 IP:127.0.0.1:9002", fresh: true, around: "a b c n", loop: "n → a → b → c → n"},
		{name: "a new proxy takes in the proxies that point at it, not theirs", registry: []string{
			"a IP:127.0.0.1:9002 IP:127.0.0.1:9001",
			"b IP:127.0.0.1:9003 IP:127.0.0.1:9002",
		}, n: "n IP:127.0.0.1:9001 IP:127.0.0.1:9000", fresh: true, around: "a n"},
		{name: "a changed proxy does not", registry: []string{
			"a IP:127.0.0.1:9002 IP:127.0.0.1:9001",
			"n IP:127.0.0.1:9001 IP:127.0.0.1:9000",
		}, n: "n IP:127.0.0.1:9001 IP:127.0.0.1:9005", around: "n"},
		{name: "a change leaves the proxy's old self out", registry: []string{
			"a IP:127.0.0.1:9002 IP:127.0.0.1:9001",
			"n IP:127.0.0.1:9001 IP:127.0.0.1:9000",
		}, n: "n IP:127.0.0.1:9001 IP:127.0.0.1:9002", around: "a n", loop: "n → a → n"},
		{name: "a loop it does not take part in", registry: []string{
			"a IP:127.0.0.1:9002 IP:127.0.0.1:9003",
			"b IP:127.0.0.1:9003 IP:127.0.0.1:9002",
		}, n: "n IP:127.0.0.1:9001 IP:127.0.0.1:9002", fresh: true, around: "a b n", loop: "n → a → b → a"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := declared(t, c.registry...)
			f := strings.Fields(c.n)
			n := nodeFor(f[0], distcache.MustParseAddr(f[2]), distcache.MustParseAddr(f[1]))
			r.locked(func(h held) error {
				if got := nodeNames(h.loopNodesAround(n, c.fresh, map[string]bool{n.name: true}, fakeLocal)); got != c.around {
					t.Errorf("around %s: %q, want %q", n.name, got, c.around)
				}
				err := h.loop(n, c.fresh, fakeLocal)
				switch {
				case c.loop == "" && err != nil:
					t.Errorf("loop: %v, want none", err)
				case c.loop != "" && (err == nil || !strings.Contains(err.Error(), c.loop)):
					t.Errorf("loop: %v, want one naming %q", err, c.loop)
				}
				// The part gives the answer the whole registry gives.
				nodes := append(h.loopNodes(map[string]bool{n.name: true}), n)
				check := make([]bool, len(nodes))
				check[len(nodes)-1] = true
				whole := loopError(nodes, check, func(_ int, f string) string { return "spec." + f }, fakeLocal)
				if (whole == nil) != (err == nil) || (whole != nil && whole.Error() != err.Error()) {
					t.Errorf("on the part: %v; on the whole registry: %v", err, whole)
				}
				return nil
			})
		})
	}
}

// TestMayLoop: the cheap look a create takes before the full check says
// yes whenever a loop is possible (the new server reaches its own
// listener or a registered one, or a registered server reaches its
// listener), and no when the new proxy touches no other.
func TestMayLoop(t *testing.T) {
	registry := []string{
		"a IP:127.0.0.1:9002 IP:127.0.0.1:9003",
		"u UNIX:/run/u.sock IP:127.0.0.1:9001",
	}
	for _, c := range []struct {
		listen, server string
		want           bool
	}{
		{"IP:127.0.0.1:9001", "IP:localhost:9001", true},
		{"IP:127.0.0.1:9005", "IP:127.0.0.1:9002", true},
		{"IP:127.0.0.1:9003", "IP:127.0.0.1:9000", true},
		{"IP:127.0.0.1:9001", "IP:127.0.0.1:9000", true},
		{"IP:127.0.0.1:9005", "UNIX:/run/u.sock", true},
		{"IP:127.0.0.1:9005", "IP:127.0.0.1:9000", false},
		{"IP:127.0.0.2:9003", "IP:127.0.0.1:9000", false},
		{"IP:127.0.0.1:9005", "IP:127.0.0.3:9002", false},
		{"UNIX:/run/n.sock", "UNIX:/run/m.sock", false},
	} {
		r := declared(t, registry...)
		cfg := proxy.Config{Name: "n", Listen: distcache.MustParseAddr(c.listen), Server: distcache.MustParseAddr(c.server)}
		r.locked(func(h held) error {
			if got := h.mayLoop(cfg, fakeLocal); got != c.want {
				t.Errorf("listen %s, server %s: may loop %v, want %v", c.listen, c.server, got, c.want)
			}
			return nil
		})
	}
}

// TestChainNamesTheProxiesOnTheWay: a proxy's chain is the proxies its
// traffic goes through, itself first, with the server the last one
// declares; a chain that comes back has no server; a proxy in front of a
// server that is no proxy here has no chain.
func TestChainNamesTheProxiesOnTheWay(t *testing.T) {
	r := declared(t,
		"a IP:127.0.0.1:9001 IP:127.0.0.1:9002",
		"b IP:127.0.0.1:9002 UNIX:/run/c.sock",
		"c UNIX:/run/c.sock IP:127.0.0.1:9000",
		"x IP:127.0.0.1:9011 IP:127.0.0.1:9012",
		"y IP:127.0.0.1:9012 IP:127.0.0.1:9011",
	)
	for _, c := range []struct {
		from, chain, server string
	}{
		{"a", "a b c", "IP:127.0.0.1:9000"},
		{"b", "b c", "IP:127.0.0.1:9000"},
		{"c", "", ""},
		{"x", "x y x", ""},
	} {
		r.locked(func(h held) error {
			e, err := h.lookup(c.from)
			if err != nil {
				t.Fatal(err)
			}
			names, server := h.chain(e, fakeLocal)
			if strings.Join(names, " ") != c.chain || server != c.server {
				t.Errorf("chain of %s: %q to %q, want %q to %q", c.from, names, server, c.chain, c.server)
			}
			if h.leadsToProxy(e) != (c.chain != "") {
				t.Errorf("%s leads to a proxy: %v, want %v", c.from, h.leadsToProxy(e), c.chain != "")
			}
			return nil
		})
	}
}
