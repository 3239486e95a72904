package histogram

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"
)

func TestIndexIsMonotonicAndContinuous(t *testing.T) {
	prev := 0
	for v := uint64(0); v < 1<<20; v++ {
		i := index(v)
		if i != prev && i != prev+1 {
			t.Fatalf("index(%d) = %d after %d", v, i, prev)
		}
		if lowest(i) > v || lowest(i+1) <= v {
			t.Fatalf("value %d outside bucket %d [%d,%d)", v, i, lowest(i), lowest(i+1))
		}
		prev = i
	}
	if index(1<<62) != numBuckets-1 {
		t.Errorf("huge value not in the last bucket")
	}
}

func TestQuantilesWithinThreePercent(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	var h Histogram
	var vals []time.Duration
	for range 100000 {
		d := time.Duration(r.ExpFloat64() * float64(50*time.Microsecond))
		vals = append(vals, d)
		h.Record(d)
	}
	slices.Sort(vals)
	s := h.Snapshot()
	for _, q := range []float64{0.5, 0.9, 0.99, 0.999} {
		want := vals[int(q*float64(len(vals)))-1]
		got := s.Quantile(q)
		if diff := float64(got-want) / float64(want); diff > 0.03 || diff < -0.03 {
			t.Errorf("q%.3f = %v, want %v (%.1f%% off)", q, got, want, diff*100)
		}
	}
	if s.Count != 100000 || s.Max != vals[len(vals)-1] {
		t.Errorf("count %d max %v", s.Count, s.Max)
	}
	if s.Quantile(1) != s.Max {
		t.Errorf("q1 = %v, max %v", s.Quantile(1), s.Max)
	}
}

func TestExactSmallValuesAndEmpty(t *testing.T) {
	var s Snapshot
	if s.Quantile(0.5) != 0 || s.Mean() != 0 {
		t.Fatal("empty histogram not zero")
	}
	for v := 1; v <= 10; v++ {
		s.Record(time.Duration(v))
	}
	if s.Quantile(0.5) != 5 || s.Quantile(0.9) != 9 || s.Mean() != 5 {
		t.Errorf("p50 %v p90 %v mean %v", s.Quantile(0.5), s.Quantile(0.9), s.Mean())
	}
	s.Record(-time.Second)
	if s.Quantile(0) != 0 {
		t.Errorf("negative sample not counted as zero")
	}
}

func TestConcurrentRecordAndMerge(t *testing.T) {
	var h Histogram
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 1000 {
				h.Record(time.Duration(g*1000 + i))
			}
		}()
	}
	wg.Wait()
	s := h.Snapshot()
	if s.Count != 8000 || s.Max != 7999 {
		t.Fatalf("count %d max %v", s.Count, s.Max)
	}
	var a, b Snapshot
	a.Record(time.Millisecond)
	b.Record(3 * time.Millisecond)
	a.Merge(&b)
	if a.Count != 2 || a.Max != 3*time.Millisecond || a.Sum != 4*time.Millisecond {
		t.Errorf("merge: %+v", a)
	}
	var n uint64
	a.Buckets(func(upper time.Duration, c uint64) { n += c })
	if n != 2 {
		t.Errorf("buckets count %d", n)
	}
}

// exactQuantile is the nearest-rank order statistic Quantile estimates:
// the smallest sample with at least round(q*n) samples at or below it.
func exactQuantile(sorted []time.Duration, q float64) time.Duration {
	rank := int(q*float64(len(sorted)) + 0.5)
	return sorted[min(max(rank, 1), len(sorted))-1]
}

func checkWithin(t *testing.T, what string, got, want time.Duration, tol float64) {
	t.Helper()
	if diff := math.Abs(float64(got - want)); diff > tol*float64(want) && diff > 1 {
		t.Errorf("%s = %v, want %v within %.1f%%", what, got, want, tol*100)
	}
}

func TestKnownUniformData(t *testing.T) {
	// 1µs, 2µs, ..., 100000µs: the q-quantile is q*100ms.
	var s Snapshot
	for i := 1; i <= 100000; i++ {
		s.Record(time.Duration(i) * time.Microsecond)
	}
	if s.Count != 100000 || s.Min != time.Microsecond || s.Max != 100*time.Millisecond {
		t.Fatalf("count %d, min %v, max %v; want 100000, 1µs, 100ms (exact)", s.Count, s.Min, s.Max)
	}
	if s.Mean() != 50000500*time.Nanosecond {
		t.Errorf("mean %v, want 50.0005ms (exact)", s.Mean())
	}
	for _, q := range []float64{0.01, 0.1, 0.5, 0.9, 0.99, 0.999} {
		checkWithin(t, fmt.Sprintf("q%g", q), s.Quantile(q), time.Duration(q*float64(100*time.Millisecond)), 0.03)
	}
	if s.Quantile(0) != s.Min || s.Quantile(1) != s.Max {
		t.Errorf("q0, q1 = %v, %v; want min %v, max %v", s.Quantile(0), s.Quantile(1), s.Min, s.Max)
	}
}

func TestQuantilesLogNormalWithinThreePercent(t *testing.T) {
	// Log-normal latencies spanning tens of nanoseconds to about a
	// second, the shape of a real load run, so the estimate is checked
	// across many powers of two, tails included.
	r := rand.New(rand.NewPCG(1, 2))
	var s Snapshot
	vals := make([]time.Duration, 50000)
	for i := range vals {
		v := time.Duration(math.Exp(r.NormFloat64()*2+12)) + 1
		vals[i] = v
		s.Record(v)
	}
	slices.Sort(vals)
	for _, q := range []float64{0.001, 0.05, 0.25, 0.5, 0.75, 0.9, 0.99, 0.999, 0.9999} {
		checkWithin(t, fmt.Sprintf("q%g", q), s.Quantile(q), exactQuantile(vals, q), 0.03)
	}
	if s.Min != vals[0] || s.Max != vals[len(vals)-1] {
		t.Errorf("min, max = %v, %v; want %v, %v", s.Min, s.Max, vals[0], vals[len(vals)-1])
	}
}

func TestBucketWidthAndHugeValues(t *testing.T) {
	// Above the exact range a bucket is 1/32 of its lower bound wide;
	// reporting its middle is what bounds the error near 3%.
	for _, v := range []uint64{64, 65, 127, 128, 1000, 1 << 20, 123456789, 1<<40 + 12345} {
		i := index(v)
		lo, hi := lowest(i), lowest(i+1)
		if v < lo || v >= hi {
			t.Errorf("value %d in bucket %d = [%d, %d)", v, i, lo, hi)
		}
		if float64(hi-lo)/float64(lo) > 1.0/subs+1e-12 {
			t.Errorf("bucket %d is %d wide at %d: wider than 1/%d", i, hi-lo, lo, subs)
		}
	}
	// Beyond the bucketed range values share the last bucket; the
	// extremes stay exact and no quantile exceeds them.
	var s Snapshot
	s.Record(-5)
	s.Record(2 * time.Hour)
	if s.Min != 0 || s.Max != 2*time.Hour {
		t.Errorf("min, max = %v, %v; want 0, 2h", s.Min, s.Max)
	}
	if q := s.Quantile(0.99); q > 2*time.Hour || q < 30*time.Minute {
		t.Errorf("q0.99 = %v, want a huge value no more than max", q)
	}
}

func TestMin(t *testing.T) {
	var s Snapshot
	if s.Min != 0 {
		t.Fatalf("empty min %v", s.Min)
	}
	for _, d := range []time.Duration{5 * time.Millisecond, 3 * time.Millisecond, 7 * time.Millisecond} {
		s.Record(d)
	}
	if s.Min != 3*time.Millisecond {
		t.Errorf("min %v, want 3ms", s.Min)
	}

	// Merging an empty snapshot, whose Min of 0 means "no sample", must
	// not lower the minimum; merging into an empty one must take o's.
	before := s
	s.Merge(&Snapshot{})
	if s != before {
		t.Errorf("merging an empty snapshot changed min %v to %v", before.Min, s.Min)
	}
	var empty Snapshot
	empty.Merge(&s)
	if empty.Min != 3*time.Millisecond {
		t.Errorf("merge into empty: min %v, want 3ms", empty.Min)
	}
	var lower Snapshot
	lower.Record(time.Millisecond)
	s.Merge(&lower)
	if s.Min != time.Millisecond {
		t.Errorf("merge of a lower minimum: min %v, want 1ms", s.Min)
	}

	// The concurrent Histogram: zero value, then many goroutines.
	var h Histogram
	if hs := h.Snapshot(); hs.Min != 0 || hs.Count != 0 {
		t.Errorf("empty Histogram snapshot: min %v count %d", hs.Min, hs.Count)
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 1000 {
				h.Record(time.Duration(1000 + g*1000 + (999 - i)))
			}
		})
	}
	wg.Wait()
	if hs := h.Snapshot(); hs.Min != 1000 || hs.Max != 8999 {
		t.Errorf("concurrent: min %v max %v; want 1µs, 8.999µs", hs.Min, hs.Max)
	}
	h.Record(-time.Second)
	if hs := h.Snapshot(); hs.Min != 0 {
		t.Errorf("negative sample: min %v, want 0", hs.Min)
	}
}

func TestMergeEqualsDirectRecording(t *testing.T) {
	var a, b, all Snapshot
	for i := 1; i <= 1000; i++ {
		d := time.Duration(i*i) * time.Microsecond
		all.Record(d)
		if i%3 == 0 {
			a.Record(d)
		} else {
			b.Record(d)
		}
	}
	var m Snapshot
	m.Merge(&a)
	m.Merge(&b)
	m.Merge(&Snapshot{})
	if m != all {
		t.Errorf("merged snapshot differs from one recorded directly: count %d/%d min %v/%v max %v/%v",
			m.Count, all.Count, m.Min, all.Min, m.Max, all.Max)
	}
}

func TestRecordDoesNotAllocate(t *testing.T) {
	var h Histogram
	var s Snapshot
	d := time.Duration(0)
	if a := testing.AllocsPerRun(1000, func() {
		d += 12345
		h.Record(d)
		s.Record(d)
	}); a != 0 {
		t.Errorf("%v allocations per Record, want none", a)
	}
}

func BenchmarkHistogramRecord(b *testing.B) {
	var h Histogram
	for i := range b.N {
		h.Record(time.Duration(i&0xfffff) * 100)
	}
}

func BenchmarkSnapshotRecord(b *testing.B) {
	var s Snapshot
	for i := range b.N {
		s.Record(time.Duration(i&0xfffff) * 100)
	}
}

// TestSubIsTheInterval checks that the difference of two snapshots of one
// histogram is the histogram of the samples recorded between them: the
// same buckets, count and sum, percentiles within the bucket error, and
// Min and Max bounds that hold the interval's samples and are within one
// bucket of its true extremes.
func TestSubIsTheInterval(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	var h Histogram
	for range 5000 {
		h.Record(time.Duration(r.ExpFloat64() * float64(time.Millisecond)))
	}
	h.Record(time.Nanosecond)  // an early minimum the interval does not share
	h.Record(10 * time.Second) // and an early maximum
	before := h.Snapshot()
	var interval Snapshot
	var vals []time.Duration
	for range 20000 {
		d := time.Duration(50*time.Microsecond) + time.Duration(r.ExpFloat64()*float64(200*time.Microsecond))
		h.Record(d)
		interval.Record(d)
		vals = append(vals, d)
	}
	after := h.Snapshot()
	diff := after
	diff.Sub(&before)
	if diff.Count != interval.Count || diff.Sum != interval.Sum || diff.counts != interval.counts {
		t.Fatalf("difference: count %d sum %v, want %d %v (or buckets differ)", diff.Count, diff.Sum, interval.Count, interval.Sum)
	}
	slices.Sort(vals)
	lo, hi := vals[0], vals[len(vals)-1]
	if diff.Min > lo || diff.Max < hi {
		t.Errorf("bounds %v..%v do not hold the interval's samples %v..%v", diff.Min, diff.Max, lo, hi)
	}
	if float64(lo-diff.Min) > 0.032*float64(lo) || float64(diff.Max-hi) > 0.032*float64(hi) {
		t.Errorf("bounds %v..%v further than a bucket from the extremes %v..%v", diff.Min, diff.Max, lo, hi)
	}
	for _, q := range []float64{0.5, 0.9, 0.99, 0.999} {
		want := vals[int(q*float64(len(vals)))-1]
		got := diff.Quantile(q)
		if math.Abs(float64(got-want)) > 0.032*float64(want) {
			t.Errorf("interval p%v = %v, want %v within 3%%", q*100, got, want)
		}
	}
	if diff.Mean() != interval.Mean() {
		t.Errorf("mean %v, want %v", diff.Mean(), interval.Mean())
	}
}

func TestSubEmptyAndReset(t *testing.T) {
	var a, b Snapshot
	a.Record(time.Millisecond)
	a.Record(2 * time.Millisecond)
	same := a
	same.Sub(&a)
	if same.Count != 0 || same.Sum != 0 || same.Min != 0 || same.Max != 0 || same.Quantile(0.5) != 0 {
		t.Errorf("a - a = %+v, want empty", same)
	}
	// b is not an earlier snapshot of a (a reset in between): nothing
	// wraps around.
	b.Record(time.Millisecond)
	b.Record(time.Millisecond)
	b.Record(time.Second)
	d := a
	d.Sub(&b)
	if d.Count != 1 || d.Quantile(0.5) > 2*time.Millisecond || d.Quantile(0.5) < time.Millisecond {
		t.Errorf("a - b = count %d p50 %v, want the one 2ms sample left", d.Count, d.Quantile(0.5))
	}
	if d.Sum != 0 {
		t.Errorf("sum %v after subtracting a larger sum, want 0", d.Sum)
	}
	// Exact small values keep exact bounds.
	var c, e Snapshot
	c.Record(3)
	e = c
	e.Record(7)
	e.Sub(&c)
	if e.Min != 7 || e.Max != 7 {
		t.Errorf("exact bucket bounds %v..%v, want 7..7", e.Min, e.Max)
	}
}

func TestBucketLower(t *testing.T) {
	for _, v := range []uint64{0, 1, 63, 64, 65, 1000, 123456, 1 << 40} {
		i := index(v)
		if got := BucketLower(time.Duration(lowest(i + 1))); got != time.Duration(lowest(i)) {
			t.Errorf("bucket of %d: lower %v, want %v", v, got, lowest(i))
		}
	}
	if BucketLower(0) != 0 {
		t.Errorf("BucketLower(0) != 0")
	}
}
