package top

import (
	"cmp"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/snoopd/snoopd/ctl/format"
)

// column is one column of the proxy table: its key in the live view, its
// title, how a row shows in it and how rows compare by it.
type column struct {
	key   string
	title string
	right bool
	cell  func(r *Row) string
	cmp   func(a, b *Row) int
}

// columns are the proxy table's columns, in order.
var columns = []column{
	{"n", "NAME", false, func(r *Row) string { return r.Name }, func(a, b *Row) int { return cmp.Compare(a.Name, b.Name) }},
	{"s", "STATE", false, func(r *Row) string { return r.State }, func(a, b *Row) int { return cmp.Compare(a.State, b.State) }},
	{"c", "CONNS", true, func(r *Row) string { return strconv.FormatInt(r.Conns, 10) }, func(a, b *Row) int { return cmp.Compare(a.Conns, b.Conns) }},
	{"o", "OPS/S", true, func(r *Row) string { return rate(r, r.Ops) }, byRate(func(r *Row) int64 { return r.Ops })},
	{"h", "HIT%", true, func(r *Row) string {
		if h, ok := r.HitRatio(); ok {
			return strconv.FormatFloat(100*h, 'f', 1, 64)
		}
		return "-"
	}, func(a, b *Row) int {
		ha, oka := a.HitRatio()
		hb, okb := b.HitRatio()
		return cmp.Or(cmp.Compare(b2i(oka), b2i(okb)), cmp.Compare(ha, hb))
	}},
	{"e", "ERR/S", true, func(r *Row) string { return rate(r, r.Errors) }, byRate(func(r *Row) int64 { return r.Errors })},
	{"5", "P50", true, func(r *Row) string { return latency(r.Latency.Count, r.Latency.P50) }, func(a, b *Row) int { return cmp.Compare(a.Latency.P50, b.Latency.P50) }},
	{"9", "P99", true, func(r *Row) string { return latency(r.Latency.Count, r.Latency.P99) }, func(a, b *Row) int { return cmp.Compare(a.Latency.P99, b.Latency.P99) }},
	{"u", "UP/S", true, func(r *Row) string { return byteRate(r, r.UpBytes) }, byRate(func(r *Row) int64 { return r.UpBytes })},
	{"d", "DOWN/S", true, func(r *Row) string { return byteRate(r, r.DownBytes) }, byRate(func(r *Row) int64 { return r.DownBytes })},
}

// defaultSort is the column top sorts by at first: the busiest proxies
// on top.
const defaultSort = 3

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

func byRate(n func(*Row) int64) func(a, b *Row) int {
	return func(a, b *Row) int { return cmp.Compare(a.Rate(n(a)), b.Rate(n(b))) }
}

// rate shows n per second over the row's span, "-" when unknown.
func rate(r *Row, n int64) string {
	if r.Span <= 0 {
		return "-"
	}
	return strconv.FormatFloat(r.Rate(n), 'f', 1, 64)
}

func byteRate(r *Row, n int64) string {
	if r.Span <= 0 {
		return "-"
	}
	return format.Bytes(int64(r.Rate(n) + 0.5))
}

func latency(count uint64, d time.Duration) string {
	if count == 0 {
		return "-"
	}
	return format.Duration(d)
}

// SortRows orders rows by column col (an index of columns), descending if
// desc; ties go by name, so the order is stable between refreshes.
func SortRows(rows []Row, col int, desc bool) {
	c := columns[col]
	slices.SortStableFunc(rows, func(a, b Row) int {
		n := c.cmp(&a, &b)
		if desc {
			n = -n
		}
		return cmp.Or(n, cmp.Compare(a.Name, b.Name))
	})
}

// FilterRows keeps the rows whose name contains sub (case-insensitive).
func FilterRows(rows []Row, sub string) []Row {
	if sub == "" {
		return rows
	}
	sub = strings.ToLower(sub)
	var out []Row
	for _, r := range rows {
		if strings.Contains(strings.ToLower(r.Name), sub) {
			out = append(out, r)
		}
	}
	return out
}

// tableLines lays the rows out as text: a header line and one line per
// row, columns padded to their widest cell and two spaces apart. mark
// decorates the header of the sort column.
func tableLines(rows []Row, sortCol int, desc bool) (header string, lines []string) {
	cells := make([][]string, len(rows))
	widths := make([]int, len(columns))
	titles := make([]string, len(columns))
	for i, c := range columns {
		titles[i] = c.title
		if i == sortCol {
			if desc {
				titles[i] += "▼"
			} else {
				titles[i] += "▲"
			}
		}
		widths[i] = len([]rune(titles[i]))
	}
	for j := range rows {
		cells[j] = make([]string, len(columns))
		for i, c := range columns {
			s := c.cell(&rows[j])
			cells[j][i] = s
			widths[i] = max(widths[i], len([]rune(s)))
		}
	}
	join := func(row []string) string {
		var b strings.Builder
		for i, s := range row {
			if i > 0 {
				b.WriteString("  ")
			}
			pad := strings.Repeat(" ", widths[i]-len([]rune(s)))
			if columns[i].right {
				b.WriteString(pad + s)
			} else if i == len(row)-1 {
				b.WriteString(s)
			} else {
				b.WriteString(s + pad)
			}
		}
		return b.String()
	}
	header = join(titles)
	for _, row := range cells {
		lines = append(lines, join(row))
	}
	return header, lines
}

// summary is the frame's header: where the numbers come from, then the
// totals and rates.
func summary(f *Frame) (string, string) {
	src := f.Source
	if f.Version != "" {
		src += " " + f.Version
	}
	if f.Uptime > 0 {
		src += ", up " + format.Age(f.Uptime)
	}
	span := "since each proxy started"
	if f.Interval > 0 {
		span = "over " + format.Duration(f.Interval.Round(time.Millisecond))
	}
	t := f.Totals
	return fmt.Sprintf("snoopd %s, at %s", src, f.At.Format(time.TimeOnly)),
		fmt.Sprintf("%s (%d listening), %d conns, %.1f ops/s, %.1f errors/s, up %s/s, down %s/s %s; %d transactions, %d errors in all",
			plural(t.Proxies, "proxy", "proxies"), t.Listening, t.Conns, t.OpsPerSec, t.ErrorsPerSec,
			format.Bytes(int64(t.UpPerSec+0.5)), format.Bytes(int64(t.DownPerSec+0.5)), span, t.Transactions, t.Errors)
}

// newTabwriter lays out the detail view's operation table like
// snoopctl's other tables.
func newTabwriter(w io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
}

// plural writes n with the noun in the right number: "1 proxy", "2 proxies".
func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}
