// Package testutil holds the few helpers the project's tests share: a
// temporary directory short enough for unix sockets, the loopback networks
// every server test covers, a loopback port that refuses connections, and
// a buffer that a process or logger may write while the test reads it,
// and the CPU time a benchmark used.
package testutil

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"

	"github.com/snoopd/snoopd/distcache"
)

// SocketDir returns a new temporary directory, removed when the test
// ends, whose paths stay well inside the 107 bytes a unix socket path may
// have: t.TempDir's include the test's name and can exceed it.
func SocketDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "snp")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// SyncBuffer is an io.Writer safe to read (String) while others write.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p.
func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns what was written so far.
func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Network is a transport tests run over, with a way to pick a fresh
// address on it to listen on.
type Network struct {
	Name string
	Addr func(t testing.TB) distcache.Addr
}

// Networks are the transports every server and client test covers: TCP
// on 127.0.0.1 (port 0) and a unix socket in a short temporary directory.
func Networks() []Network {
	return []Network{
		{"tcp", func(testing.TB) distcache.Addr { return distcache.MustParseAddr("IP:127.0.0.1:0") }},
		{"unix", UnixAddr},
	}
}

// UnixAddr returns a socket address in a fresh SocketDir.
func UnixAddr(t testing.TB) distcache.Addr {
	t.Helper()
	return distcache.MustParseAddr("UNIX:" + filepath.Join(SocketDir(t), "dc.sock"))
}

// FreeAddr returns a loopback TCP address ("127.0.0.1:PORT") that was
// free a moment ago, for a test that must name the port before something
// binds it (a proxy created on a fixed port, a saved state).
//
// The port is drawn at random from below the kernel's ephemeral range
// (ip_local_port_range), where neither a bind to port 0 nor an outgoing
// connection ever lands: the listeners and clients of the tests running
// beside this one cannot take it before the test binds it, only another
// FreeAddr can, by a chance of about one in ten thousand.
func FreeAddr(t testing.TB) string {
	t.Helper()
	if low := ephemeralLow(); low > minFreePort+1000 {
		for range 100 {
			addr := fmt.Sprintf("127.0.0.1:%d", minFreePort+rand.IntN(low-minFreePort))
			if l, err := net.Listen("tcp", addr); err == nil {
				l.Close()
				return addr
			}
		}
	}
	// No room below the ephemeral range, or all tried were taken: a port
	// the kernel picks, which it may hand out again.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// FreePort is FreeAddr's port, for tests that write the address
// themselves ("IP:127.0.0.1:" + port, "localhost:" + port).
func FreePort(t testing.TB) string {
	t.Helper()
	_, port, _ := net.SplitHostPort(FreeAddr(t))
	return port
}

// minFreePort is the lowest port FreeAddr draws: above the well-known
// and most registered services' ports.
const minFreePort = 20000

// ephemeralLow is the first port of the kernel's ephemeral range, or
// 32768 (Linux's default) where it cannot be read.
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 32768
	}
	var low, high int
	if _, err := fmt.Sscan(string(b), &low, &high); err != nil || low <= 0 {
		return 32768
	}
	return low
}

// RefusingAddr returns a loopback TCP address ("127.0.0.1:PORT") where a
// connect is refused for as long as the test runs: a socket bound to the
// port and never listening holds it, so no other process can take the
// port and answer (a port merely closed again can be reused at once).
func RefusingAddr(t testing.TB) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatalf("socket: %v", err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatalf("bind 127.0.0.1:0: %v", err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatalf("getsockname: %v", err)
	}
	return fmt.Sprintf("127.0.0.1:%d", sa.(*syscall.SockaddrInet4).Port)
}

// ReportCPU starts counting the CPU time of the whole process (user and
// system, every thread: the collector's too) and returns the function
// that reports it per op, as cpu-ns/op, when the benchmark ends: defer
// it. On a shared machine a benchmark's ns/op includes the time it waited
// for a core; its CPU time moves much less with the machine's load.
func ReportCPU(b *testing.B) (report func()) {
	start := processCPU()
	return func() {
		b.ReportMetric(float64(processCPU()-start)/float64(b.N), "cpu-ns/op")
	}
}

// processCPU is the CPU time the process has used, in nanoseconds.
func processCPU() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}
