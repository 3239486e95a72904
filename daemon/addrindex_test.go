package daemon

import (
	"context"
	"errors"
	"maps"
	"path/filepath"
	"slices"
	"syscall"
	"testing"

	"google.golang.org/protobuf/proto"

	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
	"github.com/snoopd/snoopd/internal/testutil"
	dataproxy "github.com/snoopd/snoopd/proxy"
)

// checkIndex fails the test unless the address index and the name order
// are exactly what the registry says: every proxy filed under the keys
// of its listen address (configured and bound) and of its server, no
// stale or replaced entry anywhere, and d.order the registry sorted.
func checkIndex(t *testing.T, d *Daemon, step string) {
	t.Helper()
	d.reg.locked(func(h held) error {
		checkIndexHeld(t, h, step)
		return nil
	})
}

// checkIndexHeld is checkIndex for a caller that holds the lock.
func checkIndexHeld(t *testing.T, h held, step string) {
	t.Helper()
	r := h.r
	h.settle()
	listens := map[addrKey]map[*entry]struct{}{}
	servers := map[addrKey]map[*entry]struct{}{}
	unsettled := map[*entry]struct{}{}
	for _, e := range r.proxies {
		if e.spec == nil {
			continue
		}
		listen, server := h.addrsOf(e)
		if k, ok := keyOf(listen); ok {
			addTo(listens, k, e)
		}
		if e.p == nil {
			// A placeholder: its declared addresses only.
		} else if bound := h.boundAddr(e); e.bound.IsZero() {
			unsettled[e] = struct{}{}
		} else if k, ok := keyOf(bound); ok {
			addTo(listens, k, e)
		}
		if k, ok := keyOf(server); ok {
			addTo(servers, k, e)
		}
	}
	sameSets := func(a, b map[*entry]struct{}) bool { return maps.Equal(a, b) }
	if !maps.EqualFunc(listens, r.addrs.listens, sameSets) {
		t.Fatalf("%s: listen index %v, want %v", step, r.addrs.listens, listens)
	}
	if !maps.EqualFunc(servers, r.addrs.servers, sameSets) {
		t.Fatalf("%s: server index %v, want %v", step, r.addrs.servers, servers)
	}
	if !maps.Equal(unsettled, r.addrs.unsettled) {
		t.Fatalf("%s: unsettled %v, want %v", step, r.addrs.unsettled, unsettled)
	}
	names := slices.Sorted(maps.Keys(r.proxies))
	if len(names) != len(r.order) {
		t.Fatalf("%s: order has %d names, registry %d", step, len(r.order), len(names))
	}
	for i, n := range r.order {
		if n.name != names[i] || n.e != r.proxies[n.name] {
			t.Fatalf("%s: order[%d] is %q (%p), want %q (%p)", step, i, n.name, n.e, names[i], r.proxies[names[i]])
		}
	}
}

// TestAddrIndexInStep drives every way the registry changes (create,
// update, a loop and a reserved address refused, saves that fail and
// are rolled back, apply with moves and prune, delete, restore) and
// checks after each that the index create's checks rely on is in step.
func TestAddrIndexInStep(t *testing.T) {
	ctx := context.Background()
	cache := startCache(t).String()
	dir := t.TempDir()
	d, err := New(Config{StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { d.Close(ctx) }()
	must := func(p *snoopv1.Proxy, err error) *snoopv1.Proxy {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	update := func(name string, s *snoopv1.ProxySpec, paths ...string) error {
		s.Name = name
		_, err := d.UpdateProxy(ctx, s, paths, false)
		return err
	}

	cache2 := startCache(t).String()
	a := must(d.CreateProxy(ctx, spec("a", cache))).GetListenAddress()
	fixed := "IP:" + testutil.FreeAddr(t)
	must(d.CreateProxy(ctx, &snoopv1.ProxySpec{Name: "b", Listen: fixed, Server: cache}))
	c := must(d.CreateProxy(ctx, spec("c", cache))).GetListenAddress()
	must(d.CreateProxy(ctx, &snoopv1.ProxySpec{Name: "u", Listen: "UNIX:" + filepath.Join(t.TempDir(), "u.sock"), Server: cache}))
	checkIndex(t, d, "created")

	if err := update("c", &snoopv1.ProxySpec{Server: cache2}, "server"); err != nil {
		t.Fatal(err)
	}
	checkIndex(t, d, "server changed")
	// A proxy whose chain comes back to it is a loop, found through the
	// index: at create (d → a → d), and at update (a → c → a). The chain
	// c → a, which ends at no listener, is not.
	fixedD := "IP:" + testutil.FreeAddr(t)
	if err := update("a", &snoopv1.ProxySpec{Server: fixedD}, "server"); err != nil {
		t.Fatal(err)
	}
	if _, err := d.CreateProxy(ctx, &snoopv1.ProxySpec{Name: "d", Listen: fixedD, Server: a}); err == nil {
		t.Fatal("a proxy loop was accepted at create")
	}
	if err := update("c", &snoopv1.ProxySpec{Server: a}, "server"); err != nil {
		t.Fatalf("a chain refused at update: %v", err)
	}
	if err := update("a", &snoopv1.ProxySpec{Server: c}, "server"); err == nil {
		t.Fatal("a proxy loop was accepted at update")
	}
	checkIndex(t, d, "loop refused")

	if err := update("b", &snoopv1.ProxySpec{Enabled: proto.Bool(false)}, "enabled"); err != nil {
		t.Fatal(err)
	}
	if _, err := d.CreateProxy(ctx, &snoopv1.ProxySpec{Name: "thief", Listen: fixed, Server: cache}); !errors.Is(err, dataproxy.ErrAddrInUse) {
		t.Fatalf("create on a disabled proxy's address: %v", err)
	}
	checkIndex(t, d, "reserved refused")

	fail := failingWrites(t, syscall.ENOSPC)
	fail.Store(true)
	if _, err := d.CreateProxy(ctx, spec("e", cache)); !errors.Is(err, ErrNotSaved) {
		t.Fatalf("create with a failing save: %v", err)
	}
	if err := update("c", &snoopv1.ProxySpec{Server: cache}, "server"); !errors.Is(err, ErrNotSaved) {
		t.Fatalf("update with a failing save: %v", err)
	}
	if _, err := d.ApplyProxies(ctx, []*snoopv1.ProxySpec{spec("e", cache), {Name: "b", Listen: "IP:127.0.0.1:0", Server: cache}}, true, false); !errors.Is(err, ErrNotSaved) {
		t.Fatalf("apply with a failing save: %v", err)
	}
	fail.Store(false)
	checkIndex(t, d, "rolled back")

	// b moves, a changes in place, e is new, c and u are pruned.
	if _, err := d.ApplyProxies(ctx, []*snoopv1.ProxySpec{
		{Name: "a", Listen: "IP:127.0.0.1:0", Server: cache2},
		{Name: "b", Listen: "IP:127.0.0.1:0", Server: cache},
		spec("e", cache),
	}, true, false); err != nil {
		t.Fatal(err)
	}
	checkIndex(t, d, "applied")
	// fixed is free again: b moved away.
	must(d.CreateProxy(ctx, &snoopv1.ProxySpec{Name: "f", Listen: fixed, Server: cache}))
	checkIndex(t, d, "address freed by a move")
	if _, err := d.DeleteProxy(ctx, "f", 0, false); err != nil {
		t.Fatal(err)
	}
	checkIndex(t, d, "deleted")

	if err := d.Close(ctx); err != nil {
		t.Fatal(err)
	}
	d, err = New(Config{StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	checkIndex(t, d, "restored")
	if got := len(d.ListProxies()); got != 3 {
		t.Fatalf("restored %d proxies, want 3", got)
	}
}
