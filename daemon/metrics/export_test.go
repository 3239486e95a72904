package metrics_test

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/snoopd/snoopd/daemon"
	"github.com/snoopd/snoopd/daemon/metrics"
)

func TestExportCollector(t *testing.T) {
	off := metrics.NewExportCollector(&fixed{stats: daemon.Stats{Version: "v"}})
	if n := testutil.CollectAndCount(off); n != 0 {
		t.Fatalf("without export: %d metrics, want none", n)
	}
	src := &fixed{stats: daemon.Stats{Version: "v", Export: &daemon.ExportCounters{
		Servers: "nats://127.0.0.1:4222", Stream: "SNOOP", Connected: true, Published: 90, Dropped: 7, Matched: 100,
	}}}
	c := metrics.NewExportCollector(src)
	want := `
# HELP snoopd_export_connected 1 while the exporter is connected to NATS, 0 while it reconnects.
# TYPE snoopd_export_connected gauge
snoopd_export_connected{servers="nats://127.0.0.1:4222",stream="SNOOP"} 1
# HELP snoopd_export_dropped_total Matching events not exported: queue full, NATS slow or gone, or not acknowledged.
# TYPE snoopd_export_dropped_total counter
snoopd_export_dropped_total{servers="nats://127.0.0.1:4222",stream="SNOOP"} 7
# HELP snoopd_export_matched_total Events that passed the export filter: published + dropped + still queued.
# TYPE snoopd_export_matched_total counter
snoopd_export_matched_total{servers="nats://127.0.0.1:4222",stream="SNOOP"} 100
# HELP snoopd_export_published_total Events handed to NATS (with JetStream: acknowledged).
# TYPE snoopd_export_published_total counter
snoopd_export_published_total{servers="nats://127.0.0.1:4222",stream="SNOOP"} 90
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want)); err != nil {
		t.Fatal(err)
	}
	problems, err := testutil.CollectAndLint(c)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
}
