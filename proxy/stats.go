package proxy

import (
	"sync/atomic"
	"time"

	"github.com/snoopd/snoopd/distcache"
	"github.com/snoopd/snoopd/internal/histogram"
	"github.com/snoopd/snoopd/vocab"
)

// counters are a proxy's live counters. Connections add their byte and
// frame counts once per read, not per frame, so the shared cache lines are
// touched rarely.
type counters struct {
	connsActive    atomic.Int64
	connsTotal     atomic.Int64
	connsRefused   atomic.Int64
	connectFailed  atomic.Int64
	protocolErrors atomic.Int64
	timeouts       atomic.Int64
	loopRefusals   atomic.Int64
	loopEchoes     atomic.Int64
	spareDials     atomic.Int64
	spareFailures  atomic.Int64
	sparesLost     atomic.Int64
	bytesUp        atomic.Int64
	bytesDown      atomic.Int64
	framesUp       atomic.Int64
	framesDown     atomic.Int64
	resyncs        atomic.Int64
	resyncSkipped  atomic.Int64
	results        [distcache.NumOps][vocab.NumResults]atomic.Int64
	// latency of answered transactions, per operation; Stats.Latency is
	// their merge.
	latency [distcache.NumOps]lazyHistogram
}

// lazyHistogram is a histogram allocated at its first sample. A proxy's
// four are 39 KB, most of what it holds: a daemon with many idle proxies
// would otherwise carry them all (390 MB at 10,000), and resident as
// soon as the runtime hands them memory it must clear.
type lazyHistogram struct {
	h atomic.Pointer[histogram.Histogram]
}

// Record adds one sample, allocating the histogram the first time.
func (l *lazyHistogram) Record(d time.Duration) {
	h := l.h.Load()
	if h == nil {
		h = new(histogram.Histogram)
		if !l.h.CompareAndSwap(nil, h) {
			h = l.h.Load() // another connection's came first
		}
	}
	h.Record(d)
}

// Snapshot copies the histogram; empty if it has no sample yet.
func (l *lazyHistogram) Snapshot() histogram.Snapshot {
	if h := l.h.Load(); h != nil {
		return h.Snapshot()
	}
	return histogram.Snapshot{}
}

// Stats is a snapshot of a proxy's counters.
type Stats struct {
	ConnsActive    int64
	ConnsTotal     int64
	ConnsRefused   int64 // closed at once: over MaxConns, or the proxy disabled
	ConnectFailed  int64 // the server could not be dialled
	ProtocolErrors int64
	// Timeouts counts connections closed by the idle, message or response
	// timeout.
	Timeouts int64
	// LoopRefusals counts server connections that reached one of this
	// process's own listeners (a proxy loop) and were closed.
	LoopRefusals int64
	// LoopEchoes counts client connections closed because their first
	// request had come around a forwarding loop this process cannot see
	// (through another daemon): see Proxy.Conditions.
	LoopEchoes int64
	// SparesDialled, SpareFailures and SparesLost count the spare server
	// connections connected ahead of the clients, the spare dials that
	// failed, and the spares the server closed before a client took them.
	SparesDialled int64
	SpareFailures int64
	SparesLost    int64
	BytesUp       int64 // client to server
	BytesDown     int64
	FramesUp      int64
	FramesDown    int64
	// Resyncs counts the times a direction of an observed connection
	// (Observer) lost its place (the connection was opened mid-stream,
	// bytes were lost, or a protocol error) and hunted for the next
	// message start; ResyncSkippedBytes the bytes it passed over while
	// hunting. A proxy sees every byte: both stay 0.
	Resyncs            int64
	ResyncSkippedBytes int64
	// Results counts transactions by operation and outcome name ("ok",
	// "hit", "miss", "exists", "unanswered", ...). Only non-zero counts are
	// present.
	Results map[distcache.Op]map[string]int64
	// Latency of answered transactions, and the same per operation.
	Latency   histogram.Snapshot
	LatencyOf [distcache.NumOps]histogram.Snapshot
	// Faults counts the work of each of the proxy's faults, in order.
	Faults []FaultStats
}

// Transactions is the total of Results.
func (s *Stats) Transactions() int64 {
	var n int64
	for _, m := range s.Results {
		for _, c := range m {
			n += c
		}
	}
	return n
}

func (c *counters) snapshot() Stats {
	s := Stats{Results: map[distcache.Op]map[string]int64{}}
	c.read(&s, true)
	return s
}

// read fills s from the live counters. s.Results must not be nil; its
// maps are reused, so an op without counts may keep an empty one. The
// histograms are read only with latency: copying them is most of the
// cost of a read (five 9 KiB snapshots).
func (c *counters) read(s *Stats, latency bool) {
	s.ConnsActive = c.connsActive.Load()
	s.ConnsTotal = c.connsTotal.Load()
	s.ConnsRefused = c.connsRefused.Load()
	s.ConnectFailed = c.connectFailed.Load()
	s.ProtocolErrors = c.protocolErrors.Load()
	s.Timeouts = c.timeouts.Load()
	s.LoopRefusals = c.loopRefusals.Load()
	s.LoopEchoes = c.loopEchoes.Load()
	s.SparesDialled = c.spareDials.Load()
	s.SpareFailures = c.spareFailures.Load()
	s.SparesLost = c.sparesLost.Load()
	s.BytesUp = c.bytesUp.Load()
	s.BytesDown = c.bytesDown.Load()
	s.FramesUp = c.framesUp.Load()
	s.FramesDown = c.framesDown.Load()
	s.Resyncs = c.resyncs.Load()
	s.ResyncSkippedBytes = c.resyncSkipped.Load()
	if latency {
		s.Latency = histogram.Snapshot{}
		for op := range c.latency {
			s.LatencyOf[op] = c.latency[op].Snapshot()
			s.Latency.Merge(&s.LatencyOf[op])
		}
	}
	for _, m := range s.Results {
		clear(m)
	}
	for op := range c.results {
		for slot := range c.results[op] {
			if n := c.results[op][slot].Load(); n != 0 {
				m := s.Results[distcache.Op(op)]
				if m == nil {
					m = map[string]int64{}
					s.Results[distcache.Op(op)] = m
				}
				m[vocab.Result(slot).String()] = n
			}
		}
	}
}
