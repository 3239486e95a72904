package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/snoopd/snoopd/distcache"
)

// startNamed starts a proxy called name on the test engine, listening on
// a fresh loopback port or unix socket, with server.
func startNamed(t *testing.T, name, network string, server distcache.Addr, opts Options, sink Sink) *Proxy {
	t.Helper()
	listen := distcache.MustParseAddr("IP:127.0.0.1:0")
	if network == "unix" {
		listen = distcache.MustParseAddr("UNIX:" + filepath.Join(shortDir(t), name+".sock"))
	}
	p, err := New(Config{Name: name, Listen: listen, Server: server, Enabled: true, Options: opts, Engine: testEngine}, sink)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := p.Stop(ctx); err != nil {
			t.Errorf("stop %s: %v", name, err)
		}
	})
	return p
}

// A chain of proxies of one process that ends at a real server is no
// loop: the dial-time check follows it through the listeners, and a GET
// goes through all three to the cache and back.
func TestChainOfProxiesCarriesTraffic(t *testing.T) {
	for _, network := range []string{"tcp", "unix"} {
		t.Run(network, func(t *testing.T) {
			back := startNamed(t, "back", network, startCache(t, network), Options{}, nil)
			mid := startNamed(t, "mid", network, back.Addr(), Options{}, nil)
			front := startNamed(t, "front", network, mid.Addr(), Options{}, nil)
			data := bytes.Repeat([]byte("c"), 3000)
			// Clients one after another, so the dials (not only the
			// spares) go through the check.
			for i := range 3 {
				c := newClient(t, front.Addr())
				id := []byte(fmt.Sprintf("id-%d", i))
				if m := c.do(distcache.OpAdd, distcache.AppendAddRequest(nil, 60000, id, data)); len(m.Payload) == 0 || m.Payload[0] != 0 {
					t.Fatalf("ADD through the chain answered %v", m.Payload)
				}
				if m := c.do(distcache.OpGet, id); !bytes.Equal(m.Payload, data) {
					t.Fatalf("GET through the chain: %d bytes, want the %d stored", len(m.Payload), len(data))
				}
			}
			for _, p := range []*Proxy{front, mid, back} {
				if st := p.Stats(); st.LoopRefusals != 0 || st.ConnectFailed != 0 {
					t.Errorf("%s: %d loop refusals, %d connect failures", p.Name(), st.LoopRefusals, st.ConnectFailed)
				}
			}
		})
	}
}

// Two proxies pointed at each other (what the daemon refuses, made here
// behind its back) are caught when they dial, from either end, naming
// the loop; nothing multiplies. The same pair is let through once one
// of them points at a real server again.
func TestLoopOfTwoProxiesCaughtAtDial(t *testing.T) {
	for _, network := range []string{"tcp", "unix"} {
		t.Run(network, func(t *testing.T) {
			cache := startCache(t, network)
			recA, recB := newRecorder(), newRecorder()
			b := startNamed(t, "b", network, cache, Options{Spares: -1}, recB)
			a := startNamed(t, "a", network, b.Addr(), Options{Spares: -1}, recA)
			if err := b.SetServer(a.Addr()); err != nil {
				t.Fatal(err)
			}
			for _, p := range []*Proxy{a, b} {
				c := dialAndAsk(t, p.Addr()) // a client that never speaks costs no dial
				c.SetReadDeadline(time.Now().Add(5 * time.Second))
				if _, err := c.Read(make([]byte, 1)); err == nil {
					t.Fatalf("read through the loop from %s succeeded", p.Name())
				}
				c.Close()
			}
			for _, r := range []struct {
				rec  *recorder
				want string
			}{{recA, "(b → a → b)"}, {recB, "(a → b → a)"}} {
				fails := r.rec.waitKind(t, KindConnectFailed, 1)
				if !errors.Is(fails[0].Err, ErrProxyLoop) || !strings.Contains(fails[0].Err.Error(), r.want) {
					t.Errorf("connect failure %v, want a loop naming %s", fails[0].Err, r.want)
				}
			}
			if sa, sb := a.Stats(), b.Stats(); sa.ConnsTotal != 1 || sb.ConnsTotal != 1 || sa.LoopRefusals != 1 || sb.LoopRefusals != 1 {
				t.Errorf("connections %d and %d, loop refusals %d and %d: want one of each per proxy (nothing multiplied)",
					sa.ConnsTotal, sb.ConnsTotal, sa.LoopRefusals, sb.LoopRefusals)
			}
			// Broken: the answer cached for the loop is dropped when b's
			// server changes.
			if err := b.SetServer(cache); err != nil {
				t.Fatal(err)
			}
			c := newClient(t, a.Addr())
			if m := c.do(distcache.OpHave, []byte("x")); !m.IsResponse {
				t.Fatal("no answer through the chain a → b")
			}
		})
	}
}

// A loop that only shows through a host name (b's server is
// "localhost", which the daemon does not resolve) is caught at dial
// time too: a lets the first connection through, as b's name is not
// resolved yet, and b, having resolved it, refuses; from then on a
// refuses at once. Each client costs at most one connection per proxy.
func TestLoopThroughAHostNameCaughtAtDial(t *testing.T) {
	cache := startCache(t, "tcp")
	recA, recB := newRecorder(), newRecorder()
	b := startNamed(t, "b", "tcp", cache, Options{Spares: -1}, recB)
	a := startNamed(t, "a", "tcp", b.Addr(), Options{Spares: -1}, recA)
	if err := b.SetServer(distcache.MustParseAddr(fmt.Sprintf("IP:localhost:%d", a.Addr().Port()))); err != nil {
		t.Fatal(err)
	}
	const clients = 3
	for range clients {
		c := dialAndAsk(t, a.Addr())
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil {
			t.Fatal("read through the loop succeeded")
		}
		c.Close()
	}
	fails := recB.waitKind(t, KindConnectFailed, 1)
	if !errors.Is(fails[0].Err, ErrProxyLoop) {
		t.Errorf("b's connect failure %v, want a loop", fails[0].Err)
	}
	recA.waitKind(t, KindConnectFailed, clients-1)
	if sa, sb := a.Stats(), b.Stats(); sa.ConnsTotal != clients || sb.ConnsTotal > clients || sa.LoopRefusals+sb.LoopRefusals < clients {
		t.Errorf("a: %d connections, %d loop refusals; b: %d connections, %d loop refusals: want %d clients, at most one connection each at b, every one refused",
			sa.ConnsTotal, sa.LoopRefusals, sb.ConnsTotal, sb.LoopRefusals, clients)
	}
}
