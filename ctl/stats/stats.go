package stats

import (
	"cmp"
	"slices"

	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
	"github.com/snoopd/snoopd/internal/apiconv"
	"github.com/snoopd/snoopd/internal/histogram"
	"github.com/snoopd/snoopd/vocab"
)

// OpRow is the statistics of one operation on one proxy.
type OpRow struct {
	Proxy string
	Op    snoopv1.Op
	// Count is the number of transactions.
	Count int64
	// Results counts the transactions by result (vocab.Result names).
	Results map[string]int64
	// Errors counts the transactions whose result is an error
	// (vocab.Result.IsError).
	Errors int64
	// Latency summarises the answered transactions' latency.
	Latency *snoopv1.LatencySummary
	// Histogram is the same latency as a histogram, for drawing.
	Histogram *histogram.Snapshot
}

// HitRatio is hits / (hits + misses), for GET rows that had either; ok is
// false otherwise.
func (r OpRow) HitRatio() (ratio float64, ok bool) {
	hit, miss := r.Results[vocab.ResultHit.String()], r.Results[vocab.ResultMiss.String()]
	if r.Op != snoopv1.Op_OP_GET || hit+miss == 0 {
		return 0, false
	}
	return float64(hit) / float64(hit+miss), true
}

// ProxyRow counts one proxy's connection events and protocol errors.
type ProxyRow struct {
	Proxy          string
	Opened         int64
	Closed         int64
	ConnectFailed  int64
	Refused        int64
	ProtocolErrors int64
}

// Errors is the proxy's connection-level errors: failed connects,
// refusals and protocol errors.
func (r ProxyRow) Errors() int64 { return r.ConnectFailed + r.Refused + r.ProtocolErrors }

// Table is a point-in-time copy of a Collector's statistics.
type Table struct {
	// Ops has one row per proxy and operation seen, sorted by proxy, then
	// operation.
	Ops []OpRow
	// Proxies has one row per proxy seen, sorted by name.
	Proxies []ProxyRow
	// Events is the number of events counted.
	Events int64
	// Dropped is the number of matching events the stream dropped; the
	// statistics do not include them, and the API does not say which
	// proxy they belonged to.
	Dropped uint64
}

// opAcc accumulates one operation on one proxy.
type opAcc struct {
	count   int64
	errors  int64
	results []resultCount
	latency histogram.Snapshot
}

// resultCount counts one result of an operation. An operation has few
// distinct results (ok, notok, hit, miss...), so they are kept in a
// slice and found by comparison, which costs a busy tail less than
// hashing each event's result into a map.
type resultCount struct {
	result  string
	n       int64
	isError bool // vocab.Result.IsError, or not a result vocab knows
}

// result returns the counter of res, adding it if new.
func (a *opAcc) result(res string) *resultCount {
	for i := range a.results {
		if a.results[i].result == res {
			return &a.results[i]
		}
	}
	r, ok := vocab.ParseResult(res)
	a.results = append(a.results, resultCount{result: res, isError: !ok || r.IsError()})
	return &a.results[len(a.results)-1]
}

// proxyAcc accumulates one proxy: its row, and its operations by Op
// (the protocol's four, and any other number the stream carries).
type proxyAcc struct {
	row ProxyRow
	ops map[snoopv1.Op]*opAcc
	// byOp holds the ops of ops with a small number, looked up without
	// hashing.
	byOp [8]*opAcc
}

func (p *proxyAcc) op(op snoopv1.Op) *opAcc {
	if op >= 0 && int(op) < len(p.byOp) && p.byOp[op] != nil {
		return p.byOp[op]
	}
	a := p.ops[op]
	if a == nil {
		a = new(opAcc)
		p.ops[op] = a
		if op >= 0 && int(op) < len(p.byOp) {
			p.byOp[op] = a
		}
	}
	return a
}

// Collector accumulates events. The zero value is not ready; use New.
type Collector struct {
	proxies map[string]*proxyAcc
	events  int64
	dropped uint64
	// The proxy of the event before: a stream's events mostly repeat
	// it, and looking it up again was much of what counting an event
	// cost a busy tail.
	lastProxy string
	last      *proxyAcc
}

// New returns an empty Collector.
func New() *Collector {
	return &Collector{proxies: map[string]*proxyAcc{}}
}

// Add counts one stream response: an event, or a drop notice.
func (c *Collector) Add(r *snoopv1.WatchEventsResponse) {
	ev := r.GetEvent()
	if ev == nil {
		c.dropped += r.GetDropped()
		return
	}
	c.events++
	p := c.last
	if p == nil || ev.GetProxy() != c.lastProxy {
		p = c.proxies[ev.GetProxy()]
		if p == nil {
			p = &proxyAcc{row: ProxyRow{Proxy: ev.GetProxy()}, ops: map[snoopv1.Op]*opAcc{}}
			c.proxies[ev.GetProxy()] = p
		}
		c.lastProxy, c.last = ev.GetProxy(), p
	}
	pr := &p.row
	switch ev.GetKind() {
	case snoopv1.EventKind_EVENT_KIND_TRANSACTION:
		tx := ev.GetTransaction()
		a := p.op(tx.GetOp())
		a.count++
		rc := a.result(tx.GetResult())
		rc.n++
		if rc.isError {
			a.errors++
		}
		if tx.GetLatency() != nil {
			a.latency.Record(tx.GetLatency().AsDuration())
		}
	case snoopv1.EventKind_EVENT_KIND_CONNECTION_OPENED:
		pr.Opened++
	case snoopv1.EventKind_EVENT_KIND_CONNECTION_CLOSED:
		pr.Closed++
	case snoopv1.EventKind_EVENT_KIND_CONNECT_FAILED:
		pr.ConnectFailed++
	case snoopv1.EventKind_EVENT_KIND_CONNECTION_REFUSED:
		pr.Refused++
	case snoopv1.EventKind_EVENT_KIND_PROTOCOL_ERROR:
		pr.ProtocolErrors++
	}
}

// Table returns the statistics so far.
func (c *Collector) Table() Table {
	t := Table{Events: c.events, Dropped: c.dropped}
	for _, p := range c.proxies {
		for op, a := range p.ops {
			results := make(map[string]int64, len(a.results))
			for _, r := range a.results {
				results[r.result] = r.n
			}
			h := a.latency
			t.Ops = append(t.Ops, OpRow{
				Proxy:     p.row.Proxy,
				Op:        op,
				Count:     a.count,
				Results:   results,
				Errors:    a.errors,
				Latency:   apiconv.LatencySummary(&a.latency),
				Histogram: &h,
			})
		}
	}
	slices.SortFunc(t.Ops, func(a, b OpRow) int {
		return cmp.Or(cmp.Compare(a.Proxy, b.Proxy), cmp.Compare(a.Op, b.Op))
	})
	for _, p := range c.proxies {
		t.Proxies = append(t.Proxies, p.row)
	}
	slices.SortFunc(t.Proxies, func(a, b ProxyRow) int { return cmp.Compare(a.Proxy, b.Proxy) })
	return t
}
