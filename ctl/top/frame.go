package top

import (
	"cmp"
	"slices"
	"strings"
	"time"

	"github.com/snoopd/snoopd/ctl/format"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
	"github.com/snoopd/snoopd/internal/apiconv"
	"github.com/snoopd/snoopd/vocab"
)

// Frame is what top shows for one refresh: every proxy's activity over
// the interval between two snapshots.
type Frame struct {
	At      time.Time
	Source  string
	Version string
	// Uptime is the source's age at At, 0 if unknown.
	Uptime time.Duration
	// Interval is the time between the two snapshots; 0 for the first
	// frame, whose rows cover each proxy's life so far.
	Interval time.Duration
	// Since, when set, is when an event-counting source began counting
	// (Snapshot.Since): the first frame covers the time since then.
	Since time.Time
	// Dropped and Notes are the snapshot's: events the source lost, and
	// what is wrong with it.
	Dropped uint64
	Notes   []string
	Rows    []Row
	Totals  Totals
}

// fleet reports whether the frame is a fleet's, whose rows name their
// daemons: a source that counts exported events, or rows with daemons.
func (f *Frame) fleet() bool { return !f.Since.IsZero() || f.Totals.Daemons > 0 }

// Totals add up the rows.
type Totals struct {
	Proxies, Listening int
	// Daemons counts the daemons the rows belong to (0 when the rows name
	// none).
	Daemons int
	Conns   int64
	// Transactions and Errors are cumulative, since each proxy was
	// created.
	Transactions, Errors                          int64
	OpsPerSec, ErrorsPerSec, UpPerSec, DownPerSec float64
}

// Row is one proxy over the interval.
type Row struct {
	// Daemon is the proxy's daemon, in a fleet's frame; "" otherwise.
	Daemon string
	Name   string
	State  string
	// Problem says why a failed proxy failed.
	Problem string
	Conns   int64
	// Span is the time the rates are over: the frame's interval, or the
	// proxy's age when it is new since the last snapshot.
	Span time.Duration
	// Ops and Errors count the interval's transactions and errors
	// (results that are errors, failed connects, refusals and protocol
	// errors: format.ProxyErrors).
	Ops, Errors int64
	// Hits and Misses are the interval's GET results.
	Hits, Misses int64
	// UpBytes and DownBytes are the bytes forwarded in the interval.
	UpBytes, DownBytes int64
	// Transactions is cumulative.
	Transactions int64
	// Latency is the interval's latency, ByOp per operation in the API's
	// order.
	Latency Latency
	ByOp    []OpRow

	// proxy is the proxy as last polled, for SinceStart.
	proxy *snoopv1.Proxy
}

// Key identifies the row among the frame's: DAEMON/NAME in a fleet's
// frame, NAME otherwise.
func (r *Row) Key() string { return rowKey(r.Daemon, r.Name) }

func rowKey(daemon, name string) string {
	if daemon == "" {
		return name
	}
	return daemon + "/" + name
}

// SinceStart is the proxy's latency since it was created, for a view that
// has nothing in the interval to show. It is computed on demand, as only
// an opened proxy needs it.
func (r *Row) SinceStart() Latency {
	return newLatency(r.proxy.GetCounters().GetHistogram(), nil)
}

// Latency condenses an interval's latency histogram: the percentiles and
// the 1-2-5 bars to draw it. A frame keeps these rather than the
// histograms (9 KiB each) so that a thousand proxies cost little.
type Latency struct {
	Count               uint64
	P50, P99, P999, Max time.Duration
	Bins                []format.Bin
}

func newLatency(cur, old *snoopv1.Histogram) Latency {
	if cur.GetCount() == old.GetCount() {
		return Latency{} // nothing new, and no need to decode anything
	}
	s := apiconv.HistogramFromAPI(cur)
	if old.GetCount() > 0 {
		o := apiconv.HistogramFromAPI(old)
		s.Sub(&o)
	}
	return Latency{Count: s.Count, P50: s.Quantile(0.5), P99: s.Quantile(0.99), P999: s.Quantile(0.999),
		Max: s.Max, Bins: format.LogBins(&s)}
}

// OpRow is one operation of a proxy over the interval.
type OpRow struct {
	Op      snoopv1.Op
	Count   int64
	Results map[string]int64
	Errors  int64
	Latency Latency
}

// Rate is n per second over the row's span, 0 when the span is unknown.
func (r *Row) Rate(n int64) float64 {
	if r.Span <= 0 {
		return 0
	}
	return float64(n) / r.Span.Seconds()
}

// HitRatio is hits / (hits + misses) of the interval's GETs; ok is false
// when there were none.
func (r *Row) HitRatio() (float64, bool) {
	if r.Hits+r.Misses == 0 {
		return 0, false
	}
	return float64(r.Hits) / float64(r.Hits+r.Misses), true
}

// NewFrame computes the frame from the previous snapshot (nil for the
// first) to cur. A proxy absent from prev, or created again since (another
// instance id, or counters that went back), is counted from its creation.
func NewFrame(prev, cur *Snapshot) *Frame {
	f := &Frame{At: cur.At, Source: cur.Source, Version: cur.Version, Since: cur.Since,
		Dropped: cur.Dropped, Notes: cur.Notes}
	if !cur.Started.IsZero() {
		f.Uptime = cur.At.Sub(cur.Started)
	}
	old := map[string]*snoopv1.Proxy{}
	if prev != nil {
		f.Interval = cur.At.Sub(prev.At)
		for i, p := range prev.Proxies {
			old[rowKey(daemonOf(prev, i), p.GetSpec().GetName())] = p
		}
	}
	daemons := map[string]bool{}
	for i, p := range cur.Proxies {
		d := daemonOf(cur, i)
		r := newRow(old[rowKey(d, p.GetSpec().GetName())], p, f)
		r.Daemon = d
		f.Rows = append(f.Rows, r)
		if d != "" {
			daemons[d] = true
		}
	}
	t := &f.Totals
	t.Daemons = len(daemons)
	for i := range f.Rows {
		r := &f.Rows[i]
		t.Proxies++
		if r.State == "listening" {
			t.Listening++
		}
		t.Conns += r.Conns
		t.Transactions += r.Transactions
		t.OpsPerSec += r.Rate(r.Ops)
		t.ErrorsPerSec += r.Rate(r.Errors)
		t.UpPerSec += r.Rate(r.UpBytes)
		t.DownPerSec += r.Rate(r.DownBytes)
	}
	for _, p := range cur.Proxies {
		t.Errors += format.ProxyErrors(p.GetCounters())
	}
	return f
}

// daemonOf is the daemon of s's i-th proxy, "" if s names none.
func daemonOf(s *Snapshot, i int) string {
	if i < len(s.Daemons) {
		return s.Daemons[i]
	}
	return ""
}

func newRow(prev, cur *snoopv1.Proxy, f *Frame) Row {
	c := cur.GetCounters()
	r := Row{
		Name:         cur.GetSpec().GetName(),
		State:        format.State(cur.GetState()),
		Conns:        c.GetConnectionsActive(),
		Transactions: c.GetTransactions(),
		proxy:        cur,
	}
	if cur.GetState() == snoopv1.ProxyState_PROXY_STATE_UNSPECIFIED {
		r.State = "-" // an event-counting source cannot know it
	}
	if cur.GetState() == snoopv1.ProxyState_PROXY_STATE_FAILED {
		r.Problem = strings.Join(strings.Fields(cur.GetError()), " ")
	}
	pc := prev.GetCounters()
	if prev == nil || prev.GetInstanceId() != cur.GetInstanceId() || pc.GetTransactions() > c.GetTransactions() ||
		pc.GetBytesUp() > c.GetBytesUp() || pc.GetBytesDown() > c.GetBytesDown() {
		// Counted from the proxy's creation.
		prev, pc = nil, nil
		if t := cur.GetCreateTime(); t != nil {
			r.Span = f.At.Sub(t.AsTime())
		}
	} else {
		r.Span = f.Interval
	}
	r.Ops = c.GetTransactions() - pc.GetTransactions()
	r.Errors = max(format.ProxyErrors(c)-format.ProxyErrors(pc), 0)
	r.UpBytes = c.GetBytesUp() - pc.GetBytesUp()
	r.DownBytes = c.GetBytesDown() - pc.GetBytesDown()
	r.Latency = newLatency(c.GetHistogram(), pc.GetHistogram())
	oldOps := map[snoopv1.Op]*snoopv1.OpCounters{}
	for _, oc := range pc.GetOps() {
		oldOps[oc.GetOp()] = oc
	}
	for _, oc := range c.GetOps() {
		po := oldOps[oc.GetOp()]
		o := OpRow{Op: oc.GetOp(), Count: oc.GetCount() - po.GetCount(), Results: map[string]int64{}}
		for res, n := range oc.GetResults() {
			d := n - po.GetResults()[res]
			if d <= 0 {
				continue
			}
			o.Results[res] = d
			if v, ok := vocab.ParseResult(res); !ok || v.IsError() {
				o.Errors += d
			}
		}
		if oc.GetOp() == snoopv1.Op_OP_GET {
			r.Hits, r.Misses = o.Results[vocab.ResultHit.String()], o.Results[vocab.ResultMiss.String()]
		}
		o.Latency = newLatency(oc.GetHistogram(), po.GetHistogram())
		r.ByOp = append(r.ByOp, o)
	}
	slices.SortFunc(r.ByOp, func(a, b OpRow) int { return cmp.Compare(a.Op, b.Op) })
	return r
}
