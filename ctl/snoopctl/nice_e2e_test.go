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
	for _, c := range []struct {
		args []string
		want int
	}{
		{nil, max(19, own)},
		{[]string{"--nice", "7"}, max(7, own)},
		{[]string{"--nice", "0"}, own},
	} {
		d := startDaemon(t)
		tail := startCtl(t, d, append([]string{"tail"}, c.args...)...)
		waitWatchers(t, d, 1)
		nices := threadNices(t, tail.cmd.Process.Pid)
		for _, n := range nices {
			if n != c.want {
				t.Errorf("snoopctl tail %s: its threads run at niceness %v, want %d for all", strings.Join(c.args, " "), nices, c.want)
				break
			}
		}
		if r := tail.wait(t, true); r.code != 0 {
			t.Errorf("snoopctl tail %s: %v", strings.Join(c.args, " "), r)
		}
	}
	r := runCtl(t, startDaemon(t), "tail", "--nice", "20")
	if r.code != 2 || r.err != "snoopctl: --nice 20: want 0 (keep snoopctl's priority) to 19 (yield the most)\n" {
		t.Errorf("tail --nice 20: %v", r)
	}
}

// top yields as tail does once its sessions view watches a daemon on
// this machine; the proxies' view only polls counters and keeps top's
// priority.
func TestTopSessionsYieldTheCPU(t *testing.T) {
	own := threadNices(t, os.Getpid())[0]
	for _, c := range []struct {
		args []string
		want int
	}{
		{[]string{"--sessions"}, max(19, own)},
		{[]string{"--sessions", "--nice", "7"}, max(7, own)},
		{[]string{"--sessions", "--nice", "0"}, own},
		{nil, own},
	} {
		d := startDaemon(t)
		top := startCtl(t, d, append([]string{"top", "-b", "-d", "0.1"}, c.args...)...)
		if c.args == nil {
			// Two snapshots printed: top has polled and would have
			// yielded by now if the proxies' view did.
			waitOutput(t, top, "NAME  STATE", 2)
		} else {
			waitWatchers(t, d, 1)
		}
		nices := threadNices(t, top.cmd.Process.Pid)
		for _, n := range nices {
			if n != c.want {
				t.Errorf("snoopctl top %s: its threads run at niceness %v, want %d for all", strings.Join(c.args, " "), nices, c.want)
				break
			}
		}
		if r := top.wait(t, true); r.code != 0 {
			t.Errorf("snoopctl top %s: %v", strings.Join(c.args, " "), r)
		}
	}
	r := runCtl(t, startDaemon(t), "top", "--nice", "-1")
	if r.code != 2 || r.err != "snoopctl: --nice -1: want 0 (keep snoopctl's priority) to 19 (yield the most)\n" {
		t.Errorf("top --nice -1: %v", r)
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
