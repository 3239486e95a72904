package hub

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/snoopd/snoopd/distcache"
	"github.com/snoopd/snoopd/proxy"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// txEvent builds a transaction event with connection id n, so tests can
// check order and identity.
func txEvent(n uint64, op distcache.Op) *proxy.Event {
	tx := &proxy.Transaction{}
	tx.Op = op
	tx.SessionID = []byte{byte(n), byte(n >> 8)}
	return &proxy.Event{Kind: proxy.KindTransaction, Proxy: "p", ConnID: n, Tx: tx}
}

func newHub(t *testing.T, cfg Config) *Hub {
	h := New(cfg)
	t.Cleanup(h.Close)
	return h
}

// collect reads from w until it has n events (plus drops) or times out.
func collect(t *testing.T, w *Watcher, n int) (ids []uint64, dropped uint64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for len(ids) < n {
		b, err := w.Next(ctx)
		if err != nil {
			t.Fatalf("after %d events: %v", len(ids), err)
		}
		if len(b.Events) > MaxBatch {
			t.Fatalf("a batch of %d events, more than MaxBatch %d", len(b.Events), MaxBatch)
		}
		dropped += b.Dropped
		for _, e := range b.Events {
			ids = append(ids, e.ConnID)
			if e.Tx == nil || len(e.Tx.SessionID) != 2 || e.Tx.SessionID[0] != byte(e.ConnID) {
				t.Fatalf("event %d arrived damaged: %+v", e.ConnID, e.Tx)
			}
		}
		if b.Dropped > 0 && len(ids)+int(dropped) >= n {
			break
		}
	}
	return ids, dropped
}

func TestWatcherSeesEverythingInOrder(t *testing.T) {
	h := newHub(t, Config{History: 64, Interval: time.Millisecond})
	w := h.Watch(WatchOptions{})
	defer w.Close()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		// More than the ring holds: the dispatcher must keep up (it is
		// kicked when the ring is half full).
		for i := uint64(1); i <= 1000; i++ {
			h.Publish(txEvent(i, distcache.OpGet))
			if i%16 == 0 {
				time.Sleep(100 * time.Microsecond)
			}
		}
	}()
	ids, dropped := collect(t, w, 1000)
	wg.Wait()
	if dropped != 0 {
		t.Fatalf("dropped %d", dropped)
	}
	for i, id := range ids {
		if id != uint64(i+1) {
			t.Fatalf("event %d has id %d", i, id)
		}
	}
	if h.Published() != 1000 {
		t.Errorf("published %d", h.Published())
	}
}

func TestFilterAndHistory(t *testing.T) {
	h := newHub(t, Config{History: 100, Interval: time.Millisecond})
	for i := uint64(1); i <= 50; i++ {
		op := distcache.OpGet
		if i%2 == 0 {
			op = distcache.OpAdd
		}
		h.Publish(txEvent(i, op))
	}
	adds := func(e *proxy.Event) bool { return e.Tx != nil && e.Tx.Op == distcache.OpAdd }
	w := h.Watch(WatchOptions{Filter: adds, History: 3})
	defer w.Close()
	h.Publish(txEvent(51, distcache.OpGet))
	h.Publish(txEvent(52, distcache.OpAdd))
	ids, _ := collect(t, w, 4)
	want := []uint64{46, 48, 50, 52}
	for i := range want {
		if ids[i] != want[i] {
			t.Fatalf("got %v, want %v", ids, want)
		}
	}
}

func TestSlowWatcherDropsExactlyWhatItMissed(t *testing.T) {
	h := newHub(t, Config{History: 10000, Interval: time.Millisecond})
	slow := h.Watch(WatchOptions{QueueSize: 10})
	defer slow.Close()
	fast := h.Watch(WatchOptions{})
	defer fast.Close()
	for i := uint64(1); i <= 500; i++ {
		h.Publish(txEvent(i, distcache.OpHave))
	}
	// The fast watcher loses nothing because of the slow one.
	if ids, dropped := collect(t, fast, 500); dropped != 0 || len(ids) != 500 {
		t.Fatalf("fast watcher: %d events, %d dropped", len(ids), dropped)
	}
	// The slow one never read: it has the first 10 and a notice of 490.
	deadline := time.Now().Add(5 * time.Second)
	for {
		n, d := slow.Backlog()
		if n+int(d) == 500 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("slow watcher has %d queued and %d dropped", n, d)
		}
		time.Sleep(time.Millisecond)
	}
	b, err := slow.Next(context.Background())
	if err != nil || b.Dropped != 490 || len(b.Events) != 10 || b.Events[0].ConnID != 1 {
		t.Fatalf("slow watcher: %d events, %d dropped, %v", len(b.Events), b.Dropped, err)
	}
}

func TestRingOverrunCountsLostEvents(t *testing.T) {
	// A dispatcher that effectively never runs on its own: the ring of 8
	// goes round before it does, and the loss is reported.
	h := newHub(t, Config{History: 8, Interval: time.Hour})
	w := h.Watch(WatchOptions{})
	defer w.Close()
	h.mu.Lock()
	for i := uint64(1); i <= 20; i++ {
		n := uint64(len(h.ring))
		h.ring[h.seq%n].ev.Set(txEvent(i, distcache.OpGet))
		h.seq++
	}
	h.dispatchLocked()
	h.mu.Unlock()
	b, err := w.Next(context.Background())
	if err != nil || b.Dropped != 12 || len(b.Events) != 8 || b.Events[0].ConnID != 13 {
		t.Fatalf("%d events from %d, %d dropped, %v", len(b.Events), b.Events[0].ConnID, b.Dropped, err)
	}
}

func TestCloseEndsWatchers(t *testing.T) {
	h := New(Config{Interval: time.Hour})
	w := h.Watch(WatchOptions{})
	idle := h.Watch(WatchOptions{})
	h.Publish(txEvent(1, distcache.OpGet))
	done := make(chan error)
	go func() {
		_, err := idle.Next(context.Background())
		for err == nil {
			_, err = idle.Next(context.Background())
		}
		done <- err
	}()
	h.Close()
	// What was published before Close is still delivered, then ErrClosed.
	b, err := w.Next(context.Background())
	if err != nil || len(b.Events) != 1 {
		t.Fatalf("last batch: %d events, %v", len(b.Events), err)
	}
	if _, err := w.Next(context.Background()); !errors.Is(err, ErrClosed) {
		t.Errorf("after close: %v", err)
	}
	if err := <-done; !errors.Is(err, ErrClosed) {
		t.Errorf("blocked watcher: %v", err)
	}
	h.Publish(txEvent(2, distcache.OpGet)) // ignored, no panic
	if late := h.Watch(WatchOptions{}); !errors.Is(func() error { _, err := late.Next(context.Background()); return err }(), ErrClosed) {
		t.Error("watcher made after close is open")
	}
	h.Close() // idempotent
}

func TestWatcherCloseAndContext(t *testing.T) {
	h := newHub(t, Config{})
	w := h.Watch(WatchOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if _, err := w.Next(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Next on an idle watcher: %v", err)
	}
	w.Close()
	if h.Watchers() != 0 {
		t.Errorf("%d watchers after close", h.Watchers())
	}
	if _, err := w.Next(context.Background()); !errors.Is(err, ErrClosed) {
		t.Errorf("Next after close: %v", err)
	}
}

// BenchmarkPublish measures the proxies' cost of an event, with and without
// a watcher that never reads.
func BenchmarkPublish(b *testing.B) {
	for _, watchers := range []int{0, 1, 100} {
		b.Run(map[int]string{0: "no-watchers", 1: "1-stuck-watcher", 100: "100-stuck-watchers"}[watchers], func(b *testing.B) {
			h := New(Config{})
			defer h.Close()
			for range watchers {
				defer h.Watch(WatchOptions{QueueSize: 1}).Close()
			}
			e := txEvent(1, distcache.OpGet)
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				h.Publish(e)
			}
		})
	}
}

// TestTimesNeverGoBack publishes events stamped out of order, as two
// connections that stamp and then publish can: the watcher sees times
// that never decrease, and a transaction keeps its own start.
func TestTimesNeverGoBack(t *testing.T) {
	h := newHub(t, Config{History: 64, Interval: time.Millisecond})
	w := h.Watch(WatchOptions{})
	defer w.Close()
	base := time.Unix(1700000000, 0)
	offsets := []time.Duration{5, 3, 7, 7, 1, 9} // microseconds
	for i, off := range offsets {
		e := txEvent(uint64(i+1), distcache.OpGet)
		e.Time = base.Add(off * time.Microsecond)
		e.Tx.Start = base
		h.Publish(e)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var got []time.Duration
	for len(got) < len(offsets) {
		b, err := w.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range b.Events {
			got = append(got, e.Time.Sub(base)/time.Microsecond)
			if !e.Tx.Start.Equal(base) {
				t.Errorf("event %d: start %v changed", e.ConnID, e.Tx.Start)
			}
		}
	}
	want := []time.Duration{5, 5, 7, 7, 7, 9}
	if !slices.Equal(got, want) {
		t.Errorf("times %v, want %v", got, want)
	}
}

// A round's worth of events wakes the dispatcher before its interval is
// over, so at high rates a dispatch round stays small enough for the
// default queue: with an interval of an hour, the first kickAfter events
// still arrive, and a watcher with the default queue drops none of
// several rounds published faster than the interval.
func TestBusyPublishersWakeTheDispatcher(t *testing.T) {
	h := newHub(t, Config{Interval: time.Hour})
	w := h.Watch(WatchOptions{})
	defer w.Close()
	for i := range kickAfter {
		h.Publish(txEvent(uint64(i+1), distcache.OpGet))
	}
	ids, dropped := collect(t, w, kickAfter)
	if len(ids) != kickAfter || dropped != 0 {
		t.Fatalf("%d events and %d dropped, want %d and none", len(ids), dropped, kickAfter)
	}
	// Rounds of kickAfter, each read before the next is published: a
	// reader that keeps up loses nothing. (A dispatcher still in its
	// round when the next is published may take part of it along, and
	// the rest waits for the interval: an hour here, so the rounds run
	// on a hub with a short one.)
	h = newHub(t, Config{Interval: 20 * time.Millisecond})
	w = h.Watch(WatchOptions{})
	defer w.Close()
	for round := range 8 {
		for i := range kickAfter {
			h.Publish(txEvent(uint64(round*kickAfter+i+1), distcache.OpGet))
		}
		if ids, dropped := collect(t, w, kickAfter); len(ids) != kickAfter || dropped != 0 {
			t.Fatalf("round %d: %d events and %d dropped", round, len(ids), dropped)
		}
	}
	if 2*kickAfter > DefaultQueueSize {
		t.Fatalf("the default queue (%d) holds less than two dispatch rounds of %d", DefaultQueueSize, kickAfter)
	}
}
