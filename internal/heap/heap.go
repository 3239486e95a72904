// Package heap is a binary min-heap of small integer ids ordered by a key,
// that keeps each id's position itself, so that an id can be moved to
// another key or taken out from the middle in O(log n): an event loop's
// timers re-armed in place, a cache's sessions removed before they expire.
//
// Keys are kept next to the ids in one slice, and the heap records
// positions in its own table rather than telling its user through a
// callback: comparing and moving then compile to plain loads and stores,
// which is what keeps the loop's timers as fast as a heap written out for
// them (container/heap, or a generic heap over a less function, pays an
// indirect call per comparison and per move).
package heap

import "cmp"

// Heap orders ids by key, least first; among equal keys the id added
// first comes first. Ids are chosen by the caller, small and dense (slot
// numbers): the heap keeps a table as long as the largest id. The zero
// value is an empty heap.
type Heap[K cmp.Ordered] struct {
	items []item[K]
	pos   []int32 // by id: its index in items, or -1 when absent
	seq   uint64  // counts additions, to order equal keys
}

type item[K cmp.Ordered] struct {
	key K
	seq uint64
	id  int32
}

func (a *item[K]) before(b *item[K]) bool {
	return a.key < b.key || a.key == b.key && a.seq < b.seq
}

// Len returns the number of ids in h.
func (h *Heap[K]) Len() int { return len(h.items) }

// Min returns the id with the least key, and that key. h must not be
// empty.
func (h *Heap[K]) Min() (id int32, key K) {
	return h.items[0].id, h.items[0].key
}

// Has reports whether id is in h.
func (h *Heap[K]) Has(id int32) bool {
	return int(id) < len(h.pos) && h.pos[id] >= 0
}

// Set puts id in h at key: it adds id, or moves it if it is in h already
// (keeping its place among equal keys as when it was added).
func (h *Heap[K]) Set(id int32, key K) {
	if h.Has(id) {
		i := int(h.pos[id])
		h.items[i].key = key
		h.fix(i)
		return
	}
	for int(id) >= len(h.pos) {
		h.pos = append(h.pos, -1)
	}
	h.seq++
	i := len(h.items)
	h.items = append(h.items, item[K]{key: key, seq: h.seq, id: id})
	h.pos[id] = int32(i)
	h.up(i)
}

// Remove takes id out of h and reports whether it was in it.
func (h *Heap[K]) Remove(id int32) bool {
	if !h.Has(id) {
		return false
	}
	i, last := int(h.pos[id]), len(h.items)-1
	h.pos[id] = -1
	if i != last {
		h.items[i] = h.items[last]
		h.pos[h.items[i].id] = int32(i)
	}
	h.items = h.items[:last]
	if i != last {
		h.fix(i)
	}
	return true
}

func (h *Heap[K]) fix(i int) {
	if !h.down(i) {
		h.up(i)
	}
}

// up and down move the item at i by shifting the ones it passes into
// the hole it leaves, writing it (and its position) once where it stops:
// half the stores of swapping at each level.

func (h *Heap[K]) up(i int) {
	x := h.items[i]
	start := i
	for i > 0 {
		parent := (i - 1) / 2
		if !x.before(&h.items[parent]) {
			break
		}
		h.items[i] = h.items[parent]
		h.pos[h.items[i].id] = int32(i)
		i = parent
	}
	if i != start {
		h.items[i] = x
		h.pos[x.id] = int32(i)
	}
}

// down moves the item at i down and reports whether it moved.
func (h *Heap[K]) down(i int) bool {
	x := h.items[i]
	start, n := i, len(h.items)
	for {
		l := 2*i + 1
		if l >= n {
			break
		}
		m := l
		if r := l + 1; r < n && h.items[r].before(&h.items[l]) {
			m = r
		}
		if !h.items[m].before(&x) {
			break
		}
		h.items[i] = h.items[m]
		h.pos[h.items[i].id] = int32(i)
		i = m
	}
	if i == start {
		return false
	}
	h.items[i] = x
	h.pos[x.id] = int32(i)
	return true
}
