package main

// snoopctl top --from: two real snoopd export to a NATS server in this
// process, and the real snoopctl counts their events per daemon and
// proxy.

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/snoopd/snoopd/distcache/loadgen"
	"github.com/snoopd/snoopd/internal/natstest"
)

// topFrame is what the test reads of a top -o json line.
type topFrame struct {
	Time     time.Time `json:"time"`
	Source   string    `json:"source"`
	Interval string    `json:"interval"`
	Since    string    `json:"since"`
	Totals   struct {
		Proxies      int   `json:"proxies"`
		Daemons      int   `json:"daemons"`
		Connections  int64 `json:"connections"`
		Transactions int64 `json:"transactions"`
	} `json:"totals"`
	Proxies []struct {
		Daemon      string `json:"daemon"`
		Name        string `json:"name"`
		State       string `json:"state"`
		Connections int64  `json:"connections"`
		Ops         int64  `json:"ops"`
		ByOp        []struct {
			Op    string `json:"op"`
			Count int64  `json:"count"`
		} `json:"ops_detail"`
	} `json:"proxies"`
}

func topFrames(t *testing.T, out string) []topFrame {
	t.Helper()
	var fs []topFrame
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if l == "" {
			continue
		}
		var f topFrame
		if err := json.Unmarshal([]byte(l), &f); err != nil {
			t.Fatalf("top -o json line %q: %v", l, err)
		}
		fs = append(fs, f)
	}
	return fs
}

// opsByDaemon adds up the frames' operation counts per daemon and op
// ("web-1 GET"): each frame counts its interval, so the sum is everything
// since top subscribed.
func opsByDaemon(t *testing.T, fs []topFrame) map[string]int64 {
	t.Helper()
	got := map[string]int64{}
	for _, f := range fs {
		for _, p := range f.Proxies {
			if p.Name != "p" || p.State != "-" {
				t.Fatalf("row %+v: want proxy p, state -", p)
			}
			for _, o := range p.ByOp {
				got[p.Daemon+" "+o.Op] += o.Count
			}
		}
	}
	return got
}

// TestFleetTop: top --from counts every transaction of two daemons (one
// exporting protobuf one by one, one JSON in batches) per daemon, with
// the op counts the load made; -n 3 prints three frames, the first since
// the subscription, then intervals.
func TestFleetTop(t *testing.T) {
	srv := natstest.Start(t)
	ms := []*fleetMember{
		startMember(t, "web-1", "--export", srv.URL()),
		startMember(t, "web-2", "--export", srv.URL(), "--export-format", "json", "--export-batch", "32"),
	}
	three := startCtl(t, nil, "top", "--from", srv.URL(), "-b", "-n", "3", "-d", "2s", "-o", "json")
	all := startCtl(t, nil, "top", "--from", srv.URL(), "-b", "-n", "0", "-d", "100ms", "-o", "json")
	waitSubscribed(t, srv, "snoop.web-1.p.tx.get", 2)

	reps := fleetLoad(t, "top", ms, loadgen.Config{Conns: 2, Ops: 1000})
	want := map[string]int64{}
	var total int64
	for i, m := range ms {
		for _, o := range reps[i].ByOp {
			want[m.name+" "+o.Op] = o.Count
		}
		total += reps[i].Ops
		if s := m.settleAll(t); s.GetDropped() != 0 {
			t.Fatalf("%s: export dropped: %v", m.name, s)
		}
	}

	// Every transaction reaches the counting top, and every connection
	// the load opened is seen closed: wait for that, boundedly.
	last := func() (topFrame, bool) {
		fs := topFrames(t, all.out.String())
		if len(fs) == 0 {
			return topFrame{}, false
		}
		return fs[len(fs)-1], true
	}
	for i := 0; i < 500; i++ {
		if f, ok := last(); ok && f.Totals.Transactions >= total && f.Totals.Connections == 0 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	delivered := time.Now()
	r := all.wait(t, true)
	if r.code != 0 {
		t.Fatalf("top -n 0: %v", r)
	}
	fs := topFrames(t, r.out)
	f := fs[len(fs)-1]
	if f.Totals.Transactions != total || f.Totals.Daemons != 2 || f.Totals.Proxies != 2 || f.Totals.Connections != 0 {
		t.Fatalf("last frame's totals %+v, want %d transactions of 2 proxies on 2 daemons, no connection open", f.Totals, total)
	}
	if f.Proxies[0].Daemon != "web-1" || f.Proxies[1].Daemon != "web-2" || f.Source != srv.URL() || f.Since == "" {
		t.Fatalf("last frame: %+v", f)
	}
	got := opsByDaemon(t, fs)
	for k, n := range want {
		if got[k] != n {
			t.Errorf("%s: top counted %d, the load made %d", k, got[k], n)
		}
	}
	if len(got) != len(want) {
		t.Errorf("top counted %v, the load made %v", got, want)
	}

	// -n 3: three frames, the first since the subscription, the others
	// over an interval.
	r = three.wait(t, false)
	if r.code != 0 {
		t.Fatalf("top -n 3: %v", r)
	}
	fs = topFrames(t, r.out)
	if len(fs) != 3 || apiDuration(t, fs[0].Interval) != 0 || apiDuration(t, fs[1].Interval) <= 0 || apiDuration(t, fs[2].Interval) <= 0 || fs[0].Since != fs[2].Since || fs[0].Since == "" {
		t.Fatalf("top -n 3 printed %d frames: %s", len(fs), r.out)
	}
	got = opsByDaemon(t, fs)
	var sum int64
	for _, n := range got {
		sum += n
	}
	if sum != fs[2].Totals.Transactions {
		t.Errorf("top -n 3: the frames' ops add up to %d, the last frame's total is %d", sum, fs[2].Totals.Transactions)
	}
	// Its frames are two seconds apart; on any but a starved machine
	// the load was delivered long before the third, which then has it
	// all. (When it was not, the counting top above has shown the
	// numbers right.)
	if delivered.Before(fs[2].Time.Add(-500 * time.Millisecond)) {
		for k, n := range want {
			if got[k] != n {
				t.Errorf("top -n 3: %s: counted %d, the load made %d", k, got[k], n)
			}
		}
	} else {
		t.Logf("the load was delivered at %v, after top -n 3's last frame at %v: its counts are not compared", delivered, fs[2].Time)
	}
}

// TestFleetTopErrors: a NATS server that cannot be reached is a clear
// error at once, and filters that need --from say so.
func TestFleetTopErrors(t *testing.T) {
	srv := natstest.Start(t)
	url := srv.URL()
	srv.Stop()
	r := runCtl(t, nil, "top", "--from", url, "-b", "-n", "1")
	if r.code != 1 || !strings.Contains(r.err, "cannot reach NATS at "+url) || strings.Count(r.err, "\n") != 1 {
		t.Errorf("top --from a stopped server: %v", r)
	}
	r = runCtl(t, nil, "top", "--from", "127.0.0.1:4222", "-b")
	if r.code != 2 || !strings.Contains(r.err, "is not a NATS URL") {
		t.Errorf("top --from without a scheme: %v", r)
	}
	r = runCtl(t, nil, "top", "--op", "get", "-b")
	if r.code != 2 || !strings.Contains(r.err, "--op filters the events top --from") {
		t.Errorf("top --op without --from: %v", r)
	}
}

// TestTopSeveralDaemons: top with -a naming several daemons polls each
// and shows one row per daemon and proxy, as list does (two proxies
// named p stay apart), with the daemons' own counters; a daemon that
// cannot be reached is an error naming it.
func TestTopSeveralDaemons(t *testing.T) {
	a, b := startMember(t, "alpha"), startMember(t, "beta")
	reps := fleetLoad(t, "top-a", []*fleetMember{a, b}, loadgen.Config{Conns: 1, Ops: 300})
	r := mustCtl(t, nil, "-a", a.d.addr, "-a", b.d.addr, "top", "-b", "-n", "1", "-o", "json")
	fs := topFrames(t, r.out)
	if len(fs) != 1 || len(fs[0].Proxies) != 2 || fs[0].Totals.Daemons != 2 || fs[0].Source != "alpha, beta" {
		t.Fatalf("top -a a -a b: %s", r.out)
	}
	for i, p := range fs[0].Proxies {
		want := []string{"alpha", "beta"}[i]
		if p.Daemon != want || p.Name != "p" || p.State != "listening" || p.Ops != reps[i].Ops {
			t.Errorf("row %d: %+v, want daemon %s, proxy p listening, %d ops", i, p, want, reps[i].Ops)
		}
	}
	r = mustCtl(t, nil, "-a", a.d.addr+","+b.d.addr, "top", "-b", "-n", "1")
	// The table is sorted by ops/s: either daemon may come first.
	lines := strings.Split(r.out, "\n")
	if len(lines) < 6 || !strings.HasPrefix(lines[3], "DAEMON  NAME") ||
		!slices.ContainsFunc(lines[4:6], func(l string) bool { return strings.HasPrefix(l, "alpha   p     listening") }) ||
		!slices.ContainsFunc(lines[4:6], func(l string) bool { return strings.HasPrefix(l, "beta    p     listening") }) {
		t.Errorf("top -b over two daemons:\n%s", r.out)
	}
	gone := b.d.dir + "/gone.sock"
	r = runCtl(t, nil, "-a", a.d.addr+",unix://"+gone, "top", "-b", "-n", "1")
	if r.code != 1 || !strings.Contains(r.err, gone) || strings.Count(r.err, "\n") != 1 {
		t.Errorf("top with a daemon that is not there: %v", r)
	}
}
