package stats

import (
	"cmp"
	"maps"
	"slices"

	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
	"github.com/snoopd/snoopd/internal/apiconv"
	"github.com/snoopd/snoopd/vocab"
)

// Totals is the daemon's own counters of a set of proxies, since each was
// created: what stats shows at once, without sampling the stream.
type Totals struct {
	// Ops has one row per proxy and operation, sorted by proxy, then
	// operation, with the operation's latency (and its histogram when
	// the daemon was asked for histograms).
	Ops []OpRow
	// Proxies has one row per proxy, sorted by name.
	Proxies []ProxyTotal
}

// ProxyTotal is one proxy's connection counters and latency.
type ProxyTotal struct {
	Proxy          string
	Active         int64
	Total          int64
	ConnectFailed  int64
	Refused        int64
	ProtocolErrors int64
	Timeouts       int64
	Transactions   int64
	Latency        *snoopv1.LatencySummary
}

// FromProxies reads the counters of ps (as ListProxies returns them).
func FromProxies(ps []*snoopv1.Proxy) Totals {
	var t Totals
	for _, p := range ps {
		name, c := p.GetSpec().GetName(), p.GetCounters()
		for _, oc := range c.GetOps() {
			row := OpRow{Proxy: name, Op: oc.GetOp(), Count: oc.GetCount(), Results: maps.Clone(oc.GetResults())}
			if row.Results == nil {
				row.Results = map[string]int64{}
			}
			row.Errors = errorsIn(row.Results)
			row.Latency = oc.GetLatency()
			if h := oc.GetHistogram(); h.GetCount() > 0 {
				s := apiconv.HistogramFromAPI(h)
				row.Histogram = &s
			}
			t.Ops = append(t.Ops, row)
		}
		t.Proxies = append(t.Proxies, ProxyTotal{
			Proxy: name, Active: c.GetConnectionsActive(), Total: c.GetConnectionsTotal(),
			ConnectFailed: c.GetConnectFailures(), Refused: c.GetConnectionsRefused(),
			ProtocolErrors: c.GetProtocolErrors(), Timeouts: c.GetTimeouts(),
			Transactions: c.GetTransactions(), Latency: c.GetLatency(),
		})
	}
	slices.SortFunc(t.Ops, func(a, b OpRow) int {
		return cmp.Or(cmp.Compare(a.Proxy, b.Proxy), cmp.Compare(a.Op, b.Op))
	})
	slices.SortFunc(t.Proxies, func(a, b ProxyTotal) int { return cmp.Compare(a.Proxy, b.Proxy) })
	return t
}

// errorsIn counts the results that are errors.
func errorsIn(results map[string]int64) int64 {
	var n int64
	for r, k := range results {
		if res, ok := vocab.ParseResult(r); !ok || res.IsError() {
			n += k
		}
	}
	return n
}

// Since is what happened between prev and t, operation by operation: the
// counts and results of t minus those of prev. A proxy whose counters went
// down was recreated; its rows count from zero. Rows with nothing new are
// left out.
func (t Totals) Since(prev Totals) []OpRow {
	type key struct {
		proxy string
		op    snoopv1.Op
	}
	old := map[key]OpRow{}
	for _, r := range prev.Ops {
		old[key{r.Proxy, r.Op}] = r
	}
	var out []OpRow
	for _, r := range t.Ops {
		o, ok := old[key{r.Proxy, r.Op}]
		if !ok || o.Count > r.Count {
			o = OpRow{}
		}
		d := OpRow{Proxy: r.Proxy, Op: r.Op, Count: r.Count - o.Count, Results: map[string]int64{}}
		for res, n := range r.Results {
			if n -= o.Results[res]; n > 0 {
				d.Results[res] = n
			}
		}
		if d.Count == 0 {
			continue
		}
		d.Errors = errorsIn(d.Results)
		out = append(out, d)
	}
	return out
}
