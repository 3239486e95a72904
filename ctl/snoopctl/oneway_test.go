package main

// One way to say a thing: durations read and refused alike by every
// tool, one duration form in every JSON snoopctl writes, one name per
// flag concept, plot taking read's filters and writing to stdout, and
// stats' totals drawing each operation's latency.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/snoopd/snoopd/distcache/loadgen"
)

// apiDurationForm is how protojson writes a google.protobuf.Duration.
var apiDurationForm = regexp.MustCompile(`^-?[0-9]+(\.[0-9]{3}|\.[0-9]{6}|\.[0-9]{9})?s$`)

// apiDuration reads a duration written in the API's JSON form, failing
// the test on any other form.
func apiDuration(t *testing.T, s string) time.Duration {
	t.Helper()
	if !apiDurationForm.MatchString(s) {
		t.Fatalf("duration %q is not in the API's form (\"0.000250s\")", s)
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// durationKeys are the keys of snoopctl's own JSON objects that hold
// durations.
var durationKeys = map[string]bool{"interval": true, "elapsed": true, "uptime": true, "span": true,
	"p50": true, "p90": true, "p99": true, "p999": true, "mean": true, "max": true, "min": true, "latency": false}

// checkDurations walks a JSON document: every duration is a string in
// the API's form, and no key counts nanoseconds. It returns how many
// durations it saw.
func checkDurations(t *testing.T, where string, v any) int {
	t.Helper()
	n := 0
	switch v := v.(type) {
	case map[string]any:
		for k, x := range v {
			if strings.HasSuffix(k, "_ns") {
				t.Errorf("%s: key %q counts nanoseconds; durations are strings as the API writes them", where, k)
			}
			if durationKeys[k] {
				s, ok := x.(string)
				if !ok || !apiDurationForm.MatchString(s) {
					t.Errorf("%s: %q is %v, not a duration in the API's form", where, k, x)
				}
				n++
				continue
			}
			n += checkDurations(t, where, x)
		}
	case []any:
		for _, x := range v {
			n += checkDurations(t, where, x)
		}
	}
	return n
}

func jsonLines(t *testing.T, where, out string) []any {
	t.Helper()
	var docs []any
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		var v any
		if err := json.Unmarshal([]byte(l), &v); err != nil {
			t.Fatalf("%s: %v in %q", where, err, l)
		}
		docs = append(docs, v)
	}
	return docs
}

func TestJSONDurationsAreInTheAPIsForm(t *testing.T) {
	d, addr := setup(t)
	load(t, addr, loadgen.Config{Conns: 2, Ops: 300})

	// top -b -o json, with -d as a bare number of seconds.
	r := mustCtl(t, d, "top", "-b", "-n", "2", "-d", "0.1", "-o", "json")
	docs := jsonLines(t, "top", r.out)
	if len(docs) != 2 {
		t.Fatalf("top -n 2: %d lines:\n%s", len(docs), r.out)
	}
	// The first frame covers the load: uptime, interval, span and the
	// percentiles; the second, with no load in it, fewer.
	for i, doc := range docs {
		if n := checkDurations(t, "top", doc); n < 3 || (i == 0 && n < 6) {
			t.Errorf("top: only %d durations in %v", n, doc)
		}
	}
	if iv := docs[1].(map[string]any)["interval"]; iv == nil || apiDuration(t, iv.(string)) <= 0 {
		t.Errorf("top's second frame: interval %v", iv)
	}

	// stats --watch, its interval a bare number of seconds too.
	r = mustCtl(t, d, "stats", "--watch", "--interval", "0.2", "--for", "700ms", "-o", "json")
	for _, doc := range jsonLines(t, "stats --watch", r.out) {
		if checkDurations(t, "stats --watch", doc) != 1 {
			t.Errorf("stats --watch: want its interval: %v", doc)
		}
	}

	// stats sampling the stream: its elapsed time and the API's latency.
	w := startCtl(t, d, "stats", "--history", "50", "--count", "50", "-o", "json")
	r = w.wait(t, false)
	if r.code != 0 {
		t.Fatalf("stats --history: %v", r)
	}
	for _, doc := range jsonLines(t, "stats --count", r.out) {
		if n := checkDurations(t, "stats --count", doc); n < 2 {
			t.Errorf("stats --count: only %d durations in %v", n, doc)
		}
	}
}

// TestBadDurationIsOneAnswerEverywhere: snoopd, snoopctl and dcload read
// durations alike and refuse a bare number in the same words, on one
// line.
func TestBadDurationIsOneAnswerEverywhere(t *testing.T) {
	const want = `"5": want a duration with a unit, such as 500ms, 2s or 5m`
	run := func(bin string, args ...string) (string, int) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, args...)
		cmd.Env = append(os.Environ(), "SNOOPD_ADDRESS=")
		var errb bytes.Buffer
		cmd.Stderr = &errb
		err := cmd.Run()
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			t.Fatalf("%s %v: %v", bin, args, err)
		}
		return errb.String(), ee.ExitCode()
	}
	for _, tc := range []struct {
		bin    string
		args   []string
		prefix string
	}{
		{bins.snoopd, []string{"--shutdown-timeout", "5"}, "snoopd: --shutdown-timeout "},
		{bins.snoopctl, []string{"tail", "--min-latency", "5"}, "snoopctl: --min-latency "},
		{bins.snoopctl, []string{"--timeout", "5", "list"}, "snoopctl: --timeout "},
		{bins.dcload, []string{"-addr", "IP:127.0.0.1:1", "-duration", "5"}, "dcload: --duration "},
	} {
		stderr, code := run(tc.bin, tc.args...)
		first, _, _ := strings.Cut(stderr, "\n")
		if code != 2 || !strings.HasPrefix(first, tc.prefix+want) || strings.Count(stderr, "\n") > 2 {
			t.Errorf("%s %v: exit %d, stderr:\n%s\nwant exit 2 and a first line %q", filepath.Base(tc.bin), tc.args, code, stderr, tc.prefix+want)
		}
	}
	// top's refresh interval takes seconds as top(1) does, and says so.
	if stderr, code := run(bins.snoopctl, "top", "-b", "-d", "2x"); code != 2 ||
		!strings.Contains(stderr, `--interval "2x": want a duration such as 500ms, 2s or 5m, or a number of seconds`) {
		t.Errorf("top -d 2x: exit %d, %s", code, stderr)
	}
}

// TestTopAndStatsShareFlagNames: top's refresh and count are --interval
// and --count, as stats' are; the old names still work.
func TestTopAndStatsShareFlagNames(t *testing.T) {
	d, _ := setup(t)
	for _, args := range [][]string{
		{"top", "-b", "--count", "1", "--interval", "1"},
		{"top", "-b", "-n", "1", "-d", "1"},
		{"top", "-b", "--iterations", "1", "--delay", "1s"},
	} {
		r := mustCtl(t, d, args...)
		if !strings.Contains(r.out, "p") {
			t.Errorf("%v: %v", args, r)
		}
	}
	if r := runCtl(t, d, "top", "-b", "-n", "1", "-d", "1", "--delay", "1s"); r.code != 2 || !strings.Contains(r.err, "--delay is the old name of --interval") {
		t.Errorf("both names: %v", r)
	}
	// --proxy names proxies in tail and stats as it does in read.
	if r := runCtl(t, d, "tail", "--proxy", "nosuch", "--count", "1"); r.code != 1 || !strings.Contains(r.err, `no proxy named "nosuch"`) {
		t.Errorf("tail --proxy nosuch: %v", r)
	}
	if r := mustCtl(t, d, "stats", "--proxy", "p"); !strings.Contains(r.out, "PROXY") {
		t.Errorf("stats --proxy p: %v", r)
	}
}

// TestStatsTotalsDrawEachOperationsLatency: the totals show each
// operation's percentiles and latency sparkline, as show does.
func TestStatsTotalsDrawEachOperationsLatency(t *testing.T) {
	d, addr := setup(t)
	load(t, addr, loadgen.Config{Conns: 1, Ops: 200})
	r := mustCtl(t, d, "stats")
	lines := strings.Split(r.out, "\n")
	if !strings.Contains(lines[0], "P50") || !strings.Contains(lines[0], "LATENCY") {
		t.Fatalf("stats header %q:\n%s", lines[0], r.out)
	}
	spark := regexp.MustCompile(`\[[ ▁▂▃▄▅▆▇█]+\]`)
	rows := 0
	for _, l := range lines[1:] {
		if l == "" {
			break
		}
		rows++
		if !spark.MatchString(l) {
			t.Errorf("no latency sparkline in %q", l)
		}
	}
	if rows == 0 {
		t.Fatalf("no operations:\n%s", r.out)
	}
}

// TestPlotTakesReadsFiltersAndWritesToStdout: --since, --until, --count
// and --proxy narrow a plot as they narrow read; --image - writes the SVG
// to stdout; the old -o FILE still works, and no longer hides -o json.
func TestPlotTakesReadsFiltersAndWritesToStdout(t *testing.T) {
	dir := t.TempDir()
	capPath := filepath.Join(dir, "cap.jsonl")
	f, err := os.Create(capPath)
	if err != nil {
		t.Fatal(err)
	}
	// 1000 transactions of web, one every 100 ms from plotStart.
	writeCapture(t, f, 1000, 100*time.Second)
	f.Close()

	r := mustCtl(t, nil, "plot", capPath, "--proxy", "web", "--since", "2026-03-14T15:00:10Z", "--until", "2026-03-14T15:00:20Z", "--image", "-")
	if r.err != "plotted 100 transactions to stdout\n" {
		t.Errorf("stderr %q", r.err)
	}
	if !strings.HasPrefix(strings.TrimSpace(r.out), "<?xml") || !strings.Contains(r.out, "<svg") {
		t.Fatalf("stdout is not SVG: %.200q", r.out)
	}
	if texts, _ := svgTexts(t, []byte(r.out)); !slicesContainsSub(texts, "100 transactions") {
		t.Errorf("title does not count 100 transactions: %q", texts)
	}
	if r := mustCtl(t, nil, "plot", capPath, "--proxy", "web", "--count", "42", "--image", "-"); r.err != "plotted 42 transactions to stdout\n" {
		t.Errorf("--count 42: stderr %q", r.err)
	}
	// The old -o FILE, after the command; -o json before it is the
	// global output format, which plot no longer hides.
	out := filepath.Join(dir, "old.svg")
	if r := mustCtl(t, nil, "-o", "json", "plot", capPath, "--count", "5", "-o", out); r.err != "plotted 5 transactions to "+out+"\n" {
		t.Errorf("-o FILE: stderr %q", r.err)
	}
	if _, err := os.Stat(out); err != nil {
		t.Error(err)
	}
	// A directory that does not exist is named as given.
	bad := filepath.Join(dir, "nosuch", "r.svg")
	if r := runCtl(t, nil, "plot", capPath, "--image", bad); r.code != 1 || r.err != "snoopctl: plot "+bad+": no such file or directory\n" {
		t.Errorf("plot into a missing directory: %v", r)
	}
}

func slicesContainsSub(ss []string, sub string) bool {
	for _, s := range ss {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}
