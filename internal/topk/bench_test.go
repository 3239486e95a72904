package topk

import (
	"crypto/sha256"
	"encoding/binary"
	"math/rand/v2"
	"runtime"
	"testing"
)

// sessionIDs are n distinct 32-byte ids, as TLS session ids are.
func sessionIDs(n int) [][]byte {
	ids := make([][]byte, n)
	for i := range ids {
		var b [8]byte
		binary.BigEndian.PutUint64(b[:], uint64(i))
		h := sha256.Sum256(b[:])
		ids[i] = h[:]
	}
	return ids
}

// sessionFigures is what a hot-sessions table keeps per id, here to
// weigh the counters as they are used.
type sessionFigures struct{ gets, hits, misses, adds, bytes int64 }

// BenchmarkAdd is one update (a GET of one of 100,000 distinct sessions)
// into a sketch of 1,000 counters: on a zipf stream, where most updates
// find their key, and on a uniform one, where most evict. sketch-bytes is
// the heap the filled sketch holds.
func BenchmarkAdd(b *testing.B) {
	const distinct, m = 100_000, 1_000
	ids := sessionIDs(distinct)
	for _, tc := range []struct {
		name string
		next func(r *rand.Rand) int
	}{
		{"zipf", func() func(r *rand.Rand) int {
			var z *rand.Zipf
			return func(r *rand.Rand) int {
				if z == nil {
					z = rand.NewZipf(r, 1.1, 1, distinct-1)
				}
				return int(z.Uint64())
			}
		}()},
		{"uniform", func(r *rand.Rand) int { return r.IntN(distinct) }},
	} {
		b.Run(tc.name, func(b *testing.B) {
			r := rand.New(rand.NewPCG(1, 2))
			stream := make([]int, 1<<20)
			for i := range stream {
				stream[i] = tc.next(r)
			}
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			s := New[sessionFigures](m)
			for _, i := range stream[:1<<18] {
				s.Add(ids[i], 1).gets++
			}
			runtime.GC()
			runtime.ReadMemStats(&after)
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				s.Add(ids[stream[i&(len(stream)-1)]], 1).gets++
			}
			// After the loop: the timer's reset clears reported metrics.
			b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc), "sketch-bytes")
			runtime.KeepAlive(s)
		})
	}
}
