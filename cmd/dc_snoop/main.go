// Command dc_snoop is a drop-in for distcache's dc_snoop: the same
// command line, one snoop proxy in-process (the proxy package, on the
// engine snoopd uses by default), no daemon and no control API.
//
// Usage:
//
//	dc_snoop -listen ADDR -server ADDR [-o text|json]
//
// -connect is a synonym of -server, and -h, -help or -? print the usage
// and exit 0 whatever else is on the command line, as dc_snoop(1) says.
// Addresses are in the distcache tools' libnal syntax (IP:port,
// IP:host:port, IPv4:..., UNIX:/path) or host:port, [::1]:port and
// unix:///path, read by distcache.ParseListenAddr and ParseConnectAddr.
//
// The man page's example of a log of all cache transactions works:
//
//	dc_snoop -listen UNIX:/tmp/cachesnoop -server UNIX:/tmp/cacheserver > logfile &
//
// Standard output gets one line per transaction, and one per connection
// opened and closed (the original printed its connection lines there
// too), in snoopctl tail's text format, or with -o json one JSON object
// per line in snoopctl tail -o json's, which snoopctl read reads back.
// Standard error gets the errors as text lines (protocol errors, failed
// connects to the server, refused clients; the original printed its
// protocol errors there), the address it listens on once it does, and on
// SIGINT or SIGTERM a summary paragraph: connections, transactions by
// operation and result, bytes each way, protocol errors.
//
// As the original did, it closes a connection that breaks a protocol
// rule (the peer never sees the corrupt frame); unlike the original, it
// serves any number of connections at once, not 10.
//
// Exit status: 0 after a signal or a help flag, 1 when it cannot listen,
// 2 on a bad flag or address.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/snoopd/snoopd/proxy"
)

// Exit statuses.
const (
	exitOK     = 0
	exitFailed = 1
	exitUsage  = 2
)

// proxyName names the one proxy on every line, as snoopctl tail names a
// daemon's proxies.
const proxyName = "dc_snoop"

// stopGrace bounds how long a stop waits for the proxy's connections to
// close.
const stopGrace = 5 * time.Second

// outputGrace bounds how long a stop waits for the output to take the
// last lines: a reader that stopped reading (a paused pager) must not keep
// dc_snoop from ending on a signal.
const outputGrace = 2 * time.Second

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run is the whole command apart from signals, so tests can run it
// in-process: it proxies until ctx is done and returns the exit status.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	o, err := parseArgs(args)
	switch {
	case errors.Is(err, errHelp):
		io.WriteString(stdout, usage)
		return exitOK
	case err != nil:
		fmt.Fprintf(stderr, "dc_snoop: %v\n%s", err, usageHint)
		return exitUsage
	}

	engine, err := proxy.NewEngine("", 0)
	if err != nil {
		fmt.Fprintf(stderr, "dc_snoop: %v\n", err)
		return exitFailed
	}
	// The engine outlives the proxy it serves.
	defer engine.Close()
	q := newQueue(queueLen)
	p, err := proxy.New(proxy.Config{
		Name:    proxyName,
		Listen:  o.listen,
		Server:  o.server,
		Enabled: true,
		Engine:  engine,
		Logf: func(format string, args ...any) {
			fmt.Fprintf(stderr, "dc_snoop: "+format+"\n", args...)
		},
	}, q)
	if err == nil {
		err = p.Start()
	}
	if err != nil {
		fmt.Fprintf(stderr, "dc_snoop: %v\n", err)
		return exitFailed
	}
	started := time.Now()
	pr := newPrinter(stdout, stderr, o.json)
	stopPrinter, printerDone := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(printerDone)
		pr.run(q, stopPrinter)
	}()
	fmt.Fprintf(stderr, "dc_snoop: listening on %s, proxying to %s\n", p.Addr(), o.server)

	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), stopGrace)
	err = p.Stop(sctx)
	cancel()
	// The connections the stop closed have published their ends; print
	// them before the summary.
	close(stopPrinter)
	select {
	case <-printerDone:
	case <-time.After(outputGrace):
		fmt.Fprintf(stderr, "dc_snoop: the output did not take the last lines within %s; stopping without them\n", outputGrace)
	}
	if err != nil {
		fmt.Fprintf(stderr, "dc_snoop: %v\n", err)
	}
	st := p.Stats()
	writeSummary(stderr, &st, time.Since(started), q.dropped.Load())
	return exitOK
}
