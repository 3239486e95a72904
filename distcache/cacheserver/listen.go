package cacheserver

import (
	"context"
	"net"

	"github.com/snoopd/snoopd/distcache"
	"github.com/snoopd/snoopd/internal/listen"
)

// Listen opens a listener on addr, TCP or a unix socket, with package
// listen's policy: a socket file left behind by a process that died is
// replaced, so a restarted server does not fail with "address in use",
// while a running server is never displaced and no other kind of file is
// touched. The socket file keeps the mode bind gives it and is removed
// when the listener is closed. A taken address is listen.ErrAddrInUse,
// which also matches syscall.EADDRINUSE.
func Listen(addr distcache.Addr) (net.Listener, error) {
	return listen.Config{}.Listen(context.Background(), addr)
}
