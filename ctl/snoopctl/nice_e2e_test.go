//go:build linux

package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
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
