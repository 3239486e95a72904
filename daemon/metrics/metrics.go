package metrics

import (
	"log/slog"
	"net/http"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/snoopd/snoopd/daemon"
	"github.com/snoopd/snoopd/distcache"
	"github.com/snoopd/snoopd/internal/histogram"
	"github.com/snoopd/snoopd/proxy"
	"github.com/snoopd/snoopd/vocab"
)

// Source is what the collector reads on each scrape: the proxies' own
// counters and histograms, no API message in between. *daemon.Daemon
// satisfies it; tests pass a fixed set.
type Source interface {
	// Stats describes the daemon: version, start time, watchers, events.
	Stats() daemon.Stats
	// ProxyStats reads every proxy's addresses, state and counters.
	ProxyStats() []daemon.ProxyStats
}

// durationBuckets are the upper bounds, in seconds, of the exported
// latency histogram: from a fast loopback round trip to a stuck server.
var durationBuckets = []float64{25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3, 500e-3, 1, 2.5, 5, 10}

// Collector turns a Source's proxies into Prometheus metrics at scrape
// time. It is safe for concurrent scrapes as long as the Source is.
type Collector struct {
	src Source

	info, state                                  *prometheus.Desc
	connsActive, connsTotal, connsRefused        *prometheus.Desc
	connectFailures, protocolErrors              *prometheus.Desc
	timeouts, loopRefusals, loopEchoes, cond     *prometheus.Desc
	sparesDialled, spareFailures, sparesLost     *prometheus.Desc
	bytes, frames, transactions                  *prometheus.Desc
	latency, latencyMax, duration                *prometheus.Desc
	buildInfo, startTime, proxies, watchers, pub *prometheus.Desc
	faultMatched, faultApplied                   *prometheus.Desc
}

var _ prometheus.Collector = (*Collector)(nil)

// NewCollector returns a collector reading src.
func NewCollector(src Source) *Collector {
	p := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("snoopd_proxy_"+name, help, append([]string{"proxy"}, labels...), nil)
	}
	g := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("snoopd_"+name, help, labels, nil)
	}
	return &Collector{
		src:             src,
		info:            p("info", "A proxy's addresses; always 1.", "listen_address", "server"),
		state:           p("state", "1 for the proxy's current state (listening, disabled, failed), 0 for the others.", "state"),
		connsActive:     p("connections_active", "Live client connections."),
		connsTotal:      p("connections_total", "Client connections accepted."),
		connsRefused:    p("connections_refused_total", "Clients closed at once because the proxy was at its connection limit."),
		connectFailures: p("connect_failures_total", "Clients closed because the server could not be reached."),
		protocolErrors:  p("protocol_errors_total", "Protocol violations seen."),
		timeouts:        p("timeouts_total", "Connections closed by the idle, message or response timeout."),
		loopRefusals:    p("loop_refusals_total", "Server connections refused because they reached one of this daemon's own listeners (a proxy loop)."),
		loopEchoes:      p("loop_echoes_total", "Clients closed because their first request had come around a forwarding loop through another daemon."),
		cond:            p("condition", "1 for each condition the proxy is in now (forwarding-loop: a request came back around a loop within the last minute), 0 for the others.", "condition"),
		sparesDialled:   p("spares_dialled_total", "Spare server connections connected ahead of the clients."),
		spareFailures:   p("spare_failures_total", "Spare server connections that could not be dialled; refills back off after each."),
		sparesLost:      p("spares_lost_total", "Spare server connections the server closed before a client took them."),
		bytes:           p("bytes_total", "Bytes forwarded; direction up is client to server.", "direction"),
		frames:          p("frames_total", "Frames decoded; direction up is client to server.", "direction"),
		transactions:    p("transactions_total", "Transactions (request/response pairs, unanswered requests, orphan responses) by operation and result.", "op", "result"),
		latency:         p("latency_seconds", "Latency of answered transactions, first request byte to last response byte."),
		latencyMax:      p("latency_max_seconds", "The slowest answered transaction."),
		duration:        p("transaction_duration_seconds", "Latency of answered transactions as a histogram (bucket counts within about 3% of a bound)."),
		buildInfo:       g("build_info", "The daemon's version; always 1.", "version"),
		startTime:       g("start_time_seconds", "When the daemon started, in seconds since the Unix epoch."),
		proxies:         g("proxies", "Proxies configured."),
		watchers:        g("watchers", "Open event streams."),
		pub:             g("events_published_total", "Events the proxies published."),
		faultMatched:    p("fault_matched_total", "Messages a fault's ops, direction and filter selected.", "fault"),
		faultApplied:    p("fault_applied_total", "Messages a fault was applied to.", "fault"),
	}
}

// Describe sends every metric's description.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		c.info, c.state, c.connsActive, c.connsTotal, c.connsRefused, c.connectFailures,
		c.protocolErrors, c.timeouts, c.loopRefusals, c.loopEchoes, c.cond, c.sparesDialled, c.spareFailures, c.sparesLost, c.bytes, c.frames, c.transactions, c.latency, c.latencyMax, c.duration,
		c.buildInfo, c.startTime, c.proxies, c.watchers, c.pub, c.faultMatched, c.faultApplied,
	} {
		ch <- d
	}
}

// Collect reads the source once and sends the metrics.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	st := c.src.Stats()
	ch <- prometheus.MustNewConstMetric(c.buildInfo, prometheus.GaugeValue, 1, st.Version)
	if !st.Started.IsZero() {
		ch <- prometheus.MustNewConstMetric(c.startTime, prometheus.GaugeValue, float64(st.Started.UnixNano())/1e9)
	}
	ch <- prometheus.MustNewConstMetric(c.proxies, prometheus.GaugeValue, float64(st.Proxies))
	ch <- prometheus.MustNewConstMetric(c.watchers, prometheus.GaugeValue, float64(st.Watchers))
	ch <- prometheus.MustNewConstMetric(c.pub, prometheus.CounterValue, float64(st.EventsPublished))
	for _, p := range c.src.ProxyStats() {
		c.collectProxy(ch, &p)
	}
}

// constHistogram folds a log-linear latency histogram into the exported
// buckets: each of its buckets counts toward the first bound at or above
// its own upper end, so a count is never attributed to a bound below it.
func constHistogram(d *prometheus.Desc, h *histogram.Snapshot, name string) prometheus.Metric {
	counts := make([]uint64, len(durationBuckets))
	h.Buckets(func(upper time.Duration, n uint64) {
		for i, b := range durationBuckets {
			if upper.Seconds() <= b {
				counts[i] += n
				return
			}
		}
	})
	cum := map[float64]uint64{}
	var run uint64
	for i, b := range durationBuckets {
		run += counts[i]
		cum[b] = run
	}
	return prometheus.MustNewConstHistogram(d, h.Count, h.Sum.Seconds(), cum, name)
}

func (c *Collector) collectProxy(ch chan<- prometheus.Metric, p *daemon.ProxyStats) {
	name := p.Name
	counter := func(d *prometheus.Desc, v int64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), append([]string{name}, labels...)...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, append([]string{name}, labels...)...)
	}
	gauge(c.info, 1, p.Listen, p.Server)
	for _, s := range daemon.ProxyStates() {
		v := 0.0
		if p.State == s {
			v = 1
		}
		gauge(c.state, v, s.String())
	}
	k := &p.Stats
	gauge(c.connsActive, float64(k.ConnsActive))
	counter(c.connsTotal, k.ConnsTotal)
	counter(c.connsRefused, k.ConnsRefused)
	counter(c.connectFailures, k.ConnectFailed)
	counter(c.protocolErrors, k.ProtocolErrors)
	counter(c.timeouts, k.Timeouts)
	counter(c.loopRefusals, k.LoopRefusals)
	counter(c.loopEchoes, k.LoopEchoes)
	for _, name := range proxy.KnownConditions {
		v := 0.0
		if slices.Contains(p.Conditions, name) {
			v = 1
		}
		gauge(c.cond, v, name)
	}
	counter(c.sparesDialled, k.SparesDialled)
	counter(c.spareFailures, k.SpareFailures)
	counter(c.sparesLost, k.SparesLost)
	counter(c.bytes, k.BytesUp, "up")
	counter(c.bytes, k.BytesDown, "down")
	counter(c.frames, k.FramesUp, "up")
	counter(c.frames, k.FramesDown, "down")
	for op, results := range k.Results {
		for result, n := range results {
			counter(c.transactions, n, opLabel(op), result)
		}
	}
	for _, f := range k.Faults {
		counter(c.faultMatched, f.Matched, f.Name)
		counter(c.faultApplied, f.Applied, f.Name)
	}
	lat := &k.Latency
	var quantiles map[float64]float64
	if lat.Count > 0 {
		// An empty summary has no quantiles rather than made-up zeros.
		quantiles = map[float64]float64{
			0.5:  lat.Quantile(0.5).Seconds(),
			0.9:  lat.Quantile(0.9).Seconds(),
			0.99: lat.Quantile(0.99).Seconds(),
		}
	}
	ch <- prometheus.MustNewConstSummary(c.latency, lat.Count, lat.Sum.Seconds(), quantiles, name)
	gauge(c.latencyMax, lat.Max.Seconds())
	ch <- constHistogram(c.duration, lat, name)
}

// opLabel is the op label value: the operation's name ("get"), or
// "unspecified" for a transaction without a valid one.
func opLabel(op distcache.Op) string {
	if !op.Valid() {
		return "unspecified"
	}
	return vocab.OpName(op)
}

// NewRegistry returns a private registry holding a Collector for src and
// the Go runtime and process collectors.
func NewRegistry(src Source) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		NewCollector(src),
		NewExportCollector(src),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return reg
}

// Handler serves the metrics of src in the Prometheus exposition formats.
// Errors in collecting are logged to log (nil discards them) and the
// scrape still serves what could be collected.
func Handler(src Source, log *slog.Logger) http.Handler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	reg := NewRegistry(src)
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog:      slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		ErrorHandling: promhttp.ContinueOnError,
		// Bounded, so a flood of scrapes cannot pile up collections.
		MaxRequestsInFlight: 4,
	})
}
