package top

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
	"github.com/snoopd/snoopd/internal/apiconv"
	"github.com/snoopd/snoopd/internal/histogram"
)

var t0 = time.Date(2026, 3, 14, 15, 0, 0, 0, time.UTC)

// counters is one proxy's cumulative state for a test snapshot.
type counters struct {
	name, instance string
	gets           map[string]int64 // GET results
	getLat         []time.Duration  // every GET latency so far
	refused        int64
	up, down       int64
}

func (c counters) proxy() *snoopv1.Proxy {
	var h histogram.Snapshot
	for _, d := range c.getLat {
		h.Record(d)
	}
	var n int64
	for _, k := range c.gets {
		n += k
	}
	return &snoopv1.Proxy{
		Spec:       &snoopv1.ProxySpec{Name: c.name},
		State:      snoopv1.ProxyState_PROXY_STATE_LISTENING,
		InstanceId: c.instance,
		CreateTime: timestamppb.New(t0.Add(-10 * time.Second)),
		Counters: &snoopv1.ProxyCounters{
			Transactions: n, ConnectionsRefused: c.refused, BytesUp: c.up, BytesDown: c.down,
			Histogram: apiconv.Histogram(&h),
			Ops: []*snoopv1.OpCounters{{Op: snoopv1.Op_OP_GET, Count: n, Results: c.gets,
				Histogram: apiconv.Histogram(&h)}},
		},
	}
}

func snap(at time.Time, cs ...counters) *Snapshot {
	s := &Snapshot{At: at, Source: "d", Started: t0.Add(-time.Hour)}
	for _, c := range cs {
		s.Proxies = append(s.Proxies, c.proxy())
	}
	return s
}

func repeat(d time.Duration, n int) []time.Duration {
	out := make([]time.Duration, n)
	for i := range out {
		out[i] = d
	}
	return out
}

// TestFrameInterval checks the interval's numbers against what happened
// between two snapshots: rates, hit ratio, errors, percentiles of the
// interval only, and a proxy created again counted from its creation.
func TestFrameInterval(t *testing.T) {
	a1 := counters{name: "a", instance: "1", gets: map[string]int64{"hit": 90, "miss": 10}, getLat: repeat(10*time.Millisecond, 100), up: 1000, down: 5000}
	b1 := counters{name: "b", instance: "1", gets: map[string]int64{"hit": 5}, getLat: repeat(time.Millisecond, 5)}
	first := NewFrame(nil, snap(t0, a1, b1))
	if first.Interval != 0 || first.Rows[0].Span != 10*time.Second || first.Rows[0].Ops != 100 {
		t.Fatalf("first frame: interval %v, row %+v", first.Interval, first.Rows[0])
	}
	if first.Uptime != time.Hour {
		t.Errorf("uptime %v", first.Uptime)
	}

	// Two seconds later: a did 200 GETs at 100µs (150 hits, 50 misses), 2
	// refusals and a protocol-error-free 4000 bytes up; b was deleted and
	// created again, with 3 GETs since.
	a2 := a1
	a2.gets = map[string]int64{"hit": 240, "miss": 60}
	a2.getLat = append(append([]time.Duration(nil), a1.getLat...), repeat(100*time.Microsecond, 200)...)
	a2.refused, a2.up, a2.down = 2, 5000, 9000
	b2 := counters{name: "b", instance: "2", gets: map[string]int64{"hit": 3}, getLat: repeat(2*time.Millisecond, 3)}
	f := NewFrame(snap(t0, a1, b1), snap(t0.Add(2*time.Second), a2, b2))
	if f.Interval != 2*time.Second {
		t.Fatalf("interval %v", f.Interval)
	}
	a := f.Rows[0]
	if a.Ops != 200 || a.Rate(a.Ops) != 100 || a.Errors != 2 || a.Rate(a.UpBytes) != 2000 || a.Rate(a.DownBytes) != 2000 {
		t.Errorf("a: %+v", a)
	}
	if h, ok := a.HitRatio(); !ok || h != 0.75 {
		t.Errorf("a's hit ratio %v %v, want 0.75 over the interval", h, ok)
	}
	// The interval's latency is the 200 fast GETs only, not the old slow ones.
	if a.Latency.Count != 200 || a.Latency.P99 > 110*time.Microsecond || a.Latency.P50 < 95*time.Microsecond {
		t.Errorf("a's interval latency %+v", a.Latency)
	}
	if len(a.ByOp) != 1 || a.ByOp[0].Count != 200 || a.ByOp[0].Results["hit"] != 150 || a.ByOp[0].Latency.Count != 200 {
		t.Errorf("a's GET row %+v", a.ByOp)
	}
	if s := a.SinceStart(); s.Count != 300 {
		t.Errorf("a since the start: %d samples, want 300", s.Count)
	}
	b := f.Rows[1]
	if b.Span != 12*time.Second || b.Ops != 3 || b.Latency.Count != 3 {
		t.Errorf("b, created again: %+v, want counted from its creation 12s ago", b)
	}
	if f.Totals.Proxies != 2 || f.Totals.Listening != 2 || f.Totals.Transactions != 303 || f.Totals.Errors != 2 {
		t.Errorf("totals %+v", f.Totals)
	}

	// Sorting and filtering.
	rows := append([]Row(nil), f.Rows...)
	SortRows(rows, defaultSort, true)
	if rows[0].Name != "a" {
		t.Errorf("busiest first: %s", rows[0].Name)
	}
	SortRows(rows, columnByKey("5"), true) // P50, slowest first
	if rows[0].Name != "b" {
		t.Errorf("slowest first: %s", rows[0].Name)
	}
	if got := FilterRows(rows, "B"); len(got) != 1 || got[0].Name != "b" {
		t.Errorf("filter: %v", got)
	}

	// Batch output.
	var buf bytes.Buffer
	if err := WriteText(&buf, f); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), "over 2.00s") || !strings.Contains(buf.String(), "100.0   75.0") {
		t.Errorf("text:\n%s", buf.String())
	}
	js, err := FrameJSON(f)
	if err != nil {
		t.Fatal(err)
	}
	var back struct {
		Proxies []struct {
			Name      string  `json:"name"`
			OpsPerSec float64 `json:"ops_per_sec"`
			HitRatio  float64 `json:"hit_ratio"`
		} `json:"proxies"`
	}
	if err := json.Unmarshal(js, &back); err != nil || back.Proxies[0].OpsPerSec != 100 || back.Proxies[0].HitRatio != 0.75 {
		t.Errorf("json %s: %v", js, err)
	}
}
