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
// title, how a row shows in it and how rows compare by it. A column
// without a key is not a sort column of its own.
type column struct {
	key   string
	title string
	right bool
	cell  func(r *Row) string
	cmp   func(a, b *Row) int
	// fleet columns are shown only in a fleet's frame.
	fleet bool
}

// columns are the proxy table's columns, in order. A fleet's rows have a
// DAEMON column before NAME, as snoopctl list over several daemons has;
// sorting by NAME sorts by daemon, then name, so a daemon's proxies stay
// together.
var columns = []column{
	{"", "DAEMON", false, func(r *Row) string { return r.Daemon }, func(a, b *Row) int { return cmp.Compare(a.Daemon, b.Daemon) }, true},
	{"n", "NAME", false, func(r *Row) string { return r.Name }, func(a, b *Row) int { return cmp.Compare(a.Key(), b.Key()) }, false},
	{"t", "STATE", false, func(r *Row) string { return r.State }, func(a, b *Row) int { return cmp.Compare(a.State, b.State) }, false},
	{"c", "CONNS", true, func(r *Row) string { return strconv.FormatInt(r.Conns, 10) }, func(a, b *Row) int { return cmp.Compare(a.Conns, b.Conns) }, false},
	{"o", "OPS/S", true, func(r *Row) string { return rate(r, r.Ops) }, byRate(func(r *Row) int64 { return r.Ops }), false},
	{"h", "HIT%", true, func(r *Row) string {
		if h, ok := r.HitRatio(); ok {
			return strconv.FormatFloat(100*h, 'f', 1, 64)
		}
		return "-"
	}, func(a, b *Row) int {
		ha, oka := a.HitRatio()
		hb, okb := b.HitRatio()
		return cmp.Or(cmp.Compare(b2i(oka), b2i(okb)), cmp.Compare(ha, hb))
	}, false},
	{"e", "ERR/S", true, func(r *Row) string { return rate(r, r.Errors) }, byRate(func(r *Row) int64 { return r.Errors }), false},
	{"5", "P50", true, func(r *Row) string { return latency(r.Latency.Count, r.Latency.P50) }, func(a, b *Row) int { return cmp.Compare(a.Latency.P50, b.Latency.P50) }, false},
	{"9", "P99", true, func(r *Row) string { return latency(r.Latency.Count, r.Latency.P99) }, func(a, b *Row) int { return cmp.Compare(a.Latency.P99, b.Latency.P99) }, false},
	{"u", "UP/S", true, func(r *Row) string { return byteRate(r, r.UpBytes) }, byRate(func(r *Row) int64 { return r.UpBytes }), false},
	{"d", "DOWN/S", true, func(r *Row) string { return byteRate(r, r.DownBytes) }, byRate(func(r *Row) int64 { return r.DownBytes }), false},
}

// defaultSort is the column top sorts by at first: the busiest proxies
// on top.
var defaultSort = columnByKey("o")

// columnByKey is the index of the column with key.
func columnByKey(key string) int {
	for i, c := range columns {
		if c.key == key {
			return i
		}
	}
	panic("top: no column with key " + key)
}

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
		return cmp.Or(n, cmp.Compare(a.Key(), b.Key()))
	})
}

// FilterRows keeps the rows whose name contains sub (case-insensitive); a
// fleet's rows are named DAEMON/NAME, so a daemon's name selects its
// proxies.
func FilterRows(rows []Row, sub string) []Row {
	if sub == "" {
		return rows
	}
	sub = strings.ToLower(sub)
	var out []Row
	for _, r := range rows {
		if strings.Contains(strings.ToLower(r.Key()), sub) {
			out = append(out, r)
		}
	}
	return out
}

// shown are the columns a frame's table has: the fleet columns only when
// its rows name daemons.
func shown(fleet bool) []int {
	var out []int
	for i, c := range columns {
		if fleet || !c.fleet {
			out = append(out, i)
		}
	}
	return out
}

// tableLines lays the rows out as text: a header line and one line per
// row, columns padded to their widest cell and two spaces apart, the
// fleet's columns included if fleet. An arrow marks the header of the
// sort column.
func tableLines(rows []Row, sortCol int, desc, fleet bool) (header string, lines []string) {
	cols := shown(fleet)
	cells := make([][]string, len(rows))
	widths := make([]int, len(cols))
	titles := make([]string, len(cols))
	for i, ci := range cols {
		c := columns[ci]
		titles[i] = c.title
		if ci == sortCol {
			if desc {
				titles[i] += "▼"
			} else {
				titles[i] += "▲"
			}
		}
		widths[i] = len([]rune(titles[i]))
	}
	for j := range rows {
		cells[j] = make([]string, len(cols))
		for i, ci := range cols {
			s := columns[ci].cell(&rows[j])
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
			if columns[cols[i]].right {
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
// totals and rates, then a line for each of the source's problems.
func summary(f *Frame) []string {
	src := f.Source
	if f.Version != "" {
		src += " " + f.Version
	}
	if f.Uptime > 0 {
		src += ", up " + format.Age(f.Uptime)
	}
	t := f.Totals
	head := fmt.Sprintf("snoopd %s, at %s", src, f.At.Format(time.TimeOnly))
	proxies := fmt.Sprintf("%s (%d listening)", plural(t.Proxies, "proxy", "proxies"), t.Listening)
	span := "since each proxy started"
	if !f.Since.IsZero() {
		// Counted from events: states are unknown, and the first frame
		// covers the time since the subscription began.
		head = fmt.Sprintf("snoopd fleet, events from %s since %s, at %s", src,
			f.Since.Format(time.TimeOnly), f.At.Format(time.TimeOnly))
		proxies = fmt.Sprintf("%s on %s", plural(t.Proxies, "proxy", "proxies"), plural(t.Daemons, "daemon", "daemons"))
		span = "since " + f.Since.Format(time.TimeOnly)
	}
	if f.Interval > 0 {
		span = "over " + format.Duration(f.Interval.Round(time.Millisecond))
	}
	lines := []string{head,
		fmt.Sprintf("%s, %d conns, %.1f ops/s, %.1f errors/s, up %s/s, down %s/s %s; %d transactions, %d errors in all",
			proxies, t.Conns, t.OpsPerSec, t.ErrorsPerSec,
			format.Bytes(int64(t.UpPerSec+0.5)), format.Bytes(int64(t.DownPerSec+0.5)), span, t.Transactions, t.Errors)}
	return append(lines, notes(f)...)
}

// notes are the source's problems, one line each.
func notes(f *Frame) []string {
	out := slices.Clone(f.Notes)
	if f.Dropped > 0 {
		out = append(out, fmt.Sprintf("%d events lost on the way (a slow consumer): the numbers miss them", f.Dropped))
	}
	return out
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
