// Package apiconv turns the project's internal values into the control
// API's messages where more than one side of the API needs the same
// conversion: the daemon reports latency summaries of proxies, and
// snoopctl computes the same summaries from streamed events.
package apiconv

import (
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
	"github.com/snoopd/snoopd/internal/histogram"
)

// LatencySummary condenses a histogram into the API's summary; an empty
// histogram gives an empty summary (no made-up zero percentiles).
func LatencySummary(h *histogram.Snapshot) *snoopv1.LatencySummary {
	if h.Count == 0 {
		return &snoopv1.LatencySummary{}
	}
	return &snoopv1.LatencySummary{
		Count: int64(h.Count),
		Mean:  durationpb.New(h.Mean()),
		P50:   durationpb.New(h.Quantile(0.50)),
		P90:   durationpb.New(h.Quantile(0.90)),
		P99:   durationpb.New(h.Quantile(0.99)),
		Max:   durationpb.New(h.Max),
	}
}

// Histogram turns a histogram snapshot into the API's buckets: the
// non-empty ones, ascending.
func Histogram(h *histogram.Snapshot) *snoopv1.Histogram {
	out := &snoopv1.Histogram{Count: h.Count, Sum: durationpb.New(h.Sum)}
	h.Buckets(func(upper time.Duration, count uint64) {
		out.Buckets = append(out.Buckets, &snoopv1.HistogramBucket{UpperNs: int64(upper), Count: count})
	})
	return out
}

// HistogramFromAPI turns the API's buckets back into a snapshot, for
// percentiles and deltas on the client. Each bucket's count is recorded at
// its lower end, which is where the daemon's histogram put it. (Only
// non-empty buckets are sent, so the lower end comes from the bucket's own
// upper end, not from the bucket before it.)
func HistogramFromAPI(h *snoopv1.Histogram) histogram.Snapshot {
	var s histogram.Snapshot
	for _, b := range h.GetBuckets() {
		s.RecordN(histogram.BucketLower(time.Duration(b.GetUpperNs())), b.GetCount())
	}
	return s
}
