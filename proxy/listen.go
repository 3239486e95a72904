package proxy

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"syscall"
	"time"

	"github.com/snoopd/snoopd/distcache"
)

// ErrAddrInUse is wrapped when a listen address is taken: a TCP port in
// use, or a unix socket path that someone serves on.
var ErrAddrInUse = errors.New("address in use")

// ErrPathExists is wrapped when a unix listen path holds a file that is not
// a socket; the proxy leaves such a file alone.
var ErrPathExists = errors.New("listen path exists and is not a socket")

// Listen opens a listener on addr. For unix sockets it takes care of the
// path: a stale socket file (nobody accepting on it) is replaced, any other
// file or a live socket is an error and is left untouched, and the new
// socket gets the given mode. The listener removes the socket file when it
// is closed.
func Listen(addr distcache.Addr, mode os.FileMode) (net.Listener, error) {
	if addr.Network() == distcache.NetworkUnix {
		return listenUnix(addr.Path(), mode)
	}
	// Accepted connections get no TCP keepalive, for the same reason the
	// server side has none (see target.dial): it costs system calls on
	// every connection, and clients open one per operation.
	lc := net.ListenConfig{KeepAlive: -1}
	l, err := lc.Listen(context.Background(), "tcp", addr.NetAddr())
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return nil, fmt.Errorf("listen on %s: %w", addr, ErrAddrInUse)
		}
		return nil, fmt.Errorf("listen on %s: %w", addr, err)
	}
	return l, nil
}

func listenUnix(path string, mode os.FileMode) (net.Listener, error) {
	if err := clearStaleSocket(path); err != nil {
		return nil, err
	}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			// Someone created the path between our check and bind.
			return nil, fmt.Errorf("listen on UNIX:%s: %w", path, ErrAddrInUse)
		}
		return nil, fmt.Errorf("listen on UNIX:%s: %w", path, err)
	}
	// chmod after bind leaves a short window with the umask's mode; the
	// alternative, changing the process umask, would race with every
	// other file the daemon creates.
	if err := os.Chmod(path, mode); err != nil {
		l.Close()
		return nil, fmt.Errorf("listen on UNIX:%s: set mode %v: %w", path, mode, err)
	}
	return l, nil
}

// clearStaleSocket removes path if it is a socket nobody accepts on.
func clearStaleSocket(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("listen on UNIX:%s: %w", path, err)
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("listen on UNIX:%s: %w (it is a %s; remove it or pick another path)", path, ErrPathExists, describeMode(fi.Mode()))
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		c.Close()
		return fmt.Errorf("listen on UNIX:%s: %w (another process accepts connections on it)", path, ErrAddrInUse)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		// Not provably stale (a full backlog answers EAGAIN, a permission
		// problem EACCES): leave it alone.
		return fmt.Errorf("listen on UNIX:%s: existing socket is not provably stale: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("listen on UNIX:%s: remove stale socket: %w", path, err)
	}
	return nil
}

func describeMode(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "directory"
	case m.IsRegular():
		return "regular file"
	case m&fs.ModeSymlink != 0:
		return "symbolic link"
	case m&fs.ModeNamedPipe != 0:
		return "named pipe"
	}
	return "non-socket file"
}
