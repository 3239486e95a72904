// Command snoopd is the daemon that hosts named snoop proxies for the
// distcache session-cache protocol (OpenSSL's dc_server and its clients).
// Each proxy listens where clients expect a cache server, forwards every
// byte to the real one, and decodes the traffic as it passes; the daemon
// collects what the proxies see and serves it, with the means to create,
// change and remove proxies, through a gRPC control API that snoopctl (or
// grpcurl, or any gRPC client) uses.
//
// Usage:
//
//	snoopd [flags]
//
// With no flags, snoopd serves the control API on a unix socket only its
// user can reach, $XDG_RUNTIME_DIR/snoopd.sock or
// /tmp/snoopd-<uid>/snoopd.sock, and keeps proxies only in memory:
//
//	snoopd --state-dir ~/.local/state/snoopd --log-level debug
//	snoopd --demo                      # a cache, a proxy and live load to watch
//	snoopd --config proxies.json --metrics-listen IP:127.0.0.1:9464
//	snoopd --control IP:0.0.0.0:7443 --tls-cert srv.pem --tls-key srv.key \
//	       --tls-client-ca clients.pem --token-file /etc/snoopd/token
//
// SIGINT or SIGTERM shuts it down gracefully: health checks report
// NOT_SERVING, event streams end with a final status, the proxies close,
// the sockets are removed and the state is saved. A second signal ends
// the process at once. Run `snoopd --help` for every flag.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		// Once the first signal has started the shutdown, restore the
		// default handling, so a second one ends a shutdown that hangs.
		<-ctx.Done()
		stop()
	}()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}
