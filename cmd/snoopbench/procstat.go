package main

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// userHZ is the unit of the CPU times in /proc/PID/stat. The kernel
// exports them in USER_HZ, which is 100 on every Linux architecture Go
// supports (sysconf(_SC_CLK_TCK) would need cgo to ask).
const userHZ = 100

// tick is the resolution of a CPU time read from /proc/PID/stat.
const tick = time.Second / userHZ

// parseProcStatCPU returns utime+stime from the contents of a
// /proc/PID/stat file. The second field is the command name in
// parentheses, which may itself hold spaces and parentheses, so the fields
// are counted from the last ')'.
func parseProcStatCPU(stat string) (time.Duration, error) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, errors.New("no command name in /proc stat line")
	}
	// After the name: state (field 3), ..., utime (14), stime (15).
	f := strings.Fields(stat[i+1:])
	const utime, stime = 14 - 3, 15 - 3
	if len(f) <= stime {
		return 0, fmt.Errorf("/proc stat line has %d fields after the name, want more than %d", len(f), stime)
	}
	u, err := strconv.ParseUint(f[utime], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("utime %q: %w", f[utime], err)
	}
	s, err := strconv.ParseUint(f[stime], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("stime %q: %w", f[stime], err)
	}
	return time.Duration(u+s) * tick, nil
}

// processCPU returns the user+system CPU time process pid has used so far
// (all its threads, including those that have ended).
func processCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("cpu of process %d: %w", pid, err)
	}
	d, err := parseProcStatCPU(string(b))
	if err != nil {
		return 0, fmt.Errorf("cpu of process %d: %w", pid, err)
	}
	return d, nil
}

// settleCPU waits until none of the processes uses more than one tick of
// CPU in a window of 100 ms, or until limit passes, so that work a
// scenario queued (events still to encode and print) is counted in its
// cost. It returns the CPU times read last, one per pid.
func settleCPU(pids []int, limit time.Duration) ([]time.Duration, error) {
	read := func() ([]time.Duration, error) {
		out := make([]time.Duration, len(pids))
		for i, pid := range pids {
			d, err := processCPU(pid)
			if err != nil {
				return nil, err
			}
			out[i] = d
		}
		return out, nil
	}
	prev, err := read()
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
		cur, err := read()
		if err != nil {
			return nil, err
		}
		quiet := true
		for i := range cur {
			if cur[i]-prev[i] > tick {
				quiet = false
			}
		}
		prev = cur
		if quiet {
			break
		}
	}
	return prev, nil
}
