package metrics_test

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/snoopd/snoopd/daemon"
	"github.com/snoopd/snoopd/daemon/metrics"
	"github.com/snoopd/snoopd/distcache"
	"github.com/snoopd/snoopd/distcache/cacheserver"
	"github.com/snoopd/snoopd/distcache/loadgen"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
	"github.com/snoopd/snoopd/internal/histogram"
	snooptest "github.com/snoopd/snoopd/internal/testutil"
	"github.com/snoopd/snoopd/proxy"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// The daemon is the Source snoopd passes.
var _ metrics.Source = (*daemon.Daemon)(nil)

// fixed is a Source with a fixed answer.
type fixed struct {
	stats   daemon.Stats
	proxies []daemon.ProxyStats
}

func (f *fixed) Stats() daemon.Stats { return f.stats }

// EachProxy hands out copies of the fixed proxies in one reused
// ProxyStats, as the daemon does. Without latency it leaves junk in the
// histograms, so a family that wrongly skipped reading them shows it.
func (f *fixed) EachProxy(latency bool, fn func(*daemon.ProxyStats) bool) {
	ps := new(daemon.ProxyStats)
	for i := range f.proxies {
		*ps = f.proxies[i]
		if !latency {
			ps.Stats.Latency = latencies(7 * time.Second)
			for op := range ps.Stats.LatencyOf {
				ps.Stats.LatencyOf[op] = latencies(7 * time.Second)
			}
		}
		if !fn(ps) {
			return
		}
	}
}

// latencies builds a histogram of the given samples.
func latencies(ds ...time.Duration) histogram.Snapshot {
	var h histogram.Snapshot
	for _, d := range ds {
		h.Record(d)
	}
	return h
}

func sampleSource() *fixed {
	ms := time.Millisecond
	return &fixed{
		stats: daemon.Stats{
			Version: "1.2.3", Started: time.Unix(1700000000, 500_000_000),
			Proxies: 2, Watchers: 3, EventsPublished: 12345,
		},
		proxies: []daemon.ProxyStats{
			{
				Name: "a", Listen: "IP:127.0.0.1:4100", Server: "UNIX:/run/dc.sock",
				State:      daemon.ProxyListening,
				Conditions: []string{proxy.ConditionForwardingLoop},
				Stats: proxy.Stats{
					ConnsActive: 2, ConnsTotal: 40, ConnsRefused: 1, ConnectFailed: 3,
					ProtocolErrors: 4, Timeouts: 5, LoopRefusals: 6, LoopEchoes: 12, SparesDialled: 7, SpareFailures: 8, SparesLost: 9, BytesUp: 1000, BytesDown: 2000, FramesUp: 10, FramesDown: 11,
					Results: map[distcache.Op]map[string]int64{
						distcache.OpAdd: {"ok": 1, "exists": 1},
						distcache.OpGet: {"hit": 5, "miss": 2},
					},
					// Nine answered transactions, 18ms in all; the median
					// and p90 are the midpoints of their buckets (within
					// about 3%), p99 is the maximum.
					Latency: latencies(ms/2, 4*ms/5, ms, ms, ms, 6*ms/5, 3*ms/2, 2*ms, 9*ms),
				},
			},
			{
				Name: "b", Listen: "UNIX:/run/b.sock", Server: "IP:10.0.0.1:9000",
				State: daemon.ProxyFailed,
			},
		},
	}
}

// update rewrites the golden files from the current output.
var update = flag.Bool("update", false, "rewrite testdata/*.golden")

// TestCollectorGolden compares the whole exposition of a fixed source,
// histograms included, as /metrics serves it (the text format), with
// testdata/collector.golden.
func TestCollectorGolden(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(metrics.NewCollector(sampleSource(), metrics.HistogramsProxies))
	rec := httptest.NewRecorder()
	promhttp.HandlerFor(reg, promhttp.HandlerOpts{}).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	got := rec.Body.Bytes()
	const golden = "testdata/collector.golden"
	if *update {
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("exposition differs from %s (go test -update rewrites it):\n%s", golden, got)
	}
}

func TestCollectorValues(t *testing.T) {
	c := metrics.NewCollector(sampleSource(), metrics.HistogramsProxies)
	want := `
# HELP snoopd_build_info The daemon's version; always 1.
# TYPE snoopd_build_info gauge
snoopd_build_info{version="1.2.3"} 1
# HELP snoopd_start_time_seconds When the daemon started, in seconds since the Unix epoch.
# TYPE snoopd_start_time_seconds gauge
snoopd_start_time_seconds 1.7000000005e+09
# HELP snoopd_proxies Proxies configured.
# TYPE snoopd_proxies gauge
snoopd_proxies 2
# HELP snoopd_watchers Open event streams.
# TYPE snoopd_watchers gauge
snoopd_watchers 3
# HELP snoopd_events_published_total Events the proxies published.
# TYPE snoopd_events_published_total counter
snoopd_events_published_total 12345
# HELP snoopd_proxy_info A proxy's addresses; always 1.
# TYPE snoopd_proxy_info gauge
snoopd_proxy_info{listen_address="IP:127.0.0.1:4100",proxy="a",server="UNIX:/run/dc.sock"} 1
snoopd_proxy_info{listen_address="UNIX:/run/b.sock",proxy="b",server="IP:10.0.0.1:9000"} 1
# HELP snoopd_proxy_state 1 for the proxy's current state (listening, disabled, failed), 0 for the others.
# TYPE snoopd_proxy_state gauge
snoopd_proxy_state{proxy="a",state="disabled"} 0
snoopd_proxy_state{proxy="a",state="failed"} 0
snoopd_proxy_state{proxy="a",state="listening"} 1
snoopd_proxy_state{proxy="b",state="disabled"} 0
snoopd_proxy_state{proxy="b",state="failed"} 1
snoopd_proxy_state{proxy="b",state="listening"} 0
# HELP snoopd_proxy_connections_active Live client connections.
# TYPE snoopd_proxy_connections_active gauge
snoopd_proxy_connections_active{proxy="a"} 2
snoopd_proxy_connections_active{proxy="b"} 0
# HELP snoopd_proxy_connections_total Client connections accepted.
# TYPE snoopd_proxy_connections_total counter
snoopd_proxy_connections_total{proxy="a"} 40
snoopd_proxy_connections_total{proxy="b"} 0
# HELP snoopd_proxy_connections_refused_total Clients closed at once because the proxy was at its connection limit.
# TYPE snoopd_proxy_connections_refused_total counter
snoopd_proxy_connections_refused_total{proxy="a"} 1
snoopd_proxy_connections_refused_total{proxy="b"} 0
# HELP snoopd_proxy_connect_failures_total Clients closed because the server could not be reached.
# TYPE snoopd_proxy_connect_failures_total counter
snoopd_proxy_connect_failures_total{proxy="a"} 3
snoopd_proxy_connect_failures_total{proxy="b"} 0
# HELP snoopd_proxy_protocol_errors_total Protocol violations seen.
# TYPE snoopd_proxy_protocol_errors_total counter
snoopd_proxy_protocol_errors_total{proxy="a"} 4
snoopd_proxy_protocol_errors_total{proxy="b"} 0
# HELP snoopd_proxy_timeouts_total Connections closed by the idle, message or response timeout.
# TYPE snoopd_proxy_timeouts_total counter
snoopd_proxy_timeouts_total{proxy="a"} 5
snoopd_proxy_timeouts_total{proxy="b"} 0
# HELP snoopd_proxy_loop_refusals_total Server connections refused because they reached one of this daemon's own listeners (a proxy loop).
# TYPE snoopd_proxy_loop_refusals_total counter
snoopd_proxy_loop_refusals_total{proxy="a"} 6
snoopd_proxy_loop_refusals_total{proxy="b"} 0
# HELP snoopd_proxy_bytes_total Bytes forwarded; direction up is client to server.
# TYPE snoopd_proxy_bytes_total counter
snoopd_proxy_bytes_total{direction="down",proxy="a"} 2000
snoopd_proxy_bytes_total{direction="up",proxy="a"} 1000
snoopd_proxy_bytes_total{direction="down",proxy="b"} 0
snoopd_proxy_bytes_total{direction="up",proxy="b"} 0
# HELP snoopd_proxy_frames_total Frames decoded; direction up is client to server.
# TYPE snoopd_proxy_frames_total counter
snoopd_proxy_frames_total{direction="down",proxy="a"} 11
snoopd_proxy_frames_total{direction="up",proxy="a"} 10
snoopd_proxy_frames_total{direction="down",proxy="b"} 0
snoopd_proxy_frames_total{direction="up",proxy="b"} 0
# HELP snoopd_proxy_transactions_total Transactions (request/response pairs, unanswered requests, orphan responses) by operation and result.
# TYPE snoopd_proxy_transactions_total counter
snoopd_proxy_transactions_total{op="add",proxy="a",result="exists"} 1
snoopd_proxy_transactions_total{op="add",proxy="a",result="ok"} 1
snoopd_proxy_transactions_total{op="get",proxy="a",result="hit"} 5
snoopd_proxy_transactions_total{op="get",proxy="a",result="miss"} 2
# HELP snoopd_proxy_latency_seconds Latency of answered transactions, first request byte to last response byte.
# TYPE snoopd_proxy_latency_seconds summary
snoopd_proxy_latency_seconds{proxy="a",quantile="0.5"} 0.001007616
snoopd_proxy_latency_seconds{proxy="a",quantile="0.9"} 0.002015232
snoopd_proxy_latency_seconds{proxy="a",quantile="0.99"} 0.009
snoopd_proxy_latency_seconds_sum{proxy="a"} 0.018
snoopd_proxy_latency_seconds_count{proxy="a"} 9
snoopd_proxy_latency_seconds_sum{proxy="b"} 0
snoopd_proxy_latency_seconds_count{proxy="b"} 0
# HELP snoopd_proxy_latency_max_seconds The slowest answered transaction.
# TYPE snoopd_proxy_latency_max_seconds gauge
snoopd_proxy_latency_max_seconds{proxy="a"} 0.009
snoopd_proxy_latency_max_seconds{proxy="b"} 0
`
	// Every family but the histogram, which TestCollectorHistogram and
	// the golden cover.
	names := []string{
		"snoopd_build_info", "snoopd_start_time_seconds", "snoopd_proxies", "snoopd_watchers", "snoopd_events_published_total",
		"snoopd_proxy_info", "snoopd_proxy_state", "snoopd_proxy_connections_active", "snoopd_proxy_connections_total",
		"snoopd_proxy_connections_refused_total", "snoopd_proxy_connect_failures_total", "snoopd_proxy_protocol_errors_total",
		"snoopd_proxy_timeouts_total", "snoopd_proxy_loop_refusals_total", "snoopd_proxy_bytes_total", "snoopd_proxy_frames_total",
		"snoopd_proxy_transactions_total", "snoopd_proxy_latency_seconds", "snoopd_proxy_latency_max_seconds",
	}
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), names...); err != nil {
		t.Fatal(err)
	}
}

func TestCollectorLint(t *testing.T) {
	problems, err := testutil.CollectAndLint(metrics.NewCollector(sampleSource(), metrics.HistogramsProxies))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
}

func TestCollectorNoProxies(t *testing.T) {
	src := &fixed{stats: daemon.Stats{Version: "v"}}
	c := metrics.NewCollector(src, metrics.HistogramsNone)
	// build_info, proxies, watchers, events_published; no start time
	// when the source does not know it, and nothing per proxy.
	if n := testutil.CollectAndCount(c); n != 4 {
		t.Fatalf("collected %d metrics, want 4", n)
	}
}

func TestHandlerServesRegistry(t *testing.T) {
	srv := httptest.NewServer(metrics.Handler(sampleSource(), nil))
	defer srv.Close()
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %s", resp.Status)
	}
	for _, want := range []string{
		`snoopd_proxy_transactions_total{op="get",proxy="a",result="hit"} 5`,
		`snoopd_events_published_total 12345`,
		`go_goroutines `,         // the Go runtime collector
		`process_open_fds `,      // the process collector (Linux)
		`snoopd_proxy_latency_s`, // the summary
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("scrape lacks %q", want)
		}
	}
}

// TestCollectorWithDaemon drives real traffic through a daemon's proxy and
// checks the per-operation counters against what the load generator saw.
func TestCollectorWithDaemon(t *testing.T) {
	dir := snooptest.SocketDir(t)
	cache, err := cacheserver.Start(distcache.MustParseAddr("UNIX:"+filepath.Join(dir, "c.sock")), cacheserver.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer cache.Close()
	d, err := daemon.New(daemon.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close(context.Background())
	p, err := d.CreateProxy(context.Background(), &snoopv1.ProxySpec{
		Name: "m", Listen: "UNIX:" + filepath.Join(dir, "p.sock"), Server: cache.Addr().String(),
	})
	if err != nil {
		t.Fatal(err)
	}
	const ops = 300
	rep, err := loadgen.Run(context.Background(), loadgen.Config{
		Addr: distcache.MustParseAddr(p.GetListenAddress()), Conns: 3, Ops: ops, Verify: true, MaxData: 256,
	})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Errors != 0 || rep.Ops != ops {
		t.Fatalf("load: %d ops, %d errors: %v", rep.Ops, rep.Errors, rep.ErrorSamples)
	}

	var want strings.Builder
	want.WriteString("# HELP snoopd_proxy_transactions_total Transactions (request/response pairs, unanswered requests, orphan responses) by operation and result.\n")
	want.WriteString("# TYPE snoopd_proxy_transactions_total counter\n")
	var lines []string
	for _, op := range rep.ByOp {
		for result, n := range op.Results {
			lines = append(lines, fmt.Sprintf("snoopd_proxy_transactions_total{op=%q,proxy=\"m\",result=%q} %d\n", strings.ToLower(op.Op), result, n))
		}
	}
	sort.Strings(lines)
	want.WriteString(strings.Join(lines, ""))
	want.WriteString("# HELP snoopd_proxy_latency_seconds Latency of answered transactions, first request byte to last response byte.\n")

	c := metrics.NewCollector(d, metrics.HistogramsProxies)
	// The proxy counts a transaction as the answer passes, which may be
	// a moment after the client has it; poll for a bounded time.
	deadline := time.Now().Add(5 * time.Second)
	for {
		err = testutil.CollectAndCompare(c, strings.NewReader(want.String()), "snoopd_proxy_transactions_total")
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	if got := testutil.CollectAndCount(c, "snoopd_proxy_latency_seconds"); got != 1 {
		t.Fatalf("latency summaries: %d, want 1", got)
	}
}

func TestCollectorHistogram(t *testing.T) {
	src := &fixed{proxies: []daemon.ProxyStats{{
		Name: "a", State: daemon.ProxyListening,
		Stats: proxy.Stats{Latency: latencies(30*time.Microsecond, 40*time.Microsecond, 2*time.Millisecond)},
	}}}
	want := `
# HELP snoopd_proxy_transaction_duration_seconds Latency of answered transactions as a histogram (bucket counts within about 3% of a bound).
# TYPE snoopd_proxy_transaction_duration_seconds histogram
snoopd_proxy_transaction_duration_seconds_bucket{proxy="a",le="2.5e-05"} 0
snoopd_proxy_transaction_duration_seconds_bucket{proxy="a",le="5e-05"} 2
snoopd_proxy_transaction_duration_seconds_bucket{proxy="a",le="0.0001"} 2
snoopd_proxy_transaction_duration_seconds_bucket{proxy="a",le="0.00025"} 2
snoopd_proxy_transaction_duration_seconds_bucket{proxy="a",le="0.0005"} 2
snoopd_proxy_transaction_duration_seconds_bucket{proxy="a",le="0.001"} 2
snoopd_proxy_transaction_duration_seconds_bucket{proxy="a",le="0.0025"} 3
snoopd_proxy_transaction_duration_seconds_bucket{proxy="a",le="0.005"} 3
snoopd_proxy_transaction_duration_seconds_bucket{proxy="a",le="0.01"} 3
snoopd_proxy_transaction_duration_seconds_bucket{proxy="a",le="0.025"} 3
snoopd_proxy_transaction_duration_seconds_bucket{proxy="a",le="0.05"} 3
snoopd_proxy_transaction_duration_seconds_bucket{proxy="a",le="0.1"} 3
snoopd_proxy_transaction_duration_seconds_bucket{proxy="a",le="0.25"} 3
snoopd_proxy_transaction_duration_seconds_bucket{proxy="a",le="0.5"} 3
snoopd_proxy_transaction_duration_seconds_bucket{proxy="a",le="1"} 3
snoopd_proxy_transaction_duration_seconds_bucket{proxy="a",le="2.5"} 3
snoopd_proxy_transaction_duration_seconds_bucket{proxy="a",le="5"} 3
snoopd_proxy_transaction_duration_seconds_bucket{proxy="a",le="10"} 3
snoopd_proxy_transaction_duration_seconds_bucket{proxy="a",le="+Inf"} 3
snoopd_proxy_transaction_duration_seconds_sum{proxy="a"} 0.00207
snoopd_proxy_transaction_duration_seconds_count{proxy="a"} 3
`
	if err := testutil.CollectAndCompare(metrics.NewCollector(src, metrics.HistogramsProxies), strings.NewReader(want), "snoopd_proxy_transaction_duration_seconds"); err != nil {
		t.Error(err)
	}
}

// TestTapCountersOnlyForTaps: a tap's capture counters are exported
// under its name, and a proxy, which has none, has no sample in them.
func TestTapCountersOnlyForTaps(t *testing.T) {
	src := sampleSource()
	src.proxies = append(src.proxies, tapStats())
	want := `
# HELP snoopd_proxy_tap_kernel_packets_total Packets of the server's port the kernel passed to a tap's capture, those dropped included.
# TYPE snoopd_proxy_tap_kernel_packets_total counter
snoopd_proxy_tap_kernel_packets_total{proxy="lo-tap"} 100
# HELP snoopd_proxy_tap_kernel_drops_total Packets a tap lost because its capture ring was full.
# TYPE snoopd_proxy_tap_kernel_drops_total counter
snoopd_proxy_tap_kernel_drops_total{proxy="lo-tap"} 1
# HELP snoopd_proxy_tap_capture_gaps_total Stretches of a connection's bytes a tap's capture missed.
# TYPE snoopd_proxy_tap_capture_gaps_total counter
snoopd_proxy_tap_capture_gaps_total{proxy="lo-tap"} 2
# HELP snoopd_proxy_tap_capture_missing_bytes_total Bytes a tap's capture gaps missed.
# TYPE snoopd_proxy_tap_capture_missing_bytes_total counter
snoopd_proxy_tap_capture_missing_bytes_total{proxy="lo-tap"} 300
# HELP snoopd_proxy_tap_resyncs_total Times a tap's decoder lost its place and hunted for the next message start.
# TYPE snoopd_proxy_tap_resyncs_total counter
snoopd_proxy_tap_resyncs_total{proxy="lo-tap"} 5
# HELP snoopd_proxy_tap_resync_skipped_bytes_total Bytes a tap's decoders passed over while hunting.
# TYPE snoopd_proxy_tap_resync_skipped_bytes_total counter
snoopd_proxy_tap_resync_skipped_bytes_total{proxy="lo-tap"} 600
# HELP snoopd_proxy_tap_read_errors_total Failed reads of a tap's capture; capture goes on after each.
# TYPE snoopd_proxy_tap_read_errors_total counter
snoopd_proxy_tap_read_errors_total{proxy="lo-tap"} 3
`
	names := []string{
		"snoopd_proxy_tap_kernel_packets_total", "snoopd_proxy_tap_kernel_drops_total", "snoopd_proxy_tap_capture_gaps_total",
		"snoopd_proxy_tap_capture_missing_bytes_total", "snoopd_proxy_tap_resyncs_total", "snoopd_proxy_tap_resync_skipped_bytes_total",
		"snoopd_proxy_tap_read_errors_total",
	}
	if err := testutil.CollectAndCompare(metrics.NewCollector(src, metrics.HistogramsProxies), strings.NewReader(want), names...); err != nil {
		t.Fatal(err)
	}
}
