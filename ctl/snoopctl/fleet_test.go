package main

// Fleet tests: two real snoopd processes export to a NATS server with
// JetStream running in this process, and the real snoopctl follows and
// replays them.

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/snoopd/snoopd/distcache"
	"github.com/snoopd/snoopd/distcache/cacheserver"
	"github.com/snoopd/snoopd/distcache/loadgen"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
	"github.com/snoopd/snoopd/internal/natstest"
)

// fleetMember is a snoopd exporting to NATS with a proxy "p" in front of
// its own cache.
type fleetMember struct {
	name string
	d    *daemon
	addr distcache.Addr
}

func startMember(t *testing.T, name string, extra ...string) *fleetMember {
	t.Helper()
	d := startDaemon(t, append([]string{"--daemon-name", name}, extra...)...)
	cache, err := cacheserver.Start(distcache.MustParseAddr("IP:127.0.0.1:0"), cacheserver.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cache.Close() })
	r := mustCtl(t, d, "add", "p", "--listen", "IP:127.0.0.1:0", "--server", cache.Addr().String())
	addr, err := distcache.ParseConnectAddr(strings.TrimSpace(r.out))
	if err != nil {
		t.Fatalf("add printed %q, not an address: %v", r.out, err)
	}
	return &fleetMember{name: name, d: d, addr: addr}
}

// exportStats reads the member's export counters.
func (m *fleetMember) exportStats(t *testing.T) *snoopv1.ExportStats {
	t.Helper()
	return m.info(t).GetExport()
}

// info reads the member's daemon info.
func (m *fleetMember) info(t *testing.T) *snoopv1.GetDaemonInfoResponse {
	t.Helper()
	r := mustCtl(t, m.d, "version", "-o", "json")
	var v struct {
		Daemon json.RawMessage `json:"daemon"`
	}
	if err := json.Unmarshal([]byte(r.out), &v); err != nil {
		t.Fatalf("version -o json: %v: %s", err, r.out)
	}
	var info snoopv1.GetDaemonInfoResponse
	if err := protojson.Unmarshal(v.Daemon, &info); err != nil {
		t.Fatal(err)
	}
	if info.GetName() != m.name {
		t.Fatalf("daemon name %q, want %q", info.GetName(), m.name)
	}
	return &info
}

// settleAll waits until an export without a filter has matched every
// event the daemon published (it started with the daemon, before any
// proxy) and published or dropped each, and returns the counters. The
// dispatcher hands events out up to --watch-interval after they happen,
// so what the export matched when the load ended may not be all yet.
func (m *fleetMember) settleAll(t *testing.T) *snoopv1.ExportStats {
	t.Helper()
	var info *snoopv1.GetDaemonInfoResponse
	for i := 0; i < 300; i++ {
		info = m.info(t)
		s := info.GetExport()
		if s.GetMatched() == info.GetEventsPublished() && s.GetPublished()+s.GetDropped() == s.GetMatched() {
			return s
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s: export never settled at all %d events published: %v", m.name, info.GetEventsPublished(), info.GetExport())
	return nil
}

// settle waits until everything the exporter matched was published or
// dropped, and returns the counters.
func (m *fleetMember) settle(t *testing.T, matched uint64) *snoopv1.ExportStats {
	t.Helper()
	var s *snoopv1.ExportStats
	for i := 0; i < 300; i++ {
		s = m.exportStats(t)
		if s.GetMatched() == matched && s.GetPublished()+s.GetDropped() == s.GetMatched() {
			return s
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s: export never settled at %d matched: %v", m.name, matched, s)
	return nil
}

// waitSubscribed waits until a subscriber is in place for subject.
func waitSubscribed(t *testing.T, srv *natstest.Server, subject string, n int) {
	t.Helper()
	for i := 0; i < 500; i++ {
		if srv.Subscribers(subject) >= n {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no subscriber for %s", subject)
}

// fleetLoad runs bounded verified load through each member at once.
// Each run has a tag of its own, so its session ids are new to the caches
// and verification holds.
func fleetLoad(t *testing.T, tag string, ms []*fleetMember, cfg loadgen.Config) []loadgen.Report {
	t.Helper()
	reps := make([]loadgen.Report, len(ms))
	var wg sync.WaitGroup
	for i, m := range ms {
		wg.Go(func() {
			c := cfg
			c.Seed = uint64(i + 1)
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			c.Addr, c.Persistent, c.Verify, c.IDPrefix, c.MaxData = m.addr, true, true, idPrefix+m.name+"-"+tag+"-", 512
			rep, err := loadgen.Run(ctx, c)
			if err != nil {
				t.Error(err)
			}
			reps[i] = rep
		})
	}
	wg.Wait()
	for i, rep := range reps {
		if rep.Errors != 0 || rep.Unanswered != 0 {
			t.Fatalf("%s: load: %d errors, %d unanswered: %v", ms[i].name, rep.Errors, rep.Unanswered, rep.ErrorSamples)
		}
	}
	return reps
}

// txKey identifies a transaction across the fleet.
func txKey(ev *snoopv1.Event) string {
	tx := ev.GetTransaction()
	return fmt.Sprintf("%s/%s/%d/%d/%d", ev.GetDaemon(), ev.GetProxy(), ev.GetConnectionId(), tx.GetRequestUid(), tx.GetStartTime().AsTime().UnixNano())
}

// TestFleetTailAndReplay: a tail over NATS sees every transaction of two
// daemons exactly once, with the right daemon names, and a replay from
// JetStream equals what was exported.
func TestFleetTailAndReplay(t *testing.T) {
	srv := natstest.Start(t)
	ms := []*fleetMember{
		// One event a message, and batches (the default, here smaller).
		startMember(t, "web-1", "--export", srv.URL(), "--export-batch", "1"),
		startMember(t, "web-2", "--export", srv.URL(), "--export-format", "json", "--export-batch", "32", "--export-interval", "20ms"),
	}
	tail := startCtl(t, nil, "tail", "--from", srv.URL(), "--events", "tx", "-o", "json")
	waitSubscribed(t, srv, "snoop.web-1.p.tx.get", 1)
	text := startCtl(t, nil, "tail", "--from", srv.URL(), "--daemon", "web-2", "--op", "add")
	waitSubscribed(t, srv, "snoop.web-2.p.tx.add", 2)

	reps := fleetLoad(t, "x", ms, loadgen.Config{Conns: 2, Ops: 1500})
	want := map[string]int64{}
	var total int64
	for i, m := range ms {
		want[m.name] = reps[i].Ops
		total += reps[i].Ops
		s := m.settleAll(t)
		if s.GetDropped() != 0 || !s.GetConnected() || s.GetStream() != "SNOOP" {
			t.Fatalf("%s: export %v", m.name, s)
		}
	}
	// The tail has everything once the exporters settled and NATS
	// delivered it; wait for the count, boundedly, then stop it.
	for i := 0; i < 300 && int64(strings.Count(tail.out.String(), "\n")) < total; i++ {
		time.Sleep(20 * time.Millisecond)
	}
	r := tail.wait(t, true)
	if r.code != 0 {
		t.Fatalf("tail: %v", r)
	}
	live := parse(t, r.out)
	got := map[string]int64{}
	seen := map[string]bool{}
	for _, resp := range live {
		ev := resp.GetEvent()
		if ev == nil || ev.GetTransaction() == nil {
			t.Fatalf("tail --events tx printed %v", resp)
		}
		k := txKey(ev)
		if seen[k] {
			t.Fatalf("transaction %s seen twice", k)
		}
		seen[k] = true
		got[ev.GetDaemon()]++
	}
	for name, n := range want {
		if got[name] != n {
			t.Errorf("%s: tail saw %d transactions, the load made %d", name, got[name], n)
		}
	}
	if len(got) != len(want) {
		t.Errorf("tail saw daemons %v, want %v", got, want)
	}

	// The text tail of web-2's ADDs: one line each, naming the daemon.
	rt := text.wait(t, true)
	adds := opCount(reps[1], "ADD")
	lines := strings.Split(strings.TrimSpace(rt.out), "\n")
	if int64(len(lines)) != adds {
		t.Errorf("text tail: %d lines, web-2 made %d ADDs; stderr %s", len(lines), adds, rt.err)
	}
	for _, l := range lines {
		if f := strings.Fields(l); len(f) < 4 || f[1] != "web-2" || f[2] != "p" || !strings.Contains(l, " ADD ") {
			t.Fatalf("text tail line %q", l)
		}
	}

	// Replay: the same transactions, the same JSON lines.
	rr := mustCtl(t, nil, "read", srv.URL(), "--events", "tx", "-o", "json")
	replayed := parse(t, rr.out)
	if len(replayed) != len(live) {
		t.Fatalf("replay has %d events, the tail %d", len(replayed), len(live))
	}
	a, b := lineSet(t, live), lineSet(t, replayed)
	if !slices.Equal(a, b) {
		t.Fatal("the replay differs from what the tail saw")
	}
	// A filter the matcher applies on replay (CEL, with daemon known).
	rr = mustCtl(t, nil, "read", srv.URL(), "--filter", `daemon == "web-1" && op == "get"`, "-o", "json")
	if n := len(parse(t, rr.out)); int64(n) != opCount(reps[0], "GET") {
		t.Errorf("replay of web-1's GETs: %d, the load made %d", n, opCount(reps[0], "GET"))
	}
	// The daemon reports its export.
	if v := mustCtl(t, ms[0].d, "version"); !strings.Contains(v.out, "export: web-1 to snoop.web-1.> (stream SNOOP)") ||
		!strings.Contains(v.out, "connected") {
		t.Errorf("version: %s", v.out)
	}
}

// opCount is how many operations of op ("GET") the load had answered.
func opCount(rep loadgen.Report, op string) int64 {
	for _, o := range rep.ByOp {
		if o.Op == op {
			return o.Count
		}
	}
	return 0
}

func lineSet(t *testing.T, rs []*snoopv1.WatchEventsResponse) []string {
	t.Helper()
	var out []string
	for _, r := range rs {
		b, err := protojson.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, string(b))
	}
	slices.Sort(out)
	return out
}

// TestFleetNATSRestartUnderLoad stops NATS while load runs through two
// exporting daemons and starts it again: the load runs without errors,
// the exporters reconnect, and every transaction is published or counted
// dropped; the stream holds every acknowledged one.
func TestFleetNATSRestartUnderLoad(t *testing.T) {
	srv := natstest.Start(t)
	filter := `kind == "transaction"`
	ms := []*fleetMember{
		startMember(t, "a", "--export", srv.URL(), "--export-filter", filter),
		startMember(t, "b", "--export", srv.URL(), "--export-filter", filter),
	}
	// Make sure both exporters are connected and have their stream.
	reps0 := fleetLoad(t, "warm", ms, loadgen.Config{Conns: 1, Ops: 50})
	for i, m := range ms {
		m.settle(t, uint64(reps0[i].Ops))
	}

	// The same load with NATS up throughout, for comparison.
	runLoad := loadgen.Config{Conns: 2, Duration: 3 * time.Second, Rate: 3000}
	start := time.Now()
	base := fleetLoad(t, "base", ms, runLoad)
	baseElapsed := time.Since(start)
	for i, m := range ms {
		reps0[i].Ops += base[i].Ops
		s := m.settle(t, uint64(reps0[i].Ops))
		t.Logf("%s: %d transactions at %.0f/s with NATS up; export: %d published, %d dropped", m.name, base[i].Ops,
			float64(base[i].Ops)/baseElapsed.Seconds(), s.GetPublished(), s.GetDropped())
	}

	done := make(chan []loadgen.Report, 1)
	start = time.Now()
	go func() { done <- fleetLoad(t, "outage", ms, runLoad) }()
	time.Sleep(700 * time.Millisecond)
	srv.Stop()
	time.Sleep(1200 * time.Millisecond)
	srv.Restart()
	reps := <-done
	elapsed := time.Since(start)

	var published, dropped uint64
	for i, m := range ms {
		produced := uint64(reps0[i].Ops + reps[i].Ops)
		// The exporter reconnects by itself; a little more load after
		// that is published again.
		for j := 0; j < 300 && !m.exportStats(t).GetConnected(); j++ {
			time.Sleep(50 * time.Millisecond)
		}
		more := fleetLoad(t, "after", []*fleetMember{m}, loadgen.Config{Conns: 1, Ops: 50})
		produced += uint64(more[0].Ops)
		before := m.exportStats(t).GetPublished()
		s := m.settle(t, produced)
		if s.GetDropped() == 0 {
			t.Errorf("%s: nothing dropped while NATS was down: %v", m.name, s)
		}
		if s.GetPublished() <= before-50 || !s.GetConnected() {
			t.Errorf("%s: export did not resume: %v", m.name, s)
		}
		t.Logf("%s: %d transactions at %.0f/s during the run with the outage; export: %d published, %d dropped, %d matched",
			m.name, reps[i].Ops, float64(reps[i].Ops)/elapsed.Seconds(), s.GetPublished(), s.GetDropped(), s.GetMatched())
		published += s.GetPublished()
		dropped += s.GetDropped()
	}
	// The stream keeps every acknowledged event, and perhaps a few whose
	// acknowledgement was lost with the connection.
	rr := mustCtl(t, nil, "read", srv.URL(), "-o", "json")
	n := uint64(len(parse(t, rr.out)))
	if n < published || n > published+dropped {
		t.Fatalf("the stream holds %d events; %d were published, %d dropped", n, published, dropped)
	}
}

// TestMultiDaemon: -a names several daemons; list merges them with a
// DAEMON column, tail merges their streams, and add/remove act on each
// and report per daemon, failing if any failed.
func TestMultiDaemon(t *testing.T) {
	a, b := startMember(t, "alpha"), startMember(t, "beta")
	both := a.d.addr + "," + b.d.addr

	r := mustCtl(t, nil, "-a", a.d.addr, "-a", b.d.addr, "list")
	lines := strings.Split(strings.TrimSpace(r.out), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "DAEMON") || !strings.HasPrefix(lines[1], "alpha ") || !strings.HasPrefix(lines[2], "beta ") {
		t.Fatalf("list: %q", r.out)
	}

	// add on both: one line per daemon; then again: both fail, exit 1.
	r = mustCtl(t, nil, "-a", both, "add", "q", "--listen", "IP:127.0.0.1:0", "--server", "IP:127.0.0.1:9")
	if out := strings.Split(strings.TrimSpace(r.out), "\n"); len(out) != 2 || !strings.HasPrefix(out[0], a.d.addr+": ") ||
		!strings.HasPrefix(out[1], b.d.addr+": ") {
		t.Fatalf("add: %q", r.out)
	}
	if r := runCtl(t, nil, "-a", both, "remove", "q"); r.code != 0 {
		t.Fatalf("remove: %v", r)
	}
	r = runCtl(t, nil, "-a", both, "remove", "q")
	if r.code != 1 || strings.Count(r.err, "no proxy named") != 2 || !strings.Contains(r.err, "remove failed on 2 of 2 daemons") {
		t.Fatalf("second remove: %v", r)
	}

	// Every verb serves every daemon it is given, or refuses them in one
	// line; none answers for the first daemon alone.
	mustCtl(t, b.d, "add", "only-b", "--listen", "IP:127.0.0.1:0", "--server", "IP:127.0.0.1:9")
	for _, verb := range [][]string{{"stats"}, {"version"}, {"fault", "list", "p"}, {"conns", "p"}} {
		r := mustCtl(t, nil, append([]string{"-a", both}, verb...)...)
		if !strings.Contains(r.out, a.d.addr+": ") || !strings.Contains(r.out, b.d.addr+": ") {
			t.Errorf("%v over both daemons serves one:\n%s", verb, r.out)
		}
	}
	r = runCtl(t, nil, "-a", a.d.addr+","+b.d.addr, "conns", "only-b")
	if !strings.Contains(r.out, b.d.addr+": only-b has no live connections") || !strings.Contains(r.err, `no proxy named "only-b"`) || r.code != 1 {
		t.Errorf("conns of a proxy only the second daemon has: %v", r)
	}
	for verb, want := range map[string]string{
		"kill-conn p 1": "kill-conn works on one daemon, not the 2 named by -a",
		"stats --watch": "stats --watch follows one daemon's totals, not the 2 named by -a",
	} {
		r := runCtl(t, nil, append([]string{"-a", both}, strings.Fields(verb)...)...)
		if r.code != 2 || !strings.Contains(r.err, want) || strings.Count(r.err, "\n") != 1 {
			t.Errorf("%s over both daemons: %v, want exit 2 and one line with %q", verb, r, want)
		}
	}

	// tail over both: every transaction of both, each naming its daemon.
	tail := startCtl(t, nil, "-a", both, "tail", "--events", "tx", "-o", "json")
	waitWatchers(t, a.d, 1)
	waitWatchers(t, b.d, 1)
	reps := fleetLoad(t, "multi", []*fleetMember{a, b}, loadgen.Config{Conns: 1, Ops: 300})
	total := reps[0].Ops + reps[1].Ops
	for i := 0; i < 300 && int64(strings.Count(tail.out.String(), "\n")) < total; i++ {
		time.Sleep(20 * time.Millisecond)
	}
	rt := tail.wait(t, true)
	got := map[string]int64{}
	for _, resp := range parse(t, rt.out) {
		got[resp.GetEvent().GetDaemon()]++
	}
	if got["alpha"] != reps[0].Ops || got["beta"] != reps[1].Ops || len(got) != 2 {
		t.Fatalf("tail over both: %v, load %d and %d", got, reps[0].Ops, reps[1].Ops)
	}
}
