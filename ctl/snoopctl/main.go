// Command snoopctl manages snoopd's proxies and tails, filters, saves and
// re-reads the distcache transactions they see. Run "snoopctl --help".
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/snoopd/snoopd/ctl"
)

func main() {
	// SIGINT and SIGTERM cancel the context: streams end cleanly with a
	// summary and save flushes its file. Once that has begun, a second
	// signal kills as usual, for a command that will not stop.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		<-ctx.Done()
		stop()
	}()
	code := ctl.Run(ctx, os.Args[1:], ctl.Stdio{In: os.Stdin, Out: os.Stdout, Err: os.Stderr})
	stop()
	os.Exit(code)
}
