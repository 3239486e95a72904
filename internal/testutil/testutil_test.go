package testutil

import (
	"errors"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
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

func TestRefusingAddr(t *testing.T) {
	addr := RefusingAddr(t)
	for range 3 {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err == nil {
			c.Close()
			t.Fatalf("%s accepted a connection", addr)
		}
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("%s: %v, want connection refused", addr, err)
		}
	}
	if l, err := net.Listen("tcp", addr); err == nil {
		l.Close()
		t.Fatalf("another listener took %s", addr)
	}
}

func TestFreeAddr(t *testing.T) {
	addr := FreeAddr(t)
	if host, _, err := net.SplitHostPort(addr); err != nil || host != "127.0.0.1" {
		t.Fatalf("FreeAddr = %q (%v), want 127.0.0.1:PORT", addr, err)
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("the free address %s cannot be listened on: %v", addr, err)
	}
	l.Close()
	// Below the ephemeral range, where no bind to port 0 lands.
	if _, port, _ := net.SplitHostPort(addr); ephemeralLow() > minFreePort+1000 {
		if p, _ := strconv.Atoi(port); p < minFreePort || p >= ephemeralLow() {
			t.Errorf("port %d outside [%d, %d)", p, minFreePort, ephemeralLow())
		}
	}
	if p := FreePort(t); p == "" || strings.Contains(p, ":") {
		t.Errorf("FreePort = %q", p)
	}
}
