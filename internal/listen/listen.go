package listen

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/snoopd/snoopd/distcache"
)

// ErrAddrInUse is wrapped when a listen address is taken: a TCP port in
// use, or a unix socket path that someone serves on. It also matches
// syscall.EADDRINUSE with errors.Is, as the net package's own error does,
// so callers that test for the errno keep working.
var ErrAddrInUse error = addrInUse{}

// ErrPathExists is wrapped when a unix listen path holds a file that is not
// a socket; such a file is left alone.
var ErrPathExists = errors.New("listen path exists and is not a socket")

type addrInUse struct{}

func (addrInUse) Error() string { return "address in use" }

// Is makes errors.Is(err, syscall.EADDRINUSE) hold for ErrAddrInUse.
func (addrInUse) Is(target error) bool { return target == syscall.EADDRINUSE }

// probeTimeout bounds the connect that tells a stale socket file from a
// live server. A live local server answers a connect at once (the kernel
// completes it from the backlog), so only a wedged one takes long, and
// that one is not stale either.
const probeTimeout = time.Second

// Config says how to listen. The zero Config listens with the net
// package's defaults and leaves a unix socket the mode bind gives it.
type Config struct {
	// Mode is the permission a unix socket file gets; 0 leaves the one
	// bind gave it (0777 less the umask). Connecting needs write
	// permission on the socket, so the mode decides who may connect.
	//
	// It is set with a chmod right after bind, which leaves a window of
	// a few system calls in which the socket has the umask's mode. Every
	// alternative is worse: the umask is process-wide, so changing it
	// races with every other file the daemon creates; fchmod on the
	// socket's descriptor does not change the file's mode on Linux; and
	// binding to a temporary name and renaming it into place could
	// replace a file created in between and leaves the listener removing
	// the wrong name on close. A socket that must never be reachable by
	// others belongs in a directory only its owner can enter, as the
	// control socket's is (0700), which closes the window entirely.
	Mode fs.FileMode
	// KeepAlive is the TCP keep-alive period of accepted connections,
	// as in net.ListenConfig: 0 is the default (15 s), negative is off.
	KeepAlive time.Duration
	// Control, if set, runs on a TCP socket before it is bound, as
	// net.ListenConfig.Control does: the proxy's epoll engine sets
	// SO_REUSEPORT there to give each event loop a listener of its own
	// on one port.
	Control func(network, address string, c syscall.RawConn) error
}

// Listen opens a listener on addr. For a unix socket path it replaces a
// stale socket file, refuses a live socket or any other file, sets the
// mode and removes the file when the listener is closed (see the package
// documentation). The listener is a *net.TCPListener or a
// *net.UnixListener. ctx bounds the stale-socket probe and the bind.
func (c Config) Listen(ctx context.Context, addr distcache.Addr) (net.Listener, error) {
	switch addr.Network() {
	case distcache.NetworkTCP:
		return c.listenTCP(ctx, addr)
	case distcache.NetworkUnix:
		return c.listenUnix(ctx, addr)
	}
	return nil, fmt.Errorf("listen on the zero address: %w", distcache.ErrInvalidAddr)
}

func (c Config) listenTCP(ctx context.Context, addr distcache.Addr) (net.Listener, error) {
	lc := net.ListenConfig{KeepAlive: c.KeepAlive, Control: c.Control}
	l, err := lc.Listen(ctx, "tcp", addr.NetAddr())
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return nil, fmt.Errorf("listen on %s: %w", addr, ErrAddrInUse)
		}
		return nil, fmt.Errorf("listen on %s: %w", addr, err)
	}
	return l, nil
}

func (c Config) listenUnix(ctx context.Context, addr distcache.Addr) (net.Listener, error) {
	path := addr.Path()
	abstract := strings.HasPrefix(path, "@")
	if !abstract {
		if err := clearStale(ctx, addr); err != nil {
			return nil, err
		}
	}
	var lc net.ListenConfig
	l, err := lc.Listen(ctx, "unix", path)
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			// An abstract name in use, or someone created the path
			// between the probe and bind.
			return nil, fmt.Errorf("listen on %s: %w", addr, ErrAddrInUse)
		}
		return nil, fmt.Errorf("listen on %s: %w", addr, err)
	}
	if c.Mode != 0 && !abstract {
		if err := os.Chmod(path, c.Mode); err != nil {
			l.Close()
			return nil, fmt.Errorf("listen on %s: set mode %v: %w", addr, c.Mode, err)
		}
	}
	return l, nil
}

// Check reports whether Listen on addr would be refused because the
// address is taken (ErrAddrInUse) or a file is in the way
// (ErrPathExists), without keeping it: a TCP port is bound and let go at
// once, a unix path looked at and, if it is a socket, dialled; a stale
// socket is left where it is (Listen would replace it). Port 0 is always
// free. For a dry run, which must refuse what the real change would.
func (c Config) Check(ctx context.Context, addr distcache.Addr) error {
	switch addr.Network() {
	case distcache.NetworkTCP:
		if addr.Port() == 0 {
			return nil
		}
		l, err := c.listenTCP(ctx, addr)
		if err != nil {
			return err
		}
		return l.Close()
	case distcache.NetworkUnix:
		if strings.HasPrefix(addr.Path(), "@") {
			var d net.Dialer
			if conn, err := d.DialContext(ctx, "unix", addr.Path()); err == nil {
				conn.Close()
				return fmt.Errorf("listen on %s: %w", addr, ErrAddrInUse)
			}
			return nil
		}
		return checkStale(ctx, addr)
	}
	return fmt.Errorf("listen on the zero address: %w", distcache.ErrInvalidAddr)
}

// clearStale removes the file at addr's path if it is a socket that
// provably nobody accepts on, and returns an error for anything else in
// the way.
func clearStale(ctx context.Context, addr distcache.Addr) error {
	if err := checkStale(ctx, addr); err != nil {
		return err
	}
	path := addr.Path()
	// A server starting between the probe and this remove would lose its
	// name; two servers racing for one path is a configuration error that
	// no check before bind can close.
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("listen on %s: remove stale socket: %w", addr, err)
	}
	return nil
}

// checkStale returns nil when addr's path is free or a socket that
// provably nobody accepts on, and an error for anything else in the way.
func checkStale(ctx context.Context, addr distcache.Addr) error {
	path := addr.Path()
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("listen on %s: %w", addr, err)
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("listen on %s: %w (it is a %s; remove it or pick another path)", addr, ErrPathExists, describeMode(fi.Mode()))
	}
	d := net.Dialer{Timeout: probeTimeout}
	conn, err := d.DialContext(ctx, "unix", path)
	if err == nil {
		conn.Close()
		return fmt.Errorf("listen on %s: %w (another process accepts connections on it)", addr, ErrAddrInUse)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		// Not provably stale (a full backlog answers EAGAIN, a
		// permission problem EACCES): leave it alone.
		return fmt.Errorf("listen on %s: existing socket is not provably stale: %w", addr, err)
	}
	return nil
}

// describeMode names a file type for the error that refuses it.
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
