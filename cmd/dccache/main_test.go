package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/snoopd/snoopd/distcache"
	"github.com/snoopd/snoopd/internal/testutil"
)

// TestRun starts the command in-process on a unix socket, talks to it,
// stops it the way a signal does, and checks that it exits cleanly and
// removes its socket.
func TestRun(t *testing.T) {
	sock := filepath.Join(testutil.SocketDir(t), "dc.sock")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	outR, outW := io.Pipe()
	var stderr bytes.Buffer
	code := make(chan int, 1)
	go func() {
		code <- run(ctx, []string{"-listen", "UNIX:" + sock, "-max-sessions", "10"}, outW, &stderr)
		outW.Close()
	}()

	line, err := bufio.NewReader(outR).ReadString('\n')
	if err != nil {
		t.Fatalf("reading the start line: %v (stderr: %s)", err, stderr.String())
	}
	if want := "dccache: listening on UNIX:" + sock + "\n"; line != want {
		t.Fatalf("start line %q, want %q", line, want)
	}
	go io.Copy(io.Discard, outR)

	c, err := net.DialTimeout("unix", sock, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	req := distcache.AppendMessage(nil, false, 42, distcache.OpHave, []byte("id"))
	if _, err := c.Write(req); err != nil {
		t.Fatal(err)
	}
	m, err := distcache.NewReader(c, distcache.ServerToClient).ReadMessage()
	if err != nil || m.RequestUID != 42 || !bytes.Equal(m.Payload, []byte{1}) {
		t.Fatalf("HAVE: %+v, %v", m, err)
	}

	cancel()
	select {
	case got := <-code:
		if got != 0 {
			t.Errorf("exit code %d, want 0 (stderr: %s)", got, stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run did not return after its context ended")
	}
	if _, err := os.Lstat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket file after stop: %v, want it removed", err)
	}
	if !strings.Contains(stderr.String(), "dccache: stopped") {
		t.Errorf("stderr lacks the stop line:\n%s", stderr.String())
	}
}

func TestRunBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"-listen", "nonsense"},
		{"-listen", "UNIX:"},
		{"-max-sessions", "0"},
		{"extra"},
		{"-no-such-flag"},
	} {
		var stdout, stderr bytes.Buffer
		if code := run(context.Background(), args, &stdout, &stderr); code != 2 {
			t.Errorf("%q: exit code %d, want 2", args, code)
		}
		if stdout.Len() != 0 || stderr.Len() == 0 {
			t.Errorf("%q: stdout %q, stderr %q; want the complaint on stderr only", args, stdout.String(), stderr.String())
		}
	}
}
