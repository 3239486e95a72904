package main

// End-to-end tests: they build snoopctl and snoopd, start snoopd on a unix
// socket in a temporary directory with the in-memory cache server behind a
// proxy, drive verified load through the proxy with the load generator,
// and run snoopctl as a user would, checking its output against what the
// load generator did.

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"github.com/snoopd/snoopd/vocab"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/snoopd/snoopd/ctl/capture"
	"github.com/snoopd/snoopd/distcache"
	"github.com/snoopd/snoopd/distcache/cacheserver"
	"github.com/snoopd/snoopd/distcache/loadgen"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
	"github.com/snoopd/snoopd/internal/testutil"
)

// bins holds the paths of the binaries TestMain builds.
var bins struct{ snoopctl, snoopd, dcload string }

// idPrefix starts every session id of the load, so --session can select
// them all.
const idPrefix = "e2e-"

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "sce2e")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := func() int {
		defer os.RemoveAll(dir)
		bins.snoopctl, bins.snoopd, bins.dcload = filepath.Join(dir, "snoopctl"), filepath.Join(dir, "snoopd"), filepath.Join(dir, "dcload")
		for pkg, out := range map[string]string{"github.com/snoopd/snoopd/ctl/snoopctl": bins.snoopctl, "github.com/snoopd/snoopd/daemon/snoopd": bins.snoopd,
			"github.com/snoopd/snoopd/cmd/dcload": bins.dcload} {
			cmd := exec.Command("go", "build", "-o", out, pkg)
			if b, err := cmd.CombinedOutput(); err != nil {
				fmt.Fprintf(os.Stderr, "build %s: %v\n%s", pkg, err, b)
				return 1
			}
		}
		code := m.Run()
		if code == 0 {
			// goleak.VerifyTestMain would exit before the cleanup above.
			if err := goleak.Find(); err != nil {
				fmt.Fprintln(os.Stderr, "goroutine leak:", err)
				return 1
			}
		}
		return code
	}()
	os.Exit(code)
}

// syncBuffer collects a process's output while tests read it.
type syncBuffer = testutil.SyncBuffer

// daemon is a running snoopd.
type daemon struct {
	dir  string // a short temporary directory for sockets and files
	addr string // its control address
	proc *os.Process
}

// startDaemon starts snoopd on a unix socket and waits until the socket
// exists. The daemon is stopped with SIGTERM when the test ends.
func startDaemon(t *testing.T, extra ...string) *daemon {
	t.Helper()
	dir := testutil.SocketDir(t)
	sock := filepath.Join(dir, "s.sock")
	var logs syncBuffer
	cmd := exec.Command(bins.snoopd, append([]string{"--control", "UNIX:" + sock, "--log-level", "warn"}, extra...)...)
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			cmd.Process.Kill()
			<-done
			t.Errorf("snoopd did not stop on SIGTERM; log:\n%s", logs.String())
		}
	})
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		select {
		case err := <-done:
			t.Fatalf("snoopd exited: %v\n%s", err, logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("snoopd did not create %s; log:\n%s", sock, logs.String())
		}
	}
	return &daemon{dir: dir, addr: "unix://" + sock, proc: cmd.Process}
}

// result is a finished snoopctl run.
type result struct {
	out, err string
	code     int
}

func (r result) String() string {
	return fmt.Sprintf("exit %d, stdout %q, stderr %q", r.code, r.out, r.err)
}

// command prepares snoopctl with args, talking to d (if not nil).
func command(ctx context.Context, d *daemon, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, bins.snoopctl, args...)
	cmd.Env = append(os.Environ(), "SNOOPD_ADDRESS=", "SNOOPD_TOKEN_FILE=", "TZ=UTC")
	if d != nil {
		cmd.Env = append(cmd.Env, "SNOOPD_ADDRESS="+d.addr)
	}
	return cmd
}

// runCtl runs snoopctl to completion (at most 30 seconds).
func runCtl(t *testing.T, d *daemon, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := command(ctx, d, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := result{out.String(), errb.String(), 0}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	case err != nil:
		t.Fatalf("snoopctl %v: %v", args, err)
	}
	return r
}

func mustCtl(t *testing.T, d *daemon, args ...string) result {
	t.Helper()
	r := runCtl(t, d, args...)
	if r.code != 0 {
		t.Fatalf("snoopctl %s: %v", strings.Join(args, " "), r)
	}
	return r
}

// bg is snoopctl running in the background (tail, save).
type bg struct {
	cmd      *exec.Cmd
	out, err syncBuffer
	done     chan error
}

func startCtl(t *testing.T, d *daemon, args ...string) *bg {
	t.Helper()
	b := &bg{done: make(chan error, 1)}
	b.cmd = command(context.Background(), d, args...)
	b.cmd.Stdout, b.cmd.Stderr = &b.out, &b.err
	if err := b.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { b.done <- b.cmd.Wait() }()
	t.Cleanup(func() {
		b.cmd.Process.Kill()
		<-b.done
	})
	return b
}

// wait waits for the process to end by itself, or sends SIGINT first
// (Ctrl-C) when interrupt is set.
func (b *bg) wait(t *testing.T, interrupt bool) result {
	t.Helper()
	if interrupt {
		b.cmd.Process.Signal(os.Interrupt)
	}
	var err error
	select {
	case err = <-b.done:
		b.done <- err // for the cleanup
	case <-time.After(20 * time.Second):
		t.Fatalf("snoopctl %v did not end; stderr %q", b.cmd.Args, b.err.String())
	}
	r := result{b.out.String(), b.err.String(), 0}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		r.code = ee.ExitCode()
	}
	return r
}

// waitWatchers waits until the daemon has n event streams open, so that
// tails started in the background see all the load.
func waitWatchers(t *testing.T, d *daemon, n int) {
	t.Helper()
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		r := mustCtl(t, d, "version", "-o", "json")
		i := strings.Index(r.out, `"watchers":`)
		if i < 0 {
			continue // 0 watchers: protojson leaves the field out
		}
		var got int
		fmt.Sscanf(r.out[i+len(`"watchers":`):], "%d", &got)
		if got >= n {
			return
		}
	}
	t.Fatalf("the daemon never had %d watchers", n)
}

// setup starts a daemon, a cache server, and a proxy "p" in front of it,
// and returns the proxy's address.
func setup(t *testing.T) (*daemon, distcache.Addr) {
	t.Helper()
	d := startDaemon(t)
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
	return d, addr
}

// load runs verified load through the proxy and checks it went well.
func load(t *testing.T, addr distcache.Addr, cfg loadgen.Config) loadgen.Report {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cfg.Addr, cfg.Persistent, cfg.Verify, cfg.IDPrefix, cfg.MaxData = addr, true, true, idPrefix, 512
	rep, err := loadgen.Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Errors != 0 || rep.Unanswered != 0 {
		t.Fatalf("load: %d errors, %d unanswered: %v", rep.Errors, rep.Unanswered, rep.ErrorSamples)
	}
	return rep
}

// parse reads JSON Lines as snoopctl writes them.
func parse(t *testing.T, s string) []*snoopv1.WatchEventsResponse {
	t.Helper()
	r, err := capture.NewReader("output", strings.NewReader(s))
	if err != nil {
		t.Fatal(err)
	}
	var out []*snoopv1.WatchEventsResponse
	for {
		resp, err := r.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, resp)
	}
}

// tally counts a stream's transactions by op and result, its other events
// by kind, and its drops.
type tally struct {
	tx      int
	ops     map[snoopv1.Op]int
	results map[string]int
	kinds   map[snoopv1.EventKind]int
	dropped uint64
}

func count(rs []*snoopv1.WatchEventsResponse) tally {
	c := tally{ops: map[snoopv1.Op]int{}, results: map[string]int{}, kinds: map[snoopv1.EventKind]int{}}
	for _, r := range rs {
		c.dropped += r.GetDropped()
		ev := r.GetEvent()
		if ev == nil {
			continue
		}
		c.kinds[ev.GetKind()]++
		if tx := ev.GetTransaction(); tx != nil {
			c.tx++
			c.ops[tx.GetOp()]++
			c.results[tx.GetResult()]++
		}
	}
	return c
}

// opOf maps the load generator's op names to the API's.
var opOf = map[string]snoopv1.Op{"ADD": snoopv1.Op_OP_ADD, "GET": snoopv1.Op_OP_GET, "REMOVE": snoopv1.Op_OP_REMOVE, "HAVE": snoopv1.Op_OP_HAVE}

// errorResults counts the load's answers that snoopctl calls errors: any
// result but ok, hit, miss and notok.
func errorResults(rep loadgen.Report) int {
	n := 0
	for r, k := range rep.Results {
		if res, ok := vocab.ParseResult(r); !ok || res.IsError() {
			n += int(k)
		}
	}
	return n
}

// waitLines waits until b's output has at least n lines.
func waitLines(t *testing.T, b *bg, n int) {
	t.Helper()
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if strings.Count(b.out.String(), "\n") >= n {
			return
		}
	}
	t.Fatalf("%v printed %d lines, want %d; stderr %q", b.cmd.Args, strings.Count(b.out.String(), "\n"), n, b.err.String())
}

func TestAddListShow(t *testing.T) {
	d, addr := setup(t)
	rep := load(t, addr, loadgen.Config{Conns: 2, Ops: 300})

	r := mustCtl(t, d, "list")
	lines := strings.Split(strings.TrimSpace(r.out), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "NAME ") || !strings.Contains(lines[1], "p ") ||
		!strings.Contains(lines[1], addr.String()) || !strings.Contains(lines[1], " listening ") {
		t.Errorf("list:\n%s", r.out)
	}
	errs := errorResults(rep)
	if f := strings.Fields(lines[1]); f[len(f)-2] != fmt.Sprint(rep.Ops) || f[len(f)-1] != fmt.Sprint(errs) {
		t.Errorf("list: transactions %s errors %s, want %d %d", f[len(f)-2], f[len(f)-1], rep.Ops, errs)
	}
	r = mustCtl(t, d, "show", "p")
	for _, want := range []string{"name:           p", "state:          listening", "listen:         " + addr.String(),
		fmt.Sprintf("transactions:   %d, %d with an error result", rep.Ops, errs),
		"conn errors:    0 protocol errors, 0 connect failures, 0 refused", "latency:        p50 ", "live connections: 0"} {
		if !strings.Contains(r.out, want) {
			t.Errorf("show lacks %q:\n%s", want, r.out)
		}
	}
	for _, op := range rep.ByOp {
		if !strings.Contains(r.out, fmt.Sprintf("  %s ", op.Op)) {
			t.Errorf("show lacks the %s row:\n%s", op.Op, r.out)
		}
	}
	r = mustCtl(t, d, "show", "p", "-o", "json")
	if !strings.HasPrefix(r.out, `{"proxy":{"spec":{"name":"p"`) {
		t.Errorf("show -o json: %s", r.out)
	}
	mustCtl(t, d, "disable", "p")
	if r := mustCtl(t, d, "list"); !strings.Contains(r.out, " disabled ") {
		t.Errorf("after disable:\n%s", r.out)
	}
	mustCtl(t, d, "enable", "p")
	if r := mustCtl(t, d, "version"); !strings.Contains(r.out, "daemon: snoopd ") || !strings.Contains(r.out, d.addr) ||
		!strings.Contains(r.out, ", engine ") || !strings.Contains(r.out, ", open-file limit ") {
		t.Errorf("version: %s", r.out)
	}

	// Timeouts: what add was given comes back from show, list -o json and
	// show -o json; an explicit 0 (off) is kept apart from unset.
	mustCtl(t, d, "add", "t", "--listen", "IP:127.0.0.1:0", "--server", "IP:192.0.2.1:9000", "--spares", "0",
		"--idle-timeout", "0", "--response-timeout", "3s")
	if r := mustCtl(t, d, "show", "t"); !strings.Contains(r.out, "timeouts:       idle off, message 30s (default), response 3s") ||
		!strings.Contains(r.out, "0 timed out, 0 loop refusals") {
		t.Errorf("show t:\n%s", r.out)
	}
	for _, args := range [][]string{{"show", "t", "-o", "json"}, {"list", "-o", "json"}} {
		r := mustCtl(t, d, args...)
		// The declared spec (no nested objects, so up to its first "}")
		// leaves message_timeout unset; effective_spec fills it in.
		declared := r.out[strings.LastIndex(r.out, `"spec":{"name":"t"`):]
		declared = declared[:strings.Index(declared, "}")]
		if !strings.Contains(declared, `"idle_timeout":"0s"`) || !strings.Contains(declared, `"response_timeout":"3s"`) || strings.Contains(declared, `"message_timeout"`) ||
			!strings.Contains(r.out, `"message_timeout":"30s","response_timeout":"3s"}`) {
			t.Errorf("%s: %s", strings.Join(args, " "), r.out)
		}
	}
	// A proxy in front of p is a chain, not a loop: it is added, and show
	// names the chain down to the cache.
	mustCtl(t, d, "add", "front", "--listen", "IP:127.0.0.1:0", "--server", addr.String())
	if r := mustCtl(t, d, "show", "front"); !strings.Contains(r.out, "\nchain:          front → p → IP:127.0.0.1:") {
		t.Errorf("show front:\n%s", r.out)
	}
	// A proxy whose traffic comes back to it is refused, naming the loop.
	self := "IP:" + testutil.FreeAddr(t)
	r = runCtl(t, d, "add", "loop", "--listen", self, "--server", self)
	if r.code != 1 || !strings.Contains(r.err, `is the listen address of proxy "loop" itself: a proxy loop loop → loop`) {
		t.Errorf("add a looping proxy: %v", r)
	}
}

// TestTailFilters tails with each filter while the load generator runs;
// every tail shows exactly the transactions the load performed that the
// filter selects.
func TestTailFilters(t *testing.T) {
	d, addr := setup(t)
	idHex := hex.EncodeToString([]byte(idPrefix))
	tails := map[string]*bg{}
	filters := map[string][]string{
		"all":     {"-v"},
		"get":     {"--op", "get"},
		"hitmiss": {"--status", "hit,miss"},
		"conn":    {"--events", "conn"},
		"session": {"--session", idHex},
		"latency": {"--min-latency", "1ns"},
		"errors":  {"--errors"},
		"count":   {"--count", "10"},
	}
	for name, f := range filters {
		tails[name] = startCtl(t, d, append([]string{"tail", "p", "-o", "json"}, f...)...)
	}
	text := startCtl(t, d, "tail", "p", "--op", "add")
	waitWatchers(t, d, len(filters)+1)

	const conns = 3
	rep := load(t, addr, loadgen.Config{Conns: conns, Ops: 1500})
	waitLines(t, tails["all"], int(rep.Ops)+2*conns)

	got := map[string]tally{}
	for name, b := range tails {
		r := b.wait(t, name != "count")
		if r.code != 0 {
			t.Fatalf("tail %s: %v", name, r)
		}
		got[name] = count(parse(t, r.out))
		if got[name].dropped != 0 {
			t.Fatalf("tail %s: the daemon dropped %d events; the comparison needs them all", name, got[name].dropped)
		}
		if !strings.Contains(r.err, " shown, 0 dropped, over ") {
			t.Errorf("tail %s: summary %q", name, r.err)
		}
	}

	all := got["all"]
	if all.tx != int(rep.Ops) {
		t.Errorf("tail showed %d transactions, the load performed %d operations", all.tx, rep.Ops)
	}
	var hitmiss int
	for _, op := range rep.ByOp {
		if all.ops[opOf[op.Op]] != int(op.Count) {
			t.Errorf("%s: tail showed %d, the load performed %d", op.Op, all.ops[opOf[op.Op]], op.Count)
		}
		if op.Op == "GET" && got["get"].tx != int(op.Count) || got["get"].tx != got["get"].ops[snoopv1.Op_OP_GET] {
			t.Errorf("--op get showed %v, the load performed %d GETs", got["get"].ops, op.Count)
		}
	}
	for r, n := range rep.Results {
		if all.results[r] != int(n) {
			t.Errorf("result %s: tail showed %d, the load saw %d", r, all.results[r], n)
		}
		if r == "hit" || r == "miss" {
			hitmiss += int(n)
		}
	}
	if got["hitmiss"].tx != hitmiss || got["hitmiss"].tx != got["hitmiss"].results["hit"]+got["hitmiss"].results["miss"] {
		t.Errorf("--status hit,miss showed %v, the load saw %d hits and misses", got["hitmiss"].results, hitmiss)
	}
	if c := got["conn"]; c.tx != 0 || c.kinds[snoopv1.EventKind_EVENT_KIND_CONNECTION_OPENED] != conns || c.kinds[snoopv1.EventKind_EVENT_KIND_CONNECTION_CLOSED] != conns {
		t.Errorf("--events conn showed %v, want %d opened and closed", c.kinds, conns)
	}
	if all.kinds[snoopv1.EventKind_EVENT_KIND_CONNECTION_OPENED] != conns {
		t.Errorf("tail showed %v", all.kinds)
	}
	if got["session"].tx != int(rep.Ops) || got["latency"].tx != int(rep.Ops) {
		t.Errorf("--session %s showed %d, --min-latency 1ns %d; want %d", idHex, got["session"].tx, got["latency"].tx, rep.Ops)
	}
	// The load has no failures (an ADD answered "exists" is a normal
	// answer), so --errors shows what the load saw as errors: nothing.
	if e := got["errors"]; e.tx != errorResults(rep) || len(e.kinds) > 1 {
		t.Errorf("--errors showed %v, want the %d transactions with error results", e.kinds, errorResults(rep))
	}
	if c := got["count"]; c.tx+c.kinds[snoopv1.EventKind_EVENT_KIND_CONNECTION_OPENED] != 10 {
		t.Errorf("--count 10 showed %v", c)
	}

	// Text: one line per transaction.
	r := text.wait(t, true)
	lines := strings.Split(strings.TrimSuffix(r.out, "\n"), "\n")
	adds := all.ops[snoopv1.Op_OP_ADD]
	if len(lines) != adds || !strings.HasPrefix(r.err, fmt.Sprintf("%d events shown, 0 dropped, over ", adds)) ||
		!strings.Contains(r.err, fmt.Sprintf("\n  ADD %d: ", adds)) {
		t.Errorf("tail --op add printed %d lines, summary %q; want %d", len(lines), r.err, adds)
	}
	for _, l := range lines {
		if !strings.Contains(l, " p conn=") || !strings.Contains(l, " ADD id=") || strings.Contains(l, "\x1b[") {
			t.Errorf("text line %q", l)
			break
		}
	}

	// --conn with --history: the daemon's recent events of one connection.
	var conn uint64
	var want int
	for _, ev := range parse(t, tails["all"].out.String()) {
		if conn == 0 {
			conn = ev.GetEvent().GetConnectionId()
		}
		if ev.GetEvent().GetConnectionId() == conn {
			want++
		}
	}
	r = mustCtl(t, d, "tail", "-v", "-o", "json", "--history", "100000", "--conn", fmt.Sprint(conn), "--for", "1s")
	if c := count(parse(t, r.out)); c.tx+c.kinds[snoopv1.EventKind_EVENT_KIND_CONNECTION_OPENED]+c.kinds[snoopv1.EventKind_EVENT_KIND_CONNECTION_CLOSED] != want {
		t.Errorf("--conn %d --history showed %v, want %d events", conn, c, want)
	}
}

// TestSaveRead saves the stream while a tail watches it, and reads the
// file back: the same events in the same order.
func TestSaveRead(t *testing.T) {
	d, addr := setup(t)
	file := filepath.Join(d.dir, "cap.jsonl")
	save := startCtl(t, d, "save", file, "p")
	tail := startCtl(t, d, "tail", "-v", "-o", "json", "p")
	waitWatchers(t, d, 2)
	rep := load(t, addr, loadgen.Config{Conns: 2, Ops: 800})
	waitLines(t, tail, int(rep.Ops)+4)
	// Let save write what tail showed: it flushes every half second.
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if b, err := os.ReadFile(file); err == nil && bytes.Count(b, []byte("\n")) >= int(rep.Ops)+4 {
			break
		}
	}
	sr := save.wait(t, true)
	tr := tail.wait(t, true)
	if sr.code != 0 || tr.code != 0 {
		t.Fatalf("save: %v\ntail: %v", sr, tr)
	}
	if want := fmt.Sprintf("wrote %d events to %s (0 dropped)\n", rep.Ops+4, file); sr.err != want {
		t.Errorf("save said %q, want %q", sr.err, want)
	}
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if string(data) != tr.out {
		t.Errorf("the saved file differs from tail -o json (%d and %d bytes)", len(data), len(tr.out))
	}
	rr := mustCtl(t, d, "read", "-o", "json", file)
	if rr.out != string(data) {
		t.Errorf("read -o json differs from the saved file")
	}
	if c := count(parse(t, rr.out)); c.tx != int(rep.Ops) {
		t.Errorf("read back %d transactions, the load performed %d", c.tx, rep.Ops)
	}
	// Filters on read agree with the daemon's: read --op get equals the
	// GETs tail showed.
	var gets int
	for _, r := range parse(t, tr.out) {
		if r.GetEvent().GetTransaction().GetOp() == snoopv1.Op_OP_GET {
			gets++
		}
	}
	rr = mustCtl(t, d, "read", file, "--op", "get")
	if n := strings.Count(rr.out, "\n"); n != gets || strings.Count(rr.out, " GET ") != gets {
		t.Errorf("read --op get: %d lines, want %d GETs", n, gets)
	}

	// An existing file is refused.
	r := runCtl(t, d, "save", file, "--count", "1")
	if r.code != 1 || r.err != "snoopctl: save: "+file+" already exists (use --append to add to it or --force to replace it)\n" {
		t.Errorf("save over an existing file: %v", r)
	}
	if b, _ := os.ReadFile(file); !bytes.Equal(b, data) {
		t.Error("a refused save changed the file")
	}
}

// TestSaveInterrupted sends SIGINT to save while the load is running: the
// capture files are complete and parse, and hold what save said it wrote.
func TestSaveInterrupted(t *testing.T) {
	d, addr := setup(t)
	file := filepath.Join(d.dir, "cap.jsonl")
	save := startCtl(t, d, "save", file, "--rotate-size", "64KiB")
	waitWatchers(t, d, 1)
	ctx, cancel := context.WithCancel(context.Background())
	loadDone := make(chan struct{})
	go func() {
		defer close(loadDone)
		loadgen.Run(ctx, loadgen.Config{Addr: addr, Conns: 2, Persistent: true, Duration: 20 * time.Second, Rate: 2000, IDPrefix: idPrefix, MaxData: 512})
	}()
	defer func() { cancel(); <-loadDone }()
	// Interrupt once the file has been flushed a few times mid-stream.
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if fi, err := os.Stat(file + ".1"); err == nil && fi.Size() > 0 {
			break
		}
	}
	r := save.wait(t, true)
	if r.code != 0 {
		t.Fatalf("save: %v", r)
	}
	var written int
	if _, err := fmt.Sscanf(r.err, "wrote %d events (0 dropped) to", &written); err != nil || written == 0 {
		t.Fatalf("save said %q", r.err)
	}
	files, _ := filepath.Glob(file + ".*")
	if len(files) == 0 {
		t.Fatal("no rotation at 64KiB")
	}
	// logrotate's order: FILE.1 is the newest rotated file.
	var names []string
	for i := len(files); i >= 1; i-- {
		names = append(names, fmt.Sprintf("%s.%d", file, i))
	}
	names = append(names, file)
	if want := fmt.Sprintf(" to %s and %s, oldest first\n", strings.Join(names[:len(names)-1], ", "), file); !strings.HasSuffix(r.err, want) {
		t.Errorf("save said %q, want it to end %q", r.err, want)
	}
	var events int
	for _, name := range names {
		b, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		if len(b) > 0 && b[len(b)-1] != '\n' {
			t.Errorf("%s ends in a partial line", name)
		}
		if name != file && len(b) > 64<<10 {
			t.Errorf("%s is %d bytes, over --rotate-size", name, len(b))
		}
		for i, line := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
			resp := &snoopv1.WatchEventsResponse{}
			if err := protojson.Unmarshal([]byte(line), resp); err != nil {
				t.Fatalf("%s:%d: %v", name, i+1, err)
			}
			if resp.GetEvent() != nil {
				events++
			}
		}
	}
	if events != written {
		t.Errorf("the files hold %d events, save said it wrote %d", events, written)
	}
	// The shell's order of FILE* is no order; read puts it right, with no
	// warning about overlapping times.
	shell := append([]string{file}, files...)
	slices.Sort(shell)
	rr := runCtl(t, d, append([]string{"read", "-o", "json"}, shell...)...)
	if rr.code != 0 || strings.Contains(rr.err, "warning") || !strings.HasPrefix(rr.err, fmt.Sprintf("%d events shown, 0 dropped, over ", events)) {
		t.Errorf("read of the interrupted capture: exit %d, stderr %q", rr.code, rr.err)
	}
	var ordered []byte
	for _, name := range names {
		b, _ := os.ReadFile(name)
		ordered = append(ordered, b...)
	}
	if rr.out != string(ordered) {
		t.Errorf("read %v did not read the files oldest first", shell)
	}
}

func TestApplyTwice(t *testing.T) {
	d := startDaemon(t)
	cache, err := cacheserver.Start(distcache.MustParseAddr("UNIX:"+filepath.Join(d.dir, "c.sock")), cacheserver.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cache.Close() })
	decl := filepath.Join(d.dir, "proxies.json")
	os.WriteFile(decl, fmt.Appendf(nil, `[
	  {"name": "a", "listen": "UNIX:%s/a.sock", "server": "%s"},
	  {"name": "b", "listen": "UNIX:%s/b.sock", "server": "%s", "max_connections": 4}
	]`, d.dir, cache.Addr(), d.dir, cache.Addr()), 0o600)
	mustCtl(t, d, "add", "old", "--listen", "IP:127.0.0.1:0", "--server", cache.Addr().String())

	first := mustCtl(t, d, "apply", "-f", decl, "--prune")
	if first.out != "created a\ncreated b\nremoved old\n2 created, 0 changed, 0 kept, 1 removed\n" {
		t.Errorf("first apply:\n%s", first.out)
	}
	second := mustCtl(t, d, "apply", "-f", decl, "--prune")
	if second.out != "kept a\nkept b\n0 created, 0 changed, 2 kept, 0 removed\n" {
		t.Errorf("second apply changed something:\n%s", second.out)
	}
	r := mustCtl(t, d, "list")
	if !strings.Contains(r.out, "\na ") || !strings.Contains(r.out, "\nb ") || strings.Contains(r.out, "\nold ") {
		t.Errorf("list after apply:\n%s", r.out)
	}
	load(t, distcache.MustParseAddr("UNIX:"+filepath.Join(d.dir, "a.sock")), loadgen.Config{Conns: 1, Ops: 50})
}

// TestRemoveWhileTailing removes the proxy a tail is watching: the tail
// goes on, shows the connections closing, and ends cleanly on Ctrl-C.
func TestRemoveWhileTailing(t *testing.T) {
	d, addr := setup(t)
	tail := startCtl(t, d, "tail", "p", "-v")
	waitWatchers(t, d, 1)
	rep := load(t, addr, loadgen.Config{Conns: 1, Ops: 100})
	waitLines(t, tail, int(rep.Ops)+2)
	if r := mustCtl(t, d, "remove", "p", "--drain", "100ms"); r.out != "removed p\n" {
		t.Errorf("remove: %v", r)
	}
	time.Sleep(200 * time.Millisecond)
	r := tail.wait(t, true)
	if r.code != 0 || !strings.HasPrefix(r.err, fmt.Sprintf("%d events shown, 0 dropped, over ", rep.Ops+2)) {
		t.Errorf("tail after remove: %v", r)
	}
	if r := mustCtl(t, d, "list"); !strings.HasPrefix(r.out, "no proxies") {
		t.Errorf("list after remove: %s", r.out)
	}
	if r := runCtl(t, d, "show", "p"); r.code != 1 || r.err != "snoopctl: show p: no proxy named \"p\" (see 'snoopctl list')\n" {
		t.Errorf("show after remove: %v", r)
	}
}

// TestErrorPaths checks each failure a user meets first: one line starting
// with snoopctl:, saying what to do, and the right exit code.
func TestErrorPaths(t *testing.T) {
	d, _ := setup(t)
	existing := filepath.Join(d.dir, "exists.jsonl")
	os.WriteFile(existing, []byte("{\"dropped\":\"1\"}\n"), 0o600)
	down := filepath.Join(d.dir, "down.sock")
	tests := []struct {
		name string
		d    *daemon
		args []string
		code int
		err  string
	}{
		{"daemon down", nil, []string{"-a", "unix://" + down, "list"}, 1,
			"snoopctl: cannot reach snoopd at unix://" + down + ": no such file (is snoopd running? set --address or SNOOPD_ADDRESS)\n"},
		{"daemon down, tail", nil, []string{"-a", "UNIX:" + down, "tail"}, 1,
			"snoopctl: cannot reach snoopd at unix://" + down + ": no such file (is snoopd running? set --address or SNOOPD_ADDRESS)\n"},
		{"bad address", nil, []string{"-a", "tcp://", "list"}, 2, "snoopctl: bad --address (or SNOOPD_ADDRESS): control address: invalid address \"tcp://\""},
		{"unknown proxy", d, []string{"show", "nope"}, 1, "snoopctl: show nope: no proxy named \"nope\" (see 'snoopctl list')\n"},
		{"unknown proxy, remove", d, []string{"remove", "nope"}, 1, "snoopctl: remove nope: no proxy named \"nope\" (see 'snoopctl list')\n"},
		{"duplicate proxy", d, []string{"add", "p", "--listen", "IP:127.0.0.1:0", "--server", "IP:127.0.0.1:9"}, 1, "snoopctl: add p: "},
		{"unknown connection", d, []string{"kill-conn", "p", "123456"}, 1, "snoopctl: kill-conn p 123456: "},
		{"bad filter", d, []string{"tail", "--status", "great"}, 2, "snoopctl: invalid filter: --status \"great\": want one or more of ok, notok, hit, miss"},
		{"bad event kind", d, []string{"tail", "--events", "everything"}, 2, "snoopctl: invalid filter: --events \"everything\""},
		{"bad session", d, []string{"save", filepath.Join(d.dir, "x"), "--session", "0xzz"}, 2, "snoopctl: invalid filter: --session \"0xzz\": not hex"},
		{"existing file", d, []string{"save", existing}, 1, "snoopctl: save: " + existing + " already exists (use --append to add to it or --force to replace it)\n"},
		{"unknown command", d, []string{"tial"}, 2, "snoopctl: unknown command \"tial\": did you mean \"tail\"?"},
		{"unknown flag", d, []string{"list", "--all"}, 2, "snoopctl: unknown flag --all (see 'snoopctl list --help')\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := runCtl(t, tc.d, tc.args...)
			if r.code != tc.code || !strings.HasPrefix(r.err, tc.err) || strings.Count(r.err, "\n") != 1 || r.out != "" {
				t.Errorf("snoopctl %s: %v; want exit %d and %q", strings.Join(tc.args, " "), r, tc.code, tc.err)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(d.dir, "x")); err == nil {
		t.Error("a save with a bad filter created its file")
	}
}
