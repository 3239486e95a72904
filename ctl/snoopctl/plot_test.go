package main

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/xml"
	"image/png"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/snoopd/snoopd/ctl/format"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
)

// plotStart is the first event's time in generated captures.
var plotStart = time.Date(2026, 3, 14, 15, 0, 0, 0, time.UTC)

// writeCapture writes a capture of n transactions of proxy "web" spread
// over span (GETs that hit or miss, ADDs that are ok, one in 50 REMOVEs
// unanswered), plus one transaction of proxy "other" per ten and a
// connection event per hundred, as snoopctl save writes them.
func writeCapture(t testing.TB, w io.Writer, n int, span time.Duration) {
	t.Helper()
	var b []byte
	for i := range n {
		at := plotStart.Add(span * time.Duration(i) / time.Duration(n))
		tx := &snoopv1.Transaction{Op: snoopv1.Op_OP_GET, Result: "hit", Latency: durationpb.New(time.Duration(100+i%50) * time.Microsecond)}
		switch {
		case i%50 == 7:
			tx = &snoopv1.Transaction{Op: snoopv1.Op_OP_REMOVE, Result: "unanswered"}
		case i%3 == 1:
			tx = &snoopv1.Transaction{Op: snoopv1.Op_OP_ADD, Result: "ok", Latency: durationpb.New(time.Duration(2+i%3) * time.Millisecond)}
		case i%4 == 0:
			tx.Result = "miss"
		}
		ev := &snoopv1.Event{Kind: snoopv1.EventKind_EVENT_KIND_TRANSACTION, Proxy: "web", Time: timestamppb.New(at), Transaction: tx}
		var err error
		if b, err = format.AppendEventLine(b[:0], ev); err != nil {
			t.Fatal(err)
		}
		b = append(b, '\n')
		if i%10 == 0 {
			other := &snoopv1.Event{Kind: snoopv1.EventKind_EVENT_KIND_TRANSACTION, Proxy: "other", Time: timestamppb.New(at),
				Transaction: &snoopv1.Transaction{Op: snoopv1.Op_OP_HAVE, Result: "notok", Latency: durationpb.New(time.Second)}}
			if b, err = format.AppendEventLine(b, other); err != nil {
				t.Fatal(err)
			}
			b = append(b, '\n')
		}
		if i%100 == 0 {
			conn := &snoopv1.Event{Kind: snoopv1.EventKind_EVENT_KIND_CONNECTION_OPENED, Proxy: "web", Time: timestamppb.New(at)}
			if b, err = format.AppendEventLine(b, conn); err != nil {
				t.Fatal(err)
			}
			b = append(b, '\n')
		}
		if _, err := w.Write(b); err != nil {
			t.Fatal(err)
		}
	}
}

// svgTexts returns the text of every <text> element of an SVG document,
// and the number of stroked paths of more than two points (lines).
func svgTexts(t *testing.T, doc []byte) (texts []string, lines int) {
	t.Helper()
	d := xml.NewDecoder(bytes.NewReader(doc))
	inText := false
	for {
		tok, err := d.Token()
		if err == io.EOF {
			return texts, lines
		}
		if err != nil {
			t.Fatalf("not an SVG document: %v", err)
		}
		switch e := tok.(type) {
		case xml.StartElement:
			inText = e.Name.Local == "text"
			if e.Name.Local == "path" {
				var dAttr, style string
				for _, a := range e.Attr {
					switch a.Name.Local {
					case "d":
						dAttr = a.Value
					case "style":
						style = a.Value
					}
				}
				if strings.Contains(style, "stroke:") && strings.Count(dAttr, "L") >= 2 && !strings.Contains(dAttr, "Z") {
					lines++
				}
			}
		case xml.CharData:
			if inText {
				texts = append(texts, string(e))
			}
		case xml.EndElement:
			inText = false
		}
	}
}

func TestPlot(t *testing.T) {
	dir := t.TempDir()
	capPath := filepath.Join(dir, "cap.jsonl.gz")
	f, err := os.Create(capPath)
	if err != nil {
		t.Fatal(err)
	}
	gz := gzip.NewWriter(f)
	writeCapture(t, gz, 3000, time.Minute)
	if err := gz.Close(); err != nil {
		t.Fatal(err)
	}
	f.Close()

	out := filepath.Join(dir, "report.svg")
	r := mustCtl(t, nil, "plot", capPath, "--proxy", "web", "-o", out)
	if r.err != "plotted 3000 transactions to "+out+"\n" {
		t.Errorf("stderr %q", r.err)
	}
	doc, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	texts, lines := svgTexts(t, doc)
	all := strings.Join(texts, "\n")
	for _, want := range []string{
		capPath + ": 3000 transactions",
		"Latency by operation: p50 (solid) and p99 (dashed) per bin", "latency (ms, log scale)",
		"time (2026-03-14, UTC; bins of 500ms)", "15:00:30.000",
		"Transactions per second by result", "transactions/s",
		"Latency distribution by operation", "latency (bars on 1-2-5 log buckets)", "transactions",
		"GET p50", "GET p99", "ADD p50", "ADD p99", // latency series; REMOVE has none (unanswered)
		"hit", "miss", "ok", "unanswered", // rate series
		"100µs–200µs", "2ms–5ms", // histogram bars
	} {
		if !strings.Contains(all, want) {
			t.Errorf("the SVG has no text %q; it has:\n%s", want, all)
		}
	}
	for _, not := range []string{"HAVE", "notok", "REMOVE p50"} { // other's, filtered out; no latency
		for _, s := range texts {
			if s == not {
				t.Errorf("the SVG has %q", not)
			}
		}
	}
	// Lines: 4 latency (2 ops x p50, p99) and 4 rates; the grid and axes
	// are single segments.
	if lines < 8 {
		t.Errorf("%d lines in the SVG, want at least 8 series", lines)
	}

	// PNG from stdin, with a filter and a fixed bin.
	var in bytes.Buffer
	writeCapture(t, &in, 500, 10*time.Second)
	png1 := filepath.Join(dir, "report.png")
	cmd := command(t.Context(), nil, "plot", "-", "--op", "get", "--bin", "1s", "-o", png1, "--width", "20", "--height", "24")
	cmd.Stdin = &in
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("plot to PNG: %v\n%s", err, b)
	}
	pf, err := os.Open(png1)
	if err != nil {
		t.Fatal(err)
	}
	defer pf.Close()
	cfg, err := png.DecodeConfig(pf)
	if err != nil {
		t.Fatalf("not a PNG: %v", err)
	}
	if w, h := cfg.Width, cfg.Height; w < 700 || w > 800 || h < 850 || h > 950 { // 20 x 24 cm at 96 dpi
		t.Errorf("PNG %dx%d, want about 756x907", w, h)
	}

	// Mistakes are one line each, and leave no picture behind.
	for _, tc := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"plot", capPath}, 2, "plot needs --image"},
		{[]string{"plot", capPath, "-o", filepath.Join(dir, "x.gif")}, 2, "the extension says the format"},
		{[]string{"plot", filepath.Join(dir, "nosuch"), "-o", filepath.Join(dir, "y.svg")}, 1, "no such file"},
		{[]string{"plot", capPath, "--proxy", "nosuch", "-o", filepath.Join(dir, "z.svg")}, 1, "no transactions in"},
		{[]string{"plot", capPath, "--bin", "-1s", "-o", filepath.Join(dir, "z.svg")}, 2, "negative"},
	} {
		r := runCtl(t, nil, tc.args...)
		if r.code != tc.code || !strings.HasPrefix(r.err, "snoopctl: ") || !strings.Contains(r.err, tc.msg) || strings.Count(r.err, "\n") != 1 {
			t.Errorf("snoopctl %v: %v, want exit %d and %q", tc.args, r, tc.code, tc.msg)
		}
	}
	for _, name := range []string{"x.gif", "y.svg", "z.svg"} {
		if _, err := os.Stat(filepath.Join(dir, name)); err == nil {
			t.Errorf("a failed plot left %s", name)
		}
	}
	if m, _ := filepath.Glob(filepath.Join(dir, ".*")); len(m) != 0 {
		t.Errorf("temporary files left: %v", m)
	}
}

// BenchmarkPlotMillion measures snoopctl plot over a capture of a million
// transactions (about 1.2 million lines with the other events), the whole
// binary: reading, filtering, binning and drawing.
func BenchmarkPlotMillion(b *testing.B) {
	dir := b.TempDir()
	capPath := filepath.Join(dir, "million.jsonl")
	f, err := os.Create(capPath)
	if err != nil {
		b.Fatal(err)
	}
	bw := bufio.NewWriterSize(f, 1<<20)
	writeCapture(b, bw, 1_000_000, time.Hour)
	if err := bw.Flush(); err != nil {
		b.Fatal(err)
	}
	f.Close()
	fi, _ := os.Stat(capPath)
	b.ReportMetric(float64(fi.Size())/(1<<20), "MiB-capture")
	for _, ext := range []string{"svg", "png"} {
		b.Run(ext, func(b *testing.B) {
			for b.Loop() {
				out := filepath.Join(dir, "m."+ext)
				cmd := command(b.Context(), nil, "plot", capPath, "--proxy", "web", "-o", out)
				if o, err := cmd.CombinedOutput(); err != nil {
					b.Fatalf("%v: %s", err, o)
				}
			}
		})
	}
}
