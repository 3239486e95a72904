package sdnotify

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/snoopd/snoopd/internal/testutil"
)

// listen opens a datagram socket at name and returns a function that
// reads one message from it.
func listen(t *testing.T, name string) func() string {
	t.Helper()
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return func() string {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		b := make([]byte, 4096)
		n, err := c.Read(b)
		if err != nil {
			t.Fatal(err)
		}
		return string(b[:n])
	}
}

func TestNotifyPathSocket(t *testing.T) {
	name := filepath.Join(testutil.SocketDir(t), "notify")
	read := listen(t, name)
	t.Setenv(Env, name)
	sent, err := Notify("READY=1\nSTATUS=serving")
	if err != nil || !sent {
		t.Fatalf("Notify: %v %v", sent, err)
	}
	if got := read(); got != "READY=1\nSTATUS=serving" {
		t.Fatalf("read %q", got)
	}
}

func TestNotifyAbstractSocket(t *testing.T) {
	name := fmt.Sprintf("@snoopd-test-%d-%d", os.Getpid(), time.Now().UnixNano())
	read := listen(t, name)
	t.Setenv(Env, name)
	if sent, err := Notify("STOPPING=1"); err != nil || !sent {
		t.Fatalf("Notify: %v %v", sent, err)
	}
	if got := read(); got != "STOPPING=1" {
		t.Fatalf("read %q", got)
	}
}

func TestNotifyWithoutManager(t *testing.T) {
	t.Setenv(Env, "")
	if sent, err := Notify("READY=1"); sent || err != nil {
		t.Fatalf("without NOTIFY_SOCKET: %v %v", sent, err)
	}
}

func TestNotifyBadSocket(t *testing.T) {
	t.Setenv(Env, "relative/path")
	if _, err := Notify("READY=1"); err == nil || !strings.Contains(err.Error(), "absolute") {
		t.Fatalf("relative name: %v", err)
	}
	t.Setenv(Env, filepath.Join(t.TempDir(), "nobody-listens"))
	if sent, err := Notify("READY=1"); sent || err == nil {
		t.Fatalf("no listener: %v %v", sent, err)
	}
}
