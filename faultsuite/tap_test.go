package faultsuite

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/snoopd/snoopd/internal/skip"
)

// TestLiveTapOnLoopback makes a tap with snoopctl add --tap lo beside a
// dccache on 127.0.0.1, runs dcload straight at the cache while
// snoopctl tail -o json follows the tap, and holds what the tap saw to
// what dcload did: every transaction in the tail, none dropped; stats'
// totals; show
// with the tap's kind and counters; /metrics with its capture counters
// and its transactions; a fault refused; remove ends it.
func TestLiveTapOnLoopback(t *testing.T) {
	if os.Geteuid() != 0 {
		skip.Missing(t, "root: snoopd captures on lo through AF_PACKET, which needs CAP_NET_RAW")
	}
	ops := pick(2000, 50000)
	cache := startCache(t, "IP:127.0.0.1:0")
	d := startSnoopd(t, daemonOpts{})
	if out := d.mustCtl(t, "add", "lo-tap", "--tap", "lo", "--server", cache.addr); out != "tap on lo" {
		t.Fatalf("snoopctl add --tap printed %q", out)
	}

	out := filepath.Join(t.TempDir(), "tail.json")
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	tail := startProcTo(t, "snoopctl tail", f, []string{"NO_COLOR=1"}, bins.snoopctl, "-a", "unix://"+d.sock,
		"tail", "lo-tap", "-o", "json", "--count", strconv.Itoa(ops), "--for", "60s")
	d.waitWatchers(t, 1)
	start := time.Now()
	rep := dcload(t, "-addr", cache.addr, "-conns", "4", "-ops", strconv.Itoa(ops), "-verify", "-data", "50-512")
	took := time.Since(start)
	if rep.Errors != 0 || rep.Ops != int64(ops) {
		t.Fatalf("dcload: %d ops, %d errors (%s); want %d ops", rep.Ops, rep.Errors, causes(rep), ops)
	}
	select {
	case <-tail.done:
	case <-time.After(10 * time.Second):
		tail.signal(syscall.SIGINT)
		<-tail.done
	}
	f.Close()
	tx, dropped := tailCount(t, out)
	if tx != rep.Ops || dropped != 0 {
		t.Errorf("snoopctl tail -o json of the tap: %d transactions, %d dropped; dcload made %d", tx, dropped, rep.Ops)
	}

	var st struct {
		Proxies []struct {
			Kind     string `json:"kind"`
			Counters struct {
				Transactions json.Number `json:"transactions"` // an int64: protojson writes it as a string
			} `json:"counters"`
		} `json:"proxies"`
	}
	if err := json.Unmarshal([]byte(d.mustCtl(t, "stats", "lo-tap", "-o", "json")), &st); err != nil {
		t.Fatalf("snoopctl stats -o json: %v", err)
	}
	if len(st.Proxies) != 1 || st.Proxies[0].Kind != "PROXY_KIND_TAP" || st.Proxies[0].Counters.Transactions.String() != strconv.FormatInt(rep.Ops, 10) {
		t.Errorf("snoopctl stats lo-tap -o json: %+v; dcload made %d", st.Proxies, rep.Ops)
	}
	show := d.mustCtl(t, "show", "lo-tap")
	for _, want := range []string{"tap on lo", "capturing", "packets:", "transactions:"} {
		if !strings.Contains(show, want) {
			t.Errorf("snoopctl show lo-tap lacks %q:\n%s", want, show)
		}
	}

	m := scrapeValues(t, d)
	packets := m[`snoopd_proxy_tap_kernel_packets_total{proxy="lo-tap"}`]
	var txs float64
	for k, v := range m {
		if strings.HasPrefix(k, "snoopd_proxy_transactions_total{") && strings.Contains(k, `proxy="lo-tap"`) {
			txs += v
		}
	}
	if packets == 0 || txs != float64(rep.Ops) || m[`snoopd_proxy_tap_kernel_drops_total{proxy="lo-tap"}`] != 0 ||
		m[`snoopd_proxy_tap_capture_gaps_total{proxy="lo-tap"}`] != 0 {
		t.Errorf("/metrics of the tap: %v packets, %v transactions (dcload: %d), drops %v, gaps %v", packets, txs, rep.Ops,
			m[`snoopd_proxy_tap_kernel_drops_total{proxy="lo-tap"}`], m[`snoopd_proxy_tap_capture_gaps_total{proxy="lo-tap"}`])
	}

	r := d.snoopctl(t, "fault", "add", "lo-tap", "slow", "--type", "latency", "--delay", "1ms")
	if r.code == 0 || !strings.Contains(r.err, "a tap forwards nothing") {
		t.Errorf("fault add on a tap: exit %d, %s", r.code, r.err)
	}
	d.mustCtl(t, "remove", "lo-tap")
	if r := d.snoopctl(t, "show", "lo-tap"); r.code == 0 {
		t.Errorf("show after remove: %s", r.out)
	}
	record(t, "A live tap on loopback", []string{
		fmt.Sprintf("dcload -conns 4 -ops %d -verify straight at dccache in %v; the tap on lo saw %d transactions (tail -o json), %.0f packets, none dropped",
			ops, took.Round(time.Millisecond), tx, packets),
	}, nil)
}

// scrapeValues reads d's /metrics into a map from sample (name and
// labels, as written) to value.
func scrapeValues(t *testing.T, d *snoopd) map[string]float64 {
	t.Helper()
	resp, err := d.httpc.Get("http://snoopd/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err == nil {
			out[line[:i]] = v
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}
