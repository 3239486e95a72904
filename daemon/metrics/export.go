package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
)

// ExportCollector exports the NATS exporter's counters (snoopd --export),
// read from the Source's daemon info at scrape time. A daemon that does
// not export has none of these metrics.
type ExportCollector struct {
	src                                    Source
	connected, published, dropped, matched *prometheus.Desc
}

var _ prometheus.Collector = (*ExportCollector)(nil)

// NewExportCollector returns a collector of src's export counters.
func NewExportCollector(src Source) *ExportCollector {
	d := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc("snoopd_export_"+name, help, []string{"servers", "stream"}, nil)
	}
	return &ExportCollector{
		src:       src,
		connected: d("connected", "1 while the exporter is connected to NATS, 0 while it reconnects."),
		published: d("published_total", "Events handed to NATS (with JetStream: acknowledged)."),
		dropped:   d("dropped_total", "Matching events not exported: queue full, NATS slow or gone, or not acknowledged."),
		matched:   d("matched_total", "Events that passed the export filter: published + dropped + still queued."),
	}
}

// Describe sends the descriptions.
func (c *ExportCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.connected, c.published, c.dropped, c.matched} {
		ch <- d
	}
}

// Collect reads the counters once.
func (c *ExportCollector) Collect(ch chan<- prometheus.Metric) {
	x := c.src.Stats().Export
	if x == nil {
		return
	}
	labels := []string{x.Servers, x.Stream}
	connected := 0.0
	if x.Connected {
		connected = 1
	}
	ch <- prometheus.MustNewConstMetric(c.connected, prometheus.GaugeValue, connected, labels...)
	ch <- prometheus.MustNewConstMetric(c.published, prometheus.CounterValue, float64(x.Published), labels...)
	ch <- prometheus.MustNewConstMetric(c.dropped, prometheus.CounterValue, float64(x.Dropped), labels...)
	ch <- prometheus.MustNewConstMetric(c.matched, prometheus.CounterValue, float64(x.Matched), labels...)
}
