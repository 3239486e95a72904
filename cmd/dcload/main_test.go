package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/snoopd/snoopd/distcache"
	"github.com/snoopd/snoopd/distcache/cacheserver"
	"github.com/snoopd/snoopd/distcache/loadgen"
	"github.com/snoopd/snoopd/internal/testutil"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func runCmd(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

func startServer(t *testing.T) string {
	t.Helper()
	s, err := cacheserver.Start(distcache.MustParseAddr("IP:127.0.0.1:0"), cacheserver.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s.Addr().String()
}

func TestRunClean(t *testing.T) {
	addr := startServer(t)
	code, out, errs := runCmd(t, "-addr", addr, "-conns", "4", "-pipeline", "2", "-sessions", "50", "-ops", "2000", "-verify")
	if code != exitOK {
		t.Fatalf("exit %d, stderr %q, stdout:\n%s", code, errs, out)
	}
	if !strings.Contains(out, "2000 answered") || !strings.Contains(out, "errors:   0") {
		t.Errorf("report:\n%s", out)
	}
}

func TestRunJSON(t *testing.T) {
	addr := startServer(t)
	code, out, errs := runCmd(t, "-addr", addr, "-persistent=false", "-ops", "100", "-data", "10", "-mix", "add=1,get=1", "-json")
	if code != exitOK {
		t.Fatalf("exit %d, stderr %q", code, errs)
	}
	var rep loadgen.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("output is not a JSON report: %v\n%s", err, out)
	}
	if rep.Ops != 100 || rep.OpLatency.Count != 100 || rep.Persistent || rep.MinData != 10 || rep.MaxData != 10 || rep.Mix != "add=1,get=1,remove=0,have=0" {
		t.Errorf("report %+v", rep)
	}
}

func TestRunErrorsExitOne(t *testing.T) {
	dead := "IP:" + testutil.RefusingAddr(t)
	code, out, errs := runCmd(t, "-addr", dead, "-conns", "1", "-ops", "3")
	if code != exitErrors || !strings.Contains(out, "dial refused") || !strings.Contains(errs, "3 errors") {
		t.Errorf("exit %d, stderr %q, stdout:\n%s", code, errs, out)
	}
}

func TestUsageErrors(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"-ops", "1"}, "-addr is required"},
		{[]string{"-addr", "nonsense", "-ops", "1"}, "-addr"},
		{[]string{"-addr", "IP:9001", "-ops", "1"}, "can only be listened on"},
		{[]string{"-addr", "IP:127.0.0.1:9001"}, "one of -ops and -duration"},
		{[]string{"-addr", "IP:127.0.0.1:9001", "-ops", "1", "-mix", "get=x"}, "-mix"},
		{[]string{"-addr", "IP:127.0.0.1:9001", "-ops", "1", "-data", "9-2"}, "-data"},
		{[]string{"-addr", "IP:127.0.0.1:9001", "-ops", "1", "-persistent=false", "-pipeline", "4"}, "needs persistent"},
		{[]string{"-addr", "IP:127.0.0.1:9001", "-ops", "1", "-conns", "0"}, "-conns"},
		{[]string{"-addr", "IP:127.0.0.1:9001", "-ops", "1", "extra"}, "unexpected argument"},
		{[]string{"-nosuchflag"}, "not defined"},
	}
	for _, tt := range tests {
		code, _, errs := runCmd(t, tt.args...)
		if code != exitUsage || !strings.Contains(errs, tt.want) {
			t.Errorf("dcload %v: exit %d, stderr %q; want 2 and %q", tt.args, code, errs, tt.want)
		}
	}
}

// TestBadDurationIsOneLine: a duration dcload cannot read gets the answer
// snoopd and snoopctl give, not the whole usage.
func TestBadDurationIsOneLine(t *testing.T) {
	code, _, errs := runCmd(t, "-addr", "IP:127.0.0.1:9001", "-duration", "5")
	want := "dcload: --duration \"5\": want a duration with a unit, such as 500ms, 2s or 5m\nrun 'dcload -h' for the flags\n"
	if code != exitUsage || errs != want {
		t.Fatalf("exit %d, stderr:\n%s\nwant 2 and:\n%s", code, errs, want)
	}
}

func TestHelpPrintsTheFlags(t *testing.T) {
	code, _, errs := runCmd(t, "-h")
	if code != exitOK || !strings.Contains(errs, "usage: dcload") || !strings.Contains(errs, "-session-timeout") {
		t.Fatalf("exit %d, stderr:\n%s", code, errs)
	}
}

func TestInterrupted(t *testing.T) {
	addr := startServer(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var out, errb bytes.Buffer
	code := run(ctx, []string{"-addr", addr, "-duration", "1h"}, &out, &errb)
	if code != exitInterrupted || !strings.Contains(out.String(), "INTERRUPTED") {
		t.Errorf("exit %d, stderr %q, stdout:\n%s", code, errb.String(), out.String())
	}
}
