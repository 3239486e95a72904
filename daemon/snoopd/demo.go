package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/snoopd/snoopd/daemon"
	"github.com/snoopd/snoopd/distcache"
	"github.com/snoopd/snoopd/distcache/cacheserver"
	"github.com/snoopd/snoopd/distcache/loadgen"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
)

// demoProxy is the name of the proxy --demo creates.
const demoProxy = "demo"

// demoForever bounds the demo load's duration, which loadgen requires;
// the load really ends when the daemon cancels it at shutdown.
const demoForever = 100 * 365 * 24 * time.Hour

// demo is what --demo runs: an in-memory cache server on a unix socket in
// a private directory, an ephemeral proxy in front of it, and a gentle,
// verified load through the proxy, so a newcomer sees live transactions
// with nothing else installed.
type demo struct {
	log    *slog.Logger
	dir    string
	cache  *cacheserver.Server
	cancel context.CancelFunc
	done   chan struct{}
	rep    loadgen.Report
	err    error
}

// startDemo starts the cache, creates the demo proxy on listen and starts
// the load at rate operations per second.
func startDemo(d *daemon.Daemon, listen distcache.Addr, rate float64, log *slog.Logger) (*demo, error) {
	dir, err := os.MkdirTemp("", "snoopd-demo-")
	if err != nil {
		return nil, fmt.Errorf("--demo: %w", err)
	}
	dm := &demo{log: log, dir: dir}
	cacheAddr := distcache.MustParseAddr("UNIX:" + filepath.Join(dir, "cache.sock"))
	// The cache logs every connection at debug level, which would bury
	// snoopd's own debug logs under the demo's traffic.
	cacheLog := slog.New(minLevel{log.Handler(), slog.LevelInfo}).With("component", "demo-cache")
	dm.cache, err = cacheserver.Start(cacheAddr, cacheserver.Config{Logger: cacheLog})
	if err != nil {
		dm.close()
		return nil, fmt.Errorf("--demo: start the cache server: %w", err)
	}
	p, err := d.CreateEphemeralProxy(&snoopv1.ProxySpec{Name: demoProxy, Listen: listen.String(), Server: cacheAddr.String()})
	if err != nil {
		dm.close()
		if errors.Is(err, daemon.ErrExists) {
			return nil, fmt.Errorf("--demo: a proxy named %q exists already (from --state-dir or --config); rename it or leave out --demo", demoProxy)
		}
		return nil, fmt.Errorf("--demo: create proxy %q on %s: %w", demoProxy, listen, err)
	}
	target, err := dialable(p.GetListenAddress())
	if err != nil {
		dm.close()
		return nil, fmt.Errorf("--demo: %w", err)
	}
	cfg := loadgen.Config{
		Addr: target,
		// Two workers opening a connection per operation, as real
		// clients of the cache do, so connection events show up too.
		Conns:      2,
		Persistent: false,
		Rate:       rate,
		Duration:   demoForever,
		// Few sessions, so GETs start hitting within seconds; a newcomer
		// should see every kind of answer early.
		Sessions: 16,
		MinData:  64,
		MaxData:  1024,
		Verify:   true,
		IDPrefix: "demo-",
	}
	if err := cfg.Validate(); err != nil {
		dm.close()
		return nil, fmt.Errorf("--demo: load: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	dm.cancel, dm.done = cancel, make(chan struct{})
	go func() {
		defer close(dm.done)
		dm.rep, dm.err = loadgen.Run(ctx, cfg)
	}()
	log.Info("demo running: a cache server, and proxy demo in front of it with a gentle load",
		"proxy", demoProxy, "listen", p.GetListenAddress(), "cache", cacheAddr.String(), "rate", rate)
	return dm, nil
}

// dialable turns a proxy's listen address into one a client can dial:
// a proxy listening on every interface is reached on loopback.
func dialable(listen string) (distcache.Addr, error) {
	a, err := distcache.ParseAddr(listen)
	if err != nil {
		return distcache.Addr{}, err
	}
	if a.Network() == distcache.NetworkTCP {
		if ip, err := netip.ParseAddr(a.Host()); a.Host() == "" || (err == nil && ip.IsUnspecified()) {
			a = distcache.MustParseAddr("IP:127.0.0.1:1").WithPort(a.Port())
		}
	}
	return a, nil
}

// stopLoad ends the load and logs what it did. It runs before the proxies
// stop, so the load does not count the shutdown as failures.
func (dm *demo) stopLoad() {
	if dm.cancel == nil {
		return
	}
	dm.cancel()
	<-dm.done
	dm.cancel = nil
	r := dm.rep
	if dm.err != nil && !errors.Is(dm.err, context.Canceled) {
		dm.log.Error("demo load failed", "err", dm.err)
		return
	}
	dm.log.Info("demo load stopped", "ops", r.Ops, "errors", r.Errors, "unanswered", r.Unanswered,
		"ops_per_sec", fmt.Sprintf("%.1f", r.OpsPerSec), "latency_p50", r.Latency.P50, "latency_p99", r.Latency.P99)
	if len(r.ErrorSamples) > 0 {
		dm.log.Warn("demo load saw errors", "first", r.ErrorSamples[0])
	}
}

// close stops the cache server and removes the private directory. The
// demo proxy is the daemon's and stops with it.
func (dm *demo) close() {
	dm.stopLoad()
	if dm.cache != nil {
		if err := dm.cache.Close(); err != nil {
			dm.log.Warn("demo cache server did not close cleanly", "err", err)
		}
	}
	if err := os.RemoveAll(dm.dir); err != nil {
		dm.log.Warn("could not remove the demo directory", "dir", dm.dir, "err", err)
	}
}

// minLevel passes on only records at or above its level.
type minLevel struct {
	slog.Handler
	level slog.Level
}

func (h minLevel) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.level && h.Handler.Enabled(ctx, l)
}

func (h minLevel) WithAttrs(as []slog.Attr) slog.Handler {
	return minLevel{h.Handler.WithAttrs(as), h.level}
}

func (h minLevel) WithGroup(name string) slog.Handler {
	return minLevel{h.Handler.WithGroup(name), h.level}
}
