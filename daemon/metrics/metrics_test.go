package metrics_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/snoopd/snoopd/daemon"
	"github.com/snoopd/snoopd/daemon/metrics"
	"github.com/snoopd/snoopd/distcache"
	"github.com/snoopd/snoopd/distcache/cacheserver"
	"github.com/snoopd/snoopd/distcache/loadgen"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
	"github.com/snoopd/snoopd/internal/histogram"
	snooptest "github.com/snoopd/snoopd/internal/testutil"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// The daemon is the Source snoopd passes.
var _ metrics.Source = (*daemon.Daemon)(nil)

// fixed is a Source with a fixed answer.
type fixed struct {
	proxies []*snoopv1.Proxy
	info    *snoopv1.GetDaemonInfoResponse
}

func (f *fixed) ListProxies() []*snoopv1.Proxy        { return f.proxies }
func (f *fixed) Info() *snoopv1.GetDaemonInfoResponse { return f.info }

func sampleSource() *fixed {
	return &fixed{
		info: &snoopv1.GetDaemonInfoResponse{
			Version: "1.2.3", StartTime: timestamppb.New(time.Unix(1700000000, 500_000_000)),
			Proxies: 2, Watchers: 3, EventsPublished: 12345,
		},
		proxies: []*snoopv1.Proxy{
			{
				Spec:          &snoopv1.ProxySpec{Name: "a", Listen: "IP:127.0.0.1:0", Server: "UNIX:/run/dc.sock"},
				ListenAddress: "IP:127.0.0.1:4100",
				State:         snoopv1.ProxyState_PROXY_STATE_LISTENING,
				Counters: &snoopv1.ProxyCounters{
					ConnectionsActive: 2, ConnectionsTotal: 40, ConnectionsRefused: 1, ConnectFailures: 3,
					ProtocolErrors: 4, Timeouts: 5, LoopRefusals: 6, BytesUp: 1000, BytesDown: 2000, FramesUp: 10, FramesDown: 11,
					Transactions: 9,
					Ops: []*snoopv1.OpCounters{
						{Op: snoopv1.Op_OP_ADD, Count: 2, Results: map[string]int64{"ok": 1, "exists": 1}},
						{Op: snoopv1.Op_OP_GET, Count: 7, Results: map[string]int64{"hit": 5, "miss": 2}},
					},
					Latency: &snoopv1.LatencySummary{
						Count: 9,
						Mean:  durationpb.New(2 * time.Millisecond),
						P50:   durationpb.New(time.Millisecond),
						P90:   durationpb.New(4 * time.Millisecond),
						P99:   durationpb.New(8 * time.Millisecond),
						Max:   durationpb.New(9 * time.Millisecond),
					},
				},
			},
			{
				Spec:          &snoopv1.ProxySpec{Name: "b", Listen: "UNIX:/run/b.sock", Server: "IP:10.0.0.1:9000"},
				ListenAddress: "UNIX:/run/b.sock",
				State:         snoopv1.ProxyState_PROXY_STATE_FAILED,
				Counters:      &snoopv1.ProxyCounters{Latency: &snoopv1.LatencySummary{Mean: durationpb.New(0), Max: durationpb.New(0)}},
			},
		},
	}
}

func TestCollectorValues(t *testing.T) {
	c := metrics.NewCollector(sampleSource())
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
snoopd_proxy_latency_seconds{proxy="a",quantile="0.5"} 0.001
snoopd_proxy_latency_seconds{proxy="a",quantile="0.9"} 0.004
snoopd_proxy_latency_seconds{proxy="a",quantile="0.99"} 0.008
snoopd_proxy_latency_seconds_sum{proxy="a"} 0.018
snoopd_proxy_latency_seconds_count{proxy="a"} 9
snoopd_proxy_latency_seconds_sum{proxy="b"} 0
snoopd_proxy_latency_seconds_count{proxy="b"} 0
# HELP snoopd_proxy_latency_max_seconds The slowest answered transaction.
# TYPE snoopd_proxy_latency_max_seconds gauge
snoopd_proxy_latency_max_seconds{proxy="a"} 0.009
snoopd_proxy_latency_max_seconds{proxy="b"} 0
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want)); err != nil {
		t.Fatal(err)
	}
}

func TestCollectorLint(t *testing.T) {
	problems, err := testutil.CollectAndLint(metrics.NewCollector(sampleSource()))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
}

func TestCollectorNoProxies(t *testing.T) {
	src := &fixed{info: &snoopv1.GetDaemonInfoResponse{Version: "v"}}
	c := metrics.NewCollector(src)
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

	c := metrics.NewCollector(d)
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

// withHistograms is a fixed Source that also hands out raw histograms.
type withHistograms struct {
	*fixed
	h map[string]*histogram.Snapshot
}

func (w *withHistograms) LatencyHistograms() map[string]*histogram.Snapshot { return w.h }

var _ metrics.HistogramSource = (*daemon.Daemon)(nil)

func TestCollectorHistogram(t *testing.T) {
	var h histogram.Snapshot
	h.Record(30 * time.Microsecond)
	h.Record(40 * time.Microsecond)
	h.Record(2 * time.Millisecond)
	src := &withHistograms{fixed: &fixed{info: &snoopv1.GetDaemonInfoResponse{}}, h: map[string]*histogram.Snapshot{"a": &h}}
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
	if err := testutil.CollectAndCompare(metrics.NewCollector(src), strings.NewReader(want), "snoopd_proxy_transaction_duration_seconds"); err != nil {
		t.Error(err)
	}
}
