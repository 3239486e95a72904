package proxy

import (
	"context"
	"net"
	"os"

	"github.com/snoopd/snoopd/distcache"
	"github.com/snoopd/snoopd/internal/listen"
)

// ErrAddrInUse is listen.ErrAddrInUse, named here for the proxy's callers.
var ErrAddrInUse = listen.ErrAddrInUse

// ErrPathExists is listen.ErrPathExists, named here for the proxy's callers.
var ErrPathExists = listen.ErrPathExists

// Listen opens a proxy's listener on addr with package listen's policy for
// unix socket files (a stale socket is replaced; a live one or any other
// file is an error), giving a unix socket the mode and removing it on
// close. Accepted TCP connections get no keep-alive, for the same reason
// the server side has none (see target.dial): it costs system calls on
// every connection, and clients open one per operation. The listener is
// a *net.TCPListener or *net.UnixListener, which the epoll engine needs.
func Listen(addr distcache.Addr, mode os.FileMode) (net.Listener, error) {
	return listen.Config{Mode: mode, KeepAlive: -1}.Listen(context.Background(), addr)
}
