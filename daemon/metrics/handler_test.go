package metrics_test

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/snoopd/snoopd/daemon"
	"github.com/snoopd/snoopd/daemon/metrics"
	"github.com/snoopd/snoopd/distcache"
	"github.com/snoopd/snoopd/internal/histogram"
	"github.com/snoopd/snoopd/proxy"
)

// richSource has what the sample lacks: per-op histograms that add up to
// the proxy's, faults, an op-less transaction, label values that need
// escaping, and latencies past the last bucket.
func richSource() *fixed {
	src := sampleSource()
	ms := time.Millisecond
	var ops [distcache.NumOps]histogram.Snapshot
	ops[distcache.OpGet] = latencies(20*time.Microsecond, ms, 3*ms, 40*time.Second)
	ops[distcache.OpAdd] = latencies(ms/3, 700*ms)
	var all histogram.Snapshot
	for op := range ops {
		all.Merge(&ops[op])
	}
	src.proxies = append(src.proxies, daemon.ProxyStats{
		Name: `odd "name"\with` + "\nnewline", Listen: "IP:127.0.0.1:5000", Server: "IP:127.0.0.1:5001",
		State: daemon.ProxyDisabled,
		Stats: proxy.Stats{
			ConnsTotal: 3, BytesUp: 1 << 40,
			Results: map[distcache.Op]map[string]int64{
				distcache.OpGet:  {"hit": 2, "miss": 1, "unanswered": 1},
				distcache.OpAdd:  {"ok": 2},
				distcache.NumOps: {"orphan": 4},
			},
			Latency: all, LatencyOf: ops,
			Faults: []proxy.FaultStats{{Name: "slow", Matched: 10, Applied: 3}, {Name: "drop", Matched: 1}},
		},
	})
	src.proxies = append(src.proxies, tapStats())
	src.stats.Proxies = len(src.proxies)
	return src
}

// tapStats is a tap as EachProxy reads it.
func tapStats() daemon.ProxyStats {
	return daemon.ProxyStats{
		Name: "lo-tap", Server: "IP:127.0.0.1:9000", State: daemon.ProxyListening,
		Stats: proxy.Stats{ConnsTotal: 2, Resyncs: 5, ResyncSkippedBytes: 600,
			Results: map[distcache.Op]map[string]int64{distcache.OpGet: {"hit": 7}}},
		Tap: &daemon.TapStats{Interface: "lo", KernelPackets: 100, KernelDrops: 1, CaptureGaps: 2, CaptureMissingBytes: 300,
			Resyncs: 5, ResyncSkippedBytes: 600, ReadErrors: 3, LastReadError: "interface went down"},
	}
}

// scrape serves one request to h and returns the body, ungzipped if the
// response was.
func scrape(t *testing.T, h http.Handler, acceptEncoding string) (string, http.Header) {
	t.Helper()
	req := httptest.NewRequest("GET", "/metrics", nil)
	if acceptEncoding != "" {
		req.Header.Set("Accept-Encoding", acceptEncoding)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	body := rec.Body.Bytes()
	if rec.Header().Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if body, err = io.ReadAll(zr); err != nil {
			t.Fatal(err)
		}
	}
	return string(body), rec.Header()
}

// normalize parses a text exposition and writes it back family by
// family in name order, each family's samples sorted, so two expositions
// that say the same compare equal whatever their order.
func normalize(t *testing.T, text string, keep func(name string) bool) string {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		t.Fatalf("parsing the exposition: %v\n%s", err, text)
	}
	var names []string
	for name := range mfs {
		if keep(name) {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	var out strings.Builder
	for _, name := range names {
		mf := mfs[name]
		for _, m := range mf.Metric {
			slices.SortFunc(m.Label, func(a, b *dto.LabelPair) int { return strings.Compare(a.GetName(), b.GetName()) })
		}
		slices.SortFunc(mf.Metric, func(a, b *dto.Metric) int { return strings.Compare(a.String(), b.String()) })
		if _, err := expfmt.MetricFamilyToText(&out, mf); err != nil {
			t.Fatal(err)
		}
	}
	return out.String()
}

func snoopdOnly(name string) bool {
	return strings.HasPrefix(name, "snoopd_") && !strings.HasPrefix(name, "snoopd_export_")
}

// collectorText is the exposition client_golang writes for a Collector.
func collectorText(t *testing.T, src metrics.Source, h metrics.Histograms) string {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(metrics.NewCollector(src, h))
	var buf bytes.Buffer
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if _, err := expfmt.MetricFamilyToText(&buf, mf); err != nil {
			t.Fatal(err)
		}
	}
	return buf.String()
}

// TestHandlerWritesWhatTheCollectorBuilds holds the handler's hand-written
// exposition to client_golang's rendering of the Collector, for each
// histogram choice, plain and gzipped.
func TestHandlerWritesWhatTheCollectorBuilds(t *testing.T) {
	for _, h := range []metrics.Histograms{metrics.HistogramsNone, metrics.HistogramsOps, metrics.HistogramsProxies} {
		for name, src := range map[string]*fixed{"sample": sampleSource(), "rich": richSource(), "empty": {stats: daemon.Stats{Version: "v"}}} {
			t.Run(h.String()+"/"+name, func(t *testing.T) {
				want := normalize(t, collectorText(t, src, h), snoopdOnly)
				handler := metrics.NewHandler(src, metrics.Options{Histograms: h})
				for _, enc := range []string{"", "gzip"} {
					body, hdr := scrape(t, handler, enc)
					if got := normalize(t, body, snoopdOnly); got != want {
						t.Errorf("Accept-Encoding %q: the handler's exposition differs from the collector's\n--- handler\n%s\n--- collector\n%s", enc, got, want)
					}
					if (enc == "gzip") != (hdr.Get("Content-Encoding") == "gzip") {
						t.Errorf("Accept-Encoding %q: Content-Encoding %q", enc, hdr.Get("Content-Encoding"))
					}
					if ct := hdr.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain; version=0.0.4") {
						t.Errorf("Content-Type %q", ct)
					}
				}
			})
		}
	}
}

// TestHandlerHistogramChoice checks which histogram families each choice
// exports, and that the rest of the exposition (the Go runtime and
// process metrics among it) is there whatever the choice.
func TestHandlerHistogramChoice(t *testing.T) {
	for _, tc := range []struct {
		h               metrics.Histograms
		perProxy, perOp bool
	}{
		{metrics.HistogramsNone, false, false},
		{metrics.HistogramsOps, false, true},
		{metrics.HistogramsProxies, true, true},
	} {
		body, _ := scrape(t, metrics.NewHandler(richSource(), metrics.Options{Histograms: tc.h}), "")
		has := func(s string) bool { return strings.Contains(body, s) }
		if got := has("\nsnoopd_proxy_transaction_duration_seconds_bucket{"); got != tc.perProxy {
			t.Errorf("%s: per-proxy histogram present: %v, want %v", tc.h, got, tc.perProxy)
		}
		if got := has(`snoopd_transaction_duration_seconds_bucket{op="get",le="0.0025"} 2`); got != tc.perOp {
			t.Errorf("%s: per-op histogram present: %v, want %v", tc.h, got, tc.perOp)
		}
		for _, want := range []string{`snoopd_proxy_latency_seconds_count{proxy="a"} 9`, "\ngo_goroutines ", "\nprocess_open_fds ", "\nsnoopd_build_info{"} {
			if !has(want) {
				t.Errorf("%s: lacks %q", tc.h, want)
			}
		}
	}
}

func TestParseHistograms(t *testing.T) {
	for _, h := range []metrics.Histograms{metrics.HistogramsNone, metrics.HistogramsOps, metrics.HistogramsProxies} {
		if got, err := metrics.ParseHistograms(h.String()); err != nil || got != h {
			t.Errorf("ParseHistograms(%q) = %v, %v", h.String(), got, err)
		}
	}
	if _, err := metrics.ParseHistograms("all"); err == nil {
		t.Error("ParseHistograms(all) took it")
	}
}

// manyProxies is a source of n idle proxies.
func manyProxies(n int) *fixed {
	src := &fixed{stats: daemon.Stats{Version: "v", Proxies: n}}
	for i := range n {
		src.proxies = append(src.proxies, daemon.ProxyStats{
			Name: fmt.Sprintf("p%05d", i), Listen: "IP:127.0.0.1:1", Server: "IP:127.0.0.1:2", State: daemon.ProxyListening,
			Stats: proxy.Stats{Results: map[distcache.Op]map[string]int64{distcache.OpGet: {"hit": int64(i)}}},
		})
	}
	return src
}

// countingWriter is a ResponseWriter that counts what reaches it and the
// largest single write.
type countingWriter struct {
	hdr             http.Header
	written, widest int
}

func (w *countingWriter) Header() http.Header { return w.hdr }
func (w *countingWriter) WriteHeader(int)     {}
func (w *countingWriter) Write(b []byte) (int, error) {
	w.written += len(b)
	w.widest = max(w.widest, len(b))
	return len(b), nil
}

// watched is a source that notes how much of the response was written
// when the first walk of the proxies reached its last proxy.
type watched struct {
	*fixed
	w             *countingWriter
	walks         int
	writtenAtLast int
}

func (s *watched) EachProxy(latency bool, f func(*daemon.ProxyStats) bool) {
	s.walks++
	n := 0
	s.fixed.EachProxy(latency, func(p *daemon.ProxyStats) bool {
		if n++; n == len(s.proxies) && s.walks == 1 {
			s.writtenAtLast = s.w.written
		}
		return f(p)
	})
}

// TestHandlerStreamsThroughABoundedBuffer checks that the exposition
// reaches the connection while the proxies are being read, in writes no
// larger than the buffer, rather than after the whole body was built.
func TestHandlerStreamsThroughABoundedBuffer(t *testing.T) {
	const n = 3000
	w := &countingWriter{hdr: http.Header{}}
	src := &watched{fixed: manyProxies(n), w: w}
	metrics.NewHandler(src, metrics.Options{Histograms: metrics.HistogramsProxies}).ServeHTTP(w, httptest.NewRequest("GET", "/metrics", nil))
	// The first family alone is about 100 bytes a proxy.
	if src.writtenAtLast < 100*n/2 {
		t.Errorf("when the first walk reached the last proxy, %d bytes had been written; want the family's lines already out", src.writtenAtLast)
	}
	if w.widest > 64<<10 {
		t.Errorf("a write of %d bytes: the buffer is not bounded", w.widest)
	}
	if w.written < 2000*n {
		t.Errorf("%d bytes in all for %d proxies with their histograms; want more than 2000 a proxy", w.written, n)
	}
}

// allocated is the bytes allocated by one scrape of h.
func allocated(t *testing.T, h http.Handler) uint64 {
	t.Helper()
	req := httptest.NewRequest("GET", "/metrics", nil)
	req.Header.Set("Accept-Encoding", "gzip")
	h.ServeHTTP(&countingWriter{hdr: http.Header{}}, req) // the pools filled
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	h.ServeHTTP(&countingWriter{hdr: http.Header{}}, req)
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// TestHandlerAllocationDoesNotGrowWithProxies compares what a scrape
// allocates with 100 and with 3,000 proxies: the per-proxy families are
// written from one reused read, so the difference stays small, where
// building them as client_golang metrics costs kilobytes a proxy.
func TestHandlerAllocationDoesNotGrowWithProxies(t *testing.T) {
	small := allocated(t, metrics.NewHandler(manyProxies(100), metrics.Options{Histograms: metrics.HistogramsProxies}))
	big := allocated(t, metrics.NewHandler(manyProxies(3000), metrics.Options{Histograms: metrics.HistogramsProxies}))
	t.Logf("allocated per scrape: %d bytes with 100 proxies, %d with 3,000", small, big)
	if big > small+1<<20 {
		t.Errorf("a scrape of 3,000 proxies allocates %d bytes, one of 100 %d: it grows with the proxies", big, small)
	}
}

func TestHandlerRefusesOverTheInFlightLimit(t *testing.T) {
	block := make(chan struct{})
	entered := make(chan struct{}, 8)
	src := &blocking{fixed: sampleSource(), entered: entered, block: block}
	h := metrics.NewHandler(src, metrics.Options{})
	done := make(chan struct{})
	for range 4 {
		go func() {
			defer func() { done <- struct{}{} }()
			h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/metrics", nil))
		}()
	}
	for range 4 {
		<-entered
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	close(block)
	for range 4 {
		<-done
	}
	if rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("a fifth concurrent scrape: status %d, want 503", rec.Code)
	}
}

// blocking is a source whose Stats waits until block is closed.
type blocking struct {
	*fixed
	entered chan struct{}
	block   chan struct{}
}

func (b *blocking) Stats() daemon.Stats {
	b.entered <- struct{}{}
	<-b.block
	return b.fixed.Stats()
}
