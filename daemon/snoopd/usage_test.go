package main

import (
	"flag"
	"strings"
	"testing"

	"google.golang.org/grpc"

	"github.com/snoopd/snoopd/daemon"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
)

func TestHelpListsEveryFlag(t *testing.T) {
	for _, arg := range []string{"--help", "-h"} {
		code, stdout, stderr := runToExit(t, arg)
		if code != 0 || stderr != "" {
			t.Fatalf("%s: exit code %d, stderr %q", arg, code, stderr)
		}
		var o options
		newFlagSet(&o).VisitAll(func(f *flag.Flag) {
			var line string
			for _, l := range strings.Split(stdout, "\n") {
				if strings.HasPrefix(strings.TrimSpace(l), "--"+f.Name+" ") || strings.TrimSpace(l) == "--"+f.Name {
					line = l
				}
			}
			if line == "" || len(strings.Fields(line)) < 3 {
				t.Errorf("%s: no one-line description of --%s in:\n%s", arg, f.Name, stdout)
			}
		})
	}
}

func TestVersion(t *testing.T) {
	code, stdout, _ := runToExit(t, "--version")
	if code != 0 || stdout != "snoopd "+daemon.Version+"\n" {
		t.Fatalf("exit code %d, output %q", code, stdout)
	}
}

// TestUsageErrors: a bad command line exits 2 with one "snoopd: " line
// that names the problem, before anything is opened.
func TestUsageErrors(t *testing.T) {
	dir := tempDir(t)
	sock := "unix://" + dir + "/ctl.sock"
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--bogus"}, "-bogus"},
		{[]string{"--control", sock, "extra"}, `unexpected argument "extra"`},
		{[]string{"--control", sock, "--log-format", "xml"}, "--log-format"},
		{[]string{"--control", sock, "--log-level", "loud"}, "--log-level"},
		{[]string{"--control", sock, "--log-level", "info+2"}, "--log-level"},
		{[]string{"--control", "nowhere"}, "--control nowhere"},
		{[]string{"--control", sock, "--control", sock}, "given twice"},
		{[]string{"--control", sock, "--watch-queue", "-1"}, "--watch-queue"},
		{[]string{"--control", sock, "--history", "-5"}, "--history"},
		{[]string{"--control", sock, "--watch-interval", "0s"}, "--watch-interval 0s: want 1ms to 1s"},
		{[]string{"--control", sock, "--watch-interval", "2s"}, "--watch-interval 2s: want 1ms to 1s"},
		{[]string{"--control", sock, "--shutdown-timeout", "0s"}, "--shutdown-timeout"},
		{[]string{"--control", sock, "--demo", "--demo-rate", "0"}, "--demo-rate"},
		{[]string{"--control", sock, "--demo", "--demo-listen", "IP:99999"}, "--demo-listen"},
		{[]string{"--control", sock, "--metrics-listen", "somewhere"}, "--metrics-listen"},
		{[]string{"--control", sock, "--engine", "threads"}, `--engine "threads": want epoll or goroutines`},
		{[]string{"--control", sock, "--loops", "0"}, "--loops 0"},
		{[]string{"--control", sock, "--metrics-histograms", "all"}, `--metrics-histograms "all": want none, ops or proxies`},
		// Durations are worded as snoopctl words them.
		{[]string{"--control", sock, "--shutdown-timeout", "5"}, `snoopd: --shutdown-timeout "5": want a duration with a unit, such as 500ms, 2s or 5m (see snoopd --help)`},
		{[]string{"--control", sock, "--export-interval", "soon"}, `--export-interval "soon": want a duration with a unit`},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			code, stdout, stderr := runToExit(t, tc.args...)
			if code != 2 {
				t.Fatalf("exit code %d, want 2:\n%s", code, stderr)
			}
			lines := strings.Split(strings.TrimSuffix(stderr, "\n"), "\n")
			if len(lines) != 1 || !strings.HasPrefix(lines[0], "snoopd: ") || !strings.Contains(lines[0], tc.want) {
				t.Fatalf("want one \"snoopd: \" line containing %q, got:\n%s", tc.want, stderr)
			}
			if stdout != "" {
				t.Errorf("stdout %q", stdout)
			}
		})
	}
}

func TestLogFormats(t *testing.T) {
	dir := tempDir(t)
	sock := "unix://" + dir + "/ctl.sock"
	// The JSON flags launch adds come first; these override them.
	s := launch(t, "--control", sock, "--log-format", "text", "--log-level", "warn")
	// No JSON log to wait for: wait for the daemon to answer instead.
	conn := dial(t, unixTarget(dir+"/ctl.sock"))
	if _, err := snoopv1.NewDaemonServiceClient(conn).GetDaemonInfo(withTimeout(t), &snoopv1.GetDaemonInfoRequest{}, grpc.WaitForReady(true)); err != nil {
		t.Fatal(err)
	}
	if code := s.stop(); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	if out := s.stderr.String(); strings.Contains(out, "level=INFO") || strings.Contains(out, `"level"`) {
		t.Errorf("--log-format text --log-level warn wrote:\n%s", out)
	}
}
