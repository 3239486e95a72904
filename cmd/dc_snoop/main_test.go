package main

import (
	"bytes"
	"context"
	"errors"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/snoopd/snoopd/distcache"
	"github.com/snoopd/snoopd/distcache/cacheserver"
	"github.com/snoopd/snoopd/distcache/loadgen"
	"github.com/snoopd/snoopd/internal/testutil"
	"github.com/snoopd/snoopd/proxy"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestParseArgsReadsTheOriginalsFlags(t *testing.T) {
	listen := distcache.MustParseAddr("UNIX:/tmp/cachesnoop")
	server := distcache.MustParseAddr("UNIX:/tmp/cacheserver")
	for _, tc := range []struct {
		args []string
		json bool
	}{
		{args: []string{"-listen", "UNIX:/tmp/cachesnoop", "-server", "UNIX:/tmp/cacheserver"}},
		{args: []string{"-connect", "UNIX:/tmp/cacheserver", "-listen", "UNIX:/tmp/cachesnoop"}},
		{args: []string{"--listen=UNIX:/tmp/cachesnoop", "--server", "UNIX:/tmp/cacheserver", "-o", "text"}},
		{args: []string{"-listen=unix:///tmp/cachesnoop", "-connect=unix:///tmp/cacheserver", "-o=json"}, json: true},
	} {
		o, err := parseArgs(tc.args)
		if err != nil {
			t.Errorf("%q: %v", tc.args, err)
			continue
		}
		if o.listen != listen || o.server != server || o.json != tc.json {
			t.Errorf("%q: got %+v", tc.args, o)
		}
	}
	o, err := parseArgs([]string{"-listen", "IP:9001", "-server", "IP:cache1:9000"})
	if err != nil || o.listen.Port() != 9001 || o.listen.Host() != "" || o.server.Host() != "cache1" {
		t.Errorf("libnal TCP forms: %+v, %v", o, err)
	}
}

func TestHelpFlagsWinOverEverythingElse(t *testing.T) {
	for _, args := range [][]string{
		{"-h"}, {"-help"}, {"-?"}, {"--help"},
		{"-listen", "UNIX:/tmp/x", "-?"},
		{"-bogus", "-h"}, // ignored, as the man page says
		{"-listen", "not an address", "-help"},
		{"-server", "IP:h:1", "stray", "-h"},
	} {
		var stdout, stderr bytes.Buffer
		if code := run(context.Background(), args, &stdout, &stderr); code != exitOK {
			t.Errorf("%q: exit %d, want 0 (stderr %q)", args, code, stderr.String())
		}
		if stdout.String() != usage || stderr.Len() != 0 {
			t.Errorf("%q: stdout %q, stderr %q; want the usage on stdout alone", args, stdout.String(), stderr.String())
		}
	}
	// A help flag in the place of a value is that value.
	if _, err := parseArgs([]string{"-listen", "-h"}); err == nil || errors.Is(err, errHelp) {
		t.Errorf("-listen -h: %v, want -h read as the listen address (and refused)", err)
	}
}

func TestBadCommandLinesExitTwoNamingTheFault(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "-listen is required"},
		{[]string{"-listen", "UNIX:/tmp/s"}, "-server (or -connect) is required"},
		{[]string{"-server", "UNIX:/tmp/s"}, "-listen is required"},
		{[]string{"-listen", "UNIX:/tmp/s", "-server", "UNIX:/tmp/t", "-v"}, `flag "-v" not recognised`},
		{[]string{"-listen", "UNIX:/tmp/s", "-server", "UNIX:/tmp/t", "extra"}, `unexpected argument "extra"`},
		{[]string{"-listen", "UNIX:/tmp/s", "-server"}, "-server needs a value"},
		{[]string{"-listen", "/tmp/s", "-server", "UNIX:/tmp/t"}, "-listen: "},
		{[]string{"-listen", "UNIX:/tmp/s", "-connect", "IP:9000"}, "-connect: "},
		{[]string{"-listen", "UNIX:/tmp/s", "-server", "cache1"}, "-server: "},
		{[]string{"-listen", "UNIX:/tmp/s", "-server", "UNIX:/tmp/t", "-connect", "UNIX:/tmp/u"}, "-connect given after -server"},
		{[]string{"-listen", "UNIX:/tmp/s", "-listen", "UNIX:/tmp/u", "-server", "UNIX:/tmp/t"}, "-listen given twice"},
		{[]string{"-listen", "UNIX:/tmp/s", "-server", "UNIX:/tmp/t", "-o", "yaml"}, `-o "yaml": want text or json`},
		{[]string{"-listen=", "-server", "UNIX:/tmp/t"}, "-listen has an empty value"},
	} {
		var stdout, stderr bytes.Buffer
		if code := run(context.Background(), tc.args, &stdout, &stderr); code != exitUsage {
			t.Errorf("%q: exit %d, want %d", tc.args, code, exitUsage)
		}
		msg := stderr.String()
		if !strings.HasPrefix(msg, "dc_snoop: ") || !strings.Contains(msg, tc.want) || !strings.HasSuffix(msg, usageHint) {
			t.Errorf("%q: stderr %q, want a line containing %q and the usage hint", tc.args, msg, tc.want)
		}
		if stdout.Len() != 0 {
			t.Errorf("%q: stdout %q, want nothing", tc.args, stdout.String())
		}
	}
}

func TestListenFailureExitsOne(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "no-such-dir", "snoop.sock")
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"-listen", "UNIX:" + missing, "-server", "UNIX:/tmp/cacheserver"}, &stdout, &stderr)
	if code != exitFailed || !strings.Contains(stderr.String(), "no-such-dir") {
		t.Fatalf("exit %d, stderr %q; want 1 and the path named", code, stderr.String())
	}
}

// TestRunLogsEveryTransaction runs the command in-process between a cache
// server and a load on unix sockets, stops it as a signal does, and
// holds its output to the load's own report.
func TestRunLogsEveryTransaction(t *testing.T) {
	for _, asJSON := range []bool{false, true} {
		dir := testutil.SocketDir(t)
		srv, err := cacheserver.Start(distcache.MustParseAddr("UNIX:"+filepath.Join(dir, "server")), cacheserver.Config{})
		if err != nil {
			t.Fatal(err)
		}
		defer srv.Close()
		snoop := "UNIX:" + filepath.Join(dir, "snoop")
		args := []string{"-listen", snoop, "-server", srv.Addr().String()}
		if asJSON {
			args = append(args, "-o", "json")
		}
		ctx, cancel := context.WithCancel(context.Background())
		var stdout, stderr testutil.SyncBuffer
		code := make(chan int, 1)
		go func() { code <- run(ctx, args, &stdout, &stderr) }()
		waitFor(t, &stderr, "dc_snoop: listening on "+snoop)

		rep, err := loadgen.Run(context.Background(), loadgen.Config{
			Addr: distcache.MustParseAddr(snoop), Conns: 2, Persistent: false, Ops: 300, Seed: 3, Verify: true,
		})
		if err != nil || rep.Errors > 0 || rep.Ops != 300 {
			t.Fatalf("load: %d ops, %d errors, %v", rep.Ops, rep.Errors, err)
		}
		// The last connections' lines may still be on their way.
		closed := " closed client="
		if asJSON {
			closed = `"kind":"EVENT_KIND_CONNECTION_CLOSED"`
		}
		waitCount(t, &stdout, closed, 300)
		cancel()
		if c := <-code; c != exitOK {
			t.Fatalf("exit %d; stderr %s", c, stderr.String())
		}

		lines := strings.Split(strings.TrimSuffix(stdout.String(), "\n"), "\n")
		ops := map[string]int64{}
		for _, line := range lines {
			if asJSON {
				if !strings.HasPrefix(line, `{"event":{`) {
					t.Fatalf("not an event object: %q", line)
				}
				if i := strings.Index(line, `"op":"OP_`); i >= 0 {
					op, _, _ := strings.Cut(line[i+len(`"op":"OP_`):], `"`)
					ops[op]++
				}
				continue
			}
			if i := strings.Index(line, " uid="); i >= 0 {
				fields := strings.Fields(line[i:])
				ops[fields[1]]++
			}
		}
		var total int64
		for _, o := range rep.ByOp {
			if ops[o.Op] != o.Count {
				t.Errorf("json %v: %d %s lines, the load made %d", asJSON, ops[o.Op], o.Op, o.Count)
			}
			total += o.Count
		}
		// Every operation had a connection of its own: opened, one
		// transaction, closed.
		if int64(len(lines)) != 3*total {
			t.Errorf("json %v: %d lines for %d transactions on as many connections, want %d", asJSON, len(lines), total, 3*total)
		}
		if sum := stderr.String(); !strings.Contains(sum, "300 connections, 300 transactions: add ") ||
			!strings.Contains(sum, "0 protocol errors.") {
			t.Errorf("json %v: summary:\n%s", asJSON, sum)
		}
	}
}

// TestErrorsGoToStderr: a client that sends a corrupt frame gets a
// protocol-error line on stderr (with its connection's lines on stdout,
// where the transactions are), and the summary counts it.
func TestErrorsGoToStderr(t *testing.T) {
	dir := testutil.SocketDir(t)
	srv, err := cacheserver.Start(distcache.MustParseAddr("UNIX:"+filepath.Join(dir, "server")), cacheserver.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	snoop := filepath.Join(dir, "snoop")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stdout, stderr testutil.SyncBuffer
	code := make(chan int, 1)
	go func() {
		code <- run(ctx, []string{"-listen", "UNIX:" + snoop, "-server", srv.Addr().String()}, &stdout, &stderr)
	}()
	waitFor(t, &stderr, "dc_snoop: listening on ")

	c, err := net.DialTimeout("unix", snoop, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// A frame of protocol version 0x0012: corrupt at its first bytes.
	if _, err := c.Write([]byte{0, 0x12, 0, 0, 0, 0, 0, 0, 1, 0, 1, 1, 0, 0}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, &stderr, " protocol-error client->server rule=version ")
	waitFor(t, &stdout, " closed client=")
	cancel()
	if c := <-code; c != exitOK {
		t.Fatalf("exit %d", c)
	}
	if strings.Contains(stdout.String(), "protocol-error") {
		t.Errorf("the error on stdout too:\n%s", stdout.String())
	}
	if !strings.Contains(stderr.String(), "; 1 protocol error.") {
		t.Errorf("summary without the error:\n%s", stderr.String())
	}
}

// blockedWriter is an output whose reader stopped reading, until
// release is closed.
type blockedWriter struct{ release chan struct{} }

func (w blockedWriter) Write(b []byte) (int, error) {
	<-w.release
	return len(b), nil
}

// TestStopsWhenTheOutputIsStuck: a signal ends dc_snoop, with its summary,
// even when standard output takes nothing (a paused pager).
func TestStopsWhenTheOutputIsStuck(t *testing.T) {
	dir := testutil.SocketDir(t)
	srv, err := cacheserver.Start(distcache.MustParseAddr("UNIX:"+filepath.Join(dir, "server")), cacheserver.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	snoop := "UNIX:" + filepath.Join(dir, "snoop")
	out := blockedWriter{release: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	var stderr testutil.SyncBuffer
	code := make(chan int, 1)
	go func() { code <- run(ctx, []string{"-listen", snoop, "-server", srv.Addr().String()}, out, &stderr) }()
	// The printer stays blocked on its first write once it has one.
	defer close(out.release)
	waitFor(t, &stderr, "dc_snoop: listening on ")
	rep, err := loadgen.Run(context.Background(), loadgen.Config{Addr: distcache.MustParseAddr(snoop), Conns: 1, Persistent: false, Ops: 20})
	if err != nil || rep.Ops != 20 {
		t.Fatalf("load through a proxy whose output is stuck: %d ops, %v", rep.Ops, err)
	}
	cancel()
	select {
	case c := <-code:
		if c != exitOK {
			t.Fatalf("exit %d", c)
		}
	case <-time.After(stopGrace + outputGrace + 10*time.Second):
		t.Fatal("no exit with the output stuck")
	}
	if sum := stderr.String(); !strings.Contains(sum, "did not take the last lines") || !strings.Contains(sum, "20 transactions") {
		t.Errorf("stderr:\n%s", sum)
	}
}

func TestSummaryCountsByOperationAndResult(t *testing.T) {
	s := proxy.Stats{
		ConnsTotal: 12, ConnsRefused: 1, ConnectFailed: 2, BytesUp: 1000, BytesDown: 2000, ProtocolErrors: 1,
		Results: map[distcache.Op]map[string]int64{
			distcache.OpGet: {"miss": 3, "hit": 5},
			distcache.OpAdd: {"ok": 4},
		},
	}
	got := summary(&s, 1500*time.Millisecond, 7)
	want := "dc_snoop: stopped after 1.5s. 12 connections (1 refused, 2 failed to connect to the server), " +
		"12 transactions: add 4 (ok 4), get 8 (hit 5, miss 3); 1000 bytes up, 2000 down; 1 protocol error; " +
		"7 events not printed (the output fell behind; the traffic was not slowed)."
	if strings.Join(strings.Fields(got), " ") != want {
		t.Errorf("summary:\n%s\nwant (wrapped):\n%s", got, want)
	}
	for _, line := range strings.Split(strings.TrimSuffix(got, "\n"), "\n") {
		if len(line) > summaryWidth {
			t.Errorf("line of %d bytes, over %d: %q", len(line), summaryWidth, line)
		}
	}
}

// TestFullQueueDropsAndSaysSo: a queue that is full counts what it cannot
// take, and the printer writes a drop notice where the gap is.
func TestFullQueueDropsAndSaysSo(t *testing.T) {
	q := newQueue(1)
	e := &proxy.Event{Kind: proxy.KindConnOpened, Time: time.Now(), Proxy: proxyName, ConnID: 1, Client: "unix"}
	for range 3 {
		q.Publish(e)
	}
	if n := q.dropped.Load(); n != 2 {
		t.Fatalf("dropped %d, want 2", n)
	}
	var out, errs bytes.Buffer
	p := newPrinter(&out, &errs, false)
	stop := make(chan struct{})
	close(stop)
	p.run(q, stop)
	if !strings.Contains(out.String(), "conn=1 opened") || !strings.Contains(out.String(), "dropped 2 events") || p.noted != 2 {
		t.Fatalf("output %q, dropped %d", out.String(), p.noted)
	}
}

// waitCount waits until b holds want n times.
func waitCount(t *testing.T, b *testutil.SyncBuffer, want string, n int) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); strings.Count(b.String(), want) < n; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d %q in:\n%s", strings.Count(b.String(), want), n, want, b.String())
		}
	}
}

// waitFor waits until b holds want.
func waitFor(t *testing.T, b *testutil.SyncBuffer, want string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(b.String(), want); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no %q in:\n%s", want, b.String())
		}
	}
}
