package hub

import (
	"context"
	"runtime"
	"testing"
	"time"
	"unsafe"

	"github.com/snoopd/snoopd/distcache"
	"github.com/snoopd/snoopd/match"
)

// nextBatch is Next with a bound, failing the test on error.
func nextBatch(t *testing.T, w *Watcher) Batch {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	b, err := w.Next(ctx)
	if err != nil {
		t.Fatalf("Next: %v", err)
	}
	return b
}

// readHistory reads batches up to the history's end and returns the ids
// of its events and the missing count.
func readHistory(t *testing.T, w *Watcher) (ids []uint64, missing uint64) {
	t.Helper()
	for {
		b := nextBatch(t, w)
		if len(b.Records) > MaxBatch {
			t.Fatalf("a batch of %d events, more than MaxBatch %d", len(b.Records), MaxBatch)
		}
		if b.Dropped != 0 {
			t.Fatalf("a drop notice of %d inside the history", b.Dropped)
		}
		for _, r := range b.Records {
			ids = append(ids, r.View.Conn)
		}
		if b.HistoryEnd {
			return ids, b.HistoryMissing
		}
	}
}

func TestHistoryLargerThanTheLogIsStreamedWhole(t *testing.T) {
	h := newHub(t, Config{History: 5000, LogRecords: 10, Interval: time.Millisecond})
	for i := uint64(1); i <= 3000; i++ {
		h.Publish(txEvent(i, distcache.OpGet))
	}
	w := h.Watch(WatchOptions{History: 2500})
	defer w.Close()
	ids, missing := readHistory(t, w)
	if len(ids) != 2500 || missing != 0 {
		t.Fatalf("history of %d events, %d missing; want 2500, 0", len(ids), missing)
	}
	for i, id := range ids {
		if id != uint64(501+i) {
			t.Fatalf("history event %d has id %d, want %d", i, id, 501+i)
		}
	}
	// Live events follow, through the log.
	h.Publish(txEvent(3001, distcache.OpGet))
	if b := nextBatch(t, w); len(b.Records) != 1 || b.Records[0].View.Conn != 3001 || b.HistoryEnd {
		t.Fatalf("live batch: %d events, end %v", len(b.Records), b.HistoryEnd)
	}
}

// TestHistoryMissingCountsWhatWasGone tells the events asked for that
// existed but were gone (published before the ring's oldest) from those
// beyond what ever happened, which are no loss.
func TestHistoryMissingCountsWhatWasGone(t *testing.T) {
	h := newHub(t, Config{History: 100, Interval: time.Millisecond})
	for i := uint64(1); i <= 40; i++ {
		h.Publish(txEvent(i, distcache.OpGet))
	}
	end := func(w *Watcher) (n int, b Batch) {
		for {
			b = nextBatch(t, w)
			n += len(b.Records)
			if b.HistoryEnd {
				return n, b
			}
		}
	}
	// All that ever happened is held: nothing is missing, the rest of
	// the request is beyond it.
	w := h.Watch(WatchOptions{History: 4294967295})
	defer w.Close()
	if n, b := end(w); n != 40 || b.HistoryMissing != 0 || b.HistoryBeyond != 4294967295-40 {
		t.Fatalf("history of %d, %d missing, %d beyond; want 40, 0, %d", n, b.HistoryMissing, b.HistoryBeyond, uint64(4294967295-40))
	}
	// The ring went round: 250 published, 100 held, 150 gone.
	for i := uint64(41); i <= 250; i++ {
		h.Publish(txEvent(i, distcache.OpGet))
	}
	for _, c := range []struct{ asked, missing, beyond uint64 }{{100, 0, 0}, {200, 100, 0}, {250, 150, 0}, {1000, 150, 750}} {
		w := h.Watch(WatchOptions{History: int(c.asked)})
		if n, b := end(w); n != 100 || b.HistoryMissing != c.missing || b.HistoryBeyond != c.beyond {
			t.Errorf("%d asked: %d events, %d missing, %d beyond; want 100, %d, %d", c.asked, n, b.HistoryMissing, b.HistoryBeyond, c.missing, c.beyond)
		}
		w.Close()
	}

	// Nothing ever published: the end comes at once, nothing missing.
	empty := newHub(t, Config{})
	w2 := empty.Watch(WatchOptions{History: 7})
	defer w2.Close()
	if b := nextBatch(t, w2); !b.HistoryEnd || b.HistoryMissing != 0 || b.HistoryBeyond != 7 || len(b.Records) != 0 {
		t.Fatalf("empty history: end %v, missing %d, beyond %d, %d events", b.HistoryEnd, b.HistoryMissing, b.HistoryBeyond, len(b.Records))
	}
}

func TestHistoryOverwrittenBeforeReadCountsAsMissing(t *testing.T) {
	h := newHub(t, Config{History: 600, Interval: time.Millisecond})
	for i := uint64(1); i <= 600; i++ {
		h.Publish(txEvent(i, distcache.OpGet))
	}
	w := h.Watch(WatchOptions{History: 600})
	defer w.Close()
	// The first batch is read; then the ring goes round past the rest.
	b := nextBatch(t, w)
	if len(b.Records) != MaxBatch || b.HistoryEnd {
		t.Fatalf("first history batch: %d events, end %v", len(b.Records), b.HistoryEnd)
	}
	for i := uint64(601); i <= 1200; i++ {
		h.Publish(txEvent(i, distcache.OpGet))
	}
	rest, missing := readHistory(t, w)
	if len(rest) != 0 || missing != 600-MaxBatch {
		t.Fatalf("after the overrun: %d more history events, %d missing; want 0, %d", len(rest), missing, 600-MaxBatch)
	}
}

func TestInstancesTravelWithEvents(t *testing.T) {
	h := newHub(t, Config{History: 100, Interval: time.Millisecond})
	old, cur := h.Publisher("i-old"), h.Publisher("i-new")
	for i := uint64(1); i <= 4; i++ {
		old.Publish(txEvent(i, distcache.OpGet))
	}
	for i := uint64(5); i <= 6; i++ {
		cur.Publish(txEvent(i, distcache.OpGet))
	}
	onlyNew := func(_ *match.View, inst string) bool { return inst == "i-new" }
	w := h.Watch(WatchOptions{History: 10, HistoryFilter: onlyNew})
	defer w.Close()
	b := nextBatch(t, w)
	if !b.HistoryEnd || len(b.Records) != 2 || b.HistoryMissing != 0 || b.HistoryBeyond != 8 {
		t.Fatalf("history: %d events, end %v, missing %d, beyond %d", len(b.Records), b.HistoryEnd, b.HistoryMissing, b.HistoryBeyond)
	}
	for i, r := range b.Records {
		if r.Instance != "i-new" || decode(t, r.Wire).inst != "i-new" || r.View.Conn != uint64(5+i) {
			t.Fatalf("history event %d: id %d instance %q", i, r.View.Conn, r.Instance)
		}
	}
	// The history filter is the history's only: live events of any
	// instance come through.
	old.Publish(txEvent(7, distcache.OpGet))
	h.Publish(txEvent(8, distcache.OpGet))
	var insts []string
	for len(insts) < 2 {
		b := nextBatch(t, w)
		for _, r := range b.Records {
			insts = append(insts, r.Instance)
		}
	}
	if insts[0] != "i-old" || insts[1] != "" {
		t.Fatalf("live instances %q", insts)
	}
}

// A watcher that stops reading holds nothing of its own: the shared log
// is bounded, and the watcher is told what it lost.
func TestStuckWatcherHoldsNothingOfItsOwn(t *testing.T) {
	h := newHub(t, Config{History: 4096, LogRecords: 100, Interval: time.Millisecond})
	w := h.Watch(WatchOptions{})
	defer w.Close()
	for i := uint64(1); i <= 3000; i++ {
		h.Publish(txEvent(i, distcache.OpGet))
	}
	waitBacklog(t, w, 3000)
	h.log.mu.Lock()
	held := len(h.log.recs)
	h.log.mu.Unlock()
	if held > 100 {
		t.Fatalf("the log holds %d records, limit 100", held)
	}
	// Next hands out the newest in order, the drop notice first, and at
	// most MaxBatch at a time.
	b := nextBatch(t, w)
	if b.Dropped != 2900 || len(b.Records) != 100 || b.Records[0].View.Conn != 2901 {
		t.Fatalf("first batch: %d dropped, %d events", b.Dropped, len(b.Records))
	}
}

func TestNextReturnsAtMostMaxBatch(t *testing.T) {
	h := newHub(t, Config{History: 4096, Interval: time.Millisecond})
	w := h.Watch(WatchOptions{})
	defer w.Close()
	for i := uint64(1); i <= 1000; i++ {
		h.Publish(txEvent(i, distcache.OpGet))
	}
	ids, dropped := collect(t, w, 1000)
	if dropped != 0 || len(ids) != 1000 {
		t.Fatalf("%d events, %d dropped", len(ids), dropped)
	}
	for i, id := range ids {
		if id != uint64(i+1) {
			t.Fatalf("event %d has id %d", i, id)
		}
	}
}

// A history read holds one batch's bytes at a time, however long the
// history: reading 20,000 events of 1 KiB of captured data each (some
// 30 MB encoded) allocates what one batch needs and the sequence numbers
// it picked (8 bytes an event of the ring), and every record it returns
// is the event it stands for, its data included.
func TestHistoryReadHoldsOneBatchAtATime(t *testing.T) {
	const ring, size = 20000, 1024
	h := newHub(t, Config{History: ring, Interval: time.Millisecond})
	for i := uint64(1); i <= ring; i++ {
		e := txEvent(i, distcache.OpAdd)
		e.Tx.Data = make([]byte, size)
		e.Tx.Data[0], e.Tx.Data[size-1] = byte(i), byte(i>>8)
		h.Publish(e)
	}
	w := h.Watch(WatchOptions{History: 1<<32 - 1})
	defer w.Close()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	n := 0
	for {
		b := nextBatch(t, w)
		for i := range b.Records {
			r := &b.Records[i]
			n++
			// The data field ends with the data itself: read in
			// place, as decoding would allocate.
			data := r.Data[max(0, len(r.Data)-size):]
			if r.View.Conn != uint64(n) || len(r.Data) <= size || data[0] != byte(n) || data[size-1] != byte(n>>8) {
				t.Fatalf("history event %d: id %d, %d bytes of data", n, r.View.Conn, len(r.Data))
			}
		}
		if b.HistoryEnd {
			break
		}
	}
	runtime.ReadMemStats(&after)
	if n != ring {
		t.Fatalf("%d history events, want %d", n, ring)
	}
	// One batch: MaxBatch events in the arena's buffers (1.1 KiB each,
	// and the 1.5 KiB room the arena asks before carving one), the
	// copies out of the ring and the records; the picked sequence
	// numbers, grown by doubling; 64 KiB for the rest (this test's
	// contexts). Anything per event would be 20 MB or more.
	picked := uint64(2 * 8 * ring)
	batch := uint64(MaxBatch * (2*size + 1024 + int(unsafe.Sizeof(slot{})) + int(unsafe.Sizeof(Record{}))))
	if got := after.TotalAlloc - before.TotalAlloc; got > picked+batch+64<<10 {
		t.Fatalf("reading the history allocated %d bytes, want at most %d (one batch %d, picked %d, 64 KiB)",
			got, picked+batch+64<<10, batch, picked)
	}
	t.Logf("reading %d history events of %d bytes allocated %d bytes", ring, size, after.TotalAlloc-before.TotalAlloc)
}
