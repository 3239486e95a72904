package ctl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/snoopd/snoopd/distcache"
	"github.com/snoopd/snoopd/internal/endpoint"
	"github.com/snoopd/snoopd/internal/version"
)

// EnvTokenFile is the environment variable for --token-file.
const EnvTokenFile = "SNOOPD_TOKEN_FILE"

// defaultTimeout bounds each call to the daemon unless --timeout says
// otherwise: long enough for a busy daemon, short enough that a wedged
// one does not hang a script.
const defaultTimeout = 10 * time.Second

// Stdio is where a command reads and writes.
type Stdio struct {
	In  io.Reader
	Out io.Writer
	Err io.Writer
}

// Run runs snoopctl with args (without the program name) and returns the
// exit code: 0 on success, 1 on failure, 2 on a usage error. Cancelling
// ctx is how Ctrl-C reaches the commands: tail, save and stats then end
// cleanly with their summary.
func Run(ctx context.Context, args []string, stdio Stdio) int {
	e := &env{stdio: stdio, now: time.Now, yield: yielder{lower: lowerPriority}}
	return e.run(ctx, args)
}

// env is one run of snoopctl: its streams and the global options.
type env struct {
	stdio Stdio
	now   func() time.Time
	opts  globalOptions
	// nice is --nice of the command that streams (read by openEvents
	// for tail, save and stats, by top for its sessions view), which
	// yield applies once a stream from a daemon on this machine starts.
	nice  int
	yield yielder
}

// globalOptions are the flags every command takes.
type globalOptions struct {
	rawAddr   string
	addrs     []string       // every daemon -a named (multi.go); rawAddr is the first
	addr      distcache.Addr // parsed from rawAddr by address()
	tokenFile string
	tlsCA     string
	tlsCert   string
	tlsKey    string
	timeout   time.Duration
	json      bool
	utc       bool
	color     string // auto, always or never
}

func (e *env) run(ctx context.Context, args []string) int {
	app := e.newApp()
	argv, err := reorderArgs(app, args)
	if err == nil {
		argv = mergeAddresses(app, argv)
		err = app.RunContext(ctx, append([]string{app.Name}, argv...))
	}
	if err != nil {
		var ec cli.ExitCoder
		if errors.As(err, &ec) && !isCLIError(err) {
			// urfave/cli's own errors (a help topic that does not exist)
			// are mistakes on the command line.
			err = usagef("%s", strings.TrimSuffix(err.Error(), "\n"))
		}
		fmt.Fprintf(e.stdio.Err, "snoopctl: %s\n", err)
	}
	return exitCode(err)
}

func isCLIError(err error) bool {
	var ce *cliError
	return errors.As(err, &ce)
}

// --version prints the same line as the client half of 'snoopctl
// version'. urfave/cli keeps both in package variables, so they are set
// once, here; -v is left to tail's verbose flag.
func init() {
	cli.VersionPrinter = func(cCtx *cli.Context) {
		fmt.Fprintln(cCtx.App.Writer, clientVersionLine(version.Get()))
	}
	cli.VersionFlag = &cli.BoolFlag{Name: "version", Usage: "print snoopctl's version (the daemon's too: 'snoopctl version')", DisableDefaultText: true}
}

// newApp builds the command tree. It is built per run, so that no state
// is shared between runs (tests run many).
func (e *env) newApp() *cli.App {
	app := &cli.App{
		Name:  "snoopctl",
		Usage: "manage snoopd's proxies and watch the distcache transactions they see",
		Description: "snoopctl talks to snoopd over its gRPC control API: locally over a unix socket\n" +
			"(the default), or remotely over TLS. Every command takes -o json for the API's\n" +
			"protojson (one object per line for streams).\n\n" +
			"Exit codes: 0 success, 1 failure, 2 usage error.",
		Flags:                globalFlags(),
		Commands:             e.commands(),
		Version:              version.String(),
		EnableBashCompletion: true,
		Suggest:              true,
		Reader:               e.stdio.In,
		Writer:               e.stdio.Out,
		ErrWriter:            e.stdio.Err,
		Before:               e.before,
		// Errors are printed once, by run; urfave/cli must neither print
		// them nor call os.Exit.
		ExitErrHandler: func(*cli.Context, error) {},
		OnUsageError:   onUsageError,
	}
	quietBools(app.Flags)
	readDurations(app.Flags)
	for _, c := range app.Commands {
		quietBools(c.Flags)
		readCommandDurations(c)
		c.OnUsageError = onUsageError
		// No "help" or "h" subcommand: those are valid proxy names, and
		// "snoopctl rm help" must remove the proxy called help. Help stays
		// available as -h, --help and "snoopctl help COMMAND".
		c.HideHelpCommand = true
		switch {
		case takesProxyNames[c.Name]:
			c.BashComplete = e.completeProxies
		case c.Name == "kill-conn":
			c.BashComplete = e.completeKillConn
		default:
			c.BashComplete = e.completeValues
		}
		e.fanOut(c)
	}
	return app
}

// quietBools keeps "(default: false)" out of the help of boolean flags:
// a switch that is off unless given needs no default.
func quietBools(flags []cli.Flag) {
	for _, f := range flags {
		if b, ok := f.(*cli.BoolFlag); ok {
			b.DisableDefaultText = true
		}
	}
}

// onUsageError turns a flag parsing error into a usage error.
func onUsageError(cCtx *cli.Context, err error, isSubcommand bool) error {
	cmd := "snoopctl"
	var flags []cli.Flag
	if isSubcommand && cCtx.Command != nil {
		cmd += " " + cCtx.Command.Name
		if h := cCtx.Command.HelpName; h != "" {
			cmd = h // "snoopctl fault add"
		}
		flags = cCtx.Command.Flags
	} else if cCtx.App != nil {
		flags = cCtx.App.Flags
	}
	msg := err.Error()
	if m, ok := badValue(msg, flags); ok {
		return usagef("%s (see '%s --help')", m, cmd)
	}
	if name, ok := strings.CutPrefix(msg, "flag provided but not defined: -"); ok {
		msg = "unknown flag " + dashes(name)
	} else if i := strings.Index(msg, " flag -"); i >= 0 {
		// package flag names flags with one dash; snoopctl's help uses two.
		rest := msg[i+len(" flag -"):]
		name, tail, _ := strings.Cut(rest, ":")
		msg = msg[:i] + " flag " + dashes(name) + ":" + tail
	}
	return usagef("%s (see '%s --help')", msg, cmd)
}

// dashes writes a flag name as the help shows it: -o, --output.
func dashes(name string) string {
	if len(name) == 1 {
		return "-" + name
	}
	return "--" + name
}

func globalFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "address", Aliases: []string{"a"}, EnvVars: []string{endpoint.EnvAddress},
			Value: endpoint.Display(endpoint.DefaultAddr()),
			Usage: "snoopd's control address: unix:///path, UNIX:/path, host:port or IP:host:port; several (comma-separated or repeated) for list, show, tail, stats and add, apply, remove, enable, disable on each"},
		&cli.StringFlag{Name: "token-file", EnvVars: []string{EnvTokenFile}, Usage: "send the token in `FILE` as 'authorization: Bearer TOKEN'"},
		&cli.StringFlag{Name: "tls-ca", Usage: "use TLS, trusting the CA certificates in `FILE` (PEM) for snoopd's certificate"},
		&cli.StringFlag{Name: "tls-cert", Usage: "client certificate `FILE` (PEM) for mutual TLS; needs --tls-key"},
		&cli.StringFlag{Name: "tls-key", Usage: "client key `FILE` (PEM) for --tls-cert"},
		&cli.DurationFlag{Name: "timeout", Value: defaultTimeout, Usage: "give up on a call to snoopd after this long (0: never); streams are not bounded by it"},
		&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Value: "text", Usage: "output format: text or json (the API's protojson, one object per line)"},
		&cli.BoolFlag{Name: "utc", Usage: "show times in UTC instead of local time"},
		&cli.StringFlag{Name: "color", Value: "auto", Usage: "colour text output: auto (on a terminal, unless NO_COLOR is set), always or never"},
	}
}

// before reads the global flags.
func (e *env) before(cCtx *cli.Context) error {
	o := &e.opts
	o.rawAddr = cCtx.String("address")
	if err := e.setAddresses(); err != nil {
		return err
	}
	o.tokenFile = cCtx.String("token-file")
	o.tlsCA, o.tlsCert, o.tlsKey = cCtx.String("tls-ca"), cCtx.String("tls-cert"), cCtx.String("tls-key")
	o.timeout = cCtx.Duration("timeout")
	o.utc = cCtx.Bool("utc")
	switch o.color = cCtx.String("color"); o.color {
	case "auto", "always", "never":
	default:
		return usagef("--color %q: want auto, always or never", o.color)
	}
	if o.timeout < 0 {
		return usagef("--timeout %v is negative", o.timeout)
	}
	switch out := cCtx.String("output"); out {
	case "text":
	case "json":
		o.json = true
	default:
		return usagef("-o %q: want text or json", out)
	}
	return nil
}

// location is the time zone of shown times.
func (e *env) location() *time.Location {
	if e.opts.utc {
		return time.UTC
	}
	return time.Local
}

// commands lists the commands, one file each.
func (e *env) commands() []*cli.Command {
	return []*cli.Command{
		e.addCommand(),
		e.removeCommand(),
		e.enableCommand(true),
		e.enableCommand(false),
		e.listCommand(),
		e.showCommand(),
		e.connsCommand(),
		e.killConnCommand(),
		e.applyCommand(),
		e.tailCommand(),
		e.saveCommand(),
		e.readCommand(),
		e.statsCommand(),
		e.faultCommand(),
		e.topCommand(),
		e.plotCommand(),
		e.versionCommand(),
		e.completionCommand(),
	}
}

// args checks the number of positional arguments: at least lo, at most hi
// (hi < 0: no bound).
func args(cCtx *cli.Context, lo, hi int, usage string) ([]string, error) {
	a := cCtx.Args().Slice()
	if len(a) < lo || (hi >= 0 && len(a) > hi) {
		cmd := "snoopctl " + cCtx.Command.Name
		if h := cCtx.Command.HelpName; h != "" {
			cmd = h // "snoopctl fault add"
		}
		line := strings.TrimSpace(cmd + " " + usage)
		if hi == 0 {
			return nil, usagef("usage: %s: it takes no arguments, got %q (see '%s --help')", line, strings.Join(a, " "), cmd)
		}
		return nil, usagef("usage: %s (see '%s --help')", line, cmd)
	}
	return a, nil
}

// isTerminal reports whether w is a terminal, for colour and progress
// lines. A character device is taken for a terminal, except /dev/null;
// that is exact enough for cosmetics and needs no ioctl.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	if err != nil || fi.Mode()&os.ModeCharDevice == 0 {
		return false
	}
	if null, err := os.Stat(os.DevNull); err == nil && os.SameFile(fi, null) {
		return false
	}
	return true
}

// useColor reports whether text on stdout is coloured: as --color says,
// and by default only on a terminal and not when NO_COLOR is set
// (https://no-color.org).
func (e *env) useColor() bool {
	switch e.opts.color {
	case "always":
		return true
	case "never":
		return false
	}
	return os.Getenv("NO_COLOR") == "" && isTerminal(e.stdio.Out)
}

// warnf prints a warning that does not stop the command.
func (e *env) warnf(format string, args ...any) {
	fmt.Fprintf(e.stdio.Err, "snoopctl: warning: "+format+"\n", args...)
}

// notef says on stderr what a command is doing when its output alone
// would leave it unclear.
func (e *env) notef(format string, args ...any) {
	fmt.Fprintf(e.stdio.Err, "snoopctl: note: "+format+"\n", args...)
}

// badValue rewrites package flag's "invalid value "5" for flag
// -min-latency: REASON" as what the flag wants, with an example: the
// reason a flag's own parser gives (durations, package duration), or one
// by the flag's type for package flag's "parse error".
func badValue(msg string, flags []cli.Flag) (string, bool) {
	rest, ok := strings.CutPrefix(msg, "invalid value ")
	if !ok {
		return "", false
	}
	i := strings.LastIndex(rest, " for flag -")
	if i < 0 {
		return "", false
	}
	value := rest[:i]
	name, reason, _ := strings.Cut(rest[i+len(" for flag -"):], ": ")
	want := "want a valid value"
	if strings.HasPrefix(reason, "want ") {
		want = reason
	}
	for _, f := range flags {
		if !slices.Contains(f.Names(), name) {
			continue
		}
		name = f.Names()[0]
		if want != reason {
			switch f.(type) {
			case *cli.UintFlag, *cli.Uint64Flag:
				want = "want a whole number such as 10"
			case *cli.IntFlag, *cli.Int64Flag:
				want = "want a whole number such as 10"
			case *cli.BoolFlag:
				want = "want true or false"
			}
		}
	}
	return fmt.Sprintf("--%s %s: %s", name, value, want), true
}
