//go:build unix && !linux

package ctl

import "syscall"

// lowerPriority raises the process's niceness to at least n.
func lowerPriority(n int) error {
	// Getpriority returns the niceness itself here (Linux's raw call
	// returns 20 minus it).
	if p, err := syscall.Getpriority(syscall.PRIO_PROCESS, 0); err == nil && p >= n {
		return nil
	}
	return syscall.Setpriority(syscall.PRIO_PROCESS, 0, n)
}
