// Package histogram records durations in log-linear buckets, HDR style:
// 32 buckets per power of two, so any percentile is within about 3% of the
// true value, at a fixed 9 KiB per histogram and one atomic add per sample.
// It serves the proxies' latency counters, which many connections update at
// once, and the load generator's reports.
package histogram

import (
	"math/bits"
	"sync/atomic"
	"time"
)

const (
	subBits = 5
	subs    = 1 << subBits // buckets per power of two
	// maxExp bounds the largest recordable value at about 2^41 ns (36 min);
	// anything longer lands in the last bucket.
	maxExp     = 36
	numBuckets = (maxExp + 2) * subs
)

// index maps a value to its bucket; values below 2*subs are exact.
func index(v uint64) int {
	if v < 2*subs {
		return int(v)
	}
	e := bits.Len64(v) - (subBits + 1)
	if e > maxExp {
		return numBuckets - 1
	}
	return (e+1)*subs + int(v>>uint(e)) - subs
}

// lowest is the smallest value of bucket i.
func lowest(i int) uint64 {
	if i < 2*subs {
		return uint64(i)
	}
	e := i/subs - 1
	return uint64(i%subs+subs) << uint(e)
}

// Histogram is a concurrent duration histogram. The zero value is ready.
type Histogram struct {
	counts [numBuckets]atomic.Uint64
	total  atomic.Uint64
	sum    atomic.Uint64 // nanoseconds
	max    atomic.Uint64
	// minInv holds the complement of the smallest sample, so the minimum
	// is kept by the same lock-free raise as max, and the zero value (the
	// complement of 2^64-1, which no Duration reaches) means "no sample
	// yet" with no initialisation to forget.
	minInv atomic.Uint64
}

// Record adds one sample. Negative durations count as zero.
func (h *Histogram) Record(d time.Duration) {
	v := uint64(max(d, 0))
	// The extremes move before the sample is counted, so a Snapshot that
	// sees the count also sees a Min and Max that cover it.
	raise(&h.max, v)
	raise(&h.minInv, ^v)
	h.counts[index(v)].Add(1)
	h.total.Add(1)
	h.sum.Add(v)
}

// raise sets a to v if v is larger, without a lock.
func raise(a *atomic.Uint64, v uint64) {
	for {
		m := a.Load()
		if v <= m || a.CompareAndSwap(m, v) {
			return
		}
	}
}

// Snapshot copies the histogram's current state. Concurrent Records may be
// partly included; each bucket is read atomically.
func (h *Histogram) Snapshot() Snapshot {
	var s Snapshot
	for i := range h.counts {
		if c := h.counts[i].Load(); c != 0 {
			s.counts[i] = c
			s.Count += c
		}
	}
	s.Sum = time.Duration(h.sum.Load())
	s.Max = time.Duration(h.max.Load())
	if s.Count != 0 {
		// Read after the counts: Record lowers minInv before counting,
		// so it covers every sample counted above.
		s.Min = time.Duration(^h.minInv.Load())
	}
	return s
}

// Snapshot is a point-in-time copy of a Histogram, and also a histogram
// for a single goroutine: its Record does not synchronise. The zero value
// is an empty histogram ready to use.
type Snapshot struct {
	counts [numBuckets]uint64
	Count  uint64
	Sum    time.Duration
	// Min and Max are the exact extremes, 0 when Count is 0.
	Min time.Duration
	Max time.Duration
}

// Record adds one sample to a snapshot owned by one goroutine.
func (s *Snapshot) Record(d time.Duration) { s.RecordN(d, 1) }

// RecordN adds n samples of d, as rebuilding a histogram from its buckets
// needs.
func (s *Snapshot) RecordN(d time.Duration, n uint64) {
	if n == 0 {
		return
	}
	v := max(d, 0)
	if s.Count == 0 || v < s.Min {
		s.Min = v
	}
	s.counts[index(uint64(v))] += n
	s.Count += n
	s.Sum += v * time.Duration(n)
	s.Max = max(s.Max, v)
}

// Merge adds the samples of o to s.
func (s *Snapshot) Merge(o *Snapshot) {
	if o.Count == 0 {
		return // an empty o's Min of 0 is no sample and must not lower s.Min
	}
	if s.Count == 0 || o.Min < s.Min {
		s.Min = o.Min
	}
	for i, c := range o.counts {
		s.counts[i] += c
	}
	s.Count += o.Count
	s.Sum += o.Sum
	s.Max = max(s.Max, o.Max)
}

// Quantile returns the value below which the fraction q (0..1) of samples
// fall: the middle of the bucket holding that rank, kept within Min..Max
// since no sample lies outside them. The first and last ranks are the
// exact Min and Max, so q 0 and 1 are exact. It is 0 for an empty
// histogram.
func (s *Snapshot) Quantile(q float64) time.Duration {
	if s.Count == 0 {
		return 0
	}
	rank := uint64(q*float64(s.Count) + 0.5)
	rank = min(max(rank, 1), s.Count)
	switch rank {
	case s.Count:
		return s.Max
	case 1:
		return s.Min
	}
	var seen uint64
	for i, c := range s.counts {
		seen += c
		if seen >= rank {
			lo, hi := lowest(i), lowest(i+1)
			mid := time.Duration(lo + (hi-lo)/2)
			if i < 2*subs {
				mid = time.Duration(lo)
			}
			return min(max(mid, s.Min), s.Max)
		}
	}
	return s.Max
}

// Mean is the average sample, or 0 for an empty histogram.
func (s *Snapshot) Mean() time.Duration {
	if s.Count == 0 {
		return 0
	}
	return s.Sum / time.Duration(s.Count)
}

// Buckets calls f for each non-empty bucket in ascending order with the
// bucket's upper bound (exclusive) and its count, for exporters that need
// cumulative buckets of their own.
func (s *Snapshot) Buckets(f func(upper time.Duration, count uint64)) {
	for i, c := range s.counts {
		if c != 0 {
			f(time.Duration(lowest(i+1)), c)
		}
	}
}

// Sub removes the samples of o from s, where o is an earlier snapshot of
// the same cumulative histogram: what is left is the distribution of the
// samples recorded between the two, as a poller that reads cumulative
// buckets needs for an interval's percentiles and rates. A bucket, count
// or sum of o larger than s's (o is not earlier, or the histogram was
// reset) leaves zero there rather than wrapping around.
//
// Count, Sum and the buckets of the difference are exact. Min and Max are
// not, because two extremes since the start cannot tell the extremes of
// an interval: after Sub they are bounds that hold every sample of the
// interval, Min the lower end of the lowest non-empty bucket and Max the
// upper end of the highest (each tightened by s's own extremes, which
// cover the interval too), so each is within one bucket (about 3%) of the
// interval's true extreme. Quantile(0) and Quantile(1) of a difference
// are those bounds.
func (s *Snapshot) Sub(o *Snapshot) {
	lo, hi := -1, -1
	var count uint64
	for i := range s.counts {
		c := s.counts[i]
		if oc := o.counts[i]; oc < c {
			c -= oc
		} else {
			c = 0
		}
		s.counts[i] = c
		if c != 0 {
			if lo < 0 {
				lo = i
			}
			hi = i
			count += c
		}
	}
	// Count is the sum of the buckets left, which is what Quantile
	// walks, even if o was not an earlier snapshot.
	s.Count = count
	if o.Sum < s.Sum {
		s.Sum -= o.Sum
	} else {
		s.Sum = 0
	}
	if count == 0 {
		s.Sum, s.Min, s.Max = 0, 0, 0
		return
	}
	s.Min = max(time.Duration(lowest(lo)), s.Min)
	top := time.Duration(lowest(hi+1)) - 1 // the upper end is exclusive
	if hi == numBuckets-1 {
		top = s.Max // the last bucket holds everything above
	}
	s.Max = min(top, s.Max)
	s.Min = min(s.Min, s.Max)
}

// BucketLower is the lower end of the bucket whose upper end (exclusive)
// is upper, as Buckets reports it: what rebuilding a histogram from
// bucket bounds needs, since empty buckets are left out and the previous
// non-empty bucket's end need not be this one's start.
func BucketLower(upper time.Duration) time.Duration {
	if upper <= 0 {
		return 0
	}
	return time.Duration(lowest(index(uint64(upper - 1))))
}
