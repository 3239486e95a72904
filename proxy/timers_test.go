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
		if len(h.h) != 0 {
			t.Fatalf("round %d: %d timers left", round, len(h.h))
		}
	}
}
