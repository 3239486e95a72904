package listen_test

import (
	"context"
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"go.uber.org/goleak"

	"github.com/snoopd/snoopd/distcache"
	"github.com/snoopd/snoopd/internal/listen"
	"github.com/snoopd/snoopd/internal/skip"
	"github.com/snoopd/snoopd/internal/testutil"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func unixAddr(path string) distcache.Addr { return distcache.MustParseAddr("UNIX:" + path) }

func mustListen(t *testing.T, c listen.Config, a distcache.Addr) net.Listener {
	t.Helper()
	l, err := c.Listen(context.Background(), a)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// staleSocket leaves a socket file at path that nobody accepts on, as a
// server that died without cleaning up does.
func staleSocket(t *testing.T, path string) {
	t.Helper()
	ul, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ul.SetUnlinkOnClose(false)
	ul.Close()
	if fi, err := os.Lstat(path); err != nil || fi.Mode().Type() != fs.ModeSocket {
		t.Fatalf("test setup: no stale socket at %s: %v", path, err)
	}
}

// accepts checks that l answers a connect and hands the connection over.
func accepts(t *testing.T, l net.Listener) {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		c, err := l.Accept()
		if err == nil {
			c.Close()
		}
		done <- err
	}()
	c, err := net.Dial(l.Addr().Network(), l.Addr().String())
	if err != nil {
		t.Fatalf("dial %s: %v", l.Addr(), err)
	}
	c.Close()
	if err := <-done; err != nil {
		t.Fatalf("accept: %v", err)
	}
}

func TestStaleSocketReplaced(t *testing.T) {
	path := filepath.Join(testutil.SocketDir(t), "s.sock")
	staleSocket(t, path)
	l := mustListen(t, listen.Config{}, unixAddr(path))
	defer l.Close()
	accepts(t, l)
}

func TestLiveSocketRefused(t *testing.T) {
	path := filepath.Join(testutil.SocketDir(t), "s.sock")
	first := mustListen(t, listen.Config{}, unixAddr(path))
	defer first.Close()

	_, err := listen.Config{}.Listen(context.Background(), unixAddr(path))
	if !errors.Is(err, listen.ErrAddrInUse) || !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("second listen on a live socket: %v, want ErrAddrInUse (and EADDRINUSE)", err)
	}
	want := "listen on UNIX:" + path + ": address in use (another process accepts connections on it)"
	if err.Error() != want {
		t.Errorf("error:\n got %s\nwant %s", err, want)
	}
	// The first server keeps its socket and still serves (the probe's
	// connection was accepted and closed along the way).
	accepts(t, first)
}

func TestOtherFilesRefusedUntouched(t *testing.T) {
	dir := testutil.SocketDir(t)
	regular := filepath.Join(dir, "file")
	if err := os.WriteFile(regular, []byte("keep me"), 0o644); err != nil {
		t.Fatal(err)
	}
	sub := filepath.Join(dir, "dir")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	// A symbolic link to a stale socket is still not a socket: following
	// it would remove a file somewhere else.
	target := filepath.Join(dir, "target.sock")
	staleSocket(t, target)
	link := filepath.Join(dir, "link")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	pipe := filepath.Join(dir, "pipe")
	if err := syscall.Mkfifo(pipe, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ path, kind string }{
		{regular, "regular file"}, {sub, "directory"}, {link, "symbolic link"}, {pipe, "named pipe"},
	} {
		_, err := listen.Config{Mode: 0o600}.Listen(context.Background(), unixAddr(tc.path))
		if !errors.Is(err, listen.ErrPathExists) {
			t.Errorf("%s: %v, want ErrPathExists", tc.kind, err)
			continue
		}
		want := "listen on UNIX:" + tc.path + ": listen path exists and is not a socket (it is a " + tc.kind + "; remove it or pick another path)"
		if err.Error() != want {
			t.Errorf("%s:\n got %s\nwant %s", tc.kind, err, want)
		}
	}
	if b, err := os.ReadFile(regular); err != nil || string(b) != "keep me" {
		t.Errorf("regular file changed: %q, %v", b, err)
	}
	if fi, err := os.Lstat(regular); err != nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("regular file's mode changed: %v, %v", fi.Mode(), err)
	}
	if fi, err := os.Lstat(link); err != nil || fi.Mode().Type() != fs.ModeSymlink {
		t.Errorf("link changed: %v", err)
	}
	if _, err := os.Lstat(target); err != nil {
		t.Errorf("the link's target was removed: %v", err)
	}
}

// A socket whose backlog is full answers a connect with EAGAIN: it may be
// a busy live server, so it is not replaced.
func TestNotProvablyStaleKept(t *testing.T) {
	path := filepath.Join(testutil.SocketDir(t), "busy.sock")
	fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)
	if err := syscall.Bind(fd, &syscall.SockaddrUnix{Name: path}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	// Fill the backlog; bounded, since a backlog of 0 holds one or two.
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	full := false
	for range 16 {
		c, err := net.Dial("unix", path)
		if err != nil {
			full = errors.Is(err, syscall.EAGAIN)
			break
		}
		conns = append(conns, c)
	}
	if !full {
		skip.Missing(t, "a listen backlog this test can fill on this system")
	}
	_, err = listen.Config{}.Listen(context.Background(), unixAddr(path))
	if err == nil || errors.Is(err, listen.ErrAddrInUse) || !strings.Contains(err.Error(), "not provably stale") {
		t.Fatalf("listen over a busy socket: %v, want a not provably stale error", err)
	}
	if _, err := os.Lstat(path); err != nil {
		t.Errorf("busy socket removed: %v", err)
	}
}

func TestMode(t *testing.T) {
	dir := testutil.SocketDir(t)
	for _, mode := range []fs.FileMode{0o600, 0o660, 0o666} {
		path := filepath.Join(dir, "m.sock")
		l := mustListen(t, listen.Config{Mode: mode}, unixAddr(path))
		fi, err := os.Lstat(path)
		if err != nil || fi.Mode().Perm() != mode || fi.Mode().Type() != fs.ModeSocket {
			t.Errorf("mode %#o: got %v, %v", mode, fi.Mode(), err)
		}
		l.Close()
	}
}

func TestCloseRemovesSocket(t *testing.T) {
	path := filepath.Join(testutil.SocketDir(t), "c.sock")
	l := mustListen(t, listen.Config{Mode: 0o600}, unixAddr(path))
	if _, ok := l.(*net.UnixListener); !ok {
		t.Fatalf("unix listener is a %T, want *net.UnixListener (the epoll engine relies on it)", l)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("socket file after Close: %v, want it gone", err)
	}
	// The path is free again.
	mustListen(t, listen.Config{}, unixAddr(path)).Close()
}

func TestTCPInUse(t *testing.T) {
	l := mustListen(t, listen.Config{KeepAlive: -1}, distcache.MustParseAddr("IP:127.0.0.1:0"))
	defer l.Close()
	tl, ok := l.(*net.TCPListener)
	if !ok {
		t.Fatalf("TCP listener is a %T, want *net.TCPListener", l)
	}
	taken, err := distcache.AddrFromNet(tl.Addr())
	if err != nil {
		t.Fatal(err)
	}
	_, err = listen.Config{}.Listen(context.Background(), taken)
	if !errors.Is(err, listen.ErrAddrInUse) || !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("listen on a taken port: %v, want ErrAddrInUse", err)
	}
	if want := "listen on " + taken.String() + ": address in use"; err.Error() != want {
		t.Errorf("error:\n got %s\nwant %s", err, want)
	}
	accepts(t, l)
}

func TestAbstractSocket(t *testing.T) {
	name := "@snoopd-listen-test-" + filepath.Base(testutil.SocketDir(t))
	l, err := listen.Config{Mode: 0o600}.Listen(context.Background(), unixAddr(name))
	if err != nil {
		skip.Missing(t, "abstract unix sockets: %v", err)
	}
	defer l.Close()
	accepts(t, l)
	// No file to probe: a second listen is refused by bind itself.
	if _, err := (listen.Config{}).Listen(context.Background(), unixAddr(name)); !errors.Is(err, listen.ErrAddrInUse) {
		t.Errorf("second listen on %s: %v, want ErrAddrInUse", name, err)
	}
}

func TestZeroAddr(t *testing.T) {
	if _, err := (listen.Config{}).Listen(context.Background(), distcache.Addr{}); !errors.Is(err, distcache.ErrInvalidAddr) {
		t.Errorf("zero address: %v, want ErrInvalidAddr", err)
	}
}

func TestMissingDirectory(t *testing.T) {
	path := filepath.Join(testutil.SocketDir(t), "missing", "x.sock")
	if _, err := (listen.Config{}).Listen(context.Background(), unixAddr(path)); err == nil || !strings.Contains(err.Error(), "listen on UNIX:"+path) {
		t.Errorf("socket in a missing directory: %v", err)
	}
}
