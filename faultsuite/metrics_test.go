package faultsuite

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// rssOf reads a process's resident memory (VmRSS) in bytes without
// touching its /metrics, unlike sample.
func rssOf(t *testing.T, pid int) int64 {
	t.Helper()
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if kb, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(kb), "kB")), 10, 64)
			if err != nil {
				t.Fatalf("VmRSS %q: %v", kb, err)
			}
			return n << 10
		}
	}
	t.Fatalf("no VmRSS in /proc/%d/status", pid)
	return 0
}

// scrapeMetrics reads d's /metrics once, as Prometheus does (gzip asked
// for, by the Go client), and returns the uncompressed body's size and
// the number of lines that start with prefix.
func scrapeMetrics(d *snoopd, prefix string) (size int64, lines int, err error) {
	resp, err := d.httpc.Get("http://snoopd/metrics")
	if err != nil {
		return 0, 0, fmt.Errorf("scraping /metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return 0, 0, fmt.Errorf("scraping /metrics: %s", resp.Status)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		size += int64(len(sc.Bytes())) + 1
		if strings.HasPrefix(sc.Text(), prefix) {
			lines++
		}
	}
	if err := sc.Err(); err != nil {
		return 0, 0, fmt.Errorf("reading /metrics: %w", err)
	}
	io.Copy(io.Discard, resp.Body)
	return size, lines, nil
}

// TestMetricsScrapesOfManyProxies scrapes the /metrics of a snoopd
// holding 3,000 proxies (from --config, disabled so they hold no
// descriptors; their counters are exported all the same) three times in
// a row, then four times at once, and bounds its resident memory: within
// 150 MB of what it was before the first scrape. A /metrics that builds
// every proxy's metrics and histograms in memory before writing any
// grows by about 450 MB after three scrapes and more with concurrent
// ones, and keeps it.
func TestMetricsScrapesOfManyProxies(t *testing.T) {
	const (
		proxies = 3000
		bound   = 150 << 20
	)
	type spec struct {
		Name    string `json:"name"`
		Listen  string `json:"listen"`
		Server  string `json:"server"`
		Enabled bool   `json:"enabled"`
	}
	var set struct {
		Proxies []spec `json:"proxies"`
	}
	for i := range proxies {
		set.Proxies = append(set.Proxies, spec{Name: fmt.Sprintf("p%05d", i), Listen: "IP:127.0.0.1:0", Server: "IP:127.0.0.1:1"})
	}
	b, err := json.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	config := filepath.Join(t.TempDir(), "proxies.json")
	if err := os.WriteFile(config, b, 0o600); err != nil {
		t.Fatal(err)
	}
	d := startSnoopd(t, daemonOpts{args: []string{"--config", config}})
	time.Sleep(500 * time.Millisecond) // let the start-up's garbage be collected
	before := rssOf(t, d.pid())

	var figures []string
	for i := range 3 {
		t0 := time.Now()
		size, infos, err := scrapeMetrics(d, "snoopd_proxy_info{")
		if err != nil {
			t.Fatalf("scrape %d: %v", i+1, err)
		}
		if infos != proxies {
			t.Fatalf("scrape %d: %d snoopd_proxy_info lines, want %d", i+1, infos, proxies)
		}
		figures = append(figures, fmt.Sprintf("scrape %d: %.1f MB in %v", i+1, float64(size)/(1<<20), time.Since(t0).Round(time.Millisecond)))
	}
	after3 := rssOf(t, d.pid())

	// The daemon serves up to four scrapes at once.
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Go(func() {
			if _, _, err := scrapeMetrics(d, "snoopd_proxy_info{"); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("a concurrent scrape: %v", err)
	}
	after4 := rssOf(t, d.pid())

	figures = append(figures,
		fmt.Sprintf("snoopd RSS with %d proxies: %s before the scrapes, %s after three, %s after four more at once (bound: +%s)",
			proxies, mb(before), mb(after3), mb(after4), mb(bound)))
	record(t, "Scraping /metrics with 3,000 proxies", figures, nil)
	if after3 > before+bound {
		t.Errorf("RSS grew from %s to %s over three scrapes: more than %s", mb(before), mb(after3), mb(bound))
	}
	if after4 > before+bound {
		t.Errorf("RSS grew from %s to %s after four concurrent scrapes: more than %s", mb(before), mb(after4), mb(bound))
	}
}
