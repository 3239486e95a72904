package ctl

import (
	"os"
	"strconv"
	"syscall"
)

// lowerPriority raises the niceness of every thread of the process to at
// least n. On Linux niceness belongs to a thread, not to the process:
// setpriority(PRIO_PROCESS, 0) would change only the calling one, so each
// thread listed in /proc/self/task gets it. Threads started later inherit
// it from the thread that starts them; a thread started while the list is
// walked is caught by walking it again.
func lowerPriority(n int) error {
	done := map[int]bool{}
	for range 3 {
		ents, err := os.ReadDir("/proc/self/task")
		if err != nil {
			return err
		}
		fresh := false
		for _, ent := range ents {
			tid, err := strconv.Atoi(ent.Name())
			if err != nil || done[tid] {
				continue
			}
			done[tid], fresh = true, true
			// The raw getpriority returns 20 minus the niceness.
			if p, err := syscall.Getpriority(syscall.PRIO_PROCESS, tid); err == nil && 20-p >= n {
				continue
			}
			if err := syscall.Setpriority(syscall.PRIO_PROCESS, tid, n); err != nil && err != syscall.ESRCH {
				return err
			}
		}
		if !fresh {
			return nil
		}
	}
	return nil
}
