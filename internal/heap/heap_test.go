package heap

import (
	"math/rand/v2"
	"slices"
	"testing"
)

// check fails t unless every id's recorded position is where it stands
// and no parent comes after its children.
func check(t *testing.T, h *Heap[int]) {
	t.Helper()
	for i := range h.items {
		if p := h.pos[h.items[i].id]; int(p) != i {
			t.Fatalf("id %d recorded at %d, stands at %d", h.items[i].id, p, i)
		}
		if i > 0 && h.items[i].before(&h.items[(i-1)/2]) {
			t.Fatalf("id %d at %d comes before its parent", h.items[i].id, i)
		}
	}
}

// drain takes every id out of h from the front, in the heap's order.
func drain(t *testing.T, h *Heap[int]) (ids []int32, keys []int) {
	t.Helper()
	for h.Len() > 0 {
		id, key := h.Min()
		if !h.Remove(id) {
			t.Fatalf("Remove(%d) of the front reports it absent", id)
		}
		check(t, h)
		ids, keys = append(ids, id), append(keys, key)
	}
	return ids, keys
}

// Ids come out by key, and among equal keys in the order they were added.
func TestHeapTakesOutByKeyThenArrival(t *testing.T) {
	var h Heap[int]
	keys := []int{5, 3, 8, 1, 9, 3, 7, 3, 0}
	for id, k := range keys {
		h.Set(int32(id), k)
	}
	ids, got := drain(t, &h)
	if want := []int{0, 1, 3, 3, 3, 5, 7, 8, 9}; !slices.Equal(got, want) {
		t.Fatalf("keys came out %v, want %v", got, want)
	}
	if want := []int32{8, 3, 1, 5, 7, 0, 6, 2, 4}; !slices.Equal(ids, want) {
		t.Fatalf("ids came out %v, want %v", ids, want)
	}
	if h.Remove(3) || h.Has(3) {
		t.Fatal("an id taken out is still reported present")
	}
}

// Ids added, moved and removed from the middle at random leave a heap
// whose positions are true and which gives back exactly the ids still in
// it, at their last keys, in order.
func TestHeapMovesAndRemovesFromTheMiddle(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for round := range 300 {
		var h Heap[int]
		in := map[int32]int{}
		for range 1 + rng.IntN(80) {
			id := int32(rng.IntN(40))
			switch rng.IntN(3) {
			case 0:
				_, was := in[id]
				if h.Remove(id) != was {
					t.Fatalf("round %d: Remove(%d) = %v, want %v", round, id, !was, was)
				}
				delete(in, id)
			default:
				k := rng.IntN(100)
				h.Set(id, k)
				in[id] = k
			}
			check(t, &h)
			if h.Len() != len(in) {
				t.Fatalf("round %d: Len %d, want %d", round, h.Len(), len(in))
			}
		}
		var want []int
		for _, k := range in {
			want = append(want, k)
		}
		slices.Sort(want)
		ids, got := drain(t, &h)
		if !slices.Equal(got, want) {
			t.Fatalf("round %d: keys came out %v, want %v", round, got, want)
		}
		for i, id := range ids {
			if in[id] != got[i] {
				t.Fatalf("round %d: id %d came out at key %d, was set to %d", round, id, got[i], in[id])
			}
		}
	}
}

// Once its tables have grown, moving and re-adding ids allocates nothing.
func TestHeapDoesNotAllocateInSteadyState(t *testing.T) {
	var h Heap[int64]
	for id := range int32(64) {
		h.Set(id, int64(id*37%64))
	}
	n := int64(0)
	allocs := testing.AllocsPerRun(100, func() {
		n++
		h.Remove(int32(n % 64))
		h.Set(int32(n%64), n)
		h.Set(int32((n+7)%64), n/2)
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per round, want 0", allocs)
	}
}
