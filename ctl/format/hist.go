package format

import (
	"fmt"
	"io"
	"strings"
	"time"

	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
	"github.com/snoopd/snoopd/internal/apiconv"
	"github.com/snoopd/snoopd/internal/histogram"
)

// Bin is one bar of a latency chart: the samples at or above Lo and below
// Hi.
type Bin struct {
	Lo, Hi time.Duration
	Count  uint64
}

// binBounds are the chart's bucket bounds, 1-2-5 per decade from 1µs: few
// enough bars for a terminal, and bounds people read at a glance. Each is
// the upper end of a bar; the first bar starts at 0.
var binBounds = func() []time.Duration {
	var out []time.Duration
	for d := time.Microsecond; d <= 100*time.Second; d *= 10 {
		out = append(out, d, 2*d, 5*d)
	}
	return out
}()

// LogBins regroups a histogram's fine log-linear buckets into the chart's
// 1-2-5 bars, from the lowest non-empty bar to the highest, empty bars in
// between included so the shape is true. A fine bucket goes to the bar
// holding its highest value; fine buckets are about 3% wide, so that is
// the most a sample can be misplaced across a bar's edge. Samples below
// 1µs are in the first bar (from 0), above 500s in the last. It is nil
// for an empty histogram.
func LogBins(h *histogram.Snapshot) []Bin {
	if h == nil || h.Count == 0 {
		return nil
	}
	counts := make([]uint64, len(binBounds))
	h.Buckets(func(upper time.Duration, n uint64) {
		counts[binOf(upper-1)] += n // upper is exclusive
	})
	lo, hi := -1, -1
	for i, c := range counts {
		if c != 0 {
			if lo < 0 {
				lo = i
			}
			hi = i
		}
	}
	out := make([]Bin, 0, hi-lo+1)
	for i := lo; i <= hi; i++ {
		b := Bin{Hi: binBounds[i], Count: counts[i]}
		if i > 0 {
			b.Lo = binBounds[i-1]
		}
		out = append(out, b)
	}
	return out
}

// binOf is the bar of a sample: the first whose upper bound is above it.
func binOf(d time.Duration) int {
	for i, b := range binBounds {
		if d < b {
			return i
		}
	}
	return len(binBounds) - 1
}

// sparks are the eighths of a character cell, for sparklines.
var sparks = []rune(" ▁▂▃▄▅▆▇█")

// Sparkline draws a histogram's bars in one line of block characters,
// between brackets, framed by the lower end of the first bar and the
// upper end of the last: "20µs [▁▃█ ▂] 5ms", one character per 1-2-5 bar
// (20-50µs, 50-100µs...). An empty bar is a space, any non-empty one at
// least a sliver. It is "-" for an empty histogram.
func Sparkline(h *histogram.Snapshot) string {
	bins := LogBins(h)
	if len(bins) == 0 {
		return "-"
	}
	var most uint64
	for _, b := range bins {
		most = max(most, b.Count)
	}
	var sb strings.Builder
	sb.WriteString(BinLabel(bins[0].Lo))
	sb.WriteString(" [")
	for _, b := range bins {
		n := 0
		if b.Count > 0 {
			n = max(1, int((b.Count*8+most/2)/most))
		}
		sb.WriteRune(sparks[n])
	}
	sb.WriteString("] ")
	sb.WriteString(BinLabel(bins[len(bins)-1].Hi))
	return sb.String()
}

// WriteBars draws a histogram as horizontal bars, one line per 1-2-5 bar:
// its range, a bar up to width cells long (in eighths of a cell), the
// count and its share. Each line starts with indent.
func WriteBars(w io.Writer, h *histogram.Snapshot, indent string, width int) error {
	return WriteBins(w, LogBins(h), indent, width)
}

// WriteBins is WriteBars for bars already made by LogBins.
func WriteBins(w io.Writer, bins []Bin, indent string, width int) error {
	if len(bins) == 0 {
		_, err := fmt.Fprintf(w, "%s(no samples)\n", indent)
		return err
	}
	var most, total uint64
	for _, b := range bins {
		most = max(most, b.Count)
		total += b.Count
	}
	tw := newTable(w)
	for _, b := range bins {
		fmt.Fprintf(tw, "%s%s–%s\t%s\t%d\t%4.1f%%\n", indent, BinLabel(b.Lo), BinLabel(b.Hi),
			Bar(b.Count, most, width), b.Count, 100*float64(b.Count)/float64(total))
	}
	return tw.Flush()
}

// Bar is a horizontal bar of n out of most, at most width cells, in
// eighths of a cell, padded with spaces to width; any n > 0 shows.
func Bar(n, most uint64, width int) string {
	if most == 0 || width <= 0 {
		return strings.Repeat(" ", max(width, 0))
	}
	eighths := int((n*uint64(width)*8 + most/2) / most)
	if n > 0 {
		eighths = max(eighths, 1)
	}
	full, part := eighths/8, eighths%8
	s := strings.Repeat("█", full)
	cells := full
	if part > 0 {
		s += string([]rune("▏▎▍▌▋▊▉")[part-1])
		cells++
	}
	return s + strings.Repeat(" ", max(width-cells, 0))
}

// BinLabel is a bar bound as people write it: 0, 1µs, 20µs, 5ms, 1s.
func BinLabel(d time.Duration) string {
	switch {
	case d == 0:
		return "0"
	case d >= time.Second:
		return fmt.Sprintf("%gs", float64(d)/float64(time.Second))
	case d >= time.Millisecond:
		return fmt.Sprintf("%gms", float64(d)/float64(time.Millisecond))
	case d >= time.Microsecond:
		return fmt.Sprintf("%gµs", float64(d)/float64(time.Microsecond))
	}
	return fmt.Sprintf("%dns", int64(d))
}

// histSparkline is Sparkline of an API histogram; "-" when there is none
// (an answer without histograms, or no samples).
func histSparkline(h *snoopv1.Histogram) string {
	if h.GetCount() == 0 {
		return "-"
	}
	s := apiconv.HistogramFromAPI(h)
	return Sparkline(&s)
}
