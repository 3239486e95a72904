package testutil

import (
	"net"
	"path/filepath"
	"sync"
	"testing"
)

func TestSocketDirFitsASocket(t *testing.T) {
	dir := SocketDir(t)
	l, err := net.Listen("unix", filepath.Join(dir, "a-socket-with-a-longish-name.sock"))
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
}

func TestSyncBuffer(t *testing.T) {
	var b SyncBuffer
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 100 {
				b.Write([]byte("x"))
				_ = b.String()
			}
		}()
	}
	wg.Wait()
	if len(b.String()) != 400 {
		t.Fatalf("%d bytes", len(b.String()))
	}
}
