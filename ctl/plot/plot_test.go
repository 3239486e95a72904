package plot

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"gonum.org/v1/plot/vg"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
)

func TestPickBin(t *testing.T) {
	for _, tc := range []struct {
		span time.Duration
		n    int
		want time.Duration
	}{
		{time.Hour, 1_000_000, 15 * time.Second},      // 300 bins at most
		{time.Minute, 3000, 500 * time.Millisecond},   // 150 bins: 20 a bin
		{3 * time.Second, 60, 500 * time.Millisecond}, // at least 10 bins' worth
		{0, 1, time.Millisecond},
		{1000 * 24 * time.Hour, 1_000_000, 24 * time.Hour}, // the widest
	} {
		if got := pickBin(tc.span, tc.n); got != tc.want {
			t.Errorf("pickBin(%v, %d) = %v, want %v", tc.span, tc.n, got, tc.want)
		}
	}
}

func tx(at time.Duration, op snoopv1.Op, result string, lat time.Duration) *snoopv1.Event {
	return &snoopv1.Event{Kind: snoopv1.EventKind_EVENT_KIND_TRANSACTION, Proxy: "p",
		Time:        timestamppb.New(time.Unix(1_700_000_000, 0).Add(at)),
		Transaction: &snoopv1.Transaction{Op: op, Result: result, Latency: durationpb.New(lat)}}
}

// TestMergeAndBin checks that collectors filled apart add up, and that
// binning counts every transaction once, in its bin.
func TestMergeAndBin(t *testing.T) {
	var a, b, all Collector
	for i := range 100 {
		ev := tx(time.Duration(i)*100*time.Millisecond, snoopv1.Op_OP_GET, []string{"hit", "miss"}[i%2], time.Millisecond)
		all.Add(ev)
		if i%3 == 0 {
			a.Add(ev)
		} else {
			b.Add(ev)
		}
	}
	b.Add(&snoopv1.Event{Kind: snoopv1.EventKind_EVENT_KIND_CONNECTION_OPENED})
	a.Merge(&b)
	if a.Len() != 100 || a.Other != 1 {
		t.Fatalf("merged: %d transactions, %d other", a.Len(), a.Other)
	}
	bn := a.bin(time.Second)
	if bn.n != 10 {
		t.Fatalf("%d bins, want 10", bn.n)
	}
	var total float64
	for r, counts := range bn.counts {
		for i, c := range counts {
			total += c
			if c != 5 {
				t.Errorf("%s in bin %d: %v, want 5", a.results[r], i, c)
			}
		}
	}
	if total != 100 || bn.total[snoopv1.Op_OP_GET].Count != 100 {
		t.Errorf("binned %v transactions, %d latencies", total, bn.total[snoopv1.Op_OP_GET].Count)
	}

	var out bytes.Buffer
	if err := a.Render(&out, Options{Format: "svg", Width: 20 * vg.Centimeter, Height: 25 * vg.Centimeter, Title: "t"}); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out.String(), "<?xml") {
		t.Errorf("not SVG: %.100q", out.String())
	}
	var empty Collector
	if err := empty.Render(&out, Options{Format: "svg"}); !errors.Is(err, ErrNothing) {
		t.Errorf("empty: %v", err)
	}
	if err := a.Render(&out, Options{Format: "gif", Width: 100, Height: 100}); err == nil {
		t.Errorf("gif accepted")
	}
}
