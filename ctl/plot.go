package ctl

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"

	"github.com/urfave/cli/v2"
	"gonum.org/v1/plot/vg"

	"github.com/snoopd/snoopd/ctl/capture"
	"github.com/snoopd/snoopd/ctl/filter"
	"github.com/snoopd/snoopd/ctl/plot"
)

func (e *env) plotCommand() *cli.Command {
	flags := append(filterFlags(),
		&cli.StringSliceFlag{Name: "proxy", Usage: "keep events of these `PROXIES`"},
		&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "write the picture to `FILE`: .svg or .png (required)"},
		&cli.DurationFlag{Name: "bin", Usage: "width of a time bin (default: the smallest of 1ms, 2ms, 5ms ... 24h that gives at most 300 bins and 20 transactions a bin on average)"},
		&cli.Float64Flag{Name: "width", Value: 25, Usage: "page width in `CM`"},
		&cli.Float64Flag{Name: "height", Value: 32, Usage: "page height in `CM`"},
	)
	return &cli.Command{
		Name:      "plot",
		Usage:     "draw saved transactions: latency over time by op, transactions/s by result, latency histogram",
		ArgsUsage: "FILE... -o report.svg|report.png",
		Description: "plot reads the files 'read' reads (- is stdin, gzip is recognised, rotated\n" +
			"captures in order), keeps the transactions that pass the same filters, bins\n" +
			"them in time and draws one page of three plots: p50 and p99 latency per bin\n" +
			"by operation (log scale), transactions per second by result, and the latency\n" +
			"distribution by operation on 1-2-5 log buckets, to the file -o names, in the\n" +
			"format its extension says (.svg or .png).\n\n" + filterHelp,
		Flags:  flags,
		Action: e.plot,
	}
}

func (e *env) plot(cCtx *cli.Context) error {
	files, err := args(cCtx, 1, -1, "FILE... -o report.svg|report.png")
	if err != nil {
		return err
	}
	out := cCtx.String("output")
	if out == "" {
		return usagef("plot needs -o FILE.svg or -o FILE.png")
	}
	kind := strings.ToLower(strings.TrimPrefix(filepath.Ext(out), "."))
	if kind != "svg" && kind != "png" {
		return usagef("-o %s: the extension says the format, .svg or .png", out)
	}
	w, h := cCtx.Float64("width"), cCtx.Float64("height")
	if w < 10 || h < 20 || w > 500 || h > 500 {
		return usagef("--width (10 to 500) and --height (20 to 500) are in centimetres (got %g x %g)", w, h)
	}
	bin := cCtx.Duration("bin")
	if bin < 0 {
		return usagef("--bin %v is negative", bin)
	}
	f, err := filterFromFlags(cCtx, cCtx.StringSlice("proxy"))
	if err != nil {
		return err
	}
	var col plot.Collector
	for _, name := range files {
		if _, err := e.readFile(name, func(r *capture.Reader) (bool, error) {
			return false, collect(r, f, &col)
		}); err != nil {
			return err
		}
	}
	if col.Len() == 0 {
		return failf("plot: no transactions in %s match", strings.Join(files, ", "))
	}
	title := fmt.Sprintf("%s: %d transactions", strings.Join(files, ", "), col.Len())
	// Written to a temporary file and renamed, so a failed plot leaves no
	// half picture under the name asked for.
	tmp, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".*")
	if err != nil {
		return failf("plot: %v", err)
	}
	defer os.Remove(tmp.Name())
	err = col.Render(tmp, plot.Options{Format: kind, Width: vg.Length(w) * vg.Centimeter, Height: vg.Length(h) * vg.Centimeter,
		Bin: bin, Location: e.location(), Title: title})
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
		return failf("plot %s: %v", out, err)
	}
	_, err = fmt.Fprintf(e.stdio.Err, "plotted %d transactions to %s\n", col.Len(), out)
	return err
}

// collect adds the transactions of a capture that pass f to col. Lines
// are decoded on every core, as decoding JSON is nearly all the cost of
// a plot; a plot does not depend on the order of its transactions. The
// error is the one of the earliest bad line, as a sequential read would
// have stopped there (a truncated last line is one, for a warning).
func collect(r *capture.Reader, f filter.Filter, col *plot.Collector) error {
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
					if ev := resp.GetEvent(); ev != nil && f.Match(ev) {
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
