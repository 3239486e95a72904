package cacheserver

import (
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"time"

	"github.com/snoopd/snoopd/distcache"
)

// staleProbeTimeout bounds the dial that tells a stale unix socket file
// from a live server. A live local server answers a connect at once.
const staleProbeTimeout = time.Second

// Listen opens a listener on addr, TCP or a unix socket.
//
// For a unix socket, a socket file left behind by a process that died is
// removed and the listen retried, so a restarted server does not fail
// with "address already in use"; the file is removed only if it is a
// socket and connecting to it is refused, so a running server is never
// displaced and no other kind of file is touched. The socket file is
// removed when the listener is closed.
func Listen(addr distcache.Addr) (net.Listener, error) {
	switch addr.Network() {
	case distcache.NetworkTCP:
		return net.Listen(addr.Network().String(), addr.NetAddr())
	case distcache.NetworkUnix:
		return listenUnix(addr.Path())
	}
	return nil, fmt.Errorf("cacheserver: cannot listen on the zero address: %w", distcache.ErrInvalidAddr)
}

func listenUnix(path string) (net.Listener, error) {
	l, err := net.Listen("unix", path)
	if err == nil || !errors.Is(err, syscall.EADDRINUSE) {
		return l, err
	}
	// Abstract sockets ("@name") have no file, so Lstat fails and the
	// original error stands.
	fi, serr := os.Lstat(path)
	if serr != nil || fi.Mode()&os.ModeSocket == 0 {
		return nil, err
	}
	c, derr := net.DialTimeout("unix", path, staleProbeTimeout)
	if derr == nil {
		c.Close()
		return nil, err
	}
	if !errors.Is(derr, syscall.ECONNREFUSED) {
		return nil, err
	}
	if rerr := os.Remove(path); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
		return nil, fmt.Errorf("%w (removing the stale socket file failed: %v)", err, rerr)
	}
	return net.Listen("unix", path)
}
