package ctl

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"

	"github.com/urfave/cli/v2"
	"gonum.org/v1/plot/vg"

	"github.com/snoopd/snoopd/ctl/capture"
	"github.com/snoopd/snoopd/ctl/format"
	"github.com/snoopd/snoopd/ctl/plot"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
)

func (e *env) plotCommand() *cli.Command {
	flags := append(filterFlags(),
		&cli.Int64Flag{Name: "count", Usage: "draw the first `N` transactions that pass the filters"},
	)
	flags = append(flags, timeFlags()...)
	flags = append(flags, packetFlags()...)
	flags = append(flags,
		// Not -o: that is every command's output format. "plot -o FILE"
		// still works (see reorderArgs).
		&cli.StringFlag{Name: "image", Usage: "write the picture to `FILE`: .svg or .png, or - for SVG on stdout (required)"},
		&cli.DurationFlag{Name: "bin", Usage: "width of a time bin (default: the smallest of 1ms, 2ms, 5ms ... 24h that gives at most 300 bins and 20 transactions a bin on average)"},
		&cli.Float64Flag{Name: "width", Value: 25, Usage: "page width in `CM`"},
		&cli.Float64Flag{Name: "height", Value: 32, Usage: "page height in `CM`"},
	)
	return &cli.Command{
		Name:      "plot",
		Usage:     "draw saved transactions: latency over time by op, transactions/s by result, latency histogram",
		ArgsUsage: "FILE... --image report.svg|report.png|-",
		Description: "plot reads the files 'read' reads (- is stdin, gzip is recognised, rotated\n" +
			"captures in order, pcap and pcapng files with --server as read takes them),\n" +
			"keeps the transactions that pass read's filters (--proxy, --since, --until,\n" +
			"--count and those below), bins them in time and draws one page of three\n" +
			"plots: p50 and p99 latency per bin by operation (log scale), transactions per\n" +
			"second by result, and the latency distribution by operation on 1-2-5 log\n" +
			"buckets, to the file --image names, in the format its extension says (.svg or\n" +
			".png); --image - writes SVG to stdout.\n\n" + filterHelp,
		Flags:  flags,
		Action: e.plot,
	}
}

func (e *env) plot(cCtx *cli.Context) error {
	files, err := args(cCtx, 1, -1, "FILE... --image report.svg|report.png|-")
	if err != nil {
		return err
	}
	out := cCtx.String("image")
	if out == "" {
		return usagef("plot needs --image FILE.svg, --image FILE.png or --image - (SVG on stdout)")
	}
	kind := strings.ToLower(strings.TrimPrefix(filepath.Ext(out), "."))
	if out == "-" {
		kind = "svg"
	}
	if kind != "svg" && kind != "png" {
		return usagef("--image %s: the extension says the format, .svg or .png", out)
	}
	w, h := cCtx.Float64("width"), cCtx.Float64("height")
	if w < 10 || h < 20 || w > 500 || h > 500 {
		return usagef("--width (10 to 500) and --height (20 to 500) are in centimetres (got %g x %g)", w, h)
	}
	bin := cCtx.Duration("bin")
	if bin < 0 {
		return usagef("--bin %v is negative", bin)
	}
	count := cCtx.Int64("count")
	if count < 0 {
		return usagef("--count %d is negative", count)
	}
	f, err := filterFromFlags(cCtx, nil)
	if err != nil {
		return err
	}
	since, until, err := e.timeRange(cCtx)
	if err != nil {
		return err
	}
	fr, err := newFileReading(cCtx, false)
	if err != nil {
		return err
	}
	keep := func(ev *snoopv1.Event) bool {
		if ts := format.EventTime(ev); ts != nil && !inRange(ts.AsTime(), since, until) {
			return false
		}
		return f.Match(ev)
	}
	var col plot.Collector
	for _, name := range files {
		if count > 0 && int64(col.Len()) >= count {
			break
		}
		if _, err := e.readFile(name, fr, func(r eventFile) (bool, error) {
			if cr, ok := r.(*capture.Reader); ok && count == 0 {
				return false, collect(cr, keep, &col)
			}
			return false, collectFirst(r, keep, count, &col)
		}); err != nil {
			return err
		}
	}
	if col.Len() == 0 {
		return failf("plot: no transactions in %s match", strings.Join(files, ", "))
	}
	title := fmt.Sprintf("%s: %d transactions", strings.Join(files, ", "), col.Len())
	opts := plot.Options{Format: kind, Width: vg.Length(w) * vg.Centimeter, Height: vg.Length(h) * vg.Centimeter,
		Bin: bin, Location: e.location(), Title: title}
	if out == "-" {
		if err := col.Render(e.stdio.Out, opts); err != nil {
			if errors.Is(err, plot.ErrNothing) {
				return failf("plot: %v", err)
			}
			return failf("plot to stdout: %v", err)
		}
		_, err = fmt.Fprintf(e.stdio.Err, "plotted %d transactions to stdout\n", col.Len())
		return err
	}
	// Written to a temporary file and renamed, so a failed plot leaves no
	// half picture under the name asked for. Errors name the user's path,
	// not the temporary one.
	tmp, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".*")
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return failf("plot %s: %v", out, err)
	}
	defer os.Remove(tmp.Name())
	err = col.Render(tmp, opts)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp.Name(), 0o644)
	}
	if err == nil {
		err = os.Rename(tmp.Name(), out)
	}
	if err != nil {
		if errors.Is(err, plot.ErrNothing) {
			return failf("plot: %v", err)
		}
		var pe *fs.PathError
		var le *os.LinkError
		switch {
		case errors.As(err, &pe):
			err = pe.Err
		case errors.As(err, &le):
			err = le.Err
		}
		return failf("plot %s: %v", out, err)
	}
	_, err = fmt.Fprintf(e.stdio.Err, "plotted %d transactions to %s\n", col.Len(), out)
	return err
}

// collectFirst adds the first n transactions of a file that pass keep to
// col (all of them for n 0), in the file's order: --count needs the order
// that collect's parallel decoding gives up, and a packet capture is read
// in order anyway.
func collectFirst(r eventFile, keep func(*snoopv1.Event) bool, n int64, col *plot.Collector) error {
	for n == 0 || int64(col.Len()) < n { // every round consumes a line or a packet of a finite file
		resp, err := r.Next()
		if err != nil {
			return err
		}
		if ev := resp.GetEvent(); ev != nil && keep(ev) {
			col.Add(ev)
		}
	}
	return nil
}

// collect adds the transactions of a capture that pass keep to col. Lines
// are decoded on every core, as decoding JSON is nearly all the cost of
// a plot; a plot does not depend on the order of its transactions. The
// error is the one of the earliest bad line, as a sequential read would
// have stopped there (a truncated last line is one, for a warning).
func collect(r *capture.Reader, keep func(*snoopv1.Event) bool, col *plot.Collector) error {
	const batch = 512
	workers := runtime.GOMAXPROCS(0)
	batches := make(chan []capture.Line, 2*workers)
	type result struct {
		col     plot.Collector
		err     error
		errLine int
	}
	results := make([]result, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res := &results[w]
			for lines := range batches {
				for _, l := range lines {
					resp, err := l.Decode()
					if err != nil {
						if res.err == nil || l.Num() < res.errLine {
							res.err, res.errLine = err, l.Num()
						}
						break
					}
					if ev := resp.GetEvent(); ev != nil && keep(ev) {
						res.col.Add(ev)
					}
				}
			}
		}()
	}
	var readErr error
	lines := make([]capture.Line, 0, batch)
	for { // every round consumes a line of a finite file
		l, err := r.NextLine()
		if err != nil {
			readErr = err
			break
		}
		if lines = append(lines, l); len(lines) == batch {
			batches <- lines
			lines = make([]capture.Line, 0, batch)
		}
	}
	if len(lines) > 0 {
		batches <- lines
	}
	close(batches)
	wg.Wait()
	var first *result
	for i := range results {
		col.Merge(&results[i].col)
		if res := &results[i]; res.err != nil && (first == nil || res.errLine < first.errLine) {
			first = res
		}
	}
	if first != nil {
		return first.err
	}
	return readErr
}
