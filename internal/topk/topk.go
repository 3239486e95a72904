package topk

import (
	"cmp"
	"slices"

	"github.com/snoopd/snoopd/internal/heap"
)

// Sketch counts the weights of keys in m counters (see the package doc
// for its bounds). It is not safe for concurrent use.
type Sketch[V any] struct {
	slots []slot[V]
	index map[string]int32 // key → its slot
	least heap.Heap[uint64]
	n     uint64
	m     int
}

type slot[V any] struct {
	key   string
	count uint64
	err   uint64
	value V
}

// Entry is one counted key.
type Entry[V any] struct {
	Key string
	// Count is the key's estimated weight: at least its true weight, and
	// at most Err above it.
	Count uint64
	// Err is the count the key inherited when it took its counter, the
	// most Count overestimates by; 0 for a key counted from its first
	// appearance.
	Err uint64
	// Value is the caller's figures, since the key took its counter.
	Value V
}

// New returns a sketch with m counters (at least 1).
func New[V any](m int) *Sketch[V] {
	m = max(m, 1)
	return &Sketch[V]{slots: make([]slot[V], 0, m), index: make(map[string]int32, m), m: m}
}

// Add adds w to key's count and returns key's value for the caller to
// update; the pointer is good until the next Add or Reset. A weight of 0
// counts nothing but still gives key a counter (evicting the least if
// none is free), so that figures other than the count can follow it
// from its first appearance; the bounds hold for any weights.
func (s *Sketch[V]) Add(key []byte, w uint64) *V {
	s.n += w
	if i, ok := s.index[string(key)]; ok {
		sl := &s.slots[i]
		sl.count += w
		s.least.Set(i, sl.count)
		return &sl.value
	}
	k := string(key)
	if len(s.slots) < s.m {
		i := int32(len(s.slots))
		s.slots = append(s.slots, slot[V]{key: k, count: w})
		s.index[k] = i
		s.least.Set(i, w)
		return &s.slots[i].value
	}
	i, least := s.least.Min()
	sl := &s.slots[i]
	delete(s.index, sl.key)
	*sl = slot[V]{key: k, count: least + w, err: least}
	s.index[k] = i
	s.least.Set(i, sl.count)
	return &sl.value
}

// N is the sum of the weights added since the sketch was made or reset.
func (s *Sketch[V]) N() uint64 { return s.n }

// Capacity is m, the number of counters.
func (s *Sketch[V]) Capacity() int { return s.m }

// Len is the number of keys counted, at most m.
func (s *Sketch[V]) Len() int { return len(s.slots) }

// Bound is the most any count overestimates its key's weight by, N/m
// (rounded down, as counts are whole), and the weight above which a key
// is sure to be counted.
func (s *Sketch[V]) Bound() uint64 { return s.n / uint64(s.m) }

// Top returns the k keys with the highest counts (every key for k <= 0),
// highest first; equal counts by lesser error first (the surer count),
// then by key.
func (s *Sketch[V]) Top(k int) []Entry[V] {
	out := make([]Entry[V], len(s.slots))
	for i, sl := range s.slots {
		out[i] = Entry[V]{Key: sl.key, Count: sl.count, Err: sl.err, Value: sl.value}
	}
	slices.SortFunc(out, func(a, b Entry[V]) int {
		return cmp.Or(cmp.Compare(b.Count, a.Count), cmp.Compare(a.Err, b.Err), cmp.Compare(a.Key, b.Key))
	})
	if k > 0 && k < len(out) {
		out = out[:k]
	}
	return out
}

// Reset forgets every key, keeping the memory for the next stream.
func (s *Sketch[V]) Reset() {
	for i := range s.slots {
		s.least.Remove(int32(i))
	}
	clear(s.slots)
	s.slots = s.slots[:0]
	clear(s.index)
	s.n = 0
}
