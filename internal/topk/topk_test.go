package topk

import (
	"cmp"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// exact is the true weight of every key, to hold a sketch to.
type exact struct {
	weight map[string]uint64
	n      uint64
}

func newExact() *exact { return &exact{weight: map[string]uint64{}} }

// add adds w to key in both the sketch and the exact count.
func (e *exact) add(s *Sketch[int], key string, w uint64) {
	*s.Add([]byte(key), w)++
	e.weight[key] += w
	e.n += w
}

// checkBounds fails t unless s keeps the package's promises about the
// stream e counted exactly: every count is its key's true weight plus at
// most its error, every error is at most N/m, and every key heavier than
// N/m has a counter.
func checkBounds(t *testing.T, s *Sketch[int], e *exact) {
	t.Helper()
	if s.N() != e.n {
		t.Fatalf("N = %d, the stream's weight is %d", s.N(), e.n)
	}
	bound := e.n / uint64(s.Capacity())
	if s.Bound() != bound {
		t.Fatalf("Bound = %d, want N/m = %d/%d = %d", s.Bound(), e.n, s.Capacity(), bound)
	}
	counted := map[string]bool{}
	for _, en := range s.Top(0) {
		counted[en.Key] = true
		w := e.weight[en.Key]
		if en.Count < w {
			t.Fatalf("key %q: count %d below its true weight %d", en.Key, en.Count, w)
		}
		if en.Count-w > en.Err {
			t.Fatalf("key %q: count %d overestimates its weight %d by more than its error %d", en.Key, en.Count, w, en.Err)
		}
		if en.Err > bound {
			t.Fatalf("key %q: error %d above N/m = %d", en.Key, en.Err, bound)
		}
	}
	if len(counted) > s.Capacity() {
		t.Fatalf("%d keys in %d counters", len(counted), s.Capacity())
	}
	for k, w := range e.weight {
		if w > bound && !counted[k] {
			t.Fatalf("key %q of weight %d > N/m = %d has no counter", k, w, bound)
		}
	}
}

func key(i uint64) string { return fmt.Sprintf("session-%06d", i) }

func TestBoundsHoldOnZipfStreams(t *testing.T) {
	for _, tc := range []struct {
		m, distinct int
		s           float64
	}{
		{100, 10_000, 1.1},
		{500, 100_000, 1.01},
		{50, 1_000, 2},
	} {
		t.Run(fmt.Sprintf("m=%d,s=%v", tc.m, tc.s), func(t *testing.T) {
			r := rand.New(rand.NewPCG(1, uint64(tc.m)))
			z := rand.NewZipf(r, tc.s, 1, uint64(tc.distinct-1))
			s, e := New[int](tc.m), newExact()
			for i := range 200_000 {
				e.add(s, key(z.Uint64()), 1)
				if i%20_000 == 0 {
					checkBounds(t, s, e)
				}
			}
			checkBounds(t, s, e)
			// On a skewed stream the sketch ranks the heaviest keys as the
			// exact count does.
			want := slices.SortedFunc(maps.Keys(e.weight), func(a, b string) int {
				return cmp.Or(cmp.Compare(e.weight[b], e.weight[a]), cmp.Compare(a, b))
			})[:10]
			for i, en := range s.Top(10) {
				if en.Key != want[i] {
					t.Errorf("rank %d: %q counted %d, the exact rank's key is %q of weight %d", i, en.Key, en.Count, want[i], e.weight[want[i]])
				}
			}
		})
	}
}

// TestBoundsHoldOnAdversarialStreams feeds streams that make the
// sketch evict as much as it can, and overestimate as much as it may.
func TestBoundsHoldOnAdversarialStreams(t *testing.T) {
	const m = 64
	streams := map[string]func(add func(string, uint64)){
		// Every key new: each update after the first m evicts.
		"all distinct": func(add func(string, uint64)) {
			for i := range 50_000 {
				add(key(uint64(i)), 1)
			}
		},
		// A heavy key just above N/m, drowned in a flood of new keys that
		// arrive after it: it must stay, however late the flood.
		"heavy key then a flood": func(add func(string, uint64)) {
			for range 1_000 {
				add("heavy", 1)
			}
			for i := range 60_000 {
				add(key(uint64(i)), 1)
			}
		},
		// The flood first, the heavy key last: it enters on the largest
		// error the sketch has.
		"flood then a heavy key": func(add func(string, uint64)) {
			for i := range 60_000 {
				add(key(uint64(i)), 1)
			}
			for range 1_000 {
				add("heavy", 1)
			}
		},
		// Round robin over m+1 keys, the worst case for a counter per
		// key short by one: every update evicts the key due next.
		"round robin over m+1 keys": func(add func(string, uint64)) {
			for i := range 40_000 {
				add(key(uint64(i%(m+1))), 1)
			}
		},
		// Keys in rounds of rising frequency: key i comes in rounds 0..i,
		// so late keys are the heavy ones and arrive after the light.
		"rising frequencies": func(add func(string, uint64)) {
			for round := range 300 {
				for k := round; k < 300; k++ {
					add(key(uint64(k)), 1)
				}
			}
		},
		// New keys of weight 0 (an ADD before any GET) churn the
		// counters without adding to N.
		"weightless churn": func(add func(string, uint64)) {
			r := rand.New(rand.NewPCG(7, 7))
			for i := range 60_000 {
				add(key(uint64(100+i)), 0)
				add(key(uint64(r.IntN(100))), 1)
			}
		},
		// Random weights over a small set of keys and a long tail.
		"random weights": func(add func(string, uint64)) {
			r := rand.New(rand.NewPCG(3, 9))
			for range 60_000 {
				k := uint64(r.IntN(10))
				if r.IntN(2) == 0 {
					k = uint64(10 + r.IntN(100_000))
				}
				add(key(k), uint64(r.IntN(40)))
			}
		},
	}
	for name, stream := range streams {
		t.Run(name, func(t *testing.T) {
			s, e := New[int](m), newExact()
			i := 0
			stream(func(k string, w uint64) {
				e.add(s, k, w)
				if i++; i%5_000 == 0 {
					checkBounds(t, s, e)
				}
			})
			checkBounds(t, s, e)
		})
	}
}

func TestHeavyKeyStaysThroughAFlood(t *testing.T) {
	s := New[int](10)
	for range 100 {
		s.Add([]byte("heavy"), 1)
	}
	for i := range 900 {
		s.Add([]byte(key(uint64(i))), 1)
	}
	// N = 1,000, N/m = 100: "heavy" has exactly the weight that is not
	// guaranteed, but no flood key can reach its count.
	top := s.Top(1)
	if len(top) != 1 || top[0].Key != "heavy" || top[0].Count != 100 || top[0].Err != 0 {
		t.Fatalf("top after a flood: %+v, want heavy counted 100 exactly", top)
	}
}

func TestValueFollowsItsKeyAndStartsAfreshOnEviction(t *testing.T) {
	s := New[int](2)
	*s.Add([]byte("a"), 5) += 7
	*s.Add([]byte("b"), 1) += 3
	*s.Add([]byte("a"), 1) += 1
	// c evicts b, the least, and inherits its count as error, not its value.
	*s.Add([]byte("c"), 1) += 10
	got := map[string]Entry[int]{}
	for _, e := range s.Top(0) {
		got[e.Key] = e
	}
	if a := got["a"]; a.Count != 6 || a.Err != 0 || a.Value != 8 {
		t.Errorf("a: %+v, want count 6, error 0, value 8", a)
	}
	if c := got["c"]; c.Count != 2 || c.Err != 1 || c.Value != 10 {
		t.Errorf("c: %+v, want count 2 (1 inherited from b as error), value 10 (not b's 3)", c)
	}
	if _, ok := got["b"]; ok || s.Len() != 2 {
		t.Errorf("b still counted, or %d keys in 2 counters: %+v", s.Len(), got)
	}
}

func TestTopOrdersByCountThenErrorThenKey(t *testing.T) {
	s := New[int](4)
	s.Add([]byte("x"), 3)
	s.Add([]byte("b"), 5)
	s.Add([]byte("a"), 5)
	s.Add([]byte("y"), 1)
	s.Add([]byte("z"), 2) // evicts y (1): count 3, error 1
	var keys []string
	for _, e := range s.Top(0) {
		keys = append(keys, e.Key)
	}
	if fmt.Sprint(keys) != "[a b x z]" {
		t.Errorf("order %v, want [a b x z] (x before z: same count, x exact)", keys)
	}
	if top := s.Top(2); len(top) != 2 || top[1].Key != "b" {
		t.Errorf("Top(2) = %+v", top)
	}
	if top := s.Top(10); len(top) != 4 {
		t.Errorf("Top(10) of 4 keys gave %d", len(top))
	}
}

func TestResetForgetsEverything(t *testing.T) {
	s := New[int](3)
	for i := range 10 {
		s.Add([]byte(key(uint64(i))), 2)
	}
	s.Reset()
	if s.N() != 0 || s.Len() != 0 || len(s.Top(0)) != 0 {
		t.Fatalf("after Reset: N %d, %d keys", s.N(), s.Len())
	}
	// The counters work as new: no error inherited from before.
	s.Add([]byte("a"), 1)
	s.Add([]byte("b"), 1)
	if top := s.Top(0); len(top) != 2 || top[0].Err != 0 || top[1].Err != 0 || top[0].Count != 1 {
		t.Fatalf("after Reset and two adds: %+v", top)
	}
}

func TestOneCounter(t *testing.T) {
	s := New[int](0) // taken as 1
	s.Add([]byte("a"), 3)
	s.Add([]byte("b"), 1)
	if top := s.Top(0); s.Capacity() != 1 || len(top) != 1 || top[0].Key != "b" || top[0].Count != 4 || top[0].Err != 3 {
		t.Fatalf("one counter: capacity %d, %+v", s.Capacity(), top)
	}
}

// FuzzBoundsHold holds the sketch to an exact count over any stream: each
// pair of bytes is a key (one of 64) and a weight (0 to 15), the first
// byte the number of counters.
func FuzzBoundsHold(f *testing.F) {
	f.Add([]byte{4, 1, 1, 2, 1, 3, 1, 4, 1, 5, 1, 1, 3})
	f.Add([]byte{1, 0, 0, 9, 15, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 {
			return
		}
		s, e := New[int](int(data[0]%16)+1), newExact()
		for i := 1; i+1 < len(data); i += 2 {
			e.add(s, key(uint64(data[i]%64)), uint64(data[i+1]%16))
		}
		checkBounds(t, s, e)
	})
}
