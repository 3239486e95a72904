package stats

import (
	"cmp"
	"maps"
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

type opKey struct {
	proxy string
	op    snoopv1.Op
}

type opAcc struct {
	count   int64
	errors  int64
	results map[string]int64
	latency histogram.Snapshot
}

// Collector accumulates events. The zero value is not ready; use New.
type Collector struct {
	ops     map[opKey]*opAcc
	proxies map[string]*ProxyRow
	events  int64
	dropped uint64
	// The rows and the result of the event before: a stream's events
	// mostly repeat its proxy, op and result, and looking them up again
	// was most of what counting an event cost a busy tail.
	lastProxy   string
	lastRow     *ProxyRow
	lastOp      opKey
	lastAcc     *opAcc
	lastResult  string
	lastIsError bool
	resultKnown bool // lastResult and lastIsError are set
}

// New returns an empty Collector.
func New() *Collector {
	return &Collector{ops: map[opKey]*opAcc{}, proxies: map[string]*ProxyRow{}}
}

// Add counts one stream response: an event, or a drop notice.
func (c *Collector) Add(r *snoopv1.WatchEventsResponse) {
	ev := r.GetEvent()
	if ev == nil {
		c.dropped += r.GetDropped()
		return
	}
	c.events++
	pr := c.lastRow
	if pr == nil || ev.GetProxy() != c.lastProxy {
		pr = c.proxies[ev.GetProxy()]
		if pr == nil {
			pr = &ProxyRow{Proxy: ev.GetProxy()}
			c.proxies[ev.GetProxy()] = pr
		}
		c.lastProxy, c.lastRow = ev.GetProxy(), pr
	}
	switch ev.GetKind() {
	case snoopv1.EventKind_EVENT_KIND_TRANSACTION:
		tx := ev.GetTransaction()
		k := opKey{ev.GetProxy(), tx.GetOp()}
		a := c.lastAcc
		if a == nil || k != c.lastOp {
			a = c.ops[k]
			if a == nil {
				a = &opAcc{results: map[string]int64{}}
				c.ops[k] = a
			}
			c.lastOp, c.lastAcc = k, a
		}
		a.count++
		a.results[tx.GetResult()]++
		if res := tx.GetResult(); !c.resultKnown || res != c.lastResult {
			r, ok := vocab.ParseResult(res)
			c.lastResult, c.lastIsError, c.resultKnown = res, !ok || r.IsError(), true
		}
		if c.lastIsError {
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
	for k, a := range c.ops {
		t.Ops = append(t.Ops, OpRow{
			Proxy:   k.proxy,
			Op:      k.op,
			Count:   a.count,
			Results: maps.Clone(a.results),
			Errors:  a.errors,
			Latency: apiconv.LatencySummary(&a.latency),
			Histogram: func() *histogram.Snapshot {
				h := a.latency
				return &h
			}(),
		})
	}
	slices.SortFunc(t.Ops, func(a, b OpRow) int {
		return cmp.Or(cmp.Compare(a.Proxy, b.Proxy), cmp.Compare(a.Op, b.Op))
	})
	for _, p := range c.proxies {
		t.Proxies = append(t.Proxies, *p)
	}
	slices.SortFunc(t.Proxies, func(a, b ProxyRow) int { return cmp.Compare(a.Proxy, b.Proxy) })
	return t
}
