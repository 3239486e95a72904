//go:build linux

package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// A stream from a daemon on this machine is read at --nice's niceness, 19
// unless told: every thread of snoopctl has it, so that watching yields
// the CPU to the traffic it watches. --nice 0 leaves snoopctl's own.
func TestTailYieldsTheCPU(t *testing.T) {
	own := threadNices(t, os.Getpid())[0]
	streaming := func(t *testing.T, d *daemon, _ *bg) { waitWatchers(t, d, 1) }
	checkNiceness(t, []niceCase{
		{[]string{"tail"}, streaming, max(19, own)},
		{[]string{"tail", "--nice", "7"}, streaming, max(7, own)},
		{[]string{"tail", "--nice", "0"}, streaming, own},
	})
	checkNiceRefused(t, "tail", "20")
}

// top yields as tail does once its sessions view watches a daemon on
// this machine; the proxies' view only polls counters and keeps top's
// priority.
func TestTopSessionsYieldTheCPU(t *testing.T) {
	own := threadNices(t, os.Getpid())[0]
	streaming := func(t *testing.T, d *daemon, _ *bg) { waitWatchers(t, d, 1) }
	// Two snapshots printed: top has polled, and would have yielded by
	// now if the proxies' view did.
	polled := func(t *testing.T, _ *daemon, b *bg) { waitOutput(t, b, "NAME  STATE", 2) }
	top := func(more ...string) []string { return append([]string{"top", "-b", "-d", "0.1"}, more...) }
	checkNiceness(t, []niceCase{
		{top("--sessions"), streaming, max(19, own)},
		{top("--sessions", "--nice", "7"), streaming, max(7, own)},
		{top("--sessions", "--nice", "0"), streaming, own},
		{top(), polled, own},
	})
	checkNiceRefused(t, "top", "-1")
}

// niceCase is a snoopctl command to start against a daemon of its own,
// what to wait for before looking (ready), and the niceness every thread
// of the command should then have.
type niceCase struct {
	args  []string
	ready func(t *testing.T, d *daemon, b *bg)
	want  int
}

// checkNiceness runs each case and reads the niceness of every thread of
// the running snoopctl, which Ctrl-C then ends with status 0.
func checkNiceness(t *testing.T, cases []niceCase) {
	t.Helper()
	for _, c := range cases {
		d := startDaemon(t)
		b := startCtl(t, d, c.args...)
		c.ready(t, d, b)
		cmd := "snoopctl " + strings.Join(c.args, " ")
		nices := threadNices(t, b.cmd.Process.Pid)
		for _, n := range nices {
			if n != c.want {
				t.Errorf("%s: its threads run at niceness %v, want %d for all", cmd, nices, c.want)
				break
			}
		}
		if r := b.wait(t, true); r.code != 0 {
			t.Errorf("%s: %v", cmd, r)
		}
	}
}

// checkNiceRefused checks that command refuses --nice n as a usage error.
func checkNiceRefused(t *testing.T, command, n string) {
	t.Helper()
	r := runCtl(t, startDaemon(t), command, "--nice", n)
	if want := "snoopctl: --nice " + n + ": want 0 (keep snoopctl's priority) to 19 (yield the most)\n"; r.code != 2 || r.err != want {
		t.Errorf("%s --nice %s: %v", command, n, r)
	}
}

// waitOutput waits until b has printed s at least n times.
func waitOutput(t *testing.T, b *bg, s string, n int) {
	t.Helper()
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if strings.Count(b.out.String(), s) >= n {
			return
		}
	}
	t.Fatalf("snoopctl %v printed %q fewer than %d times: %q", b.cmd.Args, s, n, b.out.String())
}

// threadNices reads the niceness of each thread of process pid.
func threadNices(t *testing.T, pid int) []int {
	t.Helper()
	tasks, err := filepath.Glob(filepath.Join("/proc", strconv.Itoa(pid), "task", "*", "stat"))
	if err != nil || len(tasks) == 0 {
		t.Fatalf("threads of %d: %v", pid, err)
	}
	var nices []int
	for _, task := range tasks {
		b, err := os.ReadFile(task)
		if err != nil {
			continue // a thread that ended meanwhile
		}
		// After the command's name in parentheses, the niceness is the
		// 17th field (proc(5): field 19 of the line).
		_, rest, _ := strings.Cut(string(b), ") ")
		f := strings.Fields(rest)
		n, err := strconv.Atoi(f[16])
		if err != nil {
			t.Fatalf("%s: %q", task, b)
		}
		nices = append(nices, n)
	}
	return nices
}
