// Package plot draws a capture of transactions as pictures for a report:
// latency over time by operation (p50 and p99 of each time bin), the
// transactions per second by result, and the latency distribution by
// operation, on one SVG or PNG page, with gonum.org/v1/plot.
//
// Events are kept as small records and binned in time before anything is
// drawn, so a million transactions draw as a few hundred points per line.
package plot

import (
	"cmp"
	"errors"
	"fmt"
	"image/color"
	"io"
	"math"
	"slices"
	"strconv"
	"time"

	gplot "gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
	"gonum.org/v1/plot/vg/vgsvg"

	"github.com/snoopd/snoopd/ctl/format"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
	"github.com/snoopd/snoopd/internal/histogram"
)

// rec is one transaction, as small as plotting needs.
type rec struct {
	at      int64 // Unix nanoseconds
	latency int64 // nanoseconds; -1 when it has none (unanswered)
	op      snoopv1.Op
	result  uint16 // index into Collector.results
}

// Collector keeps the transactions to plot. The zero value is ready.
type Collector struct {
	recs    []rec
	results []string
	resIdx  map[string]uint16
	// Other counts the events that are not transactions (not plotted).
	Other int64
}

// Add keeps ev if it is a transaction with a time.
func (c *Collector) Add(ev *snoopv1.Event) {
	tx := ev.GetTransaction()
	if ev.GetKind() != snoopv1.EventKind_EVENT_KIND_TRANSACTION || tx == nil || ev.GetTime() == nil {
		c.Other++
		return
	}
	if c.resIdx == nil {
		c.resIdx = map[string]uint16{}
	}
	i, ok := c.resIdx[tx.GetResult()]
	if !ok {
		i = uint16(len(c.results))
		c.results = append(c.results, tx.GetResult())
		c.resIdx[tx.GetResult()] = i
	}
	lat := int64(-1)
	if l := tx.GetLatency(); l != nil {
		lat = int64(l.AsDuration())
	}
	t := ev.GetTime()
	c.recs = append(c.recs, rec{at: t.GetSeconds()*1e9 + int64(t.GetNanos()), latency: lat, op: tx.GetOp(), result: i})
}

// Len is the number of transactions kept.
func (c *Collector) Len() int { return len(c.recs) }

// Options shape the page.
type Options struct {
	// Format is "svg" or "png".
	Format string
	// Width and Height are the page's size.
	Width, Height vg.Length
	// Bin is the width of a time bin; 0 picks one that gives at most 300
	// bins and about 20 transactions per bin at least.
	Bin time.Duration
	// Location is the time zone of the time axis.
	Location *time.Location
	// Title heads the page (the inputs, say).
	Title string
}

// ErrNothing is returned by Render when there is no transaction to draw.
var ErrNothing = errors.New("no transactions to plot")

// niceBins are the bin widths Render picks from.
var niceBins = []time.Duration{
	time.Millisecond, 2 * time.Millisecond, 5 * time.Millisecond, 10 * time.Millisecond, 20 * time.Millisecond,
	50 * time.Millisecond, 100 * time.Millisecond, 200 * time.Millisecond, 500 * time.Millisecond,
	time.Second, 2 * time.Second, 5 * time.Second, 10 * time.Second, 15 * time.Second, 30 * time.Second,
	time.Minute, 2 * time.Minute, 5 * time.Minute, 10 * time.Minute, 15 * time.Minute, 30 * time.Minute,
	time.Hour, 2 * time.Hour, 6 * time.Hour, 12 * time.Hour, 24 * time.Hour,
}

// maxBins bounds the number of time bins Render picks; perBin is the
// average number of transactions a bin should hold at least, so that a
// sparse capture gives percentiles rather than single samples.
const (
	maxBins = 300
	perBin  = 20
)

// pickBin is the smallest nice bin width that covers span in at most
// maxBins bins, and in at most n/perBin (but at least 10) for n
// transactions.
func pickBin(span time.Duration, n int) time.Duration {
	bins := int64(min(maxBins, max(n/perBin, 10)))
	for _, b := range niceBins {
		if int64(span/b) < bins {
			return b
		}
	}
	return niceBins[len(niceBins)-1]
}

// binned are the transactions counted per time bin.
type binned struct {
	start   int64 // Unix nanoseconds of bin 0's start
	width   time.Duration
	n       int
	ops     []snoopv1.Op                         // the operations seen, in order
	latency map[snoopv1.Op][]*histogram.Snapshot // per op, per bin (nil: no sample)
	total   map[snoopv1.Op]*histogram.Snapshot   // per op, all bins
	counts  [][]float64                          // per result, per bin
}

func (c *Collector) bin(width time.Duration) *binned {
	lo, hi := c.recs[0].at, c.recs[0].at
	for _, r := range c.recs {
		lo, hi = min(lo, r.at), max(hi, r.at)
	}
	if width <= 0 {
		width = pickBin(time.Duration(hi-lo), len(c.recs))
	}
	start := lo - lo%int64(width)
	b := &binned{start: start, width: width, n: int((hi-start)/int64(width)) + 1,
		latency: map[snoopv1.Op][]*histogram.Snapshot{}, total: map[snoopv1.Op]*histogram.Snapshot{}}
	b.counts = make([][]float64, len(c.results))
	for i := range b.counts {
		b.counts[i] = make([]float64, b.n)
	}
	for _, r := range c.recs {
		i := int((r.at - start) / int64(width))
		b.counts[r.result][i]++
		if r.latency < 0 {
			continue
		}
		hs := b.latency[r.op]
		if hs == nil {
			hs = make([]*histogram.Snapshot, b.n)
			b.latency[r.op] = hs
			b.total[r.op] = &histogram.Snapshot{}
			b.ops = append(b.ops, r.op)
		}
		if hs[i] == nil {
			hs[i] = &histogram.Snapshot{}
		}
		d := time.Duration(r.latency)
		hs[i].Record(d)
		b.total[r.op].Record(d)
	}
	slices.Sort(b.ops)
	return b
}

// x is the middle of bin i in Unix seconds, the time axis' unit.
func (b *binned) x(i int) float64 {
	return float64(b.start+int64(i)*int64(b.width)+int64(b.width)/2) / 1e9
}

// Render draws the page to w.
func (c *Collector) Render(w io.Writer, o Options) error {
	if len(c.recs) == 0 {
		return ErrNothing
	}
	loc := cmp.Or(o.Location, time.UTC)
	b := c.bin(o.Bin)
	plots := make([][]*gplot.Plot, 0, 3)
	lat, err := b.latencyPlot(loc)
	if err != nil {
		return err
	}
	rate, err := b.ratePlot(c.results, loc)
	if err != nil {
		return err
	}
	hist, err := b.histogramPlot()
	if err != nil {
		return err
	}
	plots = append(plots, []*gplot.Plot{lat}, []*gplot.Plot{rate}, []*gplot.Plot{hist})

	var canvas vg.CanvasWriterTo
	switch o.Format {
	case "svg":
		canvas = vgsvg.New(o.Width, o.Height)
	case "png":
		canvas = vgimg.PngCanvas{Canvas: vgimg.NewWith(vgimg.UseWH(o.Width, o.Height), vgimg.UseDPI(96))}
	default:
		return fmt.Errorf("unknown image format %q: want svg or png", o.Format)
	}
	dc := draw.New(canvas)
	// The page's title takes the top strip; the three plots share the rest.
	title := gplot.New()
	titleStyle := title.Title.TextStyle
	titleStyle.Font.Size = vg.Points(14)
	top := vg.Points(28)
	dc.FillText(titleStyle, vg.Point{X: dc.Min.X + o.Width/2, Y: dc.Max.Y - top/2}, o.Title)
	body := draw.Canvas{Canvas: dc.Canvas, Rectangle: vg.Rectangle{Min: dc.Min, Max: vg.Point{X: dc.Max.X, Y: dc.Max.Y - top}}}
	tiles := draw.Tiles{Rows: 3, Cols: 1, PadTop: vg.Points(6), PadBottom: vg.Points(6), PadLeft: vg.Points(6),
		PadRight: vg.Points(12), PadY: vg.Points(18)}
	for i, cv := range gplot.Align(plots, tiles, body) {
		plots[i][0].Draw(cv[0])
	}
	if _, err := canvas.WriteTo(w); err != nil {
		return fmt.Errorf("write %s: %w", o.Format, err)
	}
	return nil
}

// timeAxis labels a plot's x axis as time.
func timeAxis(p *gplot.Plot, b *binned, loc *time.Location) {
	layout := "15:04:05"
	if b.width < time.Second {
		layout = "15:04:05.000"
	}
	p.X.Tick.Marker = gplot.TimeTicks{Format: layout, Time: func(t float64) time.Time {
		s, frac := math.Modf(t)
		return time.Unix(int64(s), int64(frac*1e9)).In(loc)
	}}
	day := time.Unix(0, b.start).In(loc)
	p.X.Label.Text = fmt.Sprintf("time (%s, %s; bins of %s)", day.Format(time.DateOnly), day.Format("MST"), b.width)
}

// colorFor gives series i its colour from plotutil's palette.
func colorFor(i int) color.Color { return plotutil.Color(i) }

func (b *binned) latencyPlot(loc *time.Location) (*gplot.Plot, error) {
	p := gplot.New()
	p.Title.Text = "Latency by operation: p50 (solid) and p99 (dashed) per bin"
	p.Y.Label.Text = "latency (ms, log scale)"
	timeAxis(p, b, loc)
	p.Y.Scale = gplot.LogScale{}
	p.Y.Tick.Marker = ticks125{}
	p.Legend.Top = true
	p.Add(plotter.NewGrid())
	for i, op := range b.ops {
		for k, q := range []float64{0.5, 0.99} {
			var xys plotter.XYs
			for j, h := range b.latency[op] {
				if h == nil {
					continue
				}
				ms := max(float64(h.Quantile(q))/1e6, 1e-4) // a log axis has no 0
				xys = append(xys, plotter.XY{X: b.x(j), Y: ms})
			}
			l, err := plotter.NewLine(xys)
			if err != nil {
				return nil, fmt.Errorf("latency line: %w", err)
			}
			l.Color = colorFor(i)
			l.Width = vg.Points(1)
			name := format.OpName(op) + " p50"
			if k == 1 {
				l.Dashes = []vg.Length{vg.Points(4), vg.Points(2)}
				name = format.OpName(op) + " p99"
			}
			p.Add(l)
			p.Legend.Add(name, l)
		}
	}
	if len(b.ops) == 0 {
		p.Title.Text += " (no answered transactions)"
		p.Y.Min, p.Y.Max = 0.01, 1
	}
	// Room above and below, so no line runs along the frame.
	p.Y.Min, p.Y.Max = p.Y.Min/1.5, p.Y.Max*1.5
	return p, nil
}

// ticks125 marks a log axis at 1, 2 and 5 of each power of ten, labelled,
// with unlabelled minor ticks between; gonum's LogTicks labels powers of
// ten only, which leaves a narrow latency range without a number.
type ticks125 struct{}

func (ticks125) Ticks(lo, hi float64) []gplot.Tick {
	var out []gplot.Tick
	for e := math.Floor(math.Log10(lo)); math.Pow(10, e) <= hi; e++ {
		base := math.Pow(10, e)
		for m := 1; m < 10; m++ {
			v := base * float64(m)
			if v < lo || v > hi {
				continue
			}
			t := gplot.Tick{Value: v}
			if m == 1 || m == 2 || m == 5 {
				t.Label = strconv.FormatFloat(v, 'g', -1, 64)
			}
			out = append(out, t)
		}
	}
	return out
}

func (b *binned) ratePlot(results []string, loc *time.Location) (*gplot.Plot, error) {
	p := gplot.New()
	p.Title.Text = "Transactions per second by result"
	p.Y.Label.Text = "transactions/s"
	timeAxis(p, b, loc)
	p.Y.Min = 0
	p.Legend.Top = true
	p.Add(plotter.NewGrid())
	order := make([]int, len(results))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, c int) int { return cmp.Compare(results[a], results[c]) })
	for k, i := range order {
		xys := make(plotter.XYs, b.n)
		for j, n := range b.counts[i] {
			xys[j] = plotter.XY{X: b.x(j), Y: n / b.width.Seconds()}
		}
		l, err := plotter.NewLine(xys)
		if err != nil {
			return nil, fmt.Errorf("rate line: %w", err)
		}
		l.Color = colorFor(k)
		l.Width = vg.Points(1)
		p.Add(l)
		p.Legend.Add(results[i], l)
	}
	return p, nil
}

func (b *binned) histogramPlot() (*gplot.Plot, error) {
	p := gplot.New()
	p.Title.Text = "Latency distribution by operation"
	p.X.Label.Text = "latency (bars on 1-2-5 log buckets)"
	p.Y.Label.Text = "transactions"
	p.Legend.Top = true
	// The bars common to every operation: from the lowest to the highest
	// non-empty 1-2-5 bucket of any.
	var all histogram.Snapshot
	for _, op := range b.ops {
		all.Merge(b.total[op])
	}
	bins := format.LogBins(&all)
	if len(bins) == 0 {
		p.Title.Text += " (no answered transactions)"
		p.Add(plotter.NewGrid()) // an empty plot still has its axes
		p.X.Min, p.X.Max, p.Y.Min, p.Y.Max = 0, 1, 0, 1
		return p, nil
	}
	names := make([]string, len(bins))
	for i, bin := range bins {
		names[i] = format.BinLabel(bin.Lo) + "–" + format.BinLabel(bin.Hi)
	}
	width := vg.Points(min(60/float64(max(len(b.ops), 1)), 14))
	for i, op := range b.ops {
		vals := make(plotter.Values, len(bins))
		for _, bin := range format.LogBins(b.total[op]) {
			for k := range bins {
				if bins[k].Lo == bin.Lo {
					vals[k] = float64(bin.Count)
				}
			}
		}
		bc, err := plotter.NewBarChart(vals, width)
		if err != nil {
			return nil, fmt.Errorf("histogram bars: %w", err)
		}
		bc.Color = colorFor(i)
		bc.LineStyle.Width = 0
		bc.Offset = vg.Length(float64(i)-float64(len(b.ops)-1)/2) * width
		p.Add(bc)
		p.Legend.Add(format.OpName(op), bc)
	}
	p.NominalX(names...)
	p.X.Tick.Label.Rotation = math.Pi / 6
	p.X.Tick.Label.XAlign = draw.XRight
	return p, nil
}

// Merge adds o's transactions to c, so that several goroutines can each
// fill a Collector of their own.
func (c *Collector) Merge(o *Collector) {
	if c.resIdx == nil {
		c.resIdx = map[string]uint16{}
	}
	remap := make([]uint16, len(o.results))
	for i, r := range o.results {
		j, ok := c.resIdx[r]
		if !ok {
			j = uint16(len(c.results))
			c.results = append(c.results, r)
			c.resIdx[r] = j
		}
		remap[i] = j
	}
	for _, r := range o.recs {
		r.result = remap[r.result]
		c.recs = append(c.recs, r)
	}
	c.Other += o.Other
}
