package histogram

import (
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
