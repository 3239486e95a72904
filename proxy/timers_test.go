package proxy

import (
	"math/rand/v2"
	"slices"
	"testing"
)

type firedAt struct {
	id  int
	out *[]int
}

func (f *firedAt) onTimer(int64) { *f.out = append(*f.out, f.id) }

// Timers fire in time order, each once; removed ones never; moved ones at
// their new time.
func TestTimerHeap(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for round := range 200 {
		var h timerHeap
		var fired []int
		n := 1 + rng.IntN(50)
		entries := make([]*timerEntry, n)
		when := map[int]int64{}
		for i := range n {
			entries[i] = &timerEntry{owner: &firedAt{id: i, out: &fired}}
			when[i] = rng.Int64N(1000)
			h.schedule(entries[i], when[i])
		}
		for i := range n {
			switch rng.IntN(3) {
			case 0:
				h.remove(entries[i])
				delete(when, i)
			case 1:
				when[i] = rng.Int64N(1000)
				h.schedule(entries[i], when[i])
			}
		}
		h.fire(499)
		h.fire(1000)
		var want []int
		for i := range when {
			want = append(want, i)
		}
		slices.SortFunc(want, func(a, b int) int {
			if when[a] != when[b] {
				return int(when[a] - when[b])
			}
			return 0
		})
		if len(fired) != len(want) {
			t.Fatalf("round %d: fired %v, want %v", round, fired, want)
		}
		for i := range fired {
			if when[fired[i]] != when[want[i]] {
				t.Fatalf("round %d: fired %v out of order (want times of %v)", round, fired, want)
			}
		}
		if h.h.Len() != 0 {
			t.Fatalf("round %d: %d timers left", round, h.h.Len())
		}
	}
}

// Entries armed and disarmed over and over (connections coming and
// going) reuse their ids: the tables stay as long as the most entries
// armed at once, not the number ever armed.
func TestTimerHeapReusesIDs(t *testing.T) {
	var h timerHeap
	var fired []int
	for i := range 10000 {
		e := &timerEntry{owner: &firedAt{id: i, out: &fired}}
		h.schedule(e, int64(i))
		if i%3 == 0 {
			h.remove(e)
		}
		if i%2 == 0 {
			h.fire(int64(i))
		}
	}
	h.fire(1 << 62)
	if len(h.entries) > 3 {
		t.Fatalf("%d ids for at most 3 entries armed at once", len(h.entries))
	}
	if h.h.Len() != 0 || len(h.free) != len(h.entries) {
		t.Fatalf("%d timers armed and %d of %d ids free after firing all", h.h.Len(), len(h.free), len(h.entries))
	}
}

// BenchmarkTimerHeap is the loop's use of its timers with 1000
// connections armed: each op moves one connection's timeout later (as a
// connection re-arms after its check) and fires what is due.
func BenchmarkTimerHeap(b *testing.B) {
	const n = 1000
	var h timerHeap
	var fired []int
	entries := make([]*timerEntry, n)
	for i := range entries {
		entries[i] = &timerEntry{owner: &firedAt{id: i, out: &fired}}
		h.schedule(entries[i], int64(i))
	}
	rng := rand.New(rand.NewPCG(1, 2))
	now := int64(0)
	b.ResetTimer()
	for i := range b.N {
		e := entries[i%n]
		h.schedule(e, now+int64(n)+rng.Int64N(n))
		if i%64 == 0 {
			h.remove(entries[(i/64)%n])
			h.schedule(entries[(i/64)%n], now+rng.Int64N(2*n))
		}
		now++
		fired = fired[:0]
		h.fire(now - n/2)
		for _, id := range fired {
			h.schedule(entries[id], now+int64(n))
		}
	}
}
