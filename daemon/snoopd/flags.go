package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/snoopd/snoopd/daemon"
	"github.com/snoopd/snoopd/daemon/hub"
	"github.com/snoopd/snoopd/daemon/metrics"
	"github.com/snoopd/snoopd/distcache"
	"github.com/snoopd/snoopd/internal/duration"
	"github.com/snoopd/snoopd/internal/endpoint"
	"github.com/snoopd/snoopd/internal/size"
	"github.com/snoopd/snoopd/proxy"
)

// options are the parsed and checked command line.
type options struct {
	control         []string
	stateDir        string
	configFile      string
	demo            bool
	demoListen      string
	demoRate        float64
	metricsListen   string
	logFormat       string
	logLevel        string
	tlsCert         string
	tlsKey          string
	tlsClientCA     string
	insecure        bool
	tokenFile       string
	history         int
	watchQueue      int
	watchBuffer     string
	watchBufferN    int64
	shutdownTimeout time.Duration
	watchInterval   time.Duration
	version         bool
	engine          string
	loops           int
	maxWatchers     int
	maxDrain        time.Duration
	metricsInsecure bool
	// metricsHistograms selects the latency histograms /metrics exports.
	metricsHistograms metrics.Histograms
	export            exportOptions // --export and --daemon-name (export.go)

	// Derived by check.
	level     slog.Level
	endpoints []controlEndpoint
	demoAddr  distcache.Addr
	metrics   distcache.Addr // zero without --metrics-listen
	// metricsTLS serves metrics with TLS: an address off this machine,
	// with --tls-cert and --tls-key, and without --metrics-insecure.
	metricsTLS bool
}

// controlEndpoint is one address the control API is to listen on.
type controlEndpoint struct {
	addr distcache.Addr
	// tls serves it with TLS; only TCP endpoints get it, since a unix
	// socket is protected by its file mode.
	tls bool
	// ownDir marks the default socket under the temporary directory,
	// whose directory snoopd owns and checks strictly (see socketDir).
	ownDir bool
}

// Defaults of flags that the tests and the help text share.
const (
	defaultDemoListen      = "IP:127.0.0.1:0"
	defaultDemoRate        = 20
	defaultShutdownTimeout = 5 * time.Second
)

func newFlagSet(o *options) *flag.FlagSet {
	fs := flag.NewFlagSet("snoopd", flag.ContinueOnError)
	// Errors and help are printed by run, in one line and on stdout
	// respectively, rather than the package's usage dump on stderr.
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	fs.Func("control", "serve the control API on `ADDR` (repeatable): UNIX:/path, unix:///path, IP:host:port, host:port (default "+endpoint.DefaultSocket()+")", func(s string) error {
		o.control = append(o.control, s)
		return nil
	})
	fs.StringVar(&o.stateDir, "state-dir", "", "keep proxies created through the API in `DIR`, so they survive a restart")
	fs.StringVar(&o.configFile, "config", "", "apply the proxy set in `FILE` (the API's JSON form: {\"proxies\": [...]}) at start")
	fs.BoolVar(&o.demo, "demo", false, "start an in-memory cache, a proxy named demo in front of it, and a gentle load through it")
	fs.StringVar(&o.demoListen, "demo-listen", defaultDemoListen, "with --demo, the demo proxy's listen `ADDR`")
	fs.Float64Var(&o.demoRate, "demo-rate", defaultDemoRate, "with --demo, run the demo load at `N` operations per second")
	fs.StringVar(&o.metricsListen, "metrics-listen", "", "serve Prometheus metrics at /metrics on `ADDR` (IP:host:port or UNIX:/path)")
	fs.StringVar(&o.logFormat, "log-format", "text", "log `FORMAT`: text or json")
	fs.StringVar(&o.logLevel, "log-level", "info", "log `LEVEL`: debug, info, warn or error")
	fs.StringVar(&o.tlsCert, "tls-cert", "", "serve TCP control endpoints with TLS, with the certificate chain in PEM `FILE`")
	fs.StringVar(&o.tlsKey, "tls-key", "", "the private key of --tls-cert, in PEM `FILE`")
	fs.StringVar(&o.tlsClientCA, "tls-client-ca", "", "require client certificates signed by a CA in PEM `FILE` (mTLS)")
	fs.BoolVar(&o.insecure, "insecure", false, "allow a TCP control endpoint without TLS, on a loopback address only")
	fs.StringVar(&o.tokenFile, "token-file", "", "require every control call to present the bearer token in `FILE` (mode 0600 or stricter)")
	fs.IntVar(&o.history, "history", 0, fmt.Sprintf("keep the `N` most recent events for watchers that ask for history (0: %d)", hub.DefaultHistory))
	fs.IntVar(&o.watchQueue, "watch-queue", 0, fmt.Sprintf("let an event stream fall up to `N` events behind; one that falls further loses the oldest and is told how many (0: %d; the streams share one log of encoded events)", hub.DefaultLogRecords))
	fs.StringVar(&o.watchBuffer, "watch-buffer", "", fmt.Sprintf("hold at most `SIZE` of encoded events (K, M, G: powers of 1024) for the event streams to read, shared by all of them (default %s)", size.Format(hub.DefaultLogBytes)))
	duration.Var(fs, &o.watchInterval, "watch-interval", hub.DefaultInterval, "hand each event to the event streams and the export at most `DURATION` after it happens, sooner when 1,024 wait (1ms to 1s); every hand-out wakes each stream and its client, so a shorter interval costs both more CPU (docs/benchmarks.md, \"How often watchers are woken\")")
	duration.Var(fs, &o.shutdownTimeout, "shutdown-timeout", defaultShutdownTimeout, "at shutdown, let control calls run on for up to `DURATION` before cutting them")
	fs.StringVar(&o.engine, "engine", proxy.DefaultEngine, "serve the proxies' connections with `ENGINE`: "+proxy.EngineEpoll+" (event loops, Linux) or "+proxy.EngineGoroutines+" (two goroutines per connection, portable)")
	fs.IntVar(&o.loops, "loops", proxy.DefaultLoops(), "with --engine "+proxy.EngineEpoll+", run `N` event loops; every proxy spreads its connections over all of them, and each holds a core while busy (snoopd runs Go with N+1 Ps unless GOMAXPROCS is set: one for everything else)")
	fs.IntVar(&o.maxWatchers, "max-watchers", daemon.DefaultMaxWatchers, "serve at most `N` event streams at once (each one whose client stops reading holds about 0.3 MB at low rates, up to about 3 MB of RSS under heavy load; README, --max-watchers)")
	duration.Var(fs, &o.maxDrain, "max-drain", daemon.DefaultMaxDrain, "end any delete's drain after `DURATION` at most, closing the connections left")
	fs.BoolVar(&o.metricsInsecure, "metrics-insecure", false, "allow --metrics-listen on an address off this machine without TLS")
	fs.TextVar(&o.metricsHistograms, "metrics-histograms", metrics.DefaultHistograms, "export latency histograms in /metrics for `WHICH`: none, ops (one per operation, all proxies together) or proxies (ops, and one per proxy: about 1.6 KB of exposition a proxy)")
	addExportFlags(fs, &o.export)
	fs.BoolVar(&o.version, "version", false, "print the version and exit")
	return fs
}

// writeUsage prints the help: what snoopd is and one line per flag.
func writeUsage(w io.Writer) {
	var o options
	fs := newFlagSet(&o)
	fmt.Fprint(w, `Usage: snoopd [flags]

snoopd hosts named snoop proxies for the distcache session-cache protocol
and serves the control API that snoopctl uses. SIGINT or SIGTERM stops it.

Flags:
`)
	fs.VisitAll(func(f *flag.Flag) {
		arg, usage := flag.UnquoteUsage(f)
		left := "--" + f.Name
		if arg != "" {
			left += " " + arg
		}
		switch {
		case f.Name == "loops":
			// The default depends on the machine: say where it comes from.
			usage += " (default " + f.DefValue + ", one per CPU this process may use)"
		case f.DefValue != "" && f.DefValue != "false" && f.DefValue != "0" && f.Name != "control":
			usage += " (default " + f.DefValue + ")"
		}
		fmt.Fprintf(w, "  %-28s %s\n", left, usage)
	})
}

// parseArgs parses and checks the command line. Every error it returns is
// a usage error; flag.ErrHelp asks for the help.
func parseArgs(args []string) (*options, error) {
	o := &options{}
	fs := newFlagSet(o)
	if err := fs.Parse(args); err != nil {
		// A bad value is worded as snoopctl words it, not "parse error".
		return nil, duration.Explain(err)
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q: snoopd takes only flags", fs.Arg(0))
	}
	if err := o.check(); err != nil {
		return nil, err
	}
	return o, nil
}

// check validates the flags against each other and derives what the
// start-up needs. It touches no file and binds nothing.
func (o *options) check() error {
	switch o.logFormat {
	case "text", "json":
	default:
		return fmt.Errorf("--log-format %q: want text or json", o.logFormat)
	}
	if err := o.level.UnmarshalText([]byte(o.logLevel)); err != nil || !validLevel(o.logLevel) {
		return fmt.Errorf("--log-level %q: want debug, info, warn or error", o.logLevel)
	}
	switch {
	case (o.tlsCert == "") != (o.tlsKey == ""):
		return errors.New("--tls-cert and --tls-key go together: give both or neither")
	case o.tlsClientCA != "" && o.tlsCert == "":
		return errors.New("--tls-client-ca needs --tls-cert and --tls-key: client certificates are checked only over TLS")
	case o.history < 0:
		return fmt.Errorf("--history %d: must not be negative", o.history)
	case o.watchQueue < 0:
		return fmt.Errorf("--watch-queue %d: must not be negative", o.watchQueue)
	case o.watchBuffer != "" && !o.parseWatchBuffer():
		return fmt.Errorf("--watch-buffer %q: want a size of at least 1M, such as 16M or 1G", o.watchBuffer)
	case o.watchInterval < time.Millisecond || o.watchInterval > time.Second:
		return fmt.Errorf("--watch-interval %v: want 1ms to 1s", o.watchInterval)
	case o.shutdownTimeout <= 0:
		return fmt.Errorf("--shutdown-timeout %v: must be positive", o.shutdownTimeout)
	case o.demoRate <= 0:
		return fmt.Errorf("--demo-rate %g: must be positive", o.demoRate)
	case o.engine != proxy.EngineEpoll && o.engine != proxy.EngineGoroutines:
		return fmt.Errorf("--engine %q: want %s or %s", o.engine, proxy.EngineEpoll, proxy.EngineGoroutines)
	case o.loops < 1:
		return fmt.Errorf("--loops %d: want 1 or more", o.loops)
	case o.maxWatchers < 1:
		return fmt.Errorf("--max-watchers %d: want 1 or more", o.maxWatchers)
	case o.maxDrain <= 0:
		return fmt.Errorf("--max-drain %v: must be positive", o.maxDrain)
	}
	if o.demo {
		a, err := distcache.ParseListenAddr(o.demoListen)
		if err != nil {
			return fmt.Errorf("--demo-listen: %w", err)
		}
		o.demoAddr = a
	}
	if err := o.export.check(); err != nil {
		return err
	}
	if o.metricsListen != "" {
		a, err := distcache.ParseListenAddr(o.metricsListen)
		if err != nil {
			return fmt.Errorf("--metrics-listen: %w", err)
		}
		o.metrics = a
		if err := o.planMetrics(); err != nil {
			return err
		}
	}
	return o.planControl()
}

func validLevel(s string) bool {
	switch strings.ToLower(s) {
	case "debug", "info", "warn", "error":
		return true
	}
	return false
}

// planControl decides how each control endpoint is served, and refuses
// plain TCP unless it is explicitly allowed and stays on this machine: the
// control API can create proxies that forward anywhere, so it must not be
// open to the network by accident.
func (o *options) planControl() error {
	if len(o.control) == 0 {
		a := endpoint.DefaultAddr()
		o.endpoints = []controlEndpoint{{addr: a, ownDir: os.Getenv("XDG_RUNTIME_DIR") == ""}}
		return nil
	}
	seen := map[distcache.Addr]bool{}
	for _, s := range o.control {
		a, err := endpoint.Parse(s)
		if err != nil {
			return fmt.Errorf("--control %s: %w", s, err)
		}
		if seen[a] {
			return fmt.Errorf("--control %s is given twice", s)
		}
		seen[a] = true
		ep := controlEndpoint{addr: a}
		if a.Network() == distcache.NetworkTCP {
			switch {
			case o.tlsCert != "":
				ep.tls = true
			case o.insecure && a.IsLoopback():
				// Plain TCP on loopback, as asked.
			case o.insecure:
				return fmt.Errorf("--control %s: --insecure allows plain TCP only on a loopback address (127.0.0.1, ::1 or localhost), and %s is not one; serve it with TLS (--tls-cert, --tls-key) or use a unix socket", s, a)
			default:
				return fmt.Errorf("--control %s: a TCP control endpoint needs TLS (--tls-cert and --tls-key, plus --tls-client-ca for client certificates), or --insecure on a loopback address; a unix socket needs neither", s)
			}
		}
		o.endpoints = append(o.endpoints, ep)
	}
	return nil
}

// planMetrics refuses plain metrics on an address other machines can
// reach unless asked for explicitly: the metrics name every proxy and its
// addresses. Off this machine they are served with the control API's
// certificate (and, with --tls-client-ca, only to clients it signed).
func (o *options) planMetrics() error {
	a := o.metrics
	if a.Network() != distcache.NetworkTCP || a.IsLoopback() || o.metricsInsecure {
		return nil
	}
	if o.tlsCert == "" {
		return fmt.Errorf("--metrics-listen %s: metrics on an address other machines can reach need TLS (--tls-cert and --tls-key) or an explicit --metrics-insecure; a loopback address (IP:127.0.0.1:9464) or a unix socket needs neither", o.metricsListen)
	}
	o.metricsTLS = true
	return nil
}

// hasTCP reports whether any control endpoint is TCP.
func (o *options) hasTCP() bool {
	for _, ep := range o.endpoints {
		if ep.addr.Network() == distcache.NetworkTCP {
			return true
		}
	}
	return false
}

// newLogger returns the logger the flags ask for, writing to w.
func newLogger(w io.Writer, o *options) *slog.Logger {
	ho := &slog.HandlerOptions{Level: o.level}
	if o.logFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, ho))
	}
	return slog.New(slog.NewTextHandler(w, ho))
}

// parseWatchBuffer reads --watch-buffer; less than 1 MiB would not hold a
// dispatch round of events with captured data.
func (o *options) parseWatchBuffer() bool {
	n, err := size.Parse(o.watchBuffer)
	if err != nil || n < 1<<20 || n > 1<<40 {
		return false
	}
	o.watchBufferN = n
	return true
}
