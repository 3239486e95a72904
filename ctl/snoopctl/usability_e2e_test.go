package main

// End-to-end tests of what a newcomer meets first in snoopctl: proxy
// names, help and defaults, wording, versions, ids, tail's and stats'
// defaults, apply, completion; each driven through the real binaries.

import (
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/snoopd/snoopd/distcache/loadgen"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
)

// TestNamesHelpAndH: every valid proxy name works as an argument of every
// verb, help and h included.
func TestNamesHelpAndH(t *testing.T) {
	d, _ := setup(t)
	for _, name := range []string{"h", "help"} {
		r := mustCtl(t, d, "add", name, "--listen", "IP:127.0.0.1:0", "--server", "IP:127.0.0.1:9")
		if !strings.HasPrefix(r.out, "IP:127.0.0.1:") || strings.Contains(r.out, "USAGE") {
			t.Errorf("add %s: %v", name, r)
		}
		for _, verb := range [][]string{{"show", name}, {"disable", name}, {"enable", name}, {"conns", name}} {
			if r := mustCtl(t, d, verb...); strings.Contains(r.out, "USAGE") {
				t.Errorf("%s printed help: %s", strings.Join(verb, " "), r.out)
			}
		}
		if r := mustCtl(t, d, "tail", name, "--for", "100ms"); !strings.HasPrefix(r.err, "0 events shown") {
			t.Errorf("tail %s: %v", name, r)
		}
	}
	r := runCtl(t, d, "rm", "help", "b1")
	if r.code != 1 || r.out != "removed help\n" || !strings.Contains(r.err, `remove b1: no proxy named "b1"`) {
		t.Errorf("rm help b1: %v", r)
	}
	if r := mustCtl(t, d, "rm", "h"); r.out != "removed h\n" {
		t.Errorf("rm h: %v", r)
	}
	if r := mustCtl(t, d, "list"); strings.Contains(r.out, "\nh ") || strings.Contains(r.out, "\nhelp ") {
		t.Errorf("list after removing h and help:\n%s", r.out)
	}
	// Help itself still works.
	if r := mustCtl(t, d, "help", "add"); !strings.Contains(r.out, "snoopctl add - create a proxy") {
		t.Errorf("help add: %v", r)
	}
	if r := mustCtl(t, d, "rm", "--help"); !strings.Contains(r.out, "snoopctl remove - delete proxies") {
		t.Errorf("rm --help: %v", r)
	}
}

// TestUnknownProxyName: an unknown proxy is an error at once in tail, save
// and stats; --wait keeps waiting for it.
func TestUnknownProxyName(t *testing.T) {
	d, _ := setup(t)
	file := filepath.Join(d.dir, "x.jsonl")
	for _, args := range [][]string{
		{"tail", "nosuch", "--count", "1"},
		{"stats", "nosuch", "--for", "1s"},
		{"stats", "nosuch"},
		{"save", file, "nosuch"},
	} {
		r := runCtl(t, d, args...)
		if r.code != 1 || !strings.Contains(r.err, `no proxy named "nosuch"`) || strings.Count(r.err, "\n") != 1 {
			t.Errorf("%s: %v", strings.Join(args, " "), r)
		}
	}
	if _, err := os.Stat(file); err == nil {
		t.Error("save of an unknown proxy created its file")
	}
	if r := mustCtl(t, d, "tail", "later", "--wait", "--for", "200ms"); !strings.HasPrefix(r.err, "0 events shown") {
		t.Errorf("tail --wait: %v", r)
	}
}

// TestTimesInOrder: times never go back in tail's text and JSON, or in a
// capture; a transaction keeps its start and its end.
func TestTimesInOrder(t *testing.T) {
	d, addr := setup(t)
	file := filepath.Join(d.dir, "cap.jsonl")
	js := startCtl(t, d, "tail", "-v", "-o", "json", "p")
	text := startCtl(t, d, "tail", "-v", "p")
	save := startCtl(t, d, "save", file, "p")
	waitWatchers(t, d, 3)
	// A connection per operation from several workers: events of many
	// connections interleave.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	rep, err := loadgen.Run(ctx, loadgen.Config{Addr: addr, Conns: 6, Ops: 1200, IDPrefix: idPrefix, MaxData: 256, Verify: true})
	if err != nil || rep.Errors != 0 {
		t.Fatalf("load: %v %+v", err, rep)
	}
	want := int(rep.Ops) * 3 // opened, transaction, closed
	waitLines(t, js, want)
	waitLines(t, text, want)
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if b, err := os.ReadFile(file); err == nil && strings.Count(string(b), "\n") >= want {
			break
		}
	}
	jr, tr, sr := js.wait(t, true), text.wait(t, true), save.wait(t, true)
	if jr.code != 0 || tr.code != 0 || sr.code != 0 {
		t.Fatalf("tail -o json %v\ntail %v\nsave %v", jr, tr, sr)
	}
	capture, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	for name, out := range map[string]string{"tail -o json": jr.out, "save": string(capture)} {
		var last time.Time
		n := 0
		for i, r := range parse(t, out) {
			ev := r.GetEvent()
			if ev == nil {
				continue
			}
			n++
			end := ev.GetEndTime().AsTime()
			if ev.GetEndTime() == nil || end.Before(last) {
				t.Fatalf("%s: event %d ends at %v, before the one before it (%v)", name, i, end, last)
			}
			last = end
			if tx := ev.GetTransaction(); tx != nil {
				if !ev.GetTime().AsTime().Equal(tx.GetStartTime().AsTime()) || ev.GetTime().AsTime().After(end) {
					t.Fatalf("%s: transaction %d: time %v, start %v, end %v", name, i, ev.GetTime().AsTime(), tx.GetStartTime().AsTime(), end)
				}
			}
		}
		if n != want {
			t.Errorf("%s: %d events, want %d", name, n, want)
		}
	}
	var last string
	for _, line := range strings.Split(strings.TrimSuffix(tr.out, "\n"), "\n") {
		ts, _, _ := strings.Cut(line, " ")
		if ts < last { // fixed-width times of one day (TZ=UTC): text order is time order
			t.Fatalf("tail: %q comes after %s", line, last)
		}
		last = ts
	}
	// The same capture twice: the times overlap, and read says so.
	r := mustCtl(t, d, "read", file, file)
	if !strings.Contains(r.err, "warning: the times of "+file+" and "+file+" overlap") {
		t.Errorf("read of overlapping files: stderr %q", r.err)
	}
}

// TestHelpDefaults: each flag shows its real default once; a bad value
// names the flag, the value and an example.
func TestHelpDefaults(t *testing.T) {
	r := mustCtl(t, nil, "add", "--help")
	for _, want := range []string{"(default: 2)", "(default: 5s)", `(default: "32K")`, `(default: "0660")`} {
		if strings.Count(r.out, want) != 1 {
			t.Errorf("add --help shows %q %d times:\n%s", want, strings.Count(r.out, want), r.out)
		}
	}
	for _, bad := range []string{"(default 2", "(default 5s)", "(0: 32768)", "(default: 0s)", "(default: false)"} {
		if strings.Contains(r.out, bad) {
			t.Errorf("add --help still says %q", bad)
		}
	}
	if r := mustCtl(t, nil, "tail", "--help"); strings.Contains(r.out, "see below") || !strings.Contains(r.out, "Filters above") {
		t.Errorf("tail --help points the wrong way:\n%s", r.out)
	}
	for args, want := range map[string]string{
		"tail --min-latency 5": `snoopctl: --min-latency "5": want a duration with a unit, such as 500ms, 2s or 5m (see 'snoopctl tail --help')`,
		"add x --spares x":     `snoopctl: --spare-connections "x": want a whole number such as 10`,
		"--timeout soon list":  `snoopctl: --timeout "soon": want a duration with a unit`,
		"add x --listen :0 --server IP:h:1 --socket-mode 9": `snoopctl: --socket-mode "9": want octal permission bits such as 0660`,
	} {
		r := runCtl(t, nil, strings.Fields(args)...)
		if r.code != 2 || !strings.HasPrefix(r.err, want) || strings.Count(r.err, "\n") != 1 {
			t.Errorf("snoopctl %s: %v; want %q", args, r, want)
		}
	}
}

// TestAddEveryField: add's flags are the API's field names (the short forms
// kept), and add sets every spec field, --socket-mode included.
func TestAddEveryField(t *testing.T) {
	d := startDaemon(t)
	sock := filepath.Join(d.dir, "x.sock")
	mustCtl(t, d, "add", "x", "--listen", "UNIX:"+sock, "--server", "IP:127.0.0.1:9", "--max-connections", "7",
		"--spare-connections", "0", "--socket-mode", "0600", "--capture-data", "--capture-limit", "100",
		"--dial-timeout", "2s", "--on-corrupt", "passthrough", "--idle-timeout", "1m", "--message-timeout", "2s",
		"--response-timeout", "3s", "--disabled")
	r := mustCtl(t, d, "show", "x", "-o", "json")
	for _, want := range []string{`"max_connections":7`, `"spare_connections":0`, `"socket_mode":384`, `"capture_data":true`,
		`"capture_limit":100`, `"dial_timeout":"2s"`, `"on_corrupt":"CORRUPT_POLICY_PASSTHROUGH"`, `"idle_timeout":"60s"`,
		`"message_timeout":"2s"`, `"response_timeout":"3s"`, `"enabled":false`} {
		if !strings.Contains(r.out, want) {
			t.Errorf("show -o json lacks %s: %s", want, r.out)
		}
	}
	mustCtl(t, d, "enable", "x")
	if fi, err := os.Stat(sock); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode: %v %v", fi, err)
	}
	// The old short forms still work.
	mustCtl(t, d, "add", "y", "--listen", "IP:127.0.0.1:0", "--server", "IP:127.0.0.1:9", "--max-conns", "3", "--spares", "1")
	if r := mustCtl(t, d, "show", "y", "-o", "json"); !strings.Contains(r.out, `"max_connections":3`) || !strings.Contains(r.out, `"spare_connections":1`) {
		t.Errorf("aliases: %s", r.out)
	}
}

// TestWording: counts in the right number, usage lines without stray
// spaces, plain file errors, and a daemon shutting down said as such.
func TestWording(t *testing.T) {
	d, addr := setup(t)
	tail := startCtl(t, d, "tail", "p", "--count", "1")
	waitWatchers(t, d, 1)
	load(t, addr, loadgen.Config{Conns: 1, Ops: 5})
	if r := tail.wait(t, false); r.code != 0 || !strings.HasPrefix(r.err, "1 event shown, 0 dropped") {
		t.Errorf("tail --count 1: %v", r)
	}
	if r := mustCtl(t, d, "version"); !strings.Contains(r.out, ", 1 proxy, 0 watchers,") {
		t.Errorf("version: %s", r.out)
	}
	if r := runCtl(t, d, "list", "x"); r.code != 2 || strings.Contains(r.err, "  ") || !strings.HasPrefix(r.err, "snoopctl: usage: snoopctl list: it takes no arguments") {
		t.Errorf("list x: %v", r)
	}
	if r := runCtl(t, d, "apply", "-f", "/nonexistent/x.json"); r.code != 1 || r.err != "snoopctl: apply: no such file /nonexistent/x.json\n" {
		t.Errorf("apply -f of a missing file: %v", r)
	}
	if r := runCtl(t, d, "read", "/nonexistent/x.json"); r.code != 1 || !strings.HasPrefix(r.err, "snoopctl: read /nonexistent/x.json: no such file\n") {
		t.Errorf("read of a missing file: %v", r)
	}
	// A tail that sees the daemon stop says it is shutting down, not
	// asks whether it runs.
	tail = startCtl(t, d, "tail", "p")
	waitWatchers(t, d, 1)
	d.proc.Signal(syscall.SIGTERM)
	r := tail.wait(t, false)
	if r.code != 1 || !strings.Contains(r.err, "shutting down") || strings.Contains(r.err, "is snoopd running") {
		t.Errorf("tail while snoopd stops: %v", r)
	}
}

// TestVersionAndHint: one version for both binaries, from build info or the
// link; snoopctl --version; the start-up hint names --token-file.
func TestVersionAndHint(t *testing.T) {
	dir := t.TempDir()
	ctl, snoopd := filepath.Join(dir, "snoopctl"), filepath.Join(dir, "snoopd")
	const ldflags = "-X github.com/snoopd/snoopd/internal/version.Override=9.8.7-e2e"
	for pkg, out := range map[string]string{"github.com/snoopd/snoopd/ctl/snoopctl": ctl, "github.com/snoopd/snoopd/daemon/snoopd": snoopd} {
		if b, err := exec.Command("go", "build", "-ldflags", ldflags, "-o", out, pkg).CombinedOutput(); err != nil {
			t.Fatalf("build %s: %v\n%s", pkg, err, b)
		}
	}
	if b, err := exec.Command(ctl, "--version").Output(); err != nil || !strings.HasPrefix(string(b), "snoopctl 9.8.7-e2e (go") {
		t.Errorf("snoopctl --version: %q %v", b, err)
	}
	if b, err := exec.Command(snoopd, "--version").Output(); err != nil || string(b) != "snoopd 9.8.7-e2e\n" {
		t.Errorf("snoopd --version: %q %v", b, err)
	}
	// The test's own binaries: the same version in both, from build info.
	cv, _ := exec.Command(bins.snoopctl, "--version").Output()
	dv, _ := exec.Command(bins.snoopd, "--version").Output()
	c, _, _ := strings.Cut(strings.TrimPrefix(string(cv), "snoopctl "), " ")
	if c == "" || string(dv) != "snoopd "+c+"\n" {
		t.Errorf("snoopctl says %q, snoopd %q", cv, dv)
	}
	d := startDaemon(t)
	if r := mustCtl(t, d, "version"); !strings.HasPrefix(r.out, "client: snoopctl "+c+" ") || !strings.Contains(r.out, "\ndaemon: snoopd "+c+" at ") {
		t.Errorf("version: %s", r.out)
	}

	// With a token, the start-up hint shows --token-file.
	token := filepath.Join(dir, "token")
	os.WriteFile(token, []byte("s3cret"), 0o600)
	sock := filepath.Join(d.dir, "t.sock")
	var logs syncBuffer
	cmd := exec.Command(bins.snoopd, "--control", "UNIX:"+sock, "--token-file", token)
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() }()
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline) && !strings.Contains(logs.String(), "control API listening"); {
		time.Sleep(20 * time.Millisecond)
	}
	if !strings.Contains(logs.String(), "snoopctl -a unix://"+sock+" --token-file "+token+" list") {
		t.Errorf("start-up hint without --token-file:\n%s", logs.String())
	}
}

// TestSessionIDs: printable ids shown as text, different ids different;
// --session takes what tail shows, and the JSON form.
func TestSessionIDs(t *testing.T) {
	d, addr := setup(t)
	text := startCtl(t, d, "tail", "p", "--op", "add")
	byText := startCtl(t, d, "tail", "p", "-o", "json", "--session", idPrefix)
	by64 := startCtl(t, d, "tail", "p", "-o", "json", "--session", "base64:"+base64.StdEncoding.EncodeToString([]byte(idPrefix)))
	none := startCtl(t, d, "tail", "p", "-o", "json", "--session", "text:x"+idPrefix)
	waitWatchers(t, d, 4)
	rep := load(t, addr, loadgen.Config{Conns: 1, Ops: 200, Sessions: 50})
	waitLines(t, byText, int(rep.Ops))
	waitLines(t, by64, int(rep.Ops))
	tr, br, b64, nr := text.wait(t, true), byText.wait(t, true), by64.wait(t, true), none.wait(t, true)
	ids := map[string]bool{}
	for _, l := range strings.Split(strings.TrimSuffix(tr.out, "\n"), "\n") {
		m := regexp.MustCompile(` id=(\S+) `).FindStringSubmatch(l)
		if m == nil || !strings.HasPrefix(m[1], idPrefix) {
			t.Fatalf("line %q: want the id as text", l)
		}
		ids[m[1]] = true
	}
	if len(ids) < 2 {
		t.Errorf("all ADDs show the same id: %v", ids)
	}
	if c := count(parse(t, br.out)); c.tx != int(rep.Ops) {
		t.Errorf("--session %s: %d transactions, want %d", idPrefix, c.tx, rep.Ops)
	}
	if c := count(parse(t, b64.out)); c.tx != int(rep.Ops) {
		t.Errorf("--session base64:...: %d transactions, want %d", c.tx, rep.Ops)
	}
	if c := count(parse(t, nr.out)); c.tx != 0 {
		t.Errorf("--session text:x...: %d transactions, want none", c.tx)
	}
	// What -o json prints is accepted by --session with base64:.
	first := parse(t, br.out)[0].GetEvent().GetTransaction()
	i := strings.Index(br.out, `"session_id":"`)
	if i < 0 {
		t.Fatalf("no session_id in %s", br.out[:200])
	}
	printed, _, _ := strings.Cut(br.out[i+len(`"session_id":"`):], `"`)
	if printed != base64.StdEncoding.EncodeToString(first.GetSessionId()) {
		t.Errorf("session_id %q", printed)
	}
}

// TestTailDefaultsAndRead: tail shows transactions and errors by default;
// its summary and read's give counts by op and result; read --since and
// --until.
func TestTailDefaultsAndRead(t *testing.T) {
	d, addr := setup(t)
	file := filepath.Join(d.dir, "cap.jsonl")
	tail := startCtl(t, d, "tail", "p")
	save := startCtl(t, d, "save", file, "p")
	waitWatchers(t, d, 2)
	rep := load(t, addr, loadgen.Config{Conns: 2, Ops: 300})
	waitLines(t, tail, int(rep.Ops))
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if b, err := os.ReadFile(file); err == nil && strings.Count(string(b), "\n") >= int(rep.Ops)+4 {
			break
		}
	}
	tr, sr := tail.wait(t, true), save.wait(t, true)
	if tr.code != 0 || sr.code != 0 {
		t.Fatalf("tail %v\nsave %v", tr, sr)
	}
	if strings.Contains(tr.out, " opened ") || strings.Contains(tr.out, " closed ") || strings.Count(tr.out, "\n") != int(rep.Ops) {
		t.Errorf("tail without -v showed %d lines (connections among them?), want %d", strings.Count(tr.out, "\n"), rep.Ops)
	}
	for _, op := range rep.ByOp {
		want := fmt.Sprintf("\n  %s %d: ", op.Op, op.Count)
		if !strings.Contains(tr.err, want) {
			t.Errorf("tail's summary lacks %q:\n%s", want, tr.err)
		}
	}
	if !strings.HasPrefix(tr.err, fmt.Sprintf("%d events shown, 0 dropped, over ", rep.Ops)) {
		t.Errorf("tail's summary: %q", tr.err)
	}
	r := mustCtl(t, d, "read", file)
	if !strings.HasPrefix(r.err, fmt.Sprintf("%d events shown, 0 dropped, over ", rep.Ops+4)) || !strings.Contains(r.err, "\n  connections: 2 opened, 2 closed\n") {
		t.Errorf("read's summary: %q", r.err)
	}
	// --since and --until split the capture at an event's end time.
	evs := parse(t, mustCtl(t, d, "read", "-o", "json", file).out)
	mid := evs[len(evs)/2].GetEvent().GetEndTime().AsTime()
	at := mid.UTC().Format(time.RFC3339Nano)
	before := mustCtl(t, d, "read", file, "--until", at)
	after := mustCtl(t, d, "read", file, "--since", at)
	nb, na := strings.Count(before.out, "\n"), strings.Count(after.out, "\n")
	if nb+na != len(evs) || nb == 0 || na == 0 {
		t.Errorf("--until %s shows %d, --since %d; want %d together", at, nb, na, len(evs))
	}
	if r := runCtl(t, d, "read", file, "--since", "yesterday"); r.code != 2 || !strings.Contains(r.err, `--since "yesterday": want a time`) {
		t.Errorf("--since yesterday: %v", r)
	}
}

// TestStatsTotals: stats prints the daemon's totals at once; --watch shows
// rates.
func TestStatsTotals(t *testing.T) {
	d, addr := setup(t)
	rep := load(t, addr, loadgen.Config{Conns: 2, Ops: 400})
	r := mustCtl(t, d, "stats")
	for _, op := range rep.ByOp {
		if !regexp.MustCompile(fmt.Sprintf(`(?m)^p +%s +%d `, op.Op, op.Count)).MatchString(r.out) {
			t.Errorf("stats lacks p %s %d:\n%s", op.Op, op.Count, r.out)
		}
	}
	if !strings.Contains(r.out, "totals since each proxy was created") {
		t.Errorf("stats:\n%s", r.out)
	}
	if r := mustCtl(t, d, "stats", "-o", "json"); !strings.Contains(r.out, fmt.Sprintf(`"transactions":"%d"`, rep.Ops)) {
		t.Errorf("stats -o json: %s", r.out)
	}
	w := startCtl(t, d, "stats", "--watch", "--interval", "200ms", "-o", "json")
	time.Sleep(300 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Other session ids than the first load's, whose sessions the cache
	// still holds.
	if rep, err := loadgen.Run(ctx, loadgen.Config{Addr: addr, Conns: 1, Ops: 100, Persistent: true, Verify: true, IDPrefix: "w-"}); err != nil || rep.Errors != 0 {
		t.Fatalf("second load: %v %+v", err, rep)
	}
	waitLines(t, w, 3)
	wr := w.wait(t, true)
	var seen int64
	for _, l := range strings.Split(strings.TrimSuffix(wr.out, "\n"), "\n") {
		if !strings.Contains(l, `"interval":"`) {
			t.Fatalf("stats --watch line %q", l)
		}
		for _, m := range regexp.MustCompile(`"count":"(\d+)"`).FindAllStringSubmatch(l, -1) {
			var n int64
			fmt.Sscan(m[1], &n)
			seen += n
		}
	}
	if wr.code != 0 || seen > 100 {
		t.Errorf("stats --watch: %v (%d transactions in its intervals, the load made 100)", wr, seen)
	}
}

// TestApplyRecreatedAndListJSON: apply says recreated when a change needed
// a new listener, and reads what list -o json and protojson print.
func TestApplyRecreatedAndListJSON(t *testing.T) {
	d := startDaemon(t)
	decl := filepath.Join(d.dir, "d.json")
	write := func(listen string) {
		os.WriteFile(decl, fmt.Appendf(nil, `{"proxies":[{"name":"a","listen":"%s","server":"IP:127.0.0.1:9","maxConnections":3}]}`, listen), 0o600)
	}
	write("UNIX:" + filepath.Join(d.dir, "a.sock"))
	if r := mustCtl(t, d, "apply", "-f", decl); r.out != "created a\n1 created, 0 changed, 0 kept, 0 removed\n" {
		t.Errorf("apply: %s", r.out)
	}
	write("UNIX:" + filepath.Join(d.dir, "b.sock"))
	if r := mustCtl(t, d, "apply", "-f", decl); r.out != "recreated a (a new listener: its counters start again)\n0 created, 0 changed, 1 recreated, 0 kept, 0 removed\n" {
		t.Errorf("apply of a new listen address: %s", r.out)
	}
	mustCtl(t, d, "add", "b", "--listen", "IP:127.0.0.1:0", "--server", "IP:127.0.0.1:9", "--idle-timeout", "0")
	// list -o json (snake_case, with state and counters) applies as is.
	list := mustCtl(t, d, "list", "-o", "json")
	os.WriteFile(decl, []byte(list.out), 0o600)
	if r := mustCtl(t, d, "apply", "-f", decl); r.out != "kept a\nkept b\n0 created, 0 changed, 2 kept, 0 removed\n" {
		t.Errorf("apply of list -o json: %s", r.out)
	}
	// So does protojson's default, camelCase.
	resp := &snoopv1.ListProxiesResponse{}
	if err := protojson.Unmarshal([]byte(list.out), resp); err != nil {
		t.Fatal(err)
	}
	camel, _ := protojson.Marshal(resp)
	if !strings.Contains(string(camel), "listenAddress") {
		t.Fatalf("not camelCase: %s", camel)
	}
	os.WriteFile(decl, camel, 0o600)
	if r := mustCtl(t, d, "apply", "-f", decl); r.out != "kept a\nkept b\n0 created, 0 changed, 2 kept, 0 removed\n" {
		t.Errorf("apply of camelCase protojson: %s", r.out)
	}
	// show -o json of one proxy too.
	os.WriteFile(decl, []byte(mustCtl(t, d, "show", "b", "-o", "json").out), 0o600)
	if r := mustCtl(t, d, "apply", "-f", decl, "--dry-run"); r.out != "would keep b\ndry run, nothing changed: 0 created, 0 changed, 1 kept, 0 removed\n" {
		t.Errorf("apply of show -o json: %s", r.out)
	}
	os.WriteFile(decl, []byte(`[{"name":"c","listn":"x"}]`), 0o600)
	if r := runCtl(t, d, "apply", "-f", decl); r.code != 1 || !strings.Contains(r.err, `proxies[0]: unknown field "listn"`) {
		t.Errorf("a typo: %v", r)
	}
}

// TestCompletionAndColor: completion offers proxy names to the verbs that
// take them; --color.
func TestCompletionAndColor(t *testing.T) {
	d, addr := setup(t)
	mustCtl(t, d, "add", "second", "--listen", "IP:127.0.0.1:0", "--server", "IP:127.0.0.1:9")
	for _, verb := range []string{"rm", "show", "enable", "disable", "conns", "kill-conn", "tail", "stats", "save"} {
		r := mustCtl(t, d, verb, "--generate-bash-completion")
		if r.out != "p\nsecond\n" {
			t.Errorf("completion of %s offers %q, want the proxies", verb, r.out)
		}
	}
	if r := mustCtl(t, d, "--generate-bash-completion"); !strings.Contains(r.out, "\ntail\n") {
		t.Errorf("completion of commands: %q", r.out)
	}
	if r := mustCtl(t, d, "rm", "--d", "--generate-bash-completion"); r.out != "--drain\n" {
		t.Errorf("completion of rm's flags: %q", r.out)
	}
	tail := startCtl(t, d, "tail", "p", "--color", "always", "--count", "1")
	waitWatchers(t, d, 1)
	load(t, addr, loadgen.Config{Conns: 1, Ops: 3})
	if r := tail.wait(t, false); r.code != 0 || !strings.Contains(r.out, "\x1b[") {
		t.Errorf("--color always: %v", r)
	}
	if r := runCtl(t, d, "list", "--color", "pink"); r.code != 2 || !strings.Contains(r.err, `--color "pink": want auto, always or never`) {
		t.Errorf("--color pink: %v", r)
	}
}

// TestAddUnresolvedServer: add warns when the server's host name does not
// resolve, and still creates the proxy.
func TestAddUnresolvedServer(t *testing.T) {
	d := startDaemon(t)
	r := mustCtl(t, d, "add", "x", "--listen", "IP:127.0.0.1:0", "--server", "IP:no-such-host.invalid:9000")
	if !strings.Contains(r.err, `snoopctl: warning: server host "no-such-host.invalid": `) || !strings.HasPrefix(r.out, "IP:127.0.0.1:") {
		t.Errorf("add: %v", r)
	}
	if r := mustCtl(t, d, "list"); !strings.Contains(r.out, "\nx ") {
		t.Errorf("list: %s", r.out)
	}
	if r := mustCtl(t, d, "add", "y", "--listen", "IP:127.0.0.1:0", "--server", "IP:127.0.0.1:9000"); r.err != "" {
		t.Errorf("add with an IP address warned: %v", r)
	}
}
