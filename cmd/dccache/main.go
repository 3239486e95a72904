// Command dccache runs an in-memory distcache session cache server, a
// stand-in for the reference dc_server: a backend for demos, a peer for
// manual tests of a proxy, and a target for benchmarks.
//
// Usage:
//
//	dccache [-listen ADDR] [-max-sessions N] [-v]
//
// ADDR is any address distcache.ParseListenAddr accepts, such as
// IP:127.0.0.1:9001, IP:9001 (every interface), UNIX:/run/dc.sock or
// host:port. Port 0 picks a free port. On start dccache prints one line
// with the real address, for example
//
//	dccache: listening on IP:127.0.0.1:9001
//
// so a script can start it on port 0 and read where to connect. SIGINT or
// SIGTERM stops it: it finishes answering the requests it has read, waits
// at most a few seconds for slow clients, and removes its unix socket
// file. A second signal during that wait stops it at once.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/snoopd/snoopd/distcache"
	"github.com/snoopd/snoopd/distcache/cacheserver"
)

// shutdownGrace is how long a stop waits for connections to finish the
// requests they have read before closing them anyway; a client that does
// not read its answers must not hold the process forever.
const shutdownGrace = 5 * time.Second

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// run is the whole command, apart from signal handling, so tests can run
// it in-process: it serves until ctx is done and returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("dccache", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: dccache [-listen ADDR] [-max-sessions N] [-v]\n\n"+
			"An in-memory distcache session cache server.\n\n")
		fs.PrintDefaults()
	}
	listen := fs.String("listen", "IP:127.0.0.1:9001",
		"address to listen on: IP:host:port, IP:port (every interface), UNIX:/path/to/socket, host:port; port 0 picks a free port")
	maxSessions := fs.Int("max-sessions", cacheserver.DefaultMaxSessions,
		"most sessions stored at once; when full, expired sessions and then the one closest to expiry make room")
	verbose := fs.Bool("v", false, "log every connection and every protocol error")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "dccache: unexpected argument %q (flags only; see -h)\n", fs.Arg(0))
		return 2
	}
	addr, err := distcache.ParseListenAddr(*listen)
	if err != nil {
		fmt.Fprintf(stderr, "dccache: -listen: %v\n", err)
		return 2
	}
	if *maxSessions < 1 {
		fmt.Fprintf(stderr, "dccache: -max-sessions must be at least 1, got %d\n", *maxSessions)
		return 2
	}

	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))

	srv, err := cacheserver.Start(addr, cacheserver.Config{MaxSessions: *maxSessions, Logger: log})
	if err != nil {
		fmt.Fprintf(stderr, "dccache: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "dccache: listening on %s\n", srv.Addr())

	<-ctx.Done()
	log.Info("dccache: stopping", "grace", shutdownGrace)
	// A second signal ends the grace period early.
	sctx, stopSignals := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stopSignals()
	sctx, cancel := context.WithTimeout(sctx, shutdownGrace)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("dccache: connections closed before they finished", "err", err)
	}
	st := srv.Stats()
	log.Info("dccache: stopped",
		"connections", st.ConnectionsTotal,
		"add", st.Requests[distcache.OpAdd],
		"get", st.Requests[distcache.OpGet],
		"get_hits", st.GetHits,
		"remove", st.Requests[distcache.OpRemove],
		"have", st.Requests[distcache.OpHave],
		"corrupt_closes", st.CorruptCloses)
	return 0
}
