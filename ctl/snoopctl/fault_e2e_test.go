package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/snoopd/snoopd/distcache"
	"github.com/snoopd/snoopd/distcache/loadgen"
)

// Fault injection through the real binaries: snoopd serves the proxy,
// snoopctl adds and removes faults, dcload drives the load and its -json
// report shows what the clients saw.

// dcload runs the load generator binary against addr and returns its
// report; errors in the load are the test's to judge.
func dcload(t *testing.T, addr distcache.Addr, args ...string) loadgen.Report {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bins.dcload, append([]string{"-addr", addr.String(), "-json", "-id-prefix", idPrefix, "-timeout", "10s"}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.Run() // exit 1 when the load met errors: the report says which
	var rep loadgen.Report
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("dcload %v: report %q: %v (stderr %q)", args, out.String(), err, errb.String())
	}
	return rep
}

func opReport(rep loadgen.Report, op string) loadgen.OpReport {
	for _, o := range rep.ByOp {
		if o.Op == op {
			return o
		}
	}
	return loadgen.OpReport{}
}

type faultCounters struct {
	Counters []struct {
		Name    string `json:"name"`
		Matched string `json:"matched"`
		Applied string `json:"applied"`
	} `json:"counters"`
}

func faultList(t *testing.T, d *daemon) faultCounters {
	t.Helper()
	var fc faultCounters
	r := mustCtl(t, d, "fault", "list", "p", "-o", "json")
	if err := json.Unmarshal([]byte(r.out), &fc); err != nil {
		t.Fatalf("fault list -o json: %q: %v", r.out, err)
	}
	return fc
}

func TestFaultsThroughBinaries(t *testing.T) {
	d, addr := setup(t)
	// Sessions the GETs will find: 20 ids, every one added (the seeded
	// choice of ids covers them all in 200 ADDs).
	seed := dcload(t, addr, "-ops", "200", "-conns", "1", "-mix", "add=1", "-sessions", "20", "-data", "100")
	if seed.Results["ok"] != 20 {
		t.Fatalf("seeding: %v", seed.Results)
	}
	gets := []string{"-ops", "200", "-conns", "2", "-mix", "get=1", "-sessions", "20"}
	if rep := dcload(t, addr, gets...); rep.Results["hit"] != 200 || rep.Errors != 0 {
		t.Fatalf("before any fault: %v, %d errors", rep.Results, rep.Errors)
	}

	// Every second GET misses (on average): the clients see misses, the
	// fault matched every GET and was applied to exactly the misses.
	mustCtl(t, d, "fault", "add", "p", "half", "--type", "miss", "--probability", "0.5", "--seed", "9")
	tail := startCtl(t, d, "tail", "p", "--fault", "half", "-o", "json")
	waitWatchers(t, d, 1)
	rep := dcload(t, addr, gets...)
	hits, misses := rep.Results["hit"], rep.Results["miss"]
	if rep.Errors != 0 || hits+misses != 200 || misses < 50 || hits < 50 {
		t.Fatalf("half the GETs missing: %v, %d errors", rep.Results, rep.Errors)
	}
	// The event stream names the fault on exactly the GETs it changed.
	waitLines(t, tail, int(misses))
	tail.wait(t, true)
	if c := count(parse(t, tail.out.String())); c.tx != int(misses) || c.results["miss"] != int(misses) {
		t.Fatalf("tail --fault half: %d transactions %v, want the %d misses", c.tx, c.results, misses)
	}
	fc := faultList(t, d)
	if len(fc.Counters) != 1 || fc.Counters[0].Matched != "200" || fc.Counters[0].Applied != itoa(misses) {
		t.Fatalf("counters %+v, want 200 matched and %d applied", fc.Counters, misses)
	}
	if r := mustCtl(t, d, "show", "p"); !strings.Contains(r.out, "half") || !strings.Contains(r.out, "answer miss") {
		t.Errorf("show lists no fault:\n%s", r.out)
	}

	// Removed: clean at once.
	mustCtl(t, d, "fault", "remove", "p", "half")
	if rep := dcload(t, addr, gets...); rep.Results["hit"] != 200 {
		t.Fatalf("after removal: %v", rep.Results)
	}

	// ADDs refused: every one answered exists.
	mustCtl(t, d, "fault", "add", "p", "full", "--type", "error", "--status", "exists")
	if rep := dcload(t, addr, "-ops", "30", "-conns", "1", "-mix", "add=1", "-sessions", "500", "-data", "100"); rep.Results["exists"] != 30 {
		t.Fatalf("ADD under error exists: %v", rep.Results)
	}
	mustCtl(t, d, "fault", "clear", "p")

	// Latency: no GET is answered sooner than the delay.
	mustCtl(t, d, "fault", "add", "p", "slow", "--type", "latency", "--op", "get", "--delay", "20ms", "--jitter", "5ms", "--seed", "1")
	rep = dcload(t, addr, "-ops", "20", "-conns", "2", "-mix", "get=1", "-sessions", "20")
	if g := opReport(rep, "GET"); g.Count != 20 || g.Latency.Min < 15*time.Millisecond {
		t.Fatalf("GETs under 20ms±5ms latency: %d, fastest %v", g.Count, g.Latency.Min)
	}
	mustCtl(t, d, "fault", "clear", "p")

	// Drop before the request: the first three GETs see their
	// connection closed, the rest are answered.
	mustCtl(t, d, "fault", "add", "p", "cut", "--type", "drop", "--op", "get", "--budget", "3")
	rep = dcload(t, addr, "-ops", "20", "-conns", "1", "-mix", "get=1", "-sessions", "20")
	if rep.Errors != 3 || rep.Results["hit"] != 17 {
		t.Fatalf("drop with budget 3: %v, %d errors (%v)", rep.Results, rep.Errors, rep.ErrorCauses)
	}
	mustCtl(t, d, "fault", "clear", "p")

	// A corrupt fault needs --i-mean-it.
	if r := runCtl(t, d, "fault", "add", "p", "bad", "--type", "corrupt", "--field", "op"); r.code != 2 || !strings.Contains(r.err, "--i-mean-it") {
		t.Fatalf("corrupt without --i-mean-it: %v", r)
	}
	// Bad input: one line, nothing changed.
	if r := runCtl(t, d, "fault", "add", "p", "x", "--type", "latency"); r.code != 1 || !strings.Contains(r.err, "needs a delay") {
		t.Fatalf("latency without delay: %v", r)
	}
	if r := mustCtl(t, d, "fault", "list", "p"); !strings.Contains(r.out, "no faults") {
		t.Fatalf("after a refused add: %q", r.out)
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
