package main

// snoopctl's hot sessions: stats --by session against an exact count of
// the same events, and top's sessions view.

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/snoopd/snoopd/distcache"
	"github.com/snoopd/snoopd/distcache/loadgen"
	"github.com/snoopd/snoopd/internal/natstest"
)

// sessionCount is one session's figures, counted exactly.
type sessionCount struct{ gets, hits, misses, adds int64 }

// exactSessions counts the first n transactions of d's history per
// session id (base64, as -o json writes it), from tail -o json.
func exactSessions(t *testing.T, d *daemon, n int64) map[string]*sessionCount {
	t.Helper()
	r := mustCtl(t, d, "tail", "-o", "json", "--events", "tx", "--history", "100000", "--count", fmt.Sprint(n))
	out := map[string]*sessionCount{}
	for _, line := range strings.Split(strings.TrimSpace(r.out), "\n") {
		var ev struct {
			Event struct {
				Transaction struct {
					Op        string `json:"op"`
					SessionID string `json:"session_id"`
					Result    string `json:"result"`
				} `json:"transaction"`
			} `json:"event"`
		}
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatalf("%v: %s", err, line)
		}
		tx := ev.Event.Transaction
		if tx.SessionID == "" {
			continue // a notice
		}
		c := out[tx.SessionID]
		if c == nil {
			c = &sessionCount{}
			out[tx.SessionID] = c
		}
		switch tx.Op {
		case "OP_GET":
			c.gets++
			switch tx.Result {
			case "hit":
				c.hits++
			case "miss":
				c.misses++
			}
		case "OP_ADD":
			c.adds++
		}
	}
	return out
}

func TestStatsBySessionMatchesAnExactCount(t *testing.T) {
	d, addr := setup(t)
	rep := load(t, addr, loadgen.Config{Conns: 2, Ops: 600, Sessions: 12})
	exact := exactSessions(t, d, rep.Ops)
	if len(exact) < 4 {
		t.Fatalf("the load touched %d sessions; want several", len(exact))
	}

	r := mustCtl(t, d, "stats", "--by", "session", "--top", "4", "--history", "100000", "--count", fmt.Sprint(rep.Ops), "-o", "json")
	var got struct {
		Gets     int64 `json:"gets"`
		Bound    int64 `json:"bound"`
		Sessions []struct {
			SessionID string   `json:"session_id"`
			Session   string   `json:"session"`
			Gets      int64    `json:"gets"`
			GetsError int64    `json:"gets_error"`
			Hits      int64    `json:"hits"`
			Misses    int64    `json:"misses"`
			HitRatio  *float64 `json:"hit_ratio"`
			Adds      int64    `json:"adds"`
			Bytes     int64    `json:"bytes"`
		} `json:"sessions"`
	}
	if err := json.Unmarshal([]byte(strings.TrimSpace(r.out)), &got); err != nil {
		t.Fatalf("%v: %s", err, r.out)
	}
	var gets []int64
	var total int64
	for _, c := range exact {
		gets = append(gets, c.gets)
		total += c.gets
	}
	slices.Sort(gets)
	slices.Reverse(gets)
	if got.Gets != total || got.Bound != 0 || len(got.Sessions) != 4 {
		t.Fatalf("%d GETs (bound %d) in %d sessions, want %d GETs exactly in the top 4: %s", got.Gets, got.Bound, len(got.Sessions), total, r.out)
	}
	for i, s := range got.Sessions {
		want := exact[s.SessionID]
		id, _ := base64.StdEncoding.DecodeString(s.SessionID)
		if want == nil || s.Session != string(id) || !strings.HasPrefix(s.Session, idPrefix) {
			t.Fatalf("session %d: %+v is not one of the load's", i, s)
		}
		// Fewer sessions than counters: every figure is exact.
		if s.Gets != want.gets || s.GetsError != 0 || s.Hits != want.hits || s.Misses != want.misses || s.Adds != want.adds || s.Bytes <= 0 {
			t.Errorf("session %s: %+v, exactly %+v", s.Session, s, *want)
		}
		// Busiest first: the i-th has the i-th most GETs.
		if s.Gets != gets[i] {
			t.Errorf("rank %d has %d GETs; the exact rank %d has %d", i, s.Gets, i, gets[i])
		}
	}

	// The table shows the same, one line of figures per session.
	r = mustCtl(t, d, "stats", "--by", "session", "--history", "100000", "--count", fmt.Sprint(rep.Ops))
	if !regexp.MustCompile(`(?m)^hot sessions over .*: `+fmt.Sprint(total)+` GETs .*, `+fmt.Sprint(len(exact))+` sessions counted$`).MatchString(r.out) ||
		!regexp.MustCompile(`(?m)^SESSION +GET/S +GETS +HIT% +ADDS +BYTES$`).MatchString(r.out) {
		t.Errorf("stats --by session:\n%s", r.out)
	}
	rows := regexp.MustCompile(`(?m)^`+idPrefix+`\S* +[0-9.]+ +[0-9]+ +([0-9.]+|-) +[0-9]+ +[0-9.]+ [KM]?i?B$`).FindAllString(r.out, -1)
	if len(rows) != min(10, len(exact)) {
		t.Errorf("%d session rows, want the default --top 10 (of %d sessions):\n%s", len(rows), len(exact), r.out)
	}
}

func TestStatsBySessionRefusesBadFlags(t *testing.T) {
	d, _ := setup(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"stats", "--top", "3"}, "add --by session"},
		{[]string{"stats", "--by", "op"}, `--by "op"`},
		{[]string{"stats", "--by", "session", "--top", "0"}, "--top 0"},
		{[]string{"stats", "--by", "session", "--interval", "1s", "--for", "1s"}, "add --watch"},
	} {
		r := runCtl(t, d, tc.args...)
		if r.code != 2 || !strings.HasPrefix(r.err, "snoopctl: ") || !strings.Contains(r.err, tc.want) {
			t.Errorf("snoopctl %v: %+v, want a usage error naming %q", tc.args, r, tc.want)
		}
	}
}

// steadyLoad runs small loads against addr until stop is closed (at most
// 200 of them), so that a watch opened at some moment sees transactions.
func steadyLoad(t *testing.T, addr distcache.Addr, stop <-chan struct{}) {
	t.Helper()
	done := make(chan struct{})
	t.Cleanup(func() { <-done })
	go func() {
		defer close(done)
		for range 200 {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			loadgen.Run(ctx, loadgen.Config{Addr: addr, Persistent: true, IDPrefix: idPrefix, MaxData: 512,
				Conns: 1, Ops: 50, Sessions: 3})
			cancel()
		}
	}()
}

// sessionRow is a row of the sessions table: a load's session id, its
// GET rate and count, hit ratio, ADDs and bytes.
var sessionRow = regexp.MustCompile(`(?m)^` + idPrefix + `\S* +[0-9.]+ +[0-9]+ +([0-9.]+|-) +[0-9]+ +[0-9.]+ [KM]?i?B *$`)

func TestTopSessionsViewSwitchesWithS(t *testing.T) {
	d, addr := setup(t)
	stop := make(chan struct{})
	defer close(stop)
	steadyLoad(t, addr, stop)

	p := startPty(t, d, 30, 120, nil, "top", "-d", "200ms")
	p.waitFor(t, "NAME", "OPS/S", "s sessions")
	p.keys(t, "s")
	p.waitFor(t, "hot sessions", "s (esc) proxies", "!OPS/S")
	var scr string
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if scr = p.screen(); sessionRow.MatchString(scr) {
			break
		}
	}
	if !sessionRow.MatchString(scr) || !regexp.MustCompile(`(?m)^SESSION +GET/S +GETS +HIT% +ADDS +BYTES`).MatchString(scr) ||
		!regexp.MustCompile(`hot sessions over [0-9.]+m?s: [0-9]+ GETs`).MatchString(scr) {
		t.Fatalf("the sessions view shows no session of the load:\n%s", scr)
	}
	p.keys(t, "?")
	p.waitFor(t, "snoopctl top: keys", "the hot sessions")
	p.keys(t, "x")
	p.waitFor(t, "hot sessions", "!snoopctl top: keys")
	p.keys(t, "s") // back to the proxies
	p.waitFor(t, "NAME", "OPS/S", "!hot sessions")
	p.keys(t, "t") // STATE sorts with t now that s shows the sessions
	p.waitFor(t, "STATE▲")
	p.keys(t, "s")
	p.waitFor(t, "SESSION", "GET/S")
	p.keys(t, "\x1b") // esc goes back too
	p.waitFor(t, "NAME", "!SESSION")
	p.keys(t, "q")
	if code := p.wait(t); code != 0 {
		t.Fatalf("top exited %d after q; the terminal shows:\n%s", code, p.screen())
	}
	p.restored(t)

	// --sessions starts in the view.
	p = startPty(t, d, 30, 120, nil, "top", "-d", "200ms", "--sessions")
	p.waitFor(t, "hot sessions", "SESSION", "!OPS/S")
	p.keys(t, "q")
	if code := p.wait(t); code != 0 {
		t.Fatalf("top --sessions exited %d after q", code)
	}
}

func TestTopSessionsBatch(t *testing.T) {
	d, addr := setup(t)
	stop := make(chan struct{})
	defer close(stop)
	steadyLoad(t, addr, stop)

	r := mustCtl(t, d, "top", "--sessions", "-n", "3", "-d", "500ms", "--top", "2")
	if n := len(regexp.MustCompile(`(?m)^hot sessions over `).FindAllString(r.out, -1)); n != 3 {
		t.Fatalf("%d tables, want 3:\n%s", n, r.out)
	}
	// Three sessions in the load, --top 2: at most two rows a table, and
	// some table has both.
	rows := sessionRow.FindAllString(r.out, -1)
	if len(rows) < 2 || len(rows) > 6 {
		t.Errorf("%d session rows in 3 tables of --top 2:\n%s", len(rows), r.out)
	}
	r = mustCtl(t, d, "top", "--sessions", "-n", "2", "-d", "300ms", "-o", "json")
	if lines := strings.Split(strings.TrimSpace(r.out), "\n"); len(lines) != 2 || !strings.Contains(lines[0], `"sessions":[`) {
		t.Errorf("top --sessions -o json: want 2 lines of sessions:\n%s", r.out)
	}
	for _, args := range [][]string{{"top", "--top", "3"}, {"top", "--sessions", "--top", "0"}} {
		if r := runCtl(t, d, args...); r.code != 2 || !strings.Contains(r.err, "--top") {
			t.Errorf("snoopctl %v: %+v, want a usage error naming --top", args, r)
		}
	}
}

// TestFleetTopSessionsCountsEveryGet: top --from over a fleet counts its
// events per session too, and its intervals' GETs add up to the load's.
func TestFleetTopSessionsCountsEveryGet(t *testing.T) {
	srv := natstest.Start(t)
	ms := []*fleetMember{
		startMember(t, "web-1", "--export", srv.URL()),
		startMember(t, "web-2", "--export", srv.URL()),
	}
	all := startCtl(t, nil, "top", "--from", srv.URL(), "--sessions", "-n", "0", "-d", "100ms", "--top", "5", "-o", "json")
	waitSubscribed(t, srv, "snoop.web-1.p.tx.get", 1)
	reps := fleetLoad(t, "sessions", ms, loadgen.Config{Conns: 2, Ops: 600, Sessions: 8})
	var want int64
	for _, rep := range reps {
		for _, o := range rep.ByOp {
			if strings.EqualFold(o.Op, "get") {
				want += o.Count
			}
		}
	}
	if want == 0 {
		t.Fatalf("the load made no GET: %+v", reps)
	}
	type table struct {
		Gets     int64 `json:"gets"`
		Sessions []struct {
			Session string `json:"session"`
			Gets    int64  `json:"gets"`
		} `json:"sessions"`
	}
	tables := func(out string) (gets int64, ts []table) {
		for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
			var tb table
			if json.Unmarshal([]byte(l), &tb) == nil {
				gets += tb.Gets
				ts = append(ts, tb)
			}
		}
		return gets, ts
	}
	for i := 0; i < 500; i++ {
		if got, _ := tables(all.out.String()); got >= want {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	r := all.wait(t, true)
	got, ts := tables(r.out)
	if got != want {
		t.Fatalf("the intervals counted %d GETs, the load made %d:\n%s", got, want, r.out)
	}
	seen := map[string]bool{}
	for _, tb := range ts {
		if len(tb.Sessions) > 5 {
			t.Errorf("%d sessions in a table of --top 5", len(tb.Sessions))
		}
		for _, s := range tb.Sessions {
			if !strings.HasPrefix(s.Session, idPrefix+"web-") {
				t.Errorf("session %q is not one of the load's", s.Session)
			}
			seen[s.Session[:len(idPrefix)+5]] = true
		}
	}
	if !seen[idPrefix+"web-1"] || !seen[idPrefix+"web-2"] {
		t.Errorf("sessions of both daemons should show; saw %v", seen)
	}
}
