package metrics

import (
	"bufio"
	"compress/gzip"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"

	"github.com/snoopd/snoopd/daemon"
	"github.com/snoopd/snoopd/distcache"
	"github.com/snoopd/snoopd/internal/histogram"
	"github.com/snoopd/snoopd/proxy"
)

// Options configure NewHandler.
type Options struct {
	// Histograms selects the latency histograms exported.
	Histograms Histograms
	// Log receives the errors of collecting and writing; nil discards
	// them.
	Log *slog.Logger
}

// maxInFlight bounds the scrapes served at once, so a flood of scrapes
// cannot pile up walks of the proxies; the ones over it get 503.
const maxInFlight = 4

// writeBuffer is the size of a scrape's buffer between the exposition and
// the connection (or the gzip stream).
const writeBuffer = 32 << 10

// textFormat is the exposition's content type: the text format 0.0.4.
var textFormat = string(expfmt.NewFormat(expfmt.TypeTextPlain))

// NewHandler serves the metrics of src in the Prometheus text format,
// gzipped when the client accepts it (as Prometheus does). It writes the
// exposition straight to the response through a buffer of fixed size,
// one family at a time, reading the proxies one at a time for each
// (Source.EachProxy), so a scrape holds neither the body nor every
// proxy's figures, and concurrent scrapes each hold only their buffers.
// The export counters and the Go runtime and process metrics, whose size
// does not depend on the proxies, go through client_golang's registry.
// Errors in collecting those are logged and the rest is still served.
func NewHandler(src Source, o Options) http.Handler {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	return &handler{src: src, opts: o, extras: extrasRegistry(src), sem: make(chan struct{}, maxInFlight)}
}

type handler struct {
	src    Source
	opts   Options
	extras prometheus.Gatherer
	sem    chan struct{}
}

var (
	bufPool  = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, writeBuffer) }}
	gzipPool = sync.Pool{New: func() any { return gzip.NewWriter(nil) }}
)

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	select {
	case h.sem <- struct{}{}:
		defer func() { <-h.sem }()
	default:
		http.Error(w, "Limit of concurrent requests reached ("+strconv.Itoa(maxInFlight)+"), try again later.", http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", textFormat)
	var out io.Writer = w
	var gz *gzip.Writer
	if acceptsGzip(r.Header.Get("Accept-Encoding")) {
		w.Header().Set("Content-Encoding", "gzip")
		gz = gzipPool.Get().(*gzip.Writer)
		gz.Reset(w)
		defer gzipPool.Put(gz)
		out = gz
	}
	w.Header().Add("Vary", "Accept-Encoding")
	bw := bufPool.Get().(*bufio.Writer)
	bw.Reset(out)
	defer func() {
		bw.Reset(nil) // drop the response before pooling
		bufPool.Put(bw)
	}()
	t := &textWriter{w: bw}
	h.write(t)
	if t.err == nil {
		t.err = bw.Flush()
	}
	if gz != nil {
		if err := gz.Close(); t.err == nil {
			t.err = err
		}
		gz.Reset(io.Discard)
	}
	if t.err != nil {
		// Most often the scraper gave up (its timeout) and closed.
		h.opts.Log.Debug("metrics scrape cut short", "err", t.err)
	}
}

// acceptsGzip reports whether an Accept-Encoding value admits gzip.
func acceptsGzip(v string) bool {
	for part := range strings.SplitSeq(v, ",") {
		coding, params, _ := strings.Cut(part, ";")
		if !strings.EqualFold(strings.TrimSpace(coding), "gzip") {
			continue
		}
		q, ok := strings.CutPrefix(strings.TrimSpace(params), "q=")
		if !ok {
			return true
		}
		f, err := strconv.ParseFloat(q, 64)
		return err == nil && f > 0
	}
	return false
}

// write writes the whole exposition to t.
func (h *handler) write(t *textWriter) {
	st := h.src.Stats()
	t.begin(famBuildInfo)
	t.sample(famBuildInfo.name, 1, "version", st.Version)
	if !st.Started.IsZero() {
		t.begin(famStartTime)
		t.sample(famStartTime.name, float64(st.Started.UnixNano())/1e9)
	}
	t.begin(famProxies)
	t.sample(famProxies.name, float64(st.Proxies))
	t.begin(famWatchers)
	t.sample(famWatchers.name, float64(st.Watchers))
	t.begin(famPublished)
	t.sample(famPublished.name, float64(st.EventsPublished))

	// One walk of the proxies per family: the text format wants each
	// family's samples together, and a walk without the histograms is a
	// few atomic loads per proxy.
	each := func(f *family, latency bool, write func(p *daemon.ProxyStats)) {
		t.begin(f)
		h.src.EachProxy(latency, func(p *daemon.ProxyStats) bool {
			write(p)
			return t.err == nil
		})
	}
	each(famInfo, false, func(p *daemon.ProxyStats) {
		t.sample(famInfo.name, 1, "listen_address", p.Listen, "proxy", p.Name, "server", p.Server)
	})
	each(famState, false, func(p *daemon.ProxyStats) {
		for _, s := range daemon.ProxyStates() {
			v := 0.0
			if p.State == s {
				v = 1
			}
			t.sample(famState.name, v, "proxy", p.Name, "state", s.String())
		}
	})
	each(famCondition, false, func(p *daemon.ProxyStats) {
		for _, name := range proxy.KnownConditions {
			v := 0.0
			if slices.Contains(p.Conditions, name) {
				v = 1
			}
			t.sample(famCondition.name, v, "condition", name, "proxy", p.Name)
		}
	})
	for _, s := range scalars {
		each(s.f, false, func(p *daemon.ProxyStats) { t.sample(s.f.name, s.v(p), "proxy", p.Name) })
	}
	for _, s := range tapScalars {
		each(s.f, false, func(p *daemon.ProxyStats) {
			if p.Tap != nil {
				t.sample(s.f.name, s.v(p), "proxy", p.Name)
			}
		})
	}
	each(famBytes, false, func(p *daemon.ProxyStats) {
		t.sample(famBytes.name, float64(p.Stats.BytesDown), "direction", "down", "proxy", p.Name)
		t.sample(famBytes.name, float64(p.Stats.BytesUp), "direction", "up", "proxy", p.Name)
	})
	each(famFrames, false, func(p *daemon.ProxyStats) {
		t.sample(famFrames.name, float64(p.Stats.FramesDown), "direction", "down", "proxy", p.Name)
		t.sample(famFrames.name, float64(p.Stats.FramesUp), "direction", "up", "proxy", p.Name)
	})
	// Reused from proxy to proxy: the ops, and the result names of one op,
	// sorted.
	var ops []distcache.Op
	var results []string
	each(famTransactions, false, func(p *daemon.ProxyStats) {
		ops = ops[:0]
		for op := range p.Stats.Results {
			ops = append(ops, op)
		}
		slices.Sort(ops)
		for _, op := range ops {
			m := p.Stats.Results[op]
			results = results[:0]
			for r := range m {
				results = append(results, r)
			}
			slices.Sort(results)
			for _, r := range results {
				t.sample(famTransactions.name, float64(m[r]), "op", opLabel(op), "proxy", p.Name, "result", r)
			}
		}
	})
	each(famFaultMatched, false, func(p *daemon.ProxyStats) {
		for _, f := range p.Stats.Faults {
			t.sample(famFaultMatched.name, float64(f.Matched), "fault", f.Name, "proxy", p.Name)
		}
	})
	each(famFaultApplied, false, func(p *daemon.ProxyStats) {
		for _, f := range p.Stats.Faults {
			t.sample(famFaultApplied.name, float64(f.Applied), "fault", f.Name, "proxy", p.Name)
		}
	})
	// The daemon-wide histograms are summed during the summary's walk,
	// which reads the histograms anyway, and written after it.
	var byOp *[distcache.NumOps]histogram.Snapshot
	if h.opts.Histograms != HistogramsNone {
		byOp = new([distcache.NumOps]histogram.Snapshot)
	}
	each(famLatency, true, func(p *daemon.ProxyStats) {
		lat := &p.Stats.Latency
		if lat.Count > 0 {
			// An empty summary has no quantiles rather than made-up zeros.
			for i, q := range quantiles {
				t.sample(famLatency.name, lat.Quantile(q).Seconds(), "proxy", p.Name, "quantile", quantileLabels[i])
			}
		}
		t.sampleSuffixed(famLatency.name, "_sum", lat.Sum.Seconds(), "proxy", p.Name)
		t.sampleSuffixed(famLatency.name, "_count", float64(lat.Count), "proxy", p.Name)
		if byOp != nil {
			for op := range byOp {
				byOp[op].Merge(&p.Stats.LatencyOf[op])
			}
		}
	})
	each(famLatencyMax, true, func(p *daemon.ProxyStats) {
		t.sample(famLatencyMax.name, p.Stats.Latency.Max.Seconds(), "proxy", p.Name)
	})
	if h.opts.Histograms == HistogramsProxies {
		each(famDuration, true, func(p *daemon.ProxyStats) { t.histogram(famDuration.name, &p.Stats.Latency, "proxy", p.Name) })
	}
	if byOp != nil {
		t.begin(famOpsDur)
		for op := range byOp {
			t.histogram(famOpsDur.name, &byOp[op], "op", opLabel(distcache.Op(op)))
		}
	}

	if t.err != nil {
		return
	}
	mfs, err := h.extras.Gather()
	if err != nil {
		// Gather returns what it could collect beside the error.
		h.opts.Log.Warn("collecting metrics", "err", err)
	}
	for _, mf := range mfs {
		if _, err := expfmt.MetricFamilyToText(t.w, mf); err != nil {
			t.err = err
			return
		}
	}
}

// textWriter writes the text exposition format: the same lines as
// expfmt's encoder, a family's HELP and TYPE written before its first
// sample (a family without samples is left out, as the registry does).
// The first write error sticks and makes the rest no-ops.
type textWriter struct {
	w       *bufio.Writer
	err     error
	pending *family
	num     [64]byte
}

// begin starts a family; its header is written with its first sample.
func (t *textWriter) begin(f *family) { t.pending = f }

// sample writes one sample of name; labels are name, value pairs, in
// name order.
func (t *textWriter) sample(name string, v float64, labels ...string) {
	t.sampleSuffixed(name, "", v, labels...)
}

// sampleSuffixed writes one sample of name+suffix (_sum, _count, _bucket).
func (t *textWriter) sampleSuffixed(name, suffix string, v float64, labels ...string) {
	if t.err != nil {
		return
	}
	if f := t.pending; f != nil {
		t.pending = nil
		t.w.WriteString("# HELP ")
		t.w.WriteString(f.name)
		t.w.WriteByte(' ')
		helpEscaper.WriteString(t.w, f.help)
		t.w.WriteString("\n# TYPE ")
		t.w.WriteString(f.name)
		t.w.WriteByte(' ')
		t.w.WriteString(f.typ)
		t.w.WriteByte('\n')
	}
	t.w.WriteString(name)
	t.w.WriteString(suffix)
	for i := 0; i+1 < len(labels); i += 2 {
		if i == 0 {
			t.w.WriteByte('{')
		} else {
			t.w.WriteByte(',')
		}
		t.w.WriteString(labels[i])
		t.w.WriteString(`="`)
		labelEscaper.WriteString(t.w, labels[i+1])
		t.w.WriteByte('"')
	}
	if len(labels) > 0 {
		t.w.WriteByte('}')
	}
	t.w.WriteByte(' ')
	t.w.Write(appendFloat(t.num[:0], v))
	// bufio.Writer's errors stick: the last write reports any.
	t.err = t.w.WriteByte('\n')
}

// histogram writes a latency histogram as the exported buckets, _sum and
// _count; labels come before le.
func (t *textWriter) histogram(name string, h *histogram.Snapshot, labels ...string) {
	cum := foldBuckets(h)
	var buf [4]string
	withLe := append(append(buf[:0], labels...), "le", "")
	for i := range durationBuckets {
		withLe[len(withLe)-1] = leLabels[i]
		t.sampleSuffixed(name, "_bucket", float64(cum[i]), withLe...)
	}
	withLe[len(withLe)-1] = "+Inf"
	t.sampleSuffixed(name, "_bucket", float64(h.Count), withLe...)
	t.sampleSuffixed(name, "_sum", h.Sum.Seconds(), labels...)
	t.sampleSuffixed(name, "_count", float64(h.Count), labels...)
}

// leLabels and quantileLabels are the bounds and quantiles as label
// values, formatted once.
var (
	leLabels       [len(durationBuckets)]string
	quantileLabels [len(quantiles)]string
)

func init() {
	for i, b := range durationBuckets {
		leLabels[i] = formatFloat(b)
	}
	for i, q := range quantiles {
		quantileLabels[i] = formatFloat(q)
	}
}

var (
	helpEscaper  = strings.NewReplacer(`\`, `\\`, "\n", `\n`)
	labelEscaper = strings.NewReplacer(`\`, `\\`, "\n", `\n`, `"`, `\"`)
)

// appendFloat formats a sample's value as expfmt does.
func appendFloat(b []byte, f float64) []byte {
	return strconv.AppendFloat(b, f, 'g', -1, 64)
}

// formatFloat is appendFloat as a string, for the le and quantile labels.
func formatFloat(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) }
