package sessions

import (
	"sync"
	"time"

	"github.com/snoopd/snoopd/distcache"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
	"github.com/snoopd/snoopd/internal/topk"
	"github.com/snoopd/snoopd/vocab"
)

// DefaultCounters is the number of counters snoopctl keeps: a session
// with more than 0.1% of the GETs is always shown, and the sketch holds
// about 200 KB.
const DefaultCounters = 1000

// figures are what a counter keeps besides its GET count.
type figures struct {
	idLen  uint32 // the id's full length, when the events carry only its start
	hits   int64
	misses int64
	adds   int64
	bytes  int64
}

// Counter counts transactions per session id. Add, Dropped, Table and
// Take may be called from different goroutines.
type Counter struct {
	mu      sync.Mutex
	sketch  *topk.Sketch[figures]
	since   time.Time
	dropped uint64
}

// NewCounter returns a Counter of m counters that starts counting at
// since.
func NewCounter(m int, since time.Time) *Counter {
	return &Counter{sketch: topk.New[figures](m), since: since}
}

// Add counts ev if it is a transaction with a session id; other events
// carry no session.
func (c *Counter) Add(ev *snoopv1.Event) {
	tx := ev.GetTransaction()
	if ev.GetKind() != snoopv1.EventKind_EVENT_KIND_TRANSACTION || len(tx.GetSessionId()) == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	// Only GETs weigh: the sketch ranks sessions by them. Other
	// operations still give the session a counter, so that the ADD that
	// usually comes before a session's GETs is counted.
	var w uint64
	if tx.GetOp() == snoopv1.Op_OP_GET {
		w = 1
	}
	f := c.sketch.Add(tx.GetSessionId(), w)
	f.idLen = max(f.idLen, tx.GetSessionIdLength())
	f.bytes += int64(tx.GetRequestSize()) + int64(tx.GetResponseSize()) +
		int64(tx.GetRequestFrames()+tx.GetResponseFrames())*distcache.HeaderSize
	switch tx.GetOp() {
	case snoopv1.Op_OP_ADD:
		f.adds++
	case snoopv1.Op_OP_GET:
		switch r, _ := vocab.ParseResult(tx.GetResult()); r {
		case vocab.ResultHit:
			f.hits++
		case vocab.ResultMiss:
			f.misses++
		}
	}
}

// Dropped counts n events the stream lost: the figures miss them.
func (c *Counter) Dropped(n uint64) {
	c.mu.Lock()
	c.dropped += n
	c.mu.Unlock()
}

// Table returns the sessions counted from the start until at, ranked.
func (c *Counter) Table(at time.Time) *Table {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.table(at)
}

// Take returns the sessions counted since the last Take (or the start)
// until at, and starts counting afresh from at: a live view's interval.
func (c *Counter) Take(at time.Time) *Table {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := c.table(at)
	c.sketch.Reset()
	c.since, c.dropped = at, 0
	return t
}

func (c *Counter) table(at time.Time) *Table {
	t := &Table{Since: c.since, At: at, Gets: c.sketch.N(), Counters: c.sketch.Capacity(),
		Bound: c.sketch.Bound(), Dropped: c.dropped}
	for _, e := range c.sketch.Top(0) {
		t.Rows = append(t.Rows, Row{ID: []byte(e.Key), IDLen: max(e.Value.idLen, uint32(len(e.Key))),
			Gets: e.Count, GetsError: e.Err, Hits: e.Value.hits, Misses: e.Value.misses,
			Adds: e.Value.adds, Bytes: e.Value.bytes})
	}
	return t
}

// Table is the hot sessions of a span of the stream.
type Table struct {
	// Since and At bound the span counted.
	Since, At time.Time
	// Gets is the number of GETs counted (with a session id), N.
	Gets uint64
	// Counters is the sketch's size, m.
	Counters int
	// Bound is N/m: the most a GET count overestimates by, and the count
	// above which a session is sure to be in Rows.
	Bound uint64
	// Dropped counts the events the stream lost in the span.
	Dropped uint64
	// Rows are the sessions counted, most GETs first.
	Rows []Row
}

// Span is the time the table covers.
func (t *Table) Span() time.Duration { return t.At.Sub(t.Since) }

// Top is the first n rows (every row for n <= 0).
func (t *Table) Top(n int) []Row {
	if n > 0 && n < len(t.Rows) {
		return t.Rows[:n]
	}
	return t.Rows
}

// Row is one session.
type Row struct {
	// ID is the session id as the events carry it (its first 64 bytes at
	// most); IDLen its full length.
	ID    []byte
	IDLen uint32
	// Gets is the session's GET count, at most GetsError above the true
	// one.
	Gets      uint64
	GetsError uint64
	// Hits, Misses, Adds and Bytes (requests and responses, frame headers
	// included, as a proxy counts its bytes) are counted from when the
	// session took its counter.
	Hits, Misses, Adds, Bytes int64
}

// HitRatio is hits / (hits + misses), ok false when the session had
// neither.
func (r Row) HitRatio() (ratio float64, ok bool) {
	if r.Hits+r.Misses == 0 {
		return 0, false
	}
	return float64(r.Hits) / float64(r.Hits+r.Misses), true
}

// Rate is n per second over the table's span; 0 for an empty span.
func (t *Table) Rate(n uint64) float64 {
	if s := t.Span().Seconds(); s > 0 {
		return float64(n) / s
	}
	return 0
}
