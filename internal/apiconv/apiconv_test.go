package apiconv

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/snoopd/snoopd/distcache"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
	"github.com/snoopd/snoopd/internal/histogram"
	"github.com/snoopd/snoopd/vocab"
)

func TestLatencySummary(t *testing.T) {
	var h histogram.Snapshot
	if s := LatencySummary(&h); s.GetCount() != 0 || s.GetP50() != nil {
		t.Errorf("empty: %v", s)
	}
	for i := 1; i <= 100; i++ {
		h.Record(time.Duration(i) * time.Millisecond)
	}
	s := LatencySummary(&h)
	if s.GetCount() != 100 || s.GetMax().AsDuration() != 100*time.Millisecond || s.GetMean().AsDuration() != 50500*time.Microsecond {
		t.Errorf("summary: %v", s)
	}
	if p := s.GetP50().AsDuration(); p < 48*time.Millisecond || p > 52*time.Millisecond {
		t.Errorf("p50 %v", p)
	}
}

// A histogram survives the API's buckets: counts per bucket and the
// percentiles read from them.
func TestHistogramRoundTrip(t *testing.T) {
	var h histogram.Snapshot
	for i := range 5000 {
		h.Record(time.Duration(i*i) * time.Nanosecond)
	}
	back := HistogramFromAPI(Histogram(&h))
	if back.Count != h.Count {
		t.Fatalf("count %d, want %d", back.Count, h.Count)
	}
	for _, q := range []float64{0.5, 0.9, 0.99} {
		if a, b := h.Quantile(q), back.Quantile(q); a != b {
			t.Errorf("p%v: %v after the round trip, %v before", q*100, b, a)
		}
	}
}

func TestSpecFromRequestOperations(t *testing.T) {
	s, err := SpecFromRequest(&snoopv1.WatchEventsRequest{Ops: []snoopv1.Op{snoopv1.Op_OP_GET}, Operations: []string{"GET", "op_have", "Add"}})
	if err != nil {
		t.Fatal(err)
	}
	if want := []distcache.Op{distcache.OpGet, distcache.OpHave, distcache.OpAdd}; !slices.Equal(s.Ops, want) {
		t.Errorf("ops %v, want %v", s.Ops, want)
	}
	for _, tc := range []struct {
		req  *snoopv1.WatchEventsRequest
		want string
	}{
		{&snoopv1.WatchEventsRequest{Operations: []string{"get", "OP_"}}, `operations[1]: unknown operation "OP_"`},
		{&snoopv1.WatchEventsRequest{Ops: []snoopv1.Op{snoopv1.Op_OP_ADD, 0}}, `ops[1]: 0 is not an operation; a client library sends 0`},
		{&snoopv1.WatchEventsRequest{Ops: []snoopv1.Op{12}}, `ops[0]: 12 is not an operation number`},
	} {
		if _, err := SpecFromRequest(tc.req); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: got %v, want %q", tc.req, err, tc.want)
		}
	}
}

// Sparse samples (empty buckets between the full ones) come back in their
// own buckets, not at the end of the bucket before.
func TestHistogramRoundTripSparse(t *testing.T) {
	var h histogram.Snapshot
	h.RecordN(120*time.Microsecond, 400)
	h.RecordN(15*time.Millisecond, 9)
	back := HistogramFromAPI(Histogram(&h))
	var before, after []time.Duration
	h.Buckets(func(u time.Duration, _ uint64) { before = append(before, u) })
	back.Buckets(func(u time.Duration, _ uint64) { after = append(after, u) })
	if len(after) != 2 || after[0] != before[0] || after[1] != before[1] {
		t.Fatalf("buckets %v after the round trip, %v before", after, before)
	}
	if p := back.Quantile(0.5); p < 116*time.Microsecond || p > 124*time.Microsecond {
		t.Errorf("p50 %v, want 120µs within a bucket", p)
	}
	if back.Min < 116*time.Microsecond || back.Max < 14500*time.Microsecond {
		t.Errorf("min %v max %v", back.Min, back.Max)
	}
}

// The API's enums and the vocabulary name the same things: the
// conversions rest on the numbering, so check it by name.
func TestEnumsFollowTheVocabulary(t *testing.T) {
	kinds := map[vocab.Kind]snoopv1.EventKind{
		vocab.KindTransaction:   snoopv1.EventKind_EVENT_KIND_TRANSACTION,
		vocab.KindConnOpened:    snoopv1.EventKind_EVENT_KIND_CONNECTION_OPENED,
		vocab.KindConnClosed:    snoopv1.EventKind_EVENT_KIND_CONNECTION_CLOSED,
		vocab.KindConnectFailed: snoopv1.EventKind_EVENT_KIND_CONNECT_FAILED,
		vocab.KindConnRefused:   snoopv1.EventKind_EVENT_KIND_CONNECTION_REFUSED,
		vocab.KindProtocolError: snoopv1.EventKind_EVENT_KIND_PROTOCOL_ERROR,
		vocab.KindCaptureGap:    snoopv1.EventKind_EVENT_KIND_CAPTURE_GAP,
	}
	for _, k := range vocab.Kinds() {
		if got := Kind(k); got != kinds[k] {
			t.Errorf("%s: %v, want %v", k, got, kinds[k])
		}
		if back, ok := KindFromAPI(kinds[k]); !ok || back != k {
			t.Errorf("%v back: %v %v", kinds[k], back, ok)
		}
	}
	for i, name := range vocab.OpNames() {
		op := distcache.Op(i)
		if got := Op(op).String(); got != "OP_"+strings.ToUpper(name) {
			t.Errorf("%s: %s", name, got)
		}
		if back, ok := OpFromAPI(Op(op)); !ok || back != op {
			t.Errorf("%s back: %v %v", name, back, ok)
		}
	}
}
