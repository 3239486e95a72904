package faultsuite

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
	"github.com/snoopd/snoopd/internal/testutil"
)

// dcSnoopOps is the load each dc_snoop scenario puts through it.
const dcSnoopOps = 400

// TestDCSnoopLogsEveryTransactionAndStopsWithASummary runs the man page's
// example with this repository's stand-ins: dccache on a unix socket,
// dc_snoop in front of it writing to a log file, dcload through dc_snoop
// (a connection per operation, as dc_test makes them). The log holds one
// line per transaction dcload made, by operation, and SIGTERM ends
// dc_snoop with exit status 0 and its summary on stderr.
func TestDCSnoopLogsEveryTransactionAndStopsWithASummary(t *testing.T) {
	for _, format := range []string{"text", "json"} {
		t.Run(format, func(t *testing.T) {
			dir := testutil.SocketDir(t)
			startCache(t, "UNIX:"+filepath.Join(dir, "cacheserver"))
			logfile, err := os.Create(filepath.Join(t.TempDir(), "logfile"))
			if err != nil {
				t.Fatal(err)
			}
			defer logfile.Close()
			snoop := "UNIX:" + filepath.Join(dir, "cachesnoop")
			p := startProcTo(t, "dc_snoop", logfile, nil, bins.dcSnoop,
				"-listen", snoop, "-server", "UNIX:"+filepath.Join(dir, "cacheserver"), "-o", format)
			waitOutput(t, p, "dc_snoop: listening on "+snoop)

			rep := dcload(t, "-addr", snoop, "-ops", strconv.Itoa(dcSnoopOps), "-persistent=false", "-conns", "4", "-verify")
			if rep.Errors > 0 || rep.Ops != dcSnoopOps {
				t.Fatalf("dcload: %d ops, errors: %s", rep.Ops, causes(rep))
			}
			// The proxy prints a connection's end after its last
			// transaction; wait for the last ends, then stop it.
			closed := " closed client="
			if format == "json" {
				closed = `"kind":"EVENT_KIND_CONNECTION_CLOSED"`
			}
			for deadline := time.Now().Add(waitLimit); strings.Count(readFile(t, logfile.Name()), closed) < dcSnoopOps; time.Sleep(10 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatalf("%d connection ends logged of %d", strings.Count(readFile(t, logfile.Name()), closed), dcSnoopOps)
				}
			}
			p.signal(syscall.SIGTERM)
			select {
			case <-p.done:
			case <-time.After(waitLimit):
				t.Fatal("dc_snoop did not stop on SIGTERM")
			}
			if p.err != nil {
				t.Fatalf("dc_snoop: %v; stderr:\n%s", p.err, p.out.String())
			}
			if sum := p.out.String(); !strings.Contains(sum, strconv.Itoa(dcSnoopOps)+" connections, "+strconv.Itoa(dcSnoopOps)+" transactions: add ") ||
				!strings.Contains(sum, "0 protocol errors.") {
				t.Fatalf("summary on stderr:\n%s", sum)
			}

			ops := map[string]int64{}
			lines := 0
			sc := bufio.NewScanner(strings.NewReader(readFile(t, logfile.Name())))
			for sc.Scan() {
				lines++
				line := sc.Text()
				if format == "text" {
					if _, tx, ok := strings.Cut(line, " uid="); ok {
						ops[strings.Fields(tx)[1]]++
					}
					continue
				}
				var r snoopv1.WatchEventsResponse
				if err := protojson.Unmarshal([]byte(line), &r); err != nil {
					t.Fatalf("line %d is not a snoop.v1.WatchEventsResponse: %v: %q", lines, err, line)
				}
				if tx := r.GetEvent().GetTransaction(); tx != nil {
					ops[strings.TrimPrefix(tx.GetOp().String(), "OP_")]++
				}
			}
			for _, o := range rep.ByOp {
				if ops[o.Op] != o.Count {
					t.Errorf("%d %s transactions logged; dcload made %d", ops[o.Op], o.Op, o.Count)
				}
			}
			// A connection per operation: opened, its transaction, closed.
			if lines != 3*dcSnoopOps {
				t.Errorf("%d lines, want %d (each connection opened, its transaction, closed)", lines, 3*dcSnoopOps)
			}
			if format == "json" {
				// What dc_snoop -o json writes, snoopctl read reads.
				out, err := exec.Command(bins.snoopctl, "read", logfile.Name()).Output()
				if err != nil {
					t.Fatalf("snoopctl read: %v", err)
				}
				if n := strings.Count(string(out), " uid="); n != dcSnoopOps {
					t.Errorf("snoopctl read shows %d transactions, want %d", n, dcSnoopOps)
				}
			}
		})
	}
}

// TestDCSnoopCommandLine holds the binary to its exit statuses: help flags
// print the usage and exit 0 whatever else is given; a bad flag, a bad
// address or a missing one exit 2 with a message naming it.
func TestDCSnoopCommandLine(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
		want string // in stdout for 0, in stderr otherwise
	}{
		{[]string{"-h"}, 0, "Usage: dc_snoop -listen ADDR -server ADDR"},
		{[]string{"-help"}, 0, "Usage: dc_snoop -listen ADDR -server ADDR"},
		{[]string{"-?"}, 0, "Usage: dc_snoop -listen ADDR -server ADDR"},
		{[]string{"-listen", "UNIX:/tmp/x", "-nonsense", "-?"}, 0, "-connect ADDR"},
		{[]string{"-listen", "UNIX:/tmp/x"}, 2, "-server (or -connect) is required"},
		{[]string{"-server", "UNIX:/tmp/x"}, 2, "-listen is required"},
		{[]string{"-listen", "UNIX:/tmp/x", "-server", "UNIX:/tmp/y", "-persistent"}, 2, `flag "-persistent" not recognised`},
		{[]string{"-listen", "/tmp/x.sock", "-server", "UNIX:/tmp/y"}, 2, "-listen: "},
		{[]string{"-listen", "IP:9001", "-connect", "IP:9002"}, 2, "-connect: "},
	} {
		c, cancel := context.WithTimeout(context.Background(), waitLimit)
		cmd := exec.CommandContext(c, bins.dcSnoop, tc.args...)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		cancel()
		code := 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatalf("%q: %v", tc.args, err)
		}
		got := stderr.String()
		if tc.code == 0 {
			got = stdout.String()
		}
		if code != tc.code || !strings.Contains(got, tc.want) {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want exit %d with %q", tc.args, code, stdout.String(), stderr.String(), tc.code, tc.want)
		}
		if tc.code == 2 && !strings.Contains(stderr.String(), "run 'dc_snoop -h' for the usage") {
			t.Errorf("%q: no usage hint in %q", tc.args, stderr.String())
		}
	}
}

// waitOutput waits until p has written want.
func waitOutput(t *testing.T, p *proc, want string) {
	t.Helper()
	for deadline := time.Now().Add(waitLimit); !strings.Contains(p.out.String(), want); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) || p.exited() {
			t.Fatalf("%s did not write %q: %s", p.name, want, tail(p.out.String()))
		}
	}
}

func readFile(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
