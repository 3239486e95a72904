// Package testutil holds the few helpers the project's tests share: a
// temporary directory short enough for unix sockets, and a buffer that a
// process or logger may write while the test reads it.
package testutil

import (
	"bytes"
	"os"
	"sync"
	"testing"
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
