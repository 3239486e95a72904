package metrics

import (
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/snoopd/snoopd/daemon"
	"github.com/snoopd/snoopd/distcache"
	"github.com/snoopd/snoopd/internal/histogram"
	"github.com/snoopd/snoopd/proxy"
	"github.com/snoopd/snoopd/vocab"
)

// Source is what the exporter reads on each scrape: the proxies' own
// counters and histograms, no API message in between. *daemon.Daemon
// satisfies it; tests pass a fixed set.
type Source interface {
	// Stats describes the daemon: version, start time, watchers, events.
	Stats() daemon.Stats
	// EachProxy reads the proxies one at a time in name order, into one
	// ProxyStats reused from proxy to proxy, and calls f with it until f
	// returns false; the latency histograms are read only when latency
	// is set (see daemon.Daemon.EachProxy).
	EachProxy(latency bool, f func(*daemon.ProxyStats) bool)
}

// Histograms selects the latency histograms exported; the summary
// (snoopd_proxy_latency_seconds) and the maximum are exported per proxy
// whatever it is.
type Histograms uint8

const (
	// HistogramsProxies exports the daemon-wide histogram per operation
	// and one histogram per proxy (all its operations together): about 20
	// series a proxy, three quarters of the exposition of an idle proxy.
	HistogramsProxies Histograms = iota
	// HistogramsOps exports the daemon-wide histogram per operation
	// (snoopd_transaction_duration_seconds{op}), all proxies together,
	// and none per proxy.
	HistogramsOps
	// HistogramsNone exports no histogram.
	HistogramsNone
)

// DefaultHistograms is what snoopd exports without --metrics-histograms:
// the per-proxy histogram it always exported, now that the exposition is
// streamed and a scrape's memory no longer grows with the proxies
// (docs/benchmarks.md); its cost is the exposition's size, 2.4 times that
// of ops.
const DefaultHistograms = HistogramsProxies

var histogramsNames = [...]string{HistogramsProxies: "proxies", HistogramsOps: "ops", HistogramsNone: "none"}

// String is the flag's spelling: "proxies", "ops" or "none".
func (h Histograms) String() string {
	if int(h) < len(histogramsNames) {
		return histogramsNames[h]
	}
	return fmt.Sprintf("Histograms(%d)", h)
}

// ParseHistograms reads "none", "ops" or "proxies".
func ParseHistograms(s string) (Histograms, error) {
	for h, name := range histogramsNames {
		if s == name {
			return Histograms(h), nil
		}
	}
	return 0, fmt.Errorf("want none, ops or proxies")
}

// MarshalText is String, for flag.TextVar.
func (h Histograms) MarshalText() ([]byte, error) { return []byte(h.String()), nil }

// UnmarshalText is ParseHistograms, for flag.TextVar.
func (h *Histograms) UnmarshalText(b []byte) error {
	v, err := ParseHistograms(string(b))
	if err != nil {
		return err
	}
	*h = v
	return nil
}

// durationBuckets are the upper bounds, in seconds, of the exported
// latency histograms: from a fast loopback round trip to a stuck server.
var durationBuckets = [...]float64{25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3, 500e-3, 1, 2.5, 5, 10}

// foldBuckets folds a log-linear latency histogram into the exported
// buckets, cumulative: each of its buckets counts toward the first bound
// at or above its own upper end, so a count is never attributed to a
// bound below it.
func foldBuckets(h *histogram.Snapshot) (cum [len(durationBuckets)]uint64) {
	h.Buckets(func(upper time.Duration, n uint64) {
		for i, b := range durationBuckets {
			if upper.Seconds() <= b {
				cum[i] += n
				return
			}
		}
	})
	for i := 1; i < len(cum); i++ {
		cum[i] += cum[i-1]
	}
	return cum
}

// family is one exported metric family. Per-proxy families have the
// label proxy first, then labels.
type family struct {
	name, help, typ string
	labels          []string
	perProxy        bool
}

func proxyFamily(name, typ, help string, labels ...string) *family {
	return &family{name: "snoopd_proxy_" + name, help: help, typ: typ, labels: labels, perProxy: true}
}

func daemonFamily(name, typ, help string, labels ...string) *family {
	return &family{name: "snoopd_" + name, help: help, typ: typ, labels: labels}
}

// The families, shared by the Collector and the exposition writer so the
// two cannot drift apart.
var (
	famBuildInfo = daemonFamily("build_info", "gauge", "The daemon's version; always 1.", "version")
	famStartTime = daemonFamily("start_time_seconds", "gauge", "When the daemon started, in seconds since the Unix epoch.")
	famProxies   = daemonFamily("proxies", "gauge", "Proxies configured.")
	famWatchers  = daemonFamily("watchers", "gauge", "Open event streams.")
	famPublished = daemonFamily("events_published_total", "counter", "Events the proxies published.")
	famOpsDur    = daemonFamily("transaction_duration_seconds", "histogram", "Latency of answered transactions of all proxies by operation, as a histogram (bucket counts within about 3% of a bound).", "op")

	famInfo            = proxyFamily("info", "gauge", "A proxy's addresses; always 1.", "listen_address", "server")
	famState           = proxyFamily("state", "gauge", "1 for the proxy's current state (listening, disabled, failed), 0 for the others.", "state")
	famConnsActive     = proxyFamily("connections_active", "gauge", "Live client connections.")
	famConnsTotal      = proxyFamily("connections_total", "counter", "Client connections accepted.")
	famConnsRefused    = proxyFamily("connections_refused_total", "counter", "Clients closed at once because the proxy was at its connection limit.")
	famConnectFailures = proxyFamily("connect_failures_total", "counter", "Clients closed because the server could not be reached.")
	famProtocolErrors  = proxyFamily("protocol_errors_total", "counter", "Protocol violations seen.")
	famTimeouts        = proxyFamily("timeouts_total", "counter", "Connections closed by the idle, message or response timeout.")
	famCondition       = proxyFamily("condition", "gauge", "1 for each condition the proxy is in now (forwarding-loop: a request came back around a loop within the last minute), 0 for the others.", "condition")
	famLoopEchoes      = proxyFamily("loop_echoes_total", "counter", "Clients closed because their first request had come around a forwarding loop through another daemon.")
	famLoopRefusals    = proxyFamily("loop_refusals_total", "counter", "Server connections refused because they reached one of this daemon's own listeners (a proxy loop).")
	famSparesDialled   = proxyFamily("spares_dialled_total", "counter", "Spare server connections connected ahead of the clients.")
	famSpareFailures   = proxyFamily("spare_failures_total", "counter", "Spare server connections that could not be dialled; refills back off after each.")
	famSparesLost      = proxyFamily("spares_lost_total", "counter", "Spare server connections the server closed before a client took them.")
	famBytes           = proxyFamily("bytes_total", "counter", "Bytes forwarded; direction up is client to server.", "direction")
	famFrames          = proxyFamily("frames_total", "counter", "Frames decoded; direction up is client to server.", "direction")
	famTransactions    = proxyFamily("transactions_total", "counter", "Transactions (request/response pairs, unanswered requests, orphan responses) by operation and result.", "op", "result")
	famFaultMatched    = proxyFamily("fault_matched_total", "counter", "Messages a fault's ops, direction and filter selected.", "fault")
	famFaultApplied    = proxyFamily("fault_applied_total", "counter", "Messages a fault was applied to.", "fault")
	famLatency         = proxyFamily("latency_seconds", "summary", "Latency of answered transactions, first request byte to last response byte.")
	famLatencyMax      = proxyFamily("latency_max_seconds", "gauge", "The slowest answered transaction.")
	famDuration        = proxyFamily("transaction_duration_seconds", "histogram", "Latency of answered transactions as a histogram (bucket counts within about 3% of a bound).")
)

// scalar is a per-proxy family of one number with no label of its own.
type scalar struct {
	f *family
	v func(*daemon.ProxyStats) float64
}

// scalars are the per-proxy families of one unlabelled number each.
var scalars = []scalar{
	{famConnsActive, func(p *daemon.ProxyStats) float64 { return float64(p.Stats.ConnsActive) }},
	{famConnsTotal, func(p *daemon.ProxyStats) float64 { return float64(p.Stats.ConnsTotal) }},
	{famConnsRefused, func(p *daemon.ProxyStats) float64 { return float64(p.Stats.ConnsRefused) }},
	{famConnectFailures, func(p *daemon.ProxyStats) float64 { return float64(p.Stats.ConnectFailed) }},
	{famProtocolErrors, func(p *daemon.ProxyStats) float64 { return float64(p.Stats.ProtocolErrors) }},
	{famTimeouts, func(p *daemon.ProxyStats) float64 { return float64(p.Stats.Timeouts) }},
	{famLoopRefusals, func(p *daemon.ProxyStats) float64 { return float64(p.Stats.LoopRefusals) }},
	{famLoopEchoes, func(p *daemon.ProxyStats) float64 { return float64(p.Stats.LoopEchoes) }},
	{famSparesDialled, func(p *daemon.ProxyStats) float64 { return float64(p.Stats.SparesDialled) }},
	{famSpareFailures, func(p *daemon.ProxyStats) float64 { return float64(p.Stats.SpareFailures) }},
	{famSparesLost, func(p *daemon.ProxyStats) float64 { return float64(p.Stats.SparesLost) }},
}

// tapScalars are the per-proxy families only a tap has (ProxyStats.Tap):
// what its capture saw and missed. A proxy has no sample in them.
var tapScalars = []scalar{
	{proxyFamily("tap_kernel_packets_total", "counter", "Packets of the server's port the kernel passed to a tap's capture, those dropped included."),
		func(p *daemon.ProxyStats) float64 { return float64(p.Tap.KernelPackets) }},
	{proxyFamily("tap_kernel_drops_total", "counter", "Packets a tap lost because its capture ring was full."),
		func(p *daemon.ProxyStats) float64 { return float64(p.Tap.KernelDrops) }},
	{proxyFamily("tap_capture_gaps_total", "counter", "Stretches of a connection's bytes a tap's capture missed."),
		func(p *daemon.ProxyStats) float64 { return float64(p.Tap.CaptureGaps) }},
	{proxyFamily("tap_capture_missing_bytes_total", "counter", "Bytes a tap's capture gaps missed."),
		func(p *daemon.ProxyStats) float64 { return float64(p.Tap.CaptureMissingBytes) }},
	{proxyFamily("tap_resyncs_total", "counter", "Times a tap's decoder lost its place and hunted for the next message start."),
		func(p *daemon.ProxyStats) float64 { return float64(p.Tap.Resyncs) }},
	{proxyFamily("tap_resync_skipped_bytes_total", "counter", "Bytes a tap's decoders passed over while hunting."),
		func(p *daemon.ProxyStats) float64 { return float64(p.Tap.ResyncSkippedBytes) }},
	{proxyFamily("tap_read_errors_total", "counter", "Failed reads of a tap's capture; capture goes on after each."),
		func(p *daemon.ProxyStats) float64 { return float64(p.Tap.ReadErrors) }},
}

// quantiles are the summary's quantiles.
var quantiles = [...]float64{0.5, 0.9, 0.99}

// Collector turns a Source's proxies into client_golang metrics at scrape
// time, for a program that registers it in a registry of its own. It
// builds every metric of every proxy in memory before the registry
// writes any, so /metrics does not use it (Handler writes the same
// exposition proxy by proxy); tests hold the two to the same output. It
// is safe for concurrent scrapes as long as the Source is.
type Collector struct {
	src   Source
	hists Histograms
	descs map[*family]*prometheus.Desc
}

var _ prometheus.Collector = (*Collector)(nil)

// NewCollector returns a collector reading src and exporting the
// histograms h selects.
func NewCollector(src Source, h Histograms) *Collector {
	c := &Collector{src: src, hists: h, descs: map[*family]*prometheus.Desc{}}
	for _, f := range c.families() {
		labels := f.labels
		if f.perProxy {
			labels = append([]string{"proxy"}, labels...)
		}
		c.descs[f] = prometheus.NewDesc(f.name, f.help, labels, nil)
	}
	return c
}

// families lists the families exported with c's histograms.
func (c *Collector) families() []*family {
	fs := []*family{famBuildInfo, famStartTime, famProxies, famWatchers, famPublished, famInfo, famState, famCondition}
	for _, s := range scalars {
		fs = append(fs, s.f)
	}
	for _, s := range tapScalars {
		fs = append(fs, s.f)
	}
	fs = append(fs, famBytes, famFrames, famTransactions, famFaultMatched, famFaultApplied, famLatency, famLatencyMax)
	if c.hists != HistogramsNone {
		fs = append(fs, famOpsDur)
	}
	if c.hists == HistogramsProxies {
		fs = append(fs, famDuration)
	}
	return fs
}

// Describe sends every metric's description.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, f := range c.families() {
		ch <- c.descs[f]
	}
}

// Collect reads the source once and sends the metrics.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	st := c.src.Stats()
	ch <- prometheus.MustNewConstMetric(c.descs[famBuildInfo], prometheus.GaugeValue, 1, st.Version)
	if !st.Started.IsZero() {
		ch <- prometheus.MustNewConstMetric(c.descs[famStartTime], prometheus.GaugeValue, float64(st.Started.UnixNano())/1e9)
	}
	ch <- prometheus.MustNewConstMetric(c.descs[famProxies], prometheus.GaugeValue, float64(st.Proxies))
	ch <- prometheus.MustNewConstMetric(c.descs[famWatchers], prometheus.GaugeValue, float64(st.Watchers))
	ch <- prometheus.MustNewConstMetric(c.descs[famPublished], prometheus.CounterValue, float64(st.EventsPublished))
	var byOp [distcache.NumOps]histogram.Snapshot
	c.src.EachProxy(true, func(p *daemon.ProxyStats) bool {
		c.collectProxy(ch, p)
		for op := range byOp {
			byOp[op].Merge(&p.Stats.LatencyOf[op])
		}
		return true
	})
	if c.hists != HistogramsNone {
		for op := range byOp {
			ch <- c.constHistogram(famOpsDur, &byOp[op], opLabel(distcache.Op(op)))
		}
	}
}

// constHistogram is h as a client_golang histogram of the exported
// buckets.
func (c *Collector) constHistogram(f *family, h *histogram.Snapshot, labels ...string) prometheus.Metric {
	cum := foldBuckets(h)
	m := make(map[float64]uint64, len(cum))
	for i, b := range durationBuckets {
		m[b] = cum[i]
	}
	return prometheus.MustNewConstHistogram(c.descs[f], h.Count, h.Sum.Seconds(), m, labels...)
}

func (c *Collector) collectProxy(ch chan<- prometheus.Metric, p *daemon.ProxyStats) {
	name := p.Name
	metric := func(f *family, v float64, labels ...string) {
		t := prometheus.GaugeValue
		if f.typ == "counter" {
			t = prometheus.CounterValue
		}
		ch <- prometheus.MustNewConstMetric(c.descs[f], t, v, append([]string{name}, labels...)...)
	}
	metric(famInfo, 1, p.Listen, p.Server)
	for _, s := range daemon.ProxyStates() {
		v := 0.0
		if p.State == s {
			v = 1
		}
		metric(famState, v, s.String())
	}
	for _, name := range proxy.KnownConditions {
		v := 0.0
		if slices.Contains(p.Conditions, name) {
			v = 1
		}
		metric(famCondition, v, name)
	}
	for _, s := range scalars {
		metric(s.f, s.v(p))
	}
	if p.Tap != nil {
		for _, s := range tapScalars {
			metric(s.f, s.v(p))
		}
	}
	k := &p.Stats
	metric(famBytes, float64(k.BytesUp), "up")
	metric(famBytes, float64(k.BytesDown), "down")
	metric(famFrames, float64(k.FramesUp), "up")
	metric(famFrames, float64(k.FramesDown), "down")
	for op, results := range k.Results {
		for result, n := range results {
			metric(famTransactions, float64(n), opLabel(op), result)
		}
	}
	for _, f := range k.Faults {
		metric(famFaultMatched, float64(f.Matched), f.Name)
		metric(famFaultApplied, float64(f.Applied), f.Name)
	}
	lat := &k.Latency
	var qs map[float64]float64
	if lat.Count > 0 {
		// An empty summary has no quantiles rather than made-up zeros.
		qs = map[float64]float64{}
		for _, q := range quantiles {
			qs[q] = lat.Quantile(q).Seconds()
		}
	}
	ch <- prometheus.MustNewConstSummary(c.descs[famLatency], lat.Count, lat.Sum.Seconds(), qs, name)
	metric(famLatencyMax, lat.Max.Seconds())
	if c.hists == HistogramsProxies {
		ch <- c.constHistogram(famDuration, lat, name)
	}
}

// opLabel is the op label value: the operation's name ("get"), or
// "unspecified" for a transaction without a valid one.
func opLabel(op distcache.Op) string {
	if !op.Valid() {
		return "unspecified"
	}
	return vocab.OpName(op)
}

// NewRegistry returns a private registry holding a Collector for src
// (with the histograms h selects), the export counters, and the Go
// runtime and process collectors: the whole of /metrics, for a program
// serving it through client_golang with few proxies.
func NewRegistry(src Source, h Histograms) *prometheus.Registry {
	reg := extrasRegistry(src)
	reg.MustRegister(NewCollector(src, h))
	return reg
}

// extrasRegistry holds what /metrics serves besides the proxies and the
// daemon's own figures: the export counters and the Go runtime and
// process collectors, all of a size independent of the proxies.
func extrasRegistry(src Source) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		NewExportCollector(src),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return reg
}

// Handler serves the metrics of src with the default histograms; see
// NewHandler. Errors are logged to log (nil discards them).
func Handler(src Source, log *slog.Logger) http.Handler {
	return NewHandler(src, Options{Log: log, Histograms: DefaultHistograms})
}
