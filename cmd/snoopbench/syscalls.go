package main

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"
	"unsafe"
)

// machineInfo says what a run was measured on.
type machineInfo struct {
	CPU        string `json:"cpu"`
	CPUs       int    `json:"cpus"`
	GOMAXPROCS int    `json:"gomaxprocs"`
	Go         string `json:"go"`
	Kernel     string `json:"kernel"`
	IOUring    string `json:"io_uring_disabled,omitempty"`
	// LoadStart and LoadEnd are /proc/loadavg when the benchmark
	// started and when its comparison ended: other work on the machine
	// moves every figure.
	LoadStart string `json:"loadavg_start,omitempty"`
	LoadEnd   string `json:"loadavg_end,omitempty"`
	// Elapsed is the comparison's wall time, in seconds.
	Elapsed float64 `json:"elapsed_s,omitempty"`
}

func machine() machineInfo {
	return machineInfo{
		CPU: cpuModel(), CPUs: runtime.NumCPU(), GOMAXPROCS: runtime.GOMAXPROCS(0), Go: runtime.Version(),
		Kernel:    firstLine("/proc/version"),
		IOUring:   firstLine("/proc/sys/kernel/io_uring_disabled"),
		LoadStart: firstLine("/proc/loadavg"),
	}
}

// firstLine returns the first line of a file, or "" if it cannot be read.
func firstLine(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	s, _, _ := strings.Cut(string(b), "\n")
	return strings.TrimSpace(s)
}

// Loop counts of the floor measurements: enough for tens of milliseconds
// each at the costs expected, bounded whatever the machine.
const (
	floorIters    = 200000
	pingPongIters = 20000
	floorRepeats  = 3
)

// floor is one measured cost: the best and the median of the repeats.
type floor struct {
	name        string
	best, medns float64
}

// measureFloor times fn(iters) floorRepeats times and returns the cost
// per iteration.
func measureFloor(name string, iters int, fn func(n int) error) (floor, error) {
	var ns []float64
	for range floorRepeats {
		start := time.Now()
		if err := fn(iters); err != nil {
			return floor{}, fmt.Errorf("%s: %w", name, err)
		}
		ns = append(ns, float64(time.Since(start).Nanoseconds())/float64(iters))
	}
	return floor{name: name, best: slices.Min(ns), medns: median(ns)}, nil
}

// runSyscalls measures this machine's floor for a proxy: what one system
// call costs, and what moving 64 bytes through a unix socket costs, alone
// and as a round trip between two threads (which is what a proxied
// request is made of).
func runSyscalls(w io.Writer) error {
	m := machine()
	fmt.Fprintf(w, "snoopbench -syscalls on %s, %d CPUs, %s\n", m.CPU, m.CPUs, m.Go)
	fmt.Fprintf(w, "kernel: %s\n", m.Kernel)
	if m.IOUring != "" {
		fmt.Fprintf(w, "/proc/sys/kernel/io_uring_disabled: %s\n", m.IOUring)
	}
	fmt.Fprintln(w)
	var floors []floor
	add := func(f floor, err error) error {
		if err == nil {
			floors = append(floors, f)
		}
		return err
	}
	if err := add(measureFloor("getpid, raw syscall", floorIters, func(n int) error {
		for range n {
			syscall.RawSyscall(syscall.SYS_GETPID, 0, 0, 0)
		}
		return nil
	})); err != nil {
		return err
	}
	if err := add(measureFloor("getpid, through the runtime (entersyscall/exitsyscall)", floorIters, func(n int) error {
		for range n {
			syscall.Syscall(syscall.SYS_GETPID, 0, 0, 0)
		}
		return nil
	})); err != nil {
		return err
	}
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err != nil {
		return fmt.Errorf("socketpair: %w", err)
	}
	defer syscall.Close(fds[0])
	defer syscall.Close(fds[1])
	if err := add(measureFloor("unix socket write+read of 64 bytes, one thread", floorIters, func(n int) error {
		var buf [64]byte
		for range n {
			if err := writeFull(fds[0], buf[:]); err != nil {
				return err
			}
			if err := readFull(fds[1], buf[:]); err != nil {
				return err
			}
		}
		return nil
	})); err != nil {
		return err
	}
	if err := add(measureFloor("unix socket round trip of 64 bytes between two threads, through the runtime", pingPongIters, func(n int) error {
		return pingPong(fds, n, false)
	})); err != nil {
		return err
	}
	if err := add(measureFloor("unix socket round trip of 64 bytes between two threads, raw syscalls", pingPongIters, func(n int) error {
		return pingPong(fds, n, true)
	})); err != nil {
		return err
	}
	fmt.Fprintln(w, "| operation | best | median |")
	fmt.Fprintln(w, "| --- | --- | --- |")
	for _, f := range floors {
		fmt.Fprintf(w, "| %s | %.0f ns | %.0f ns |\n", f.name, f.best, f.medns)
	}
	fmt.Fprintf(w, "\n(%d iterations, %d for the round trip; best and median of %d repeats)\n", floorIters, pingPongIters, floorRepeats)
	return nil
}

// pingPong sends 64 bytes from one thread to another and back n times
// over blocking sockets: each way is a write that wakes a thread blocked
// in read. With raw, reads and writes bypass the runtime's syscall
// bookkeeping (each thread keeps its P while blocked), which is how an
// event loop that blocks in raw epoll_wait runs; the loop allocates
// nothing, so no garbage collection needs those Ps meanwhile.
func pingPong(fds [2]int, n int, raw bool) error {
	readFull, writeFull := readFull, writeFull
	if raw {
		readFull, writeFull = rawReadFull, rawWriteFull
	}
	echoed := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		var buf [64]byte
		for range n {
			if err := readFull(fds[1], buf[:]); err != nil {
				echoed <- err
				return
			}
			if err := writeFull(fds[1], buf[:]); err != nil {
				echoed <- err
				return
			}
		}
		echoed <- nil
	}()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var buf [64]byte
	for range n {
		if err := writeFull(fds[0], buf[:]); err != nil {
			return err
		}
		if err := readFull(fds[0], buf[:]); err != nil {
			return err
		}
	}
	return <-echoed
}

func writeFull(fd int, b []byte) error {
	for len(b) > 0 {
		n, err := syscall.Write(fd, b)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("write: %w", err)
		}
		b = b[n:]
	}
	return nil
}

func readFull(fd int, b []byte) error {
	for len(b) > 0 {
		n, err := syscall.Read(fd, b)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("read: %w", err)
		}
		if n == 0 {
			return io.ErrUnexpectedEOF
		}
		b = b[n:]
	}
	return nil
}

func rawWriteFull(fd int, b []byte) error {
	for len(b) > 0 {
		n, _, errno := syscall.RawSyscall(syscall.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
		if errno == syscall.EINTR {
			continue
		}
		if errno != 0 {
			return fmt.Errorf("write: %w", errno)
		}
		b = b[n:]
	}
	return nil
}

func rawReadFull(fd int, b []byte) error {
	for len(b) > 0 {
		n, _, errno := syscall.RawSyscall(syscall.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
		if errno == syscall.EINTR {
			continue
		}
		if errno != 0 {
			return fmt.Errorf("read: %w", errno)
		}
		if n == 0 {
			return io.ErrUnexpectedEOF
		}
		b = b[n:]
	}
	return nil
}
