package hub

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/snoopd/snoopd/distcache"
	"github.com/snoopd/snoopd/match"
	"github.com/snoopd/snoopd/proxy"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testEncoder writes what the tests check: the connection id (field 1),
// the event's time and the transaction's start in Unix nanoseconds
// (fields 2 and 3) and the instance (field 4); AppendData writes the
// captured data (field 5).
type testEncoder struct{}

func (testEncoder) AppendEvent(b []byte, e *proxy.Event, inst string) []byte {
	b = protowire.AppendTag(b, 1, protowire.VarintType)
	b = protowire.AppendVarint(b, e.ConnID)
	b = protowire.AppendTag(b, 2, protowire.VarintType)
	b = protowire.AppendVarint(b, uint64(e.Time.UnixNano()))
	if e.Tx != nil {
		b = protowire.AppendTag(b, 3, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(e.Tx.Start.UnixNano()))
	}
	b = protowire.AppendTag(b, 4, protowire.BytesType)
	return protowire.AppendString(b, inst)
}

func (testEncoder) AppendData(b []byte, e *proxy.Event) []byte {
	if e.Tx == nil || len(e.Tx.Data) == 0 {
		return b
	}
	b = protowire.AppendTag(b, 5, protowire.BytesType)
	return protowire.AppendBytes(b, e.Tx.Data)
}

// decoded is a record's wire form read back.
type decoded struct {
	conn        uint64
	time, start int64
	inst        string
	data        []byte
}

func decode(t testing.TB, b []byte) decoded {
	t.Helper()
	var d decoded
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			t.Fatalf("bad tag in %x", b)
		}
		b = b[n:]
		switch typ {
		case protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			b = b[n:]
			switch num {
			case 1:
				d.conn = v
			case 2:
				d.time = int64(v)
			case 3:
				d.start = int64(v)
			}
		case protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			b = b[n:]
			if num == 4 {
				d.inst = string(v)
			} else {
				d.data = v
			}
		default:
			t.Fatalf("field %d of type %d", num, typ)
		}
	}
	return d
}

func newEncoder() Encoder { return testEncoder{} }

// txEvent builds a transaction event with connection id n, so tests can
// check order and identity.
func txEvent(n uint64, op distcache.Op) *proxy.Event {
	tx := &proxy.Transaction{}
	tx.Op = op
	tx.SessionID = []byte{byte(n), byte(n >> 8)}
	return &proxy.Event{Kind: proxy.KindTransaction, Proxy: "p", ConnID: n, Tx: tx}
}

func newHub(t *testing.T, cfg Config) *Hub {
	cfg.NewEncoder = newEncoder
	h := New(cfg)
	t.Cleanup(h.Close)
	return h
}

// collect reads from w until it has n events (plus drops) or times out.
func collect(t *testing.T, w *Watcher, n int) (ids []uint64, dropped uint64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for len(ids)+int(dropped) < n {
		b, err := w.Next(ctx)
		if err != nil {
			t.Fatalf("after %d events and %d dropped: %v", len(ids), dropped, err)
		}
		if len(b.Records) > MaxBatch {
			t.Fatalf("a batch of %d events, more than MaxBatch %d", len(b.Records), MaxBatch)
		}
		dropped += b.Dropped
		for i := range b.Records {
			r := &b.Records[i]
			ids = append(ids, r.View.Conn)
			if sid := r.View.SessionID; len(sid) != 2 || sid[0] != byte(r.View.Conn) || decode(t, r.Wire).conn != r.View.Conn {
				t.Fatalf("event %d arrived damaged: %+v", r.View.Conn, r)
			}
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

func adds(v *match.View) bool { return v.Op == distcache.OpAdd }

func TestFilterAndHistory(t *testing.T) {
	h := newHub(t, Config{History: 100, Interval: time.Millisecond})
	for i := uint64(1); i <= 50; i++ {
		op := distcache.OpGet
		if i%2 == 0 {
			op = distcache.OpAdd
		}
		h.Publish(txEvent(i, op))
	}
	w := h.Watch(WatchOptions{Filter: Filter{Full: adds}, History: 3})
	defer w.Close()
	h.Publish(txEvent(51, distcache.OpGet))
	h.Publish(txEvent(52, distcache.OpAdd))
	ids, _ := collect(t, w, 4)
	if want := []uint64{46, 48, 50, 52}; !slices.Equal(ids, want) {
		t.Fatalf("got %v, want %v", ids, want)
	}
}

// waitBacklog waits until w's backlog (queued plus lost) reaches n.
func waitBacklog(t *testing.T, w *Watcher, n int) (queued int, lost uint64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		q, d := w.Backlog()
		if q+int(d) == n {
			return q, d
		}
		if time.Now().After(deadline) {
			t.Fatalf("backlog %d queued, %d lost; want %d in all", q, d, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// A watcher that falls behind the log loses its oldest events, is told
// exactly how many, and costs the others nothing.
func TestSlowWatcherDropsExactlyWhatItMissed(t *testing.T) {
	h := newHub(t, Config{History: 10000, LogRecords: 10, Interval: time.Millisecond})
	slow := h.Watch(WatchOptions{})
	defer slow.Close()
	fast := h.Watch(WatchOptions{})
	defer fast.Close()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := uint64(1); i <= 500; i++ {
			h.Publish(txEvent(i, distcache.OpHave))
			if i%8 == 0 {
				// Leave the fast reader time: a log of 10 records
				// is far less than a dispatch round.
				time.Sleep(time.Millisecond)
			}
		}
	}()
	ids, dropped := collect(t, fast, 500)
	wg.Wait()
	if len(ids)+int(dropped) != 500 {
		t.Fatalf("fast watcher: %d events and %d dropped", len(ids), dropped)
	}
	// The slow one never read: the log holds the last 10, and the 490
	// before them are counted.
	waitBacklog(t, slow, 500)
	b, err := slow.Next(context.Background())
	if err != nil || b.Dropped != 490 || len(b.Records) != 10 || b.Records[0].View.Conn != 491 {
		t.Fatalf("slow watcher: %d events, %d dropped, %v", len(b.Records), b.Dropped, err)
	}
}

// Events a watcher loses by falling behind are counted by its quick
// filter: a watcher of ADDs is not told of the GETs it would not have
// wanted.
func TestLostEventsCountedByTheQuickFilter(t *testing.T) {
	h := newHub(t, Config{History: 1000, LogRecords: 4, Interval: time.Millisecond})
	w := h.Watch(WatchOptions{Filter: Filter{Quick: adds, Full: adds}})
	defer w.Close()
	for i := uint64(1); i <= 100; i++ {
		op := distcache.OpGet
		if i%4 == 0 {
			op = distcache.OpAdd
		}
		h.Publish(txEvent(i, op))
	}
	// 100 events, the log keeps the last 4 (97-100, one ADD); of the 96
	// lost, 24 were ADDs.
	waitBacklog(t, w, 25)
	b := nextBatch(t, w)
	if b.Dropped != 24 || len(b.Records) != 1 || b.Records[0].View.Conn != 100 {
		t.Fatalf("%d dropped, %d events; want 24 and event 100", b.Dropped, len(b.Records))
	}
}

func TestRingOverrunCountsLostEvents(t *testing.T) {
	// A dispatcher that effectively never runs on its own: the ring goes
	// round before it does, and the loss is reported.
	h := newHub(t, Config{History: 8, Interval: time.Hour})
	w := h.Watch(WatchOptions{})
	defer w.Close()
	h.mu.Lock()
	n := uint64(len(h.ring))
	for i := uint64(1); i <= n+12; i++ {
		h.ring[h.seq%n].ev.Set(txEvent(i, distcache.OpGet))
		h.seq++
	}
	h.mu.Unlock()
	// (The hub's own dispatcher, woken by Watch, may take some of the
	// chunks: the order they reach the log in is not this test's.)
	for d := newDispatcher(h); d.chunk(); {
	}
	ids, dropped := collect(t, w, int(n)+12)
	slices.Sort(ids)
	if dropped != 12 || len(ids) != int(n) || ids[0] != 13 || ids[len(ids)-1] != n+12 {
		t.Fatalf("%d events (%d to %d), %d dropped; want %d (13 to %d), 12", len(ids), ids[0], ids[len(ids)-1], dropped, n, n+12)
	}
}

// blockingEncoder is a testEncoder whose AppendEvent waits, while hold
// is set, until release is closed: it keeps the dispatcher in the middle
// of a chunk.
type blockingEncoder struct {
	testEncoder
	hold    *atomic.Bool
	entered chan struct{}
	release chan struct{}
}

func (e blockingEncoder) AppendEvent(b []byte, ev *proxy.Event, inst string) []byte {
	if e.hold.Load() {
		select {
		case e.entered <- struct{}{}:
		default:
		}
		<-e.release
	}
	return e.testEncoder.AppendEvent(b, ev, inst)
}

// The dispatcher reads a chunk where it lies in the ring, without the
// ring's lock: publishers go on meanwhile, and leave the chunk's slots
// alone. An event that would overwrite one (the dispatcher a whole ring
// behind) is dropped and counted for every watcher and in Published,
// and the chunk goes out as it was.
func TestDispatcherReadsAChunkInPlace(t *testing.T) {
	var hold atomic.Bool
	hold.Store(true)
	enc := blockingEncoder{hold: &hold, entered: make(chan struct{}, 1), release: make(chan struct{})}
	h := New(Config{History: 8, Interval: time.Hour, NewEncoder: func() Encoder { return enc }})
	defer h.Close()
	w := h.Watch(WatchOptions{})
	defer w.Close()
	n := uint64(len(h.ring))
	for i := uint64(1); i <= kickAfter; i++ {
		h.Publish(txEvent(i, distcache.OpGet))
	}
	<-enc.entered // the dispatcher is in a chunk that starts at event 1
	h.mu.Lock()
	from := h.readFrom
	h.mu.Unlock()
	// Publishing does not wait for the chunk; events go on until the
	// ring is full from the chunk's start, and the next ones are
	// dropped.
	published := make(chan struct{})
	go func() {
		defer close(published)
		for i := uint64(kickAfter + 1); i <= n+from+50; i++ {
			h.Publish(txEvent(i, distcache.OpGet))
		}
	}()
	select {
	case <-published:
	case <-time.After(10 * time.Second):
		t.Fatal("publishing waited for the dispatcher's chunk")
	}
	if got := h.Published(); got != n+from+50 {
		t.Fatalf("Published() = %d, want %d", got, n+from+50)
	}
	hold.Store(false)
	close(enc.release)
	ids, dropped := collect(t, w, int(n+from+50))
	if dropped != 50 {
		t.Fatalf("%d dropped, want the 50 that found their slot being read", dropped)
	}
	for i, id := range ids {
		if id != uint64(i+1) {
			t.Fatalf("event %d is %d, want %d (the chunk's slots were overwritten?)", i, id, i+1)
		}
	}
}

func TestCloseEndsWatchers(t *testing.T) {
	h := New(Config{Interval: time.Hour, NewEncoder: newEncoder})
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
	if err != nil || len(b.Records) != 1 {
		t.Fatalf("last batch: %d events, %v", len(b.Records), err)
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
	h.Publish(txEvent(1, distcache.OpGet))
	w.Close()
	if h.Watchers() != 0 {
		t.Errorf("%d watchers after close", h.Watchers())
	}
	if _, err := w.Next(context.Background()); !errors.Is(err, ErrClosed) {
		t.Errorf("Next after close: %v", err)
	}
	// The last watcher gone, the log lets go of its records.
	h.log.mu.Lock()
	n, recs := h.log.n, h.log.recs
	h.log.mu.Unlock()
	if n != 0 || recs != nil {
		t.Errorf("the log holds %d records with no watcher", n)
	}
}

// BenchmarkPublish measures the proxies' cost of an event, with and without
// watchers that never read.
func BenchmarkPublish(b *testing.B) {
	for _, watchers := range []int{0, 1, 100} {
		b.Run(map[int]string{0: "no-watchers", 1: "1-stuck-watcher", 100: "100-stuck-watchers"}[watchers], func(b *testing.B) {
			h := New(Config{NewEncoder: newEncoder})
			defer h.Close()
			for range watchers {
				defer h.Watch(WatchOptions{}).Close()
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
		for i := range b.Records {
			r := &b.Records[i]
			d := decode(t, r.Wire)
			got = append(got, time.Duration(d.time-base.UnixNano())/time.Microsecond)
			if d.start != base.UnixNano() || !r.View.Time.Equal(time.Unix(0, d.time)) {
				t.Errorf("event %d: start %v, view time %v", r.View.Conn, time.Unix(0, d.start), r.View.Time)
			}
		}
	}
	if want := []time.Duration{5, 5, 7, 7, 7, 9}; !slices.Equal(got, want) {
		t.Errorf("times %v, want %v", got, want)
	}
}

// A round's worth of events wakes the dispatcher before its interval is
// over: with an interval of an hour, the first kickAfter events still
// arrive, and rounds published faster than the interval all do.
func TestBusyPublishersWakeTheDispatcher(t *testing.T) {
	h := newHub(t, Config{Interval: time.Hour})
	w := h.Watch(WatchOptions{})
	defer w.Close()
	// Watch wakes the dispatcher, which may take the first events
	// published and leave fewer than a round waiting, never to be kicked
	// for: of twice a round, at least one round goes out.
	for i := range 2 * kickAfter {
		h.Publish(txEvent(uint64(i+1), distcache.OpGet))
	}
	ids, dropped := collect(t, w, kickAfter)
	if len(ids) < kickAfter || dropped != 0 {
		t.Fatalf("%d events and %d dropped, want %d and none", len(ids), dropped, kickAfter)
	}
	// Rounds of kickAfter, each read before the next is published. (A
	// dispatcher still in its round when the next is published may take
	// part of it along, and the rest waits for the interval: an hour
	// here, so the rounds run on a hub with a short one.)
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
}

// A watcher's filter runs on its own goroutine: one that takes forever
// delays neither the publishers nor another watcher.
func TestSlowFilterCostsOnlyItsWatcher(t *testing.T) {
	h := newHub(t, Config{History: 4096, Interval: time.Millisecond})
	release := make(chan struct{})
	var seen atomic.Int64
	slowFilter := func(*match.View) bool {
		if seen.Add(1) == 1 {
			<-release // the first event's evaluation takes until the end
		}
		return true
	}
	slow := h.Watch(WatchOptions{Filter: Filter{Full: slowFilter}})
	defer slow.Close()
	fast := h.Watch(WatchOptions{})
	defer fast.Close()
	slowDone := make(chan struct{})
	go func() {
		defer close(slowDone)
		_, _ = slow.Next(context.Background())
	}()
	const n = 3000
	published := make(chan struct{})
	go func() {
		defer close(published)
		for i := uint64(1); i <= n; i++ {
			h.Publish(txEvent(i, distcache.OpGet))
			if i%256 == 0 {
				time.Sleep(time.Millisecond)
			}
		}
	}()
	ids, dropped := collect(t, fast, n)
	<-published
	if len(ids) != n || dropped != 0 {
		t.Fatalf("the fast watcher got %d events and %d drops beside a stuck filter, want %d and none", len(ids), dropped, n)
	}
	if got := seen.Load(); got != 1 {
		t.Fatalf("the stuck filter ran %d times", got)
	}
	close(release)
	<-slowDone
}

// A history read copies the ring a chunk at a time and filters outside
// its lock: a history filter that blocks does not block a publisher.
func TestHistoryFilterDoesNotHoldUpPublishers(t *testing.T) {
	h := newHub(t, Config{History: 2000, Interval: time.Millisecond})
	for i := uint64(1); i <= 2000; i++ {
		h.Publish(txEvent(i, distcache.OpGet))
	}
	entered := make(chan struct{})
	release := make(chan struct{})
	var once sync.Once
	blocking := func(*match.View, string) bool {
		once.Do(func() {
			close(entered)
			<-release
		})
		return true
	}
	w := h.Watch(WatchOptions{History: 2000, HistoryFilter: blocking})
	defer w.Close()
	read := make(chan error, 1)
	go func() {
		_, err := w.Next(context.Background())
		read <- err
	}()
	<-entered
	published := make(chan struct{})
	go func() {
		defer close(published)
		for i := uint64(2001); i <= 2100; i++ {
			h.Publish(txEvent(i, distcache.OpGet))
		}
	}()
	select {
	case <-published:
	case <-time.After(10 * time.Second):
		close(release)
		t.Fatal("publishing waited for a history filter")
	}
	close(release)
	if err := <-read; err != nil {
		t.Fatal(err)
	}
}

// The log is bounded in bytes as well as in records: events carrying
// captured data take their size.
func TestLogBoundedInBytes(t *testing.T) {
	const maxBytes = 64 << 10
	h := newHub(t, Config{History: 1000, LogBytes: maxBytes, Interval: time.Millisecond})
	w := h.Watch(WatchOptions{})
	defer w.Close()
	data := make([]byte, 4096)
	for i := uint64(1); i <= 100; i++ {
		e := txEvent(i, distcache.OpAdd)
		e.Tx.Data = data
		h.Publish(e)
	}
	queued, lost := waitBacklog(t, w, 100)
	h.log.mu.Lock()
	bytes := h.log.bytes
	h.log.mu.Unlock()
	if bytes > maxBytes || queued == 0 || lost == 0 {
		t.Fatalf("log of %d bytes (limit %d), %d queued, %d lost", bytes, maxBytes, queued, lost)
	}
	b := nextBatch(t, w)
	if d := decode(t, append(slices.Clip(b.Records[0].Wire), b.Records[0].Data...)); len(d.data) != len(data) {
		t.Fatalf("captured data of %d bytes, want %d", len(d.data), len(data))
	}
}

// BenchmarkPublishBesideHistoryReads measures a publisher's cost while
// watchers read the whole history over and over with a filter that
// takes 20 µs an event: what the ring's lock makes publishers wait for,
// at most a copy of one chunk. Compare with BenchmarkPublish.
func BenchmarkPublishBesideHistoryReads(b *testing.B) {
	h := New(Config{NewEncoder: newEncoder})
	defer h.Close()
	for i := range DefaultHistory {
		h.Publish(txEvent(uint64(i), distcache.OpGet))
	}
	slow := func(*match.View, string) bool {
		for t0 := time.Now(); time.Since(t0) < 20*time.Microsecond; {
		}
		return true
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				w := h.Watch(WatchOptions{History: DefaultHistory, HistoryFilter: slow})
				for ctx.Err() == nil {
					if b, err := w.Next(ctx); err != nil || b.HistoryEnd {
						break
					}
				}
				w.Close()
			}
		}()
	}
	e := txEvent(1, distcache.OpGet)
	b.ResetTimer()
	for range b.N {
		h.Publish(e)
	}
	b.StopTimer()
	cancel()
	wg.Wait()
}

// After Close a watcher's Backlog is what waited for it when it closed,
// and stays so while the log goes on for the other watchers: what it
// held can be counted once, as lost, by whoever closed it.
func TestBacklogAfterCloseIsWhatWaited(t *testing.T) {
	h := newHub(t, Config{History: 4096, Interval: time.Millisecond})
	other := h.Watch(WatchOptions{})
	defer other.Close()
	w := h.Watch(WatchOptions{Filter: Filter{Quick: adds}})
	for i := uint64(1); i <= 300; i++ {
		op := distcache.OpGet
		if i%3 == 0 {
			op = distcache.OpAdd
		}
		h.Publish(txEvent(i, op))
	}
	waitBacklog(t, w, 100)
	w.Close()
	for i := uint64(301); i <= 600; i++ {
		h.Publish(txEvent(i, distcache.OpAdd))
	}
	waitBacklog(t, other, 600)
	if q, d := w.Backlog(); q != 100 || d != 0 {
		t.Fatalf("after Close: %d queued, %d lost; want what waited at Close, 100 and 0", q, d)
	}
}

// A hub nobody watches does not wake its dispatcher (an idle daemon's
// ticker cost it a wake-up every 10 ms); the first watcher wakes it, gets
// what is published from then on and nothing from before, and the
// dispatcher sleeps again once the last watcher is gone.
// A watcher that nothing is published for costs no wake-ups: the
// dispatcher sleeps after an empty interval until the next event, which
// still reaches the watcher.
func TestDispatcherSleepsWhileNothingComes(t *testing.T) {
	h := newHub(t, Config{Interval: time.Millisecond})
	w := h.Watch(WatchOptions{})
	defer w.Close()
	for round := range 3 {
		time.Sleep(20 * time.Millisecond) // an empty interval or more
		before := h.rounds.Load()
		time.Sleep(50 * time.Millisecond)
		if n := h.rounds.Load() - before; n > 1 {
			t.Fatalf("lull %d: %d dispatcher rounds in 50 ms with a watcher and no event", round, n)
		}
		base := uint64(1000 * (round + 1))
		for i := range 5 {
			h.Publish(txEvent(base+uint64(i), distcache.OpGet))
		}
		ids, dropped := collect(t, w, 5)
		if dropped != 0 || ids[0] != base || ids[4] != base+4 {
			t.Fatalf("lull %d: the watcher got %v, %d dropped; want %d to %d", round, ids, dropped, base, base+4)
		}
	}
}

func TestDispatcherSleepsWhileNobodyWatches(t *testing.T) {
	h := newHub(t, Config{Interval: time.Millisecond})
	for i := range 100 {
		h.Publish(txEvent(uint64(i), distcache.OpGet))
	}
	time.Sleep(50 * time.Millisecond)
	if n := h.rounds.Load(); n > 1 {
		t.Fatalf("%d dispatcher rounds in 50 ms with nobody watching", n)
	}
	w := h.Watch(WatchOptions{})
	for i := range 10 {
		h.Publish(txEvent(uint64(1000+i), distcache.OpGet))
	}
	ids, dropped := collect(t, w, 10)
	if dropped != 0 || ids[0] != 1000 || ids[9] != 1009 {
		t.Fatalf("the first watcher got %v, %d dropped; want 1000 to 1009", ids, dropped)
	}
	w.Close()
	time.Sleep(20 * time.Millisecond) // a round or two to see the watcher gone
	before := h.rounds.Load()
	time.Sleep(50 * time.Millisecond)
	if n := h.rounds.Load() - before; n > 1 {
		t.Fatalf("%d dispatcher rounds in 50 ms after the last watcher left", n)
	}
}
