package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/snoopd/snoopd/daemon"
	"github.com/snoopd/snoopd/daemon/export"
	"github.com/snoopd/snoopd/daemon/metrics"
	"github.com/snoopd/snoopd/distcache"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
	"github.com/snoopd/snoopd/internal/fdlimit"
	"github.com/snoopd/snoopd/internal/listen"
	"github.com/snoopd/snoopd/internal/sdnotify"
	"github.com/snoopd/snoopd/proxy"
)

// closeTimeout bounds stopping the proxies at shutdown; each proxy has its
// own, shorter bound inside the daemon.
const closeTimeout = 15 * time.Second

// metricsSocketMode is the mode of a unix metrics socket: the metrics
// name the proxies and their addresses, so, like the control socket, only
// the daemon's user may read them.
const metricsSocketMode = 0o600

// run is snoopd's main, minus the process: it parses args, starts
// everything, serves until ctx is done and shuts down. It returns the exit
// code: 0 after a clean shutdown, 1 when start-up or serving failed, 2 for
// a usage error.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	o, err := parseArgs(args)
	if errors.Is(err, flag.ErrHelp) {
		writeUsage(stdout)
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "snoopd: %v (see snoopd --help)\n", err)
		return 2
	}
	if o.version {
		fmt.Fprintf(stdout, "snoopd %s\n", daemon.Version)
		return 0
	}
	log := newLogger(stderr, o)
	inst, err := start(ctx, o, log)
	if err != nil {
		fmt.Fprintf(stderr, "snoopd: %v\n", err)
		return 1
	}
	return inst.serve(ctx)
}

// instance is a started snoopd.
type instance struct {
	o       *options
	log     *slog.Logger
	d       *daemon.Daemon
	engine  proxy.Engine // closed after the daemon, whose proxies use it
	servers []*controlServer
	metrics *metricsServer
	demo    *demo
	export  *export.Exporter // nil without --export

	wg   sync.WaitGroup // the Serve goroutines
	fail chan error     // a Serve that ended on its own
}

// controlServer is one gRPC server with the listeners it serves. Unix
// sockets and plain loopback TCP share a server without transport
// security; TLS endpoints get a server of their own.
type controlServer struct {
	srv       *grpc.Server
	health    *daemon.HealthServer
	listeners []*controlListener
}

// start opens everything in an order that fails early and cheaply: the
// files named on the command line are read, then the sockets are bound
// (a second snoopd on the same socket is refused before it touches the
// state dir), then the daemon restores its proxies and the config and the
// demo are applied. Whatever fails is undone, and the error names it.
func start(ctx context.Context, o *options, log *slog.Logger) (_ *instance, err error) {
	var token string
	if o.tokenFile != "" {
		if token, err = readToken(o.tokenFile); err != nil {
			return nil, err
		}
	}
	var tlsConf *tls.Config
	if o.tlsCert != "" {
		if tlsConf, err = loadTLS(o, log); err != nil {
			return nil, err
		}
		if !o.hasTCP() && !o.metricsTLS {
			log.Warn("TLS is configured but no control endpoint is TCP; unix sockets are served without it")
		}
	}
	var declared []*snoopv1.ProxySpec
	if o.configFile != "" {
		if declared, err = daemon.ReadProxySet(o.configFile); err != nil {
			return nil, fmt.Errorf("--config: %w", err)
		}
	}

	inst := &instance{o: o, log: log, fail: make(chan error, len(o.endpoints)+1)}
	// The state dir's lock first: a second snoopd on the same dir is
	// refused before it opens a socket or starts a loop, so the refusal
	// has nothing to undo.
	var stateLock *daemon.StateLock
	if o.stateDir != "" {
		if stateLock, err = daemon.LockStateDir(o.stateDir); err != nil {
			return nil, fmt.Errorf("--state-dir %s: %w", o.stateDir, err)
		}
	}
	var listeners []*controlListener
	defer func() {
		if err != nil {
			inst.abort(listeners)
			stateLock.Release() // unless New took it over
		}
	}()
	if listeners, err = openControl(o.endpoints, log); err != nil {
		return nil, err
	}
	if !o.metrics.IsZero() {
		if inst.metrics, err = listenMetrics(o.metrics); err != nil {
			return nil, err
		}
		if o.metricsTLS {
			inst.metrics.l = tls.NewListener(inst.metrics.l, tlsConf)
			inst.metrics.tls = true
		}
	}

	fdLimit := raiseFDLimit(log)
	loops := o.loops
	if o.engine == proxy.EngineEpoll {
		loops = spareP(loops)
	}
	if inst.engine, err = proxy.NewEngine(o.engine, loops); err != nil {
		return nil, fmt.Errorf("--engine %s: %w", o.engine, err)
	}
	log.Info("data path engine", "engine", inst.engine.Name(), "loops", inst.engine.Loops(),
		"gomaxprocs", runtime.GOMAXPROCS(0), "raw_waits", o.engine == proxy.EngineEpoll && proxy.RawWaits(loops))

	var own []daemon.OwnListener
	for _, l := range listeners {
		own = append(own, daemon.OwnListener{What: "--control", Addr: l.l.Addr()})
	}
	if inst.metrics != nil {
		own = append(own, daemon.OwnListener{What: "--metrics-listen", Addr: inst.metrics.l.Addr()})
	}
	// The --config set is applied inside New, so that a failure leaves the
	// state dir as it was.
	inst.d, err = daemon.New(daemon.Config{OwnListeners: own, StateDir: o.stateDir, History: o.history, QueueSize: o.watchQueue, WatchBuffer: int(o.watchBufferN), WatchInterval: o.watchInterval, Logger: log, Apply: declared,
		Engine: inst.engine, FDLimit: fdLimit, MaxWatchers: o.maxWatchers, MaxDrain: o.maxDrain, Name: o.export.name,
		StateLock: stateLock})
	if err == nil {
		stateLock = nil // the daemon's now, released when it closes
	}
	switch {
	case errors.Is(err, daemon.ErrApplyAtStart):
		return nil, fmt.Errorf("--config %s: %w", o.configFile, err)
	case err != nil && o.stateDir != "":
		return nil, fmt.Errorf("--state-dir %s: %w", o.stateDir, err)
	case err != nil:
		return nil, err
	}
	if len(declared) > 0 {
		log.Info("applied --config", "file", o.configFile, "proxies", len(declared))
	}
	if inst.export, err = startExport(inst.d, &o.export, log); err != nil {
		return nil, err
	}
	if o.demo {
		if inst.demo, err = startDemo(inst.d, o.demoAddr, o.demoRate, log); err != nil {
			return nil, err
		}
	}

	// The endpoints are recorded before the first call can ask for them.
	var eps []string
	for _, cl := range listeners {
		eps = append(eps, cl.display)
	}
	inst.d.SetEndpoints(eps)
	inst.servers = newControlServers(inst.d, listeners, token, tlsConf)
	for _, cs := range inst.servers {
		for _, cl := range cs.listeners {
			inst.wg.Add(1)
			go func() {
				defer inst.wg.Done()
				if err := cs.srv.Serve(cl.l); err != nil {
					inst.fail <- fmt.Errorf("control endpoint %s: %w", cl.display, err)
				}
			}()
			log.Info("control API listening", "endpoint", cl.display, "tls", cl.tls, "token", token != "",
				"try", reachHintToken(reachHint(cl), o.tokenFile))
		}
	}
	if m := inst.metrics; m != nil {
		m.serve(inst.d, metrics.Options{Histograms: o.metricsHistograms, Log: log}, inst.fail)
		log.Info("metrics listening", "addr", m.display, "path", "/metrics", "tls", m.tls)
	}
	log.Info("snoopd started", "version", daemon.Version, "proxies", len(inst.d.ListProxies()), "state_dir", o.stateDir)
	// Every listener is up and served: a service manager may send work.
	notify(log, fmt.Sprintf("READY=1\nSTATUS=serving %d proxies", len(inst.d.ListProxies())))
	return inst, nil
}

// reachHint shows how to reach an endpoint with snoopctl.
func reachHint(cl *controlListener) string {
	hint := "snoopctl -a " + cl.display + " list"
	if cl.tls {
		hint += " (over TLS)"
	}
	return hint
}

// newControlServers makes the gRPC servers for ls, all serving d.
func newControlServers(d *daemon.Daemon, ls []*controlListener, token string, tlsConf *tls.Config) []*controlServer {
	var plain, secure *controlServer
	for _, cl := range ls {
		if cl.tls {
			if secure == nil {
				srv, hs := daemon.NewServer(d, daemon.ServerOptions{Token: token, Creds: credentials.NewTLS(tlsConf)})
				secure = &controlServer{srv: srv, health: hs}
			}
			secure.listeners = append(secure.listeners, cl)
			continue
		}
		if plain == nil {
			srv, hs := daemon.NewServer(d, daemon.ServerOptions{Token: token})
			plain = &controlServer{srv: srv, health: hs}
		}
		plain.listeners = append(plain.listeners, cl)
	}
	var out []*controlServer
	for _, cs := range []*controlServer{plain, secure} {
		if cs != nil {
			out = append(out, cs)
		}
	}
	return out
}

// abort undoes a start-up that failed half way.
func (inst *instance) abort(listeners []*controlListener) {
	closeControl(listeners)
	if inst.metrics != nil {
		inst.metrics.l.Close()
	}
	if inst.demo != nil {
		inst.demo.stopLoad()
	}
	if inst.d != nil {
		ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
		if err := inst.d.Close(ctx); err != nil {
			inst.log.Warn("stopping the proxies after a failed start", "err", err)
		}
		cancel()
	}
	if inst.engine != nil {
		if err := inst.engine.Close(); err != nil {
			inst.log.Warn("stopping the data path engine after a failed start", "err", err)
		}
	}
	if inst.export != nil {
		inst.export.Close(0)
	}
	if inst.demo != nil {
		inst.demo.close()
	}
}

// serve waits for ctx to end (or a server to fail) and shuts down.
func (inst *instance) serve(ctx context.Context) int {
	code := 0
	select {
	case <-ctx.Done():
		inst.log.Info("shutting down", "reason", context.Cause(ctx).Error())
	case err := <-inst.fail:
		inst.log.Error("a listener failed; shutting down", "err", err)
		code = 1
	}
	if err := inst.shutdown(); err != nil {
		inst.log.Error("shutdown", "err", err)
		code = 1
	}
	inst.log.Info("stopped")
	return code
}

// shutdown stops everything, in an order that lets each step finish:
//
//  1. Health checks report NOT_SERVING, so supervisors and load balancers
//     stop sending work.
//  2. The demo load stops, before its proxy does.
//  3. The daemon closes: proxies stop accepting and close their
//     connections (then the engine that served them stops), the event
//     hub ends, so every watch stream returns with
//     UNAVAILABLE "snoopd is shutting down" after its last events, and the
//     state is saved. Only now can a graceful stop finish, since watch
//     streams would otherwise hold it forever.
//  4. The gRPC servers stop gracefully, letting calls in flight finish,
//     but no longer than --shutdown-timeout (a client that stopped
//     reading a stream could hold a Send); then they stop hard. Stopping
//     closes the listeners, which removes the unix sockets.
//  5. The metrics server and the demo's cache stop.
func (inst *instance) shutdown() error {
	log := inst.log
	notify(log, "STOPPING=1")
	for _, cs := range inst.servers {
		cs.health.Shutdown()
	}
	log.Debug("shutdown: health is NOT_SERVING")
	if inst.demo != nil {
		inst.demo.stopLoad()
		log.Debug("shutdown: demo load stopped")
	}
	ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
	err := inst.d.Close(ctx)
	cancel()
	if err != nil {
		err = fmt.Errorf("stopping the proxies: %w", err)
	}
	if eerr := inst.engine.Close(); eerr != nil {
		err = errors.Join(err, fmt.Errorf("stopping the data path engine: %w", eerr))
	}
	log.Debug("shutdown: proxies stopped, event streams ended, state saved", "engine", inst.engine.Name())
	if inst.export != nil {
		inst.export.Close(exportCloseTimeout) // the hub is closed: what it queued goes out first
	}

	var wg sync.WaitGroup
	for _, cs := range inst.servers {
		wg.Go(func() { gracefulStop(cs.srv, inst.o.shutdownTimeout, log) })
	}
	wg.Wait()
	inst.wg.Wait()
	for _, cs := range inst.servers {
		// Serve closed them; closing again is harmless and makes sure
		// the sockets are gone even if a Serve had ended early.
		closeControl(cs.listeners)
	}
	log.Debug("shutdown: control API stopped, sockets removed")

	if m := inst.metrics; m != nil {
		if merr := m.shutdown(inst.o.shutdownTimeout); merr != nil {
			err = errors.Join(err, merr)
		}
		log.Debug("shutdown: metrics server stopped")
	}
	if inst.demo != nil {
		inst.demo.close()
		log.Debug("shutdown: demo cache stopped")
	}
	return err
}

// gracefulStop stops srv gracefully within timeout, then hard, as in
// grpc-go's examples/features/gracefulstop.
func gracefulStop(srv *grpc.Server, timeout time.Duration, log *slog.Logger) {
	done := make(chan struct{})
	go func() {
		srv.GracefulStop()
		close(done)
	}()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		log.Warn("control calls still running after the shutdown timeout; cutting them", "timeout", timeout)
		srv.Stop()
		<-done
	}
}

// metricsServer serves /metrics over HTTP on its own server, so a slow
// scraper shares nothing with the control API.
type metricsServer struct {
	l       net.Listener
	tls     bool
	display string
	srv     *http.Server
	done    chan struct{}
}

// listenMetrics opens the metrics endpoint. TCP keeps the default
// keep-alive, as http.ListenAndServe does: a scraper may hold its
// connection between scrapes.
func listenMetrics(a distcache.Addr) (*metricsServer, error) {
	l, err := listen.Config{Mode: metricsSocketMode}.Listen(context.Background(), a)
	if err != nil {
		return nil, fmt.Errorf("--metrics-listen %s: %w", a, err)
	}
	display := a.String()
	if ta, ok := l.Addr().(*net.TCPAddr); ok {
		display = a.WithPort(ta.Port).String()
	}
	return &metricsServer{l: l, display: display, done: make(chan struct{})}, nil
}

func (m *metricsServer) serve(src metrics.Source, mo metrics.Options, fail chan<- error) {
	log := mo.Log
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", metrics.NewHandler(src, mo))
	m.srv = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	go func() {
		defer close(m.done)
		if err := m.srv.Serve(m.l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			fail <- fmt.Errorf("--metrics-listen %s: %w", m.display, err)
		}
	}()
}

func (m *metricsServer) shutdown(timeout time.Duration) error {
	if m.srv == nil {
		return m.l.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	err := m.srv.Shutdown(ctx)
	if err != nil {
		m.srv.Close()
	}
	<-m.done
	if err != nil {
		return fmt.Errorf("metrics server: %w", err)
	}
	return nil
}

// notify tells a service manager (systemd's Type=notify) about the
// daemon's state; without one (no NOTIFY_SOCKET) it does nothing.
func notify(log *slog.Logger, state string) {
	sent, err := sdnotify.Notify(state)
	switch {
	case err != nil:
		log.Warn("telling the service manager failed", "state", state, "err", err)
	case sent:
		log.Debug("told the service manager", "state", state)
	}
}

// raiseFDLimit raises the soft open-file limit to the hard one and bounds
// the data path a reserve below it (see fdlimit.Reserve), so that the
// control API can still accept connections while the proxies are at
// their limit. It returns the limit in force, 0 if unknown.
func raiseFDLimit(log *slog.Logger) uint64 {
	was, now, err := fdlimit.Raise()
	if err != nil {
		log.Warn("open-file limit not raised; the data path is bounded below the limit that holds", "err", err, "limit", now)
	} else {
		log.Info("open-file limit", "was", was, "now", now, "data_path", fdlimit.DataLimit(now), "reserved", fdlimit.Reserve(now))
	}
	proxy.SetFDLimit(fdlimit.DataLimit(now))
	return now
}

// reachHintToken adds --token-file to a hint when the daemon requires a
// token, so that the command it shows works as printed.
func reachHintToken(hint, tokenFile string) string {
	if tokenFile == "" {
		return hint
	}
	cmd, rest, _ := strings.Cut(hint, " list")
	return cmd + " --token-file " + tokenFile + " list" + rest
}

// spareP gives the Go scheduler one P beyond the event loops
// (proxy.WantProcs), unless GOMAXPROCS is set in the environment: each
// loop then keeps its P while it waits for its sockets, and the event
// pipeline, the watch streams and the API run on the spare one instead of
// taking a loop's P while it waits and holding its clients up until they
// yield. It returns the number of loops to make, loops itself unless
// that is 0 (one per CPU, counted before the change).
func spareP(loops int) int {
	if loops == 0 {
		loops = proxy.DefaultLoops()
	}
	if os.Getenv("GOMAXPROCS") != "" {
		return loops
	}
	if want := proxy.WantProcs(loops); runtime.GOMAXPROCS(0) < want {
		runtime.GOMAXPROCS(want)
	}
	return loops
}
