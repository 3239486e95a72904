package faultsuite

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// section is one scenario's part of docs/reliability.md.
type section struct {
	test    string
	title   string
	figures []string
	rows    []sample
}

var report struct {
	mu       sync.Mutex
	sections []section
}

// record logs a scenario's figures and, in the long mode, keeps them with
// the samples for docs/reliability.md.
func record(t *testing.T, title string, figures []string, rows []sample) {
	t.Helper()
	for _, f := range figures {
		t.Logf("%s: %s", title, f)
	}
	if r, f, g := peak(rows); len(rows) > 0 {
		t.Logf("%s: snoopd peak RSS %s, fds %d, goroutines %d over %d samples", title, mb(r), f, g, len(rows))
	}
	if !long() || t.Failed() {
		return
	}
	report.mu.Lock()
	defer report.mu.Unlock()
	report.sections = append(report.sections, section{test: t.Name(), title: title, figures: figures, rows: rows})
}

// maxRows bounds a table; longer series are thinned evenly, keeping the
// rows with notes.
const maxRows = 24

func thin(rows []sample) []sample {
	if len(rows) <= maxRows {
		return rows
	}
	var out []sample
	step := float64(len(rows)) / maxRows
	next := 0.0
	for i, r := range rows {
		if r.note != "" || float64(i) >= next || i == len(rows)-1 {
			out = append(out, r)
			for next <= float64(i) {
				next += step
			}
		}
	}
	return out
}

// writeReport rewrites docs/reliability.md from the recorded sections.
func writeReport(took time.Duration) error {
	report.mu.Lock()
	defer report.mu.Unlock()
	var b strings.Builder
	goVersion, _ := exec.Command("go", "version").Output()
	kernel, _ := exec.Command("uname", "-sr").Output()
	fmt.Fprintf(&b, `# Reliability: the fault suite's figures

Written by the fault suite (`+"`faultsuite/`"+`) in its long mode, which
starts the real binaries (snoopd, snoopctl, dccache, dcload), drives each
fault at them and samples snoopd's resident memory (VmRSS), open
descriptors (/proc/PID/fd) and goroutines (go_goroutines from its
/metrics, on a unix socket) over time. Regenerate the whole file with

    SNOOPD_FAULTS_LONG=1 go test -v -timeout 30m ./faultsuite

or one scenario with the command under its heading (which prints its
figures, and rewrites this file with that scenario only). The short mode,
which CI runs with the rest of `+"`go test ./...`"+`, drives the same faults with
smaller counts and checks the same things.

Run on %s, %d CPUs, %s, %s; the suite took %s. These are one run's
figures on a machine shared with other work: the times in them are what
happened, not bounds anything asserts.
`, time.Now().UTC().Format("2006-01-02"), runtime.NumCPU(), strings.TrimSpace(string(kernel)), strings.TrimSpace(string(goVersion)), took.Round(time.Second))
	for _, s := range report.sections {
		fmt.Fprintf(&b, "\n## %s\n\n", s.title)
		fmt.Fprintf(&b, "    SNOOPD_FAULTS_LONG=1 go test -v -timeout 30m -run '^%s$' ./faultsuite\n\n", strings.SplitN(s.test, "/", 2)[0])
		for _, f := range s.figures {
			fmt.Fprintf(&b, "- %s\n", f)
		}
		if len(s.rows) == 0 {
			continue
		}
		r, f, g := peak(s.rows)
		fmt.Fprintf(&b, "- snoopd at its peak: RSS %s, %d descriptors, %d goroutines (%d samples)\n\n", mb(r), f, g, len(s.rows))
		b.WriteString("| t | RSS | fds | goroutines | |\n| ---: | ---: | ---: | ---: | --- |\n")
		for _, row := range thin(s.rows) {
			gs := fmt.Sprint(row.goroutines)
			if row.goroutines < 0 {
				gs = "—"
			}
			fmt.Fprintf(&b, "| %.1fs | %s | %d | %s | %s |\n", row.at.Seconds(), mb(row.rss), row.fds, gs, row.note)
		}
	}
	path := filepath.Join("..", "docs", "reliability.md")
	// The figures measured by hand, with the scripts under docs/, are
	// not the suite's to rewrite: they are kept as they are, at the end.
	if old, err := os.ReadFile(path); err == nil {
		if i := strings.Index(string(old), "\n"+handMeasured); i >= 0 {
			b.WriteString(string(old[i:]))
		}
	}
	return os.WriteFile(path, []byte(b.String()), 0o644)
}

// handMeasured heads the part of docs/reliability.md that writeReport
// keeps.
const handMeasured = "# Measured by hand"
