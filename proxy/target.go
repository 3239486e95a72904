package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/snoopd/snoopd/distcache"
)

// ErrProxyLoop is wrapped when a proxy's server is one of this process's
// own listeners whose traffic comes back (its own, or a chain of proxies
// that leads back to one it went through): forwarding to it would feed
// the proxies their own traffic.
var ErrProxyLoop = errors.New("proxy loop")

// target is where a proxy dials its server. Host names are resolved once
// and the answer reused until a dial fails, because resolving on every
// connection (as a plain net.Dial does) costs more than the whole proxied
// round trip when clients open a connection per operation.
type target struct {
	addr distcache.Addr

	mu       sync.Mutex
	resolved []string // "ip:port" candidates, nil until resolved
	// loopErr caches the answer of ownListeners for the current
	// candidates, valid while loopVer is the set's version.
	loopErr     error
	loopVer     uint64
	loopChecked bool
	// engine-specific form of the candidates (the epoll engine's socket
	// addresses), rebuilt when resolved changes.
	raw any
}

func newTarget(a distcache.Addr) *target { return &target{addr: a} }

// dial connects to the server for the goroutine engine.
func (t *target) dial(ctx context.Context, timeout time.Duration, st *counters) (net.Conn, error) {
	// No TCP keepalive: it costs four setsockopt calls per connection, and
	// a dead server shows up at the next request anyway.
	d := net.Dialer{Timeout: timeout, KeepAlive: -1}
	if t.addr.Network() == distcache.NetworkUnix {
		if err := t.checkLoop(nil, st); err != nil {
			return nil, err
		}
		return d.DialContext(ctx, "unix", t.addr.Path())
	}
	cands, err := t.candidates(ctx, timeout)
	if err != nil {
		return nil, err
	}
	if err := t.checkLoop(cands, st); err != nil {
		return nil, err
	}
	var first error
	for i, a := range cands {
		c, err := d.DialContext(ctx, "tcp", a)
		if err == nil {
			if i > 0 {
				// Try the address that answered first next time
				// ("localhost" often lists ::1 where nobody listens).
				t.prefer(a)
			}
			return c, nil
		}
		if first == nil {
			first = err
		}
		if errors.Is(err, syscall.ECONNREFUSED) {
			continue
		}
	}
	t.forget()
	return nil, first
}

// forget drops the resolved candidates: the server may have moved.
func (t *target) forget() {
	t.mu.Lock()
	t.resolved, t.raw, t.loopChecked = nil, nil, false
	t.mu.Unlock()
}

func (t *target) prefer(a string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := []string{a}
	for _, c := range t.resolved {
		if c != a {
			out = append(out, c)
		}
	}
	t.resolved, t.raw, t.loopChecked = out, nil, false
}

// cached returns the resolved candidates without resolving: nil when a
// host name has not been resolved yet.
func (t *target) cached() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.resolved == nil {
		if ip, err := netip.ParseAddr(t.addr.Host()); err == nil {
			t.resolved = []string{netip.AddrPortFrom(ip, uint16(t.addr.Port())).String()}
			t.loopChecked = false
		}
	}
	return t.resolved
}

func (t *target) candidates(ctx context.Context, timeout time.Duration) ([]string, error) {
	if c := t.cached(); c != nil {
		return c, nil
	}
	host, port := t.addr.Host(), fmt.Sprint(t.addr.Port())
	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	ips, err := net.DefaultResolver.LookupIPAddr(rctx, host)
	if err != nil {
		return nil, fmt.Errorf("resolve %s: %w", host, err)
	}
	if len(ips) == 0 {
		return nil, fmt.Errorf("resolve %s: no addresses", host)
	}
	out := make([]string, 0, len(ips))
	for _, ip := range ips {
		out = append(out, net.JoinHostPort(ip.String(), port))
	}
	t.mu.Lock()
	t.resolved, t.raw, t.loopChecked = out, nil, false
	t.mu.Unlock()
	// A chain through the proxy of this target may lead elsewhere now.
	ownListeners.version.Add(1)
	return out, nil
}

// checkLoop reports ErrProxyLoop when the server (its unix path, or any of
// the TCP candidates) is one of this process's listeners and the chain of
// proxies from there comes back to one it went through (see
// listenerSet.loop); a chain that ends at a real server is let through.
// The answer is cached until the listeners, a proxy's server or a
// resolution change, so a dial pays a lock and a comparison, no system
// call. A refusal is counted in st, so that every dial path (either
// engine, a client's or a spare's) counts it the same.
func (t *target) checkLoop(cands []string, st *counters) error {
	err := t.loopErrFor(cands)
	if err != nil {
		st.loopRefusals.Add(1)
	}
	return err
}

// loopErrFor is checkLoop's answer, from the cache when it is current.
func (t *target) loopErrFor(cands []string) error {
	ownListeners.refreshLocal(time.Now())
	ver := ownListeners.version.Load()
	t.mu.Lock()
	if t.loopChecked && t.loopVer == ver {
		err := t.loopErr
		t.mu.Unlock()
		return err
	}
	t.mu.Unlock()
	var err error
	if chain := ownListeners.loop(t, cands); chain != nil {
		err = loopError(t.addr, chain)
	}
	t.mu.Lock()
	t.loopErr, t.loopVer, t.loopChecked = err, ver, true
	t.mu.Unlock()
	return err
}

// loopError names the loop: chain starts at the proxy listening on
// server and ends at the one met twice.
func loopError(server distcache.Addr, chain []string) error {
	return fmt.Errorf("%w: server %s is the listen address of proxy %q in this daemon, whose traffic comes back (%s); not dialling it",
		ErrProxyLoop, server, chain[0], strings.Join(chain, " → "))
}
