package cacheserver

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/snoopd/snoopd/distcache"
)

func TestCacheAddRanges(t *testing.T) {
	// A stopped clock, so the timeout-0 session is still there for Len.
	c := NewCache(Config{Now: newFakeClock().Now})
	id64 := strings.Repeat("i", 64)
	cases := []struct {
		name    string
		id      string
		data    []byte
		timeout time.Duration
		want    distcache.Status
	}{
		{"ok", "a", []byte("d"), time.Second, distcache.StatusOK},
		{"exists", "a", []byte("d"), time.Second, distcache.StatusAddExists},
		{"id empty", "", []byte("d"), time.Second, distcache.StatusAddIDRange},
		{"id 64", id64, []byte("d"), time.Second, distcache.StatusOK},
		{"id 65", id64 + "x", []byte("d"), time.Second, distcache.StatusAddIDRange},
		{"timeout negative", "b", []byte("d"), -time.Millisecond, distcache.StatusAddTimeoutRange},
		{"timeout 0", "c", []byte("d"), 0, distcache.StatusOK},
		{"timeout 7 days", "d", []byte("d"), 7 * 24 * time.Hour, distcache.StatusOK},
		{"timeout 7 days + 1ns", "e", []byte("d"), 7*24*time.Hour + 1, distcache.StatusAddTimeoutRange},
		{"data empty", "f", nil, time.Second, distcache.StatusAddDataRange},
		{"data 32768", "g", make([]byte, 32768), time.Second, distcache.StatusOK},
		{"data 32769", "h", make([]byte, 32769), time.Second, distcache.StatusAddDataRange},
	}
	for _, tc := range cases {
		if got := c.Add([]byte(tc.id), tc.data, tc.timeout); got != tc.want {
			t.Errorf("%s: Add = %v, want %v", tc.name, got, tc.want)
		}
	}
	if got, want := c.Len(), 5; got != want {
		t.Errorf("Len = %d, want %d", got, want)
	}
}

func TestCacheOps(t *testing.T) {
	c := NewCache(Config{})
	id := []byte("session-1")
	data := []byte("secret")
	if c.Have(id) {
		t.Fatal("Have on empty cache")
	}
	if got, ok := c.Get(id); ok || got != nil {
		t.Fatalf("Get on empty cache = %q, %v", got, ok)
	}
	if c.Remove(id) {
		t.Fatal("Remove on empty cache")
	}
	if st := c.Add(id, data, time.Minute); st != distcache.StatusOK {
		t.Fatalf("Add = %v", st)
	}
	// The cache keeps copies: changing the caller's slices changes nothing.
	id[0], data[0] = 'X', 'X'
	if c.Have(id) {
		t.Error("the cache aliased the id")
	}
	id[0] = 's'
	got, ok := c.Get(id)
	if !ok || string(got) != "secret" {
		t.Fatalf("Get = %q, %v; want the data as added", got, ok)
	}
	got[0] = 'Y'
	if again, _ := c.Get(id); string(again) != "secret" {
		t.Error("Get returned the cache's own buffer")
	}
	// AppendGet appends and leaves dst alone on a miss.
	dst := []byte("prefix:")
	if out, ok := c.AppendGet(dst, id); !ok || string(out) != "prefix:secret" {
		t.Errorf("AppendGet = %q, %v", out, ok)
	}
	if out, ok := c.AppendGet(dst, []byte("nope")); ok || string(out) != "prefix:" {
		t.Errorf("AppendGet miss = %q, %v", out, ok)
	}
	if !c.Have(id) || c.Len() != 1 {
		t.Error("Have/Len after Add")
	}
	if !c.Remove(id) || c.Remove(id) || c.Have(id) || c.Len() != 0 {
		t.Error("Remove did not remove exactly once")
	}
	// A removed id can be added again.
	if st := c.Add(id, []byte("new"), time.Minute); st != distcache.StatusOK {
		t.Errorf("Add after Remove = %v", st)
	}
}

func TestCacheExpiry(t *testing.T) {
	clk := newFakeClock()
	c := NewCache(Config{Now: clk.Now})
	id := []byte("s")
	c.Add(id, []byte("v1"), time.Second)
	c.Add([]byte("zero"), []byte("v"), 0)

	// As in the reference server, a session lives until the clock passes
	// its expiry time: at exactly timeout it is still there.
	if !c.Have([]byte("zero")) {
		t.Error("a session with timeout 0 is gone at the instant it was added")
	}
	clk.Advance(time.Second)
	if !c.Have(id) {
		t.Error("session gone at exactly its timeout")
	}
	if c.Have([]byte("zero")) {
		t.Error("timeout-0 session still there after a second")
	}
	clk.Advance(time.Nanosecond)
	if c.Have(id) {
		t.Error("Have: session still there after its timeout")
	}
	if _, ok := c.Get(id); ok {
		t.Error("Get: session still there after its timeout")
	}
	// The expired session does not block a new one with its id.
	if st := c.Add(id, []byte("v2"), time.Second); st != distcache.StatusOK {
		t.Fatalf("Add over an expired session = %v", st)
	}
	if got, _ := c.Get(id); string(got) != "v2" {
		t.Errorf("Get = %q, want the new data", got)
	}
	// Remove of an expired session reports it absent, and removes it.
	clk.Advance(2 * time.Second)
	if c.Remove(id) {
		t.Error("Remove reported an expired session as removed")
	}
	if n := c.Len(); n != 0 {
		t.Errorf("Len = %d after everything expired", n)
	}
}

func TestCacheLimit(t *testing.T) {
	clk := newFakeClock()
	c := NewCache(Config{MaxSessions: 3, Now: clk.Now})
	add := func(id string, timeout time.Duration) {
		t.Helper()
		if st := c.Add([]byte(id), []byte("d-"+id), timeout); st != distcache.StatusOK {
			t.Fatalf("Add %s = %v", id, st)
		}
	}
	have := func(want string) {
		t.Helper()
		var got []string
		for _, id := range []string{"a", "b", "c", "d", "e", "f"} {
			if c.Have([]byte(id)) {
				got = append(got, id)
			}
		}
		if g := strings.Join(got, ","); g != want {
			t.Errorf("sessions %s, want %s", g, want)
		}
	}
	add("a", 10*time.Second)
	add("b", 5*time.Second)
	add("c", 20*time.Second)
	// Full, nothing expired: the session closest to expiry (b) goes.
	add("d", 30*time.Second)
	have("a,c,d")
	// A duplicate ADD on a full cache evicts nothing.
	if st := c.Add([]byte("a"), []byte("x"), time.Hour); st != distcache.StatusAddExists {
		t.Errorf("duplicate Add = %v", st)
	}
	have("a,c,d")
	// Once a has expired, making room drops it rather than c, even though
	// e itself expires sooner than everything.
	clk.Advance(11 * time.Second)
	add("e", time.Second)
	have("c,d,e")
	if c.Len() != 3 {
		t.Errorf("Len = %d", c.Len())
	}

	// Equal expiry times: the older session goes first.
	c = NewCache(Config{MaxSessions: 2, Now: clk.Now})
	add("b", 5*time.Second)
	add("a", 5*time.Second)
	add("f", 10*time.Second)
	have("a,f")
}

// TestCacheModel runs random operations against the cache and a simple
// model of the documented behaviour, with a small limit so that eviction
// and expiry happen all the time. It checks the heap bookkeeping through
// what the cache does, which is what matters.
func TestCacheModel(t *testing.T) {
	type entry struct {
		data    string
		expires time.Duration
		seq     int
	}
	rng := rand.New(rand.NewPCG(1, 2))
	clk := newFakeClock()
	start := clk.Now()
	const max = 8
	c := NewCache(Config{MaxSessions: max, Now: clk.Now})
	model := map[string]entry{}
	seq := 0
	now := func() time.Duration { return clk.Now().Sub(start) }
	live := func(id string) (entry, bool) {
		e, ok := model[id]
		return e, ok && now() <= e.expires
	}
	for step := range 20000 {
		id := fmt.Sprintf("id%d", rng.IntN(20))
		switch rng.IntN(6) {
		case 0, 1:
			timeout := time.Duration(rng.IntN(50)) * time.Millisecond
			data := fmt.Sprintf("data-%d", step)
			want := distcache.StatusAddExists
			if _, ok := live(id); !ok {
				want = distcache.StatusOK
				for k := range model {
					if _, ok := live(k); !ok {
						delete(model, k)
					}
				}
				if len(model) >= max {
					victim := ""
					for k, e := range model {
						v, ok := model[victim]
						if !ok || e.expires < v.expires || e.expires == v.expires && e.seq < v.seq {
							victim = k
						}
					}
					delete(model, victim)
				}
				seq++
				model[id] = entry{data, now() + timeout, seq}
			}
			if got := c.Add([]byte(id), []byte(data), timeout); got != want {
				t.Fatalf("step %d: Add %s = %v, want %v", step, id, got, want)
			}
		case 2:
			e, ok := live(id)
			got, gok := c.Get([]byte(id))
			if gok != ok || ok && string(got) != e.data {
				t.Fatalf("step %d: Get %s = %q %v, want %q %v", step, id, got, gok, e.data, ok)
			}
		case 3:
			_, ok := live(id)
			if got := c.Have([]byte(id)); got != ok {
				t.Fatalf("step %d: Have %s = %v, want %v", step, id, got, ok)
			}
		case 4:
			_, ok := live(id)
			delete(model, id)
			if got := c.Remove([]byte(id)); got != ok {
				t.Fatalf("step %d: Remove %s = %v, want %v", step, id, got, ok)
			}
		case 5:
			clk.Advance(time.Duration(rng.IntN(5)) * time.Millisecond)
		}
		if step%100 == 0 {
			n := 0
			for k := range model {
				if _, ok := live(k); ok {
					n++
				}
			}
			if got := c.Len(); got != n {
				t.Fatalf("step %d: Len = %d, want %d", step, got, n)
			}
		}
	}
}

func TestCacheConcurrent(t *testing.T) {
	c := NewCache(Config{MaxSessions: 64})
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var dst []byte
			for i := range 2000 {
				id := []byte(fmt.Sprintf("g%d-%d", g, i%100))
				switch i % 4 {
				case 0:
					c.Add(id, id, time.Minute)
				case 1:
					var ok bool
					if dst, ok = c.AppendGet(dst[:0], id); ok && !bytes.Equal(dst, id) {
						t.Errorf("Get %s = %q", id, dst)
					}
				case 2:
					c.Have(id)
				case 3:
					c.Remove(id)
				}
			}
		}()
	}
	wg.Wait()
	if n := c.Len(); n > 64 {
		t.Errorf("Len = %d, above the limit", n)
	}
}

// TestCacheAllocs pins down the allocation behaviour the server's
// zero-allocation claim rests on.
func TestCacheAllocs(t *testing.T) {
	c := NewCache(Config{})
	id, data := []byte("session"), bytes.Repeat([]byte{7}, 200)
	c.Add(id, data, time.Hour)
	dst := make([]byte, 0, 1024)
	if n := testing.AllocsPerRun(100, func() {
		if _, ok := c.AppendGet(dst[:0], id); !ok {
			t.Fatal("miss")
		}
	}); n != 0 {
		t.Errorf("AppendGet: %v allocations, want 0", n)
	}
	if n := testing.AllocsPerRun(100, func() { c.Have(id); c.Have([]byte("other")) }); n != 0 {
		t.Errorf("Have: %v allocations, want 0", n)
	}
	// Re-adding into a freed slot reuses its data buffer; only the id
	// string, the map key, is new.
	other := []byte("other")
	if n := testing.AllocsPerRun(100, func() {
		c.Add(other, data, time.Hour)
		c.Remove(other)
	}); n > 1 {
		t.Errorf("Add+Remove: %v allocations, want at most 1", n)
	}
}

func BenchmarkCacheAppendGetParallel(b *testing.B) {
	c := NewCache(Config{})
	ids := make([][]byte, 1024)
	for i := range ids {
		ids[i] = fmt.Appendf(nil, "session-%04d", i)
		c.Add(ids[i], bytes.Repeat([]byte{1}, 200), time.Hour)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		dst := make([]byte, 0, 256)
		i := 0
		for pb.Next() {
			dst, _ = c.AppendGet(dst[:0], ids[i%len(ids)])
			i++
		}
	})
}
