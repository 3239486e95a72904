package metrics

import (
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
	"github.com/snoopd/snoopd/internal/histogram"
)

// Source is what the collector reads on each scrape. *daemon.Daemon
// satisfies it; tests pass a fixed set of proxies.
type Source interface {
	// ListProxies describes every proxy with its counters.
	ListProxies() []*snoopv1.Proxy
	// Info describes the daemon: version, start time, watchers, events.
	Info() *snoopv1.GetDaemonInfoResponse
}

// HistogramSource is a Source that can also hand out each proxy's raw
// latency histogram; *daemon.Daemon is one. The collector then exports
// snoopd_proxy_transaction_duration_seconds, a Prometheus histogram that,
// unlike the summary, can be aggregated across proxies and daemons.
type HistogramSource interface {
	Source
	// LatencyHistograms returns each proxy's latency histogram by name.
	LatencyHistograms() map[string]*histogram.Snapshot
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
	timeouts, loopRefusals                       *prometheus.Desc
	bytes, frames, transactions                  *prometheus.Desc
	latency, latencyMax, duration                *prometheus.Desc
	buildInfo, startTime, proxies, watchers, pub *prometheus.Desc
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
	}
}

// Describe sends every metric's description.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		c.info, c.state, c.connsActive, c.connsTotal, c.connsRefused, c.connectFailures,
		c.protocolErrors, c.timeouts, c.loopRefusals, c.bytes, c.frames, c.transactions, c.latency, c.latencyMax, c.duration,
		c.buildInfo, c.startTime, c.proxies, c.watchers, c.pub,
	} {
		ch <- d
	}
}

// states are the values of the state label, in the order the API
// declares them.
var states = []struct {
	state snoopv1.ProxyState
	label string
}{
	{snoopv1.ProxyState_PROXY_STATE_LISTENING, "listening"},
	{snoopv1.ProxyState_PROXY_STATE_DISABLED, "disabled"},
	{snoopv1.ProxyState_PROXY_STATE_FAILED, "failed"},
}

// Collect reads the source once and sends the metrics.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	info := c.src.Info()
	ch <- prometheus.MustNewConstMetric(c.buildInfo, prometheus.GaugeValue, 1, info.GetVersion())
	if st := info.GetStartTime(); st != nil {
		ch <- prometheus.MustNewConstMetric(c.startTime, prometheus.GaugeValue, float64(st.AsTime().UnixNano())/1e9)
	}
	ch <- prometheus.MustNewConstMetric(c.proxies, prometheus.GaugeValue, float64(info.GetProxies()))
	ch <- prometheus.MustNewConstMetric(c.watchers, prometheus.GaugeValue, float64(info.GetWatchers()))
	ch <- prometheus.MustNewConstMetric(c.pub, prometheus.CounterValue, float64(info.GetEventsPublished()))

	for _, p := range c.src.ListProxies() {
		c.collectProxy(ch, p)
	}
	if hs, ok := c.src.(HistogramSource); ok {
		for name, h := range hs.LatencyHistograms() {
			ch <- constHistogram(c.duration, h, name)
		}
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

func (c *Collector) collectProxy(ch chan<- prometheus.Metric, p *snoopv1.Proxy) {
	name := p.GetSpec().GetName()
	counter := func(d *prometheus.Desc, v int64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), append([]string{name}, labels...)...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, append([]string{name}, labels...)...)
	}

	gauge(c.info, 1, p.GetListenAddress(), p.GetSpec().GetServer())
	for _, s := range states {
		v := 0.0
		if p.GetState() == s.state {
			v = 1
		}
		gauge(c.state, v, s.label)
	}
	k := p.GetCounters()
	gauge(c.connsActive, float64(k.GetConnectionsActive()))
	counter(c.connsTotal, k.GetConnectionsTotal())
	counter(c.connsRefused, k.GetConnectionsRefused())
	counter(c.connectFailures, k.GetConnectFailures())
	counter(c.protocolErrors, k.GetProtocolErrors())
	counter(c.timeouts, k.GetTimeouts())
	counter(c.loopRefusals, k.GetLoopRefusals())
	counter(c.bytes, k.GetBytesUp(), "up")
	counter(c.bytes, k.GetBytesDown(), "down")
	counter(c.frames, k.GetFramesUp(), "up")
	counter(c.frames, k.GetFramesDown(), "down")
	for _, oc := range k.GetOps() {
		op := opLabel(oc.GetOp())
		for result, n := range oc.GetResults() {
			counter(c.transactions, n, op, result)
		}
	}

	lat := k.GetLatency()
	n := lat.GetCount()
	var quantiles map[float64]float64
	if n > 0 {
		// An empty summary has no quantiles rather than made-up zeros.
		quantiles = map[float64]float64{
			0.5:  lat.GetP50().AsDuration().Seconds(),
			0.9:  lat.GetP90().AsDuration().Seconds(),
			0.99: lat.GetP99().AsDuration().Seconds(),
		}
	}
	// The API reports the mean, not the sum; mean times count is the sum
	// to within the nanosecond the mean was rounded to, per sample.
	// Multiplying durations first keeps the sum as exact as the mean.
	sum := (lat.GetMean().AsDuration() * time.Duration(n)).Seconds()
	ch <- prometheus.MustNewConstSummary(c.latency, uint64(max(n, 0)), sum, quantiles, name)
	gauge(c.latencyMax, lat.GetMax().AsDuration().Seconds())
}

// opLabel is the op label value: the API's enum name without its prefix,
// in lower case ("get").
func opLabel(op snoopv1.Op) string {
	return strings.ToLower(strings.TrimPrefix(op.String(), "OP_"))
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
