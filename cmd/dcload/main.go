// Command dcload is a load generator and tester for distcache servers and
// for proxies in front of them, in the manner of the reference dc_test.
//
// It runs a number of workers, each on a persistent connection (optionally
// pipelining requests) or opening a new connection for every operation,
// sending a weighted mix of ADD, GET, REMOVE and HAVE over a set of session
// ids, and prints a report: operations per second, latency percentiles,
// answers by operation and outcome, and errors by cause.
//
// With -verify every answer is checked against a model of what the server
// must hold (a GET must return exactly the bytes added, an ADD of a present
// id must answer "exists", and so on); every disagreement is an error.
//
// Usage:
//
//	dcload -addr ADDR (-ops N | -duration D) [flags]
//
// Examples:
//
//	dcload -addr IP:127.0.0.1:9001 -conns 16 -pipeline 4 -ops 100000 -verify
//	dcload -addr UNIX:/run/dc.sock -persistent=false -duration 30s
//	dcload -addr IP:localhost:9001 -rate 50 -duration 10m   # a gentle demo load
//
// Addresses use the libnal syntax of the distcache tools (IP:host:port,
// UNIX:/path) or host:port and unix:///path.
//
// Flags:
//
//	-addr ADDR          server or proxy to load (required)
//	-conns N            concurrent connections (workers) (default 4)
//	-persistent         keep one connection per worker; false opens one per operation (default true)
//	-pipeline N         requests in flight per persistent connection (default 1)
//	-sessions N         distinct session ids, split between the workers (default 1000)
//	-data MIN-MAX       session data size range in bytes, or one size (default 50-4096)
//	-mix WEIGHTS        operation weights (default add=1,get=3,remove=1,have=1)
//	-ops N              stop after N operations
//	-duration D         stop starting operations after D
//	-rate R             at most R operations per second over all connections (0: no limit)
//	-verify             check every answer
//	-seed N             seed for operations, ids and data (default 1)
//	-timeout D          dial and per-operation timeout (default 5s)
//	-session-timeout D  timeout sent with every ADD (default 1h)
//	-id-prefix S        session id prefix (default: random, so runs do not collide)
//	-max-errors N       stop after N errors; 0: never (default 1000)
//	-json               print the report as JSON
//
// At least one of -ops and -duration is required; with both, the run stops
// at whichever comes first.
//
// Exit status: 0 when the run had no errors, 1 when any error occurred
// (including wrong answers with -verify), 2 on a usage error, and 130 when
// interrupted (the partial report is printed first).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/snoopd/snoopd/distcache"
	"github.com/snoopd/snoopd/distcache/loadgen"
	dur "github.com/snoopd/snoopd/internal/duration"
)

// Exit statuses.
const (
	exitOK          = 0
	exitErrors      = 1
	exitUsage       = 2
	exitInterrupted = 130
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run is the whole command, apart from process concerns, so tests can call
// it.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("dcload", flag.ContinueOnError)
	// A mistake is one line (below); the whole usage only for -h.
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	var (
		addr      = fs.String("addr", "", "server or proxy `address`, e.g. IP:127.0.0.1:9001 or UNIX:/run/dc.sock (required)")
		conns     = fs.Int("conns", 4, "concurrent connections (workers)")
		persist   = fs.Bool("persistent", true, "keep one connection per worker; false opens a connection per operation")
		pipeline  = fs.Int("pipeline", 1, "requests in flight per persistent connection")
		sessions  = fs.Int("sessions", loadgen.DefaultSessions, "distinct session ids, split between the workers")
		data      = fs.String("data", fmt.Sprintf("%d-%d", loadgen.DefaultMinData, loadgen.DefaultMaxData), "session data size `range` MIN-MAX in bytes, or one size")
		mix       = fs.String("mix", loadgen.DefaultMix.String(), "operation `weights`")
		ops       = fs.Int64("ops", 0, "stop after `N` operations")
		duration  = durationFlag(fs, "duration", 0, "stop starting operations after this long")
		rate      = fs.Float64("rate", 0, "at most this many operations per second over all connections (0: no limit)")
		verify    = fs.Bool("verify", false, "check every answer against a model of the server's contents")
		seed      = fs.Uint64("seed", 1, "seed for operations, ids and data")
		timeout   = durationFlag(fs, "timeout", loadgen.DefaultTimeout, "dial and per-operation timeout")
		sessTO    = durationFlag(fs, "session-timeout", loadgen.DefaultSessionTimeout, "session timeout sent with every ADD")
		prefix    = fs.String("id-prefix", "", "session id `prefix` (default: random, so runs do not collide)")
		maxErrors = fs.Int64("max-errors", 1000, "stop after this many errors; 0: never")
		asJSON    = fs.Bool("json", false, "print the report as JSON")
	)
	usage := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "dcload: "+format+"\n", a...)
		fmt.Fprintln(stderr, "run 'dcload -h' for the flags")
		return exitUsage
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(stderr, "usage: dcload -addr ADDR (-ops N | -duration D) [flags]")
			fs.SetOutput(stderr)
			fs.PrintDefaults()
			return exitOK
		}
		return usage("%v", dur.Explain(err))
	}
	if fs.NArg() > 0 {
		return usage("unexpected argument %q", fs.Arg(0))
	}
	if *addr == "" {
		return usage("-addr is required")
	}
	a, err := distcache.ParseConnectAddr(*addr)
	if err != nil {
		return usage("-addr: %v", err)
	}
	minData, maxData, err := loadgen.ParseSizeRange(*data)
	if err != nil {
		return usage("-data: %v", err)
	}
	m, err := loadgen.ParseMix(*mix)
	if err != nil {
		return usage("-mix: %v", err)
	}
	if *ops == 0 && *duration == 0 {
		return usage("one of -ops and -duration is required, so the run ends by itself")
	}
	cfg := loadgen.Config{
		Addr:           a,
		Conns:          *conns,
		Persistent:     *persist,
		Pipeline:       *pipeline,
		Sessions:       *sessions,
		MinData:        minData,
		MaxData:        maxData,
		Mix:            m,
		Ops:            *ops,
		Duration:       *duration,
		Rate:           *rate,
		Seed:           *seed,
		Timeout:        *timeout,
		Verify:         *verify,
		SessionTimeout: *sessTO,
		IDPrefix:       *prefix,
		MaxErrors:      *maxErrors,
	}
	// Zero means "default" to the library but is a mistake on the command
	// line, where every flag already shows its default.
	switch {
	case *conns <= 0:
		return usage("-conns must be at least 1")
	case *pipeline <= 0:
		return usage("-pipeline must be at least 1")
	case *sessions <= 0:
		return usage("-sessions must be at least 1")
	case *timeout <= 0:
		return usage("-timeout must be positive")
	case *sessTO <= 0:
		return usage("-session-timeout must be positive")
	}
	if err := cfg.Validate(); err != nil {
		return usage("%v", err)
	}

	rep, err := loadgen.Run(ctx, cfg)
	interrupted := err != nil && ctx.Err() != nil
	if err != nil && !interrupted {
		fmt.Fprintf(stderr, "dcload: %v\n", err)
		return exitErrors
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		err = enc.Encode(rep)
	} else {
		err = rep.Write(stdout)
	}
	if err != nil {
		fmt.Fprintf(stderr, "dcload: writing the report: %v\n", err)
		return exitErrors
	}
	switch {
	case interrupted:
		fmt.Fprintf(stderr, "dcload: interrupted after %s\n", rep.Elapsed.Round(time.Millisecond))
		return exitInterrupted
	case rep.Errors > 0:
		fmt.Fprintf(stderr, "dcload: %d errors\n", rep.Errors)
		return exitErrors
	}
	return exitOK
}

// durationFlag defines a duration flag read as snoopd's and snoopctl's
// are, so that a bad value gets the same one-line answer.
func durationFlag(fs *flag.FlagSet, name string, value time.Duration, usage string) *time.Duration {
	p := new(time.Duration)
	dur.Var(fs, p, name, value, usage)
	return p
}
