// Package testutil holds the few helpers the project's tests share: a
// temporary directory short enough for unix sockets, the loopback networks
// every server test covers, a loopback port that refuses connections, and
// a buffer that a process or logger may write while the test reads it.
package testutil

import (
	"bytes"
	"fmt"
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
func FreeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
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
