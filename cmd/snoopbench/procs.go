package main

import (
	"os"
	"os/exec"
	"os/signal"
	"sync"
	"syscall"
	"time"
)

// Every process the benchmark starts gets a process group of its own and
// is recorded here, so that whatever happens (an error half-way through a
// scenario, a panic, Ctrl-C, which the children in their own groups do not
// receive) none is left running: killAll ends every group still recorded.
var procs struct {
	mu     sync.Mutex
	groups map[int]bool
}

// startGroup starts cmd in a new process group and records the group.
func startGroup(cmd *exec.Cmd) error {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	procs.mu.Lock()
	defer procs.mu.Unlock()
	if err := cmd.Start(); err != nil {
		return err
	}
	if procs.groups == nil {
		procs.groups = map[int]bool{}
	}
	procs.groups[cmd.Process.Pid] = true
	return nil
}

// stopGroup asks the process to end with sig, waits up to grace for wait
// (which must reap it), then kills its whole group. wait runs exactly
// once; its error is returned.
func stopGroup(cmd *exec.Cmd, sig syscall.Signal, grace time.Duration, wait func() error) error {
	pid := cmd.Process.Pid
	cmd.Process.Signal(sig)
	done := make(chan error, 1)
	go func() { done <- wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(grace):
		syscall.Kill(-pid, syscall.SIGKILL)
		err = <-done
	}
	releaseGroup(pid)
	return err
}

// releaseGroup kills whatever is left in the group of pid (anything the
// process started and left behind) and forgets the group.
func releaseGroup(pid int) {
	syscall.Kill(-pid, syscall.SIGKILL)
	procs.mu.Lock()
	delete(procs.groups, pid)
	procs.mu.Unlock()
}

// killAll kills every process group still recorded.
func killAll() {
	procs.mu.Lock()
	defer procs.mu.Unlock()
	for pid := range procs.groups {
		syscall.Kill(-pid, syscall.SIGKILL)
		delete(procs.groups, pid)
	}
}

// killOnSignal makes SIGINT and SIGTERM kill every child group and run
// cleanup before the benchmark exits. The returned function undoes it.
func killOnSignal(cleanup func()) func() {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	quit := make(chan struct{})
	go func() {
		select {
		case sig := <-sigs:
			killAll()
			cleanup()
			os.Stderr.WriteString("snoopbench: interrupted by " + sig.String() + "; every child process was killed\n")
			os.Exit(130)
		case <-quit:
		}
	}()
	return func() {
		signal.Stop(sigs)
		close(quit)
	}
}
