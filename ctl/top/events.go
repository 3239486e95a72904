package top

import (
	"cmp"
	"maps"
	"slices"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/snoopd/snoopd/distcache"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
	"github.com/snoopd/snoopd/internal/apiconv"
	"github.com/snoopd/snoopd/internal/histogram"
	"github.com/snoopd/snoopd/vocab"
)

// EventCounter turns a stream of events (a fleet's, from NATS) into
// snapshots of the counters each daemon would report for its proxies, so
// that top's frames work on it unchanged: per daemon and proxy, the
// transactions by operation and result with their latency histograms,
// connections, failed connects, refusals, protocol errors and bytes.
//
// The counters start at zero when counting starts (Since), not when the
// proxies were created: what happened before the subscription is not in
// the stream. They differ from a daemon's own in what events cannot
// tell:
//   - connections_active counts the connections seen (opened, or carrying
//     a transaction) since counting began and not closed since, once the
//     stream has carried the proxy's connection events; an idle
//     connection older than that is not known, and without connection
//     events (a filter that keeps transactions only) nothing is: no
//     close would ever be seen, so it stays 0.
//   - bytes are the frames of the transactions (headers and payloads),
//     which is what a daemon counts for well-formed traffic; bytes of
//     messages no transaction covers (a protocol error's) are not known.
//   - a proxy's state is not known (PROXY_STATE_UNSPECIFIED, shown "-").
//   - a proxy created again under its name goes on counting as one row:
//     the rates stay right, which is what top is for.
//
// Add and Snapshot may be called from different goroutines.
type EventCounter struct {
	mu      sync.Mutex
	since   time.Time
	proxies map[proxyKey]*proxyCount
	dropped uint64
}

type proxyKey struct{ daemon, proxy string }

// proxyCount is one proxy's counters. Histograms are held by pointer, as
// each is 9 KiB.
type proxyCount struct {
	c snoopv1.ProxyCounters // the scalar counters; ops and histograms are below
	// open holds the connection ids seen and not closed, once connEvents
	// says the stream carries this proxy's openings and closes.
	open       map[uint64]struct{}
	connEvents bool
	closed     closedSet
	latency    *histogram.Snapshot
	ops        map[snoopv1.Op]*opCount
}

// maxOpen bounds the open connections remembered per proxy, for a stream
// that carries openings but not closes (an export filter that keeps one
// kind and not the other): past it they are forgotten and learnt again.
const maxOpen = 1 << 16

func (p *proxyCount) opened(id uint64) {
	if id == 0 || p.closed.has(id) {
		return
	}
	if len(p.open) >= maxOpen {
		clear(p.open)
	}
	p.open[id] = struct{}{}
}

type opCount struct {
	count   int64
	results map[string]int64
	latency *histogram.Snapshot
}

// NewEventCounter returns a counter that started counting at since.
func NewEventCounter(since time.Time) *EventCounter {
	return &EventCounter{since: since, proxies: map[proxyKey]*proxyCount{}}
}

// Add counts one event.
func (e *EventCounter) Add(ev *snoopv1.Event) {
	e.mu.Lock()
	defer e.mu.Unlock()
	k := proxyKey{ev.GetDaemon(), ev.GetProxy()}
	p := e.proxies[k]
	if p == nil {
		p = &proxyCount{open: map[uint64]struct{}{}, latency: &histogram.Snapshot{}, ops: map[snoopv1.Op]*opCount{}}
		e.proxies[k] = p
	}
	id := ev.GetConnectionId()
	switch ev.GetKind() {
	case snoopv1.EventKind_EVENT_KIND_TRANSACTION:
		p.transaction(ev.GetTransaction())
		if p.connEvents {
			p.opened(id)
		}
	case snoopv1.EventKind_EVENT_KIND_CONNECTION_OPENED:
		p.connEvents = true
		p.c.ConnectionsTotal++
		p.opened(id)
	case snoopv1.EventKind_EVENT_KIND_CONNECTION_CLOSED:
		p.connEvents = true
		delete(p.open, id)
		p.closed.add(id)
	case snoopv1.EventKind_EVENT_KIND_CONNECT_FAILED:
		p.c.ConnectFailures++
	case snoopv1.EventKind_EVENT_KIND_CONNECTION_REFUSED:
		p.c.ConnectionsRefused++
	case snoopv1.EventKind_EVENT_KIND_PROTOCOL_ERROR:
		p.c.ProtocolErrors++
	}
}

// transaction counts one transaction as a daemon does: every one by
// operation and result, the latency of the answered ones.
func (p *proxyCount) transaction(tx *snoopv1.Transaction) {
	p.c.Transactions++
	p.c.BytesUp += int64(tx.GetRequestSize()) + int64(tx.GetRequestFrames())*distcache.HeaderSize
	p.c.BytesDown += int64(tx.GetResponseSize()) + int64(tx.GetResponseFrames())*distcache.HeaderSize
	o := p.ops[tx.GetOp()]
	if o == nil {
		o = &opCount{results: map[string]int64{}, latency: &histogram.Snapshot{}}
		p.ops[tx.GetOp()] = o
	}
	o.count++
	o.results[tx.GetResult()]++
	if r, ok := vocab.ParseResult(tx.GetResult()); ok && (r == vocab.ResultUnanswered || r == vocab.ResultOrphan) {
		return // no answer, no latency: the daemon's histograms leave them out too
	}
	if l := tx.GetLatency(); l != nil {
		d := l.AsDuration()
		o.latency.Record(d)
		p.latency.Record(d)
	}
}

// closedSet remembers the last connections closed, because a batched
// export keeps order only within a subject: a connection's opening and
// last transactions may come after its close (up to the daemon's
// --export-interval, 100 ms, later) and must not open it again.
type closedSet struct {
	ids  map[uint64]struct{}
	ring []uint64 // the same ids, oldest at next once full
	next int
}

// closedKept bounds the set: 4,096 closes in one export interval is
// 40,000 connections a second through one proxy.
const closedKept = 4096

func (r *closedSet) add(id uint64) {
	if r.ids == nil {
		r.ids = map[uint64]struct{}{}
	}
	if _, ok := r.ids[id]; ok {
		return
	}
	if len(r.ring) < closedKept {
		r.ring = append(r.ring, id)
	} else {
		delete(r.ids, r.ring[r.next])
		r.ring[r.next] = id
		r.next = (r.next + 1) % closedKept
	}
	r.ids[id] = struct{}{}
}

func (r *closedSet) has(id uint64) bool {
	_, ok := r.ids[id]
	return ok
}

// Dropped counts n events the stream lost (0 for losses it cannot
// count, such as a broken connection), and forgets which connections are
// open: closes may be among the lost. Connections are learnt again from
// their next events.
func (e *EventCounter) Dropped(n uint64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.dropped += n
	for _, p := range e.proxies {
		clear(p.open)
	}
}

// Snapshot returns a copy of the counters at at: every proxy seen, sorted
// by daemon and name, with histograms in the API's form. It shares
// nothing with the counter, so Add may go on while it is used.
func (e *EventCounter) Snapshot(at time.Time) *Snapshot {
	e.mu.Lock()
	defer e.mu.Unlock()
	keys := slices.SortedFunc(maps.Keys(e.proxies), func(a, b proxyKey) int {
		return cmp.Or(cmp.Compare(a.daemon, b.daemon), cmp.Compare(a.proxy, b.proxy))
	})
	s := &Snapshot{At: at, Since: e.since, Dropped: e.dropped,
		Proxies: make([]*snoopv1.Proxy, 0, len(keys)), Daemons: make([]string, 0, len(keys))}
	created := timestamppb.New(e.since)
	for _, k := range keys {
		p := e.proxies[k]
		c := &snoopv1.ProxyCounters{
			ConnectionsActive:  int64(len(p.open)),
			ConnectionsTotal:   p.c.ConnectionsTotal,
			ConnectionsRefused: p.c.ConnectionsRefused,
			ConnectFailures:    p.c.ConnectFailures,
			ProtocolErrors:     p.c.ProtocolErrors,
			BytesUp:            p.c.BytesUp,
			BytesDown:          p.c.BytesDown,
			Transactions:       p.c.Transactions,
			Latency:            apiconv.LatencySummary(p.latency),
			Histogram:          apiconv.Histogram(p.latency),
		}
		for _, op := range slices.Sorted(maps.Keys(p.ops)) {
			o := p.ops[op]
			c.Ops = append(c.Ops, &snoopv1.OpCounters{Op: op, Count: o.count, Results: maps.Clone(o.results),
				Latency: apiconv.LatencySummary(o.latency), Histogram: apiconv.Histogram(o.latency)})
		}
		s.Proxies = append(s.Proxies, &snoopv1.Proxy{
			Spec:       &snoopv1.ProxySpec{Name: k.proxy},
			Counters:   c,
			CreateTime: created,
		})
		s.Daemons = append(s.Daemons, k.daemon)
	}
	return s
}
