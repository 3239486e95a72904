package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
	dataproxy "github.com/snoopd/snoopd/proxy"
)

// savedRegistry is a registry of declared proxies (see declared) that
// saves to a state file in a new directory, which it returns.
func savedRegistry(t *testing.T, proxies ...string) (*registry, string) {
	t.Helper()
	r := declared(t, proxies...)
	dir := t.TempDir()
	st, _, _, err := openState(dir, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.close)
	r.state, r.log = st, slog.New(slog.DiscardHandler)
	if err := r.save(); err != nil {
		t.Fatal(err)
	}
	return r, dir
}

// entrySeen is what a reader can see of an entry.
type entrySeen struct {
	e                        *entry
	spec                     *snoopv1.ProxySpec
	bindErr                  error
	note                     string
	busy, removing, reserved bool
}

// seen is the registry's entries as a reader sees them, by name.
func seen(r *registry) map[string]entrySeen {
	out := map[string]entrySeen{}
	r.locked(func(h held) error {
		for name, e := range h.entries() {
			out[name] = entrySeen{e, e.spec, e.bindErr, e.note, e.busy, e.removing, e.placeholder}
		}
		return nil
	})
	return out
}

// TestFailedSaveUndoesExactlyTheChangesWrites: a change that puts a new
// proxy in a reserved name's place, gives a proxy a new spec (clearing
// its bind error and note) and marks one for removal, all in one commit,
// is taken back whole when the save fails: every entry, spec, error,
// note and mark as before, the address index in step, no ticket left
// behind, the state file as it was; and once released, no trace of the
// reservation. A refusal by the commit's own check is taken back alike.
func TestFailedSaveUndoesExactlyTheChangesWrites(t *testing.T) {
	r, dir := savedRegistry(t,
		"a IP:127.0.0.1:9001 IP:127.0.0.1:9000",
		"b IP:127.0.0.1:9002 IP:127.0.0.1:9000",
		"k IP:127.0.0.1:9003 IP:127.0.0.1:9000",
	)
	r.locked(func(h held) error {
		a, _ := h.get("a")
		a.bindErr, a.note = errors.New("address in use"), "a note"
		return nil
	})
	fail := failingWrites(t, syscall.ENOSPC)
	for _, how := range []string{"the save fails", "the check refuses"} {
		t.Run(how, func(t *testing.T) {
			before, onDisk := seen(r), savedNames(t, dir)
			c := r.begin()
			r.locked(func(h held) error {
				for _, name := range []string{"a", "b"} {
					e, _ := h.get(name)
					c.reserve(h, name, e)
				}
				c.reserveName(h, &snoopv1.ProxySpec{Name: "n", Listen: "IP:127.0.0.1:9004", Server: "IP:127.0.0.1:9001"})
				return nil
			})
			fail.Store(how == "the save fails")
			refusal := errors.New("refused by the check")
			err := c.commit(true, func(h held) error {
				a, _ := h.get("a")
				b, _ := h.get("b")
				c.put(h, "n", &entry{spec: &snoopv1.ProxySpec{Name: "n", Listen: "IP:127.0.0.1:9004", Server: "IP:127.0.0.1:9001"}})
				c.respec(h, a, &snoopv1.ProxySpec{Name: "a", Listen: "IP:127.0.0.1:9001", Server: "IP:127.0.0.1:9002"})
				c.markRemoving(h, b)
				if how == "the check refuses" {
					return refusal
				}
				return nil
			})
			fail.Store(false)
			if how == "the save fails" && !errors.Is(err, ErrNotSaved) || how == "the check refuses" && err != refusal {
				t.Fatalf("commit: %v", err)
			}
			after := seen(r)
			for name, was := range before {
				now := after[name]
				now.busy = false // the reservation, until release
				if now != was {
					t.Errorf("%s: %+v after the undo, want %+v", name, now, was)
				}
			}
			if n := after["n"]; !n.reserved {
				t.Errorf("n: %+v after the undo, want the placeholder back", n)
			}
			checkIndex(t, &Daemon{reg: r}, "undone")
			c.release()
			if got := seen(r); len(got) != len(before) || got["n"].e != nil || got["a"].busy || got["b"].busy {
				t.Errorf("after release: %v, want %v", got, before)
			}
			checkIndex(t, &Daemon{reg: r}, "released")
			r.state.mu.Lock()
			left := len(r.state.undo) + len(r.state.failed)
			r.state.mu.Unlock()
			if left != 0 {
				t.Errorf("%d undos or failures left with the state file", left)
			}
			if got := savedNames(t, dir); !slices.Equal(got, onDisk) {
				t.Errorf("saved %v, want %v", got, onDisk)
			}
		})
	}

	// The same change, saved, is in force and on disk.
	c := r.begin()
	r.locked(func(h held) error {
		b, _ := h.get("b")
		c.reserve(h, "b", b)
		c.reserveName(h, &snoopv1.ProxySpec{Name: "n", Listen: "IP:127.0.0.1:9004", Server: "IP:127.0.0.1:9001"})
		return nil
	})
	n := &entry{spec: &snoopv1.ProxySpec{Name: "n", Listen: "IP:127.0.0.1:9004", Server: "IP:127.0.0.1:9001"}}
	if err := c.commit(true, func(h held) error {
		b, _ := h.get("b")
		c.put(h, "n", n)
		c.markRemoving(h, b)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	c.remove("b")
	c.release()
	if got := savedNames(t, dir); !slices.Equal(got, []string{"a", "k", "n"}) {
		t.Errorf("saved %v, want a k n", got)
	}
	if got := seen(r); got["n"].e != n || got["n"].busy || got["b"].e != nil {
		t.Errorf("after the commit: %v", got)
	}
	checkIndex(t, &Daemon{reg: r}, "committed")
}

// TestReservationExcludesOtherChanges: a name reserved for a create
// refuses another create (the name exists) and is no proxy to update or
// delete; a proxy reserved by one change refuses another's reservation,
// whichever kind; once released, each is free again.
func TestReservationExcludesOtherChanges(t *testing.T) {
	r := declared(t, "a IP:127.0.0.1:9001 IP:127.0.0.1:9000")
	n := &snoopv1.ProxySpec{Name: "n", Listen: "IP:127.0.0.1:9002", Server: "IP:127.0.0.1:9000"}
	none := func(held) error { return nil }

	creating, err := r.reserveNew(n, none)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.reserveNew(n, none); !errors.Is(err, ErrExists) {
		t.Errorf("second create of a reserved name: %v, want it to exist", err)
	}
	if _, _, err := r.reserveExisting("n"); !errors.Is(err, ErrNotFound) {
		t.Errorf("update of a name being created: %v, want not found", err)
	}
	if _, _, _, _, err := r.reserveDelete("n"); !errors.Is(err, ErrNotFound) {
		t.Errorf("delete of a name being created: %v, want not found", err)
	}
	creating.release()
	if _, err := r.reserveNew(n, none); err != nil {
		t.Errorf("create once the reservation is released: %v", err)
	}

	updating, _, err := r.reserveExisting("a")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := r.reserveExisting("a"); !errors.Is(err, ErrBusy) {
		t.Errorf("second update: %v, want busy", err)
	}
	if _, _, _, _, err := r.reserveDelete("a"); !errors.Is(err, ErrBusy) {
		t.Errorf("delete during an update: %v, want busy", err)
	}
	updating.release()
	updating.release() // a second release changes nothing
	deleting, _, del, running, err := r.reserveDelete("a")
	if err != nil || running {
		t.Fatalf("delete once released: running %v, %v", running, err)
	}
	if _, _, err := r.reserveExisting("a"); !errors.Is(err, ErrBusy) {
		t.Errorf("update during a delete: %v, want busy", err)
	}
	if _, _, joined, running, err := r.reserveDelete("a"); err != nil || !running || joined != del {
		t.Errorf("second delete: running %v, same deletion %v, %v; want it to join the first", running, joined == del, err)
	}
	deleting.release()

	r.locked(func(h held) error { h.shut(); return nil })
	if _, err := r.reserveNew(&snoopv1.ProxySpec{Name: "m"}, none); err == nil {
		t.Error("a create reserved a name in a closed registry")
	}
}

// TestReleaseLeavesAnotherChangesEntryAlone: a change that removed a
// proxy and released late lets go only of what is its own; a create of
// the same name that began in between keeps its reservation.
func TestReleaseLeavesAnotherChangesEntryAlone(t *testing.T) {
	r := declared(t, "x IP:127.0.0.1:9001 IP:127.0.0.1:9000")
	removing, e, err := r.reserveExisting("x")
	if err != nil {
		t.Fatal(err)
	}
	if err := removing.commit(false, func(h held) error { removing.markRemoving(h, e); return nil }); err != nil {
		t.Fatal(err)
	}
	removing.remove("x")
	creating, err := r.reserveNew(&snoopv1.ProxySpec{Name: "x", Listen: "IP:127.0.0.1:9002", Server: "IP:127.0.0.1:9000"}, func(held) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	removing.remove("x") // again: the name is not its own any more
	removing.release()
	if got := seen(r)["x"]; !got.reserved || !got.busy {
		t.Fatalf("the create's reservation after the other change's release: %+v", got)
	}
	creating.release()
	if _, ok := seen(r)["x"]; ok {
		t.Fatal("the create's placeholder outlived its release")
	}
}

// TestReadersNeverSeeAHalfMadeProxy: while a name is reserved for a
// create, no reader finds it (get, list, the counts, the stats walk, a
// watch's current instances); once the made proxy is recorded, all do.
func TestReadersNeverSeeAHalfMadeProxy(t *testing.T) {
	d, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close(context.Background()) })
	cache := startCache(t).String()
	in := spec("half", cache)
	norm, cfg, err := validate(in)
	if err != nil {
		t.Fatal(err)
	}
	c, err := d.reg.reserveNew(norm, func(held) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	defer c.release()
	visible := func() []string {
		var where []string
		if _, err := d.GetProxy("half"); err == nil {
			where = append(where, "GetProxy")
		}
		if len(d.ListProxies()) != 0 {
			where = append(where, "ListProxies")
		}
		if d.Stats().Proxies != 0 {
			where = append(where, "Stats")
		}
		d.EachProxy(false, func(*ProxyStats) bool { where = append(where, "EachProxy"); return false })
		if _, err := d.Connections("half"); err == nil {
			where = append(where, "Connections")
		}
		return where
	}
	if where := visible(); len(where) > 0 {
		t.Fatalf("a name reserved for a create is seen by %v", where)
	}
	e, err := d.start(norm, cfg, false)
	if err != nil {
		t.Fatal(err)
	}
	if where := visible(); len(where) > 0 {
		t.Fatalf("a proxy bound but not recorded is seen by %v", where)
	}
	if err := c.commit(true, func(h held) error { c.put(h, "half", e); return nil }); err != nil {
		t.Fatal(err)
	}
	if where := visible(); len(where) != 5 {
		t.Fatalf("a recorded proxy is seen only by %v", where)
	}
}

// TestFailedStartLeavesNoTrace: a create whose listen address is taken,
// and an update that enables a proxy whose address was taken meanwhile,
// fail and change nothing but the failed proxy's bind error: no name
// reserved, the index in step, the state file as it was.
func TestFailedStartLeavesNoTrace(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	d, err := New(Config{StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close(ctx) })
	cache := startCache(t).String()
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()

	if _, err := d.CreateProxy(ctx, &snoopv1.ProxySpec{Name: "x", Listen: "IP:" + taken.Addr().String(), Server: cache}); !errors.Is(err, dataproxy.ErrAddrInUse) {
		t.Fatalf("create on a taken address: %v", err)
	}
	if got := seen(d.reg); len(got) != 0 {
		t.Fatalf("after a failed create: %v", got)
	}
	checkIndex(t, d, "failed create")
	if _, err := d.CreateProxy(ctx, spec("x", cache)); err != nil {
		t.Fatalf("the same name elsewhere: %v", err)
	}

	p, err := d.UpdateProxy(ctx, &snoopv1.ProxySpec{Name: "x", Enabled: proto.Bool(false)}, []string{"enabled"}, false)
	if err != nil {
		t.Fatal(err)
	}
	before := seen(d.reg)["x"]
	onDisk := savedNames(t, dir)
	// The disabled proxy's port, taken from outside the daemon.
	again, err := net.Listen("tcp", p.GetListenAddress()[len("IP:"):])
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	if _, err := d.UpdateProxy(ctx, &snoopv1.ProxySpec{Name: "x", Enabled: proto.Bool(true), Server: cache}, []string{"enabled", "server"}, false); !errors.Is(err, dataproxy.ErrAddrInUse) {
		t.Fatalf("enabling on a taken address: %v", err)
	}
	after := seen(d.reg)["x"]
	if after.e != before.e || after.spec != before.spec || after.busy || after.bindErr == nil {
		t.Fatalf("after a failed enable: %+v, want %+v with its bind error", after, before)
	}
	checkIndex(t, d, "failed enable")
	if got := savedNames(t, dir); !slices.Equal(got, onDisk) {
		t.Errorf("saved %v, want %v", got, onDisk)
	}
}

// Bounds of the concurrent changes test: each worker's requests, and the
// whole run.
const (
	churnOps  = 60
	churnTime = 30 * time.Second
)

// TestConcurrentChangesKeepTheRegistryWhole: workers create, update,
// apply and delete the same names and names of their own at once, while
// saves fail now and then and readers read. Every request either happens
// or is refused with a reason of its kind; no reader ever meets a proxy
// half made; and at the end no entry is reserved, half made or marked,
// the index is in step, every proxy is what the state file holds (and
// what a restart brings back), and every enabled proxy listens: none is
// a proxy a refused create stopped, nor one a refused update meant to
// enable. What each undo restores is TestFailedSaveUndoesExactlyTheChangesWrites's.
func TestConcurrentChangesKeepTheRegistryWhole(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	d, err := New(Config{StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { d.Close(ctx) }()
	caches := []string{startCache(t).String(), startCache(t).String()}
	fail := failingWrites(t, syscall.ENOSPC)
	deadline := time.Now().Add(churnTime)

	expected := func(err error) bool {
		return err == nil || errors.Is(err, ErrBusy) || errors.Is(err, ErrNotFound) || errors.Is(err, ErrExists) ||
			errors.Is(err, ErrNotSaved) || errors.Is(err, dataproxy.ErrAddrInUse)
	}
	var ok, refused atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	done := make(chan struct{})
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			for i := 0; i < churnOps && time.Now().Before(deadline); i++ {
				name := []string{"same", "shared", fmt.Sprintf("own%d", w)}[rng.IntN(3)]
				server := caches[rng.IntN(2)]
				fail.Store(rng.IntN(6) == 0)
				var err error
				var what string
				switch rng.IntN(5) {
				case 0:
					what = "create"
					_, err = d.CreateProxy(ctx, spec(name, server))
				case 1:
					what = "update"
					_, err = d.UpdateProxy(ctx, &snoopv1.ProxySpec{Name: name, Server: server, Enabled: proto.Bool(rng.IntN(2) == 0)}, []string{"server", "enabled"}, false)
				case 2:
					what = "apply"
					_, err = d.ApplyProxies(ctx, []*snoopv1.ProxySpec{spec(name, server)}, false, false)
				default:
					what = "delete"
					_, err = d.DeleteProxy(ctx, name, 0, false)
				}
				if err == nil {
					ok.Add(1)
				} else {
					refused.Add(1)
				}
				if !expected(err) {
					errs <- fmt.Errorf("%s %s: %w", what, name, err)
					return
				}
			}
		}()
	}
	var readers sync.WaitGroup
	readers.Add(1)
	go func() {
		defer readers.Done()
		for i := 0; ; i++ {
			select {
			case <-done:
				return
			default:
			}
			for _, p := range d.ListProxies() {
				if p.GetSpec().GetName() == "" || p.GetListenAddress() == "" || p.GetInstanceId() == "" {
					errs <- fmt.Errorf("a reader met a proxy half made: %v", p)
					return
				}
			}
			d.EachProxy(false, func(ps *ProxyStats) bool { return ps.Name != "" })
			time.Sleep(time.Millisecond)
		}
	}()
	wg.Wait()
	close(done)
	readers.Wait()
	fail.Store(false)
	close(errs)
	for err := range errs {
		t.Error(err)
	}

	var live []string
	specs := map[string]*snoopv1.ProxySpec{}
	d.reg.locked(func(h held) error {
		checkIndexHeld(t, h, "after the churn")
		for name, e := range h.entries() {
			if e.busy || e.placeholder || e.removing || e.deleting != nil {
				t.Errorf("%s left busy %v, placeholder %v, removing %v, deleting %v", name, e.busy, e.placeholder, e.removing, e.deleting != nil)
			}
			live = append(live, name)
			specs[name] = e.spec
		}
		return nil
	})
	slices.Sort(live)
	saved, _, err := readProxySet(filepath.Join(dir, stateFileName))
	if err != nil {
		t.Fatal(err)
	}
	if len(saved) != len(specs) {
		t.Errorf("saved %d proxies, registered %v", len(saved), live)
	}
	for _, s := range saved {
		if !proto.Equal(s, specs[s.GetName()]) {
			t.Errorf("saved %v, registered %v", s, specs[s.GetName()])
		}
	}
	t.Logf("%d requests done, %d refused; %v left", ok.Load(), refused.Load(), live)
	for _, p := range d.ListProxies() {
		if p.GetState() != snoopv1.ProxyState_PROXY_STATE_LISTENING {
			if enabledOf(p.GetSpec()) {
				t.Errorf("%s is enabled but %v: %s", p.GetSpec().GetName(), p.GetState(), p.GetError())
			}
			continue
		}
		c, err := net.Dial("tcp", p.GetListenAddress()[len("IP:"):])
		if err != nil {
			t.Errorf("%s says it listens on %s: %v", p.GetSpec().GetName(), p.GetListenAddress(), err)
			continue
		}
		c.Close()
	}
	if err := d.Close(ctx); err != nil {
		t.Fatal(err)
	}
	d, err = New(Config{StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	var back []string
	for _, p := range d.ListProxies() {
		back = append(back, p.GetSpec().GetName())
	}
	if !slices.Equal(back, live) {
		t.Errorf("a restart brings back %v, want %v", back, live)
	}
}
