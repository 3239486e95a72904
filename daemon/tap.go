package daemon

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/snoopd/snoopd/distcache"
	"github.com/snoopd/snoopd/proxy"
	"github.com/snoopd/snoopd/sniff"
)

// ErrTapForwardsNothing refuses what only a proxy in the traffic's path
// can do to a tap: faults, above all.
var ErrTapForwardsNothing = errors.New("a tap forwards nothing: nothing passes through it for a fault to act on")

// resolveTimeout bounds the look-up of a tap server's host name.
const resolveTimeout = 5 * time.Second

// TapStats are what a tap's capture saw and missed, beside the counters
// it shares with a proxy (ProxyStats.Stats).
type TapStats struct {
	// Interface is the network interface captured.
	Interface string
	// KernelPackets passed the kernel's filter, KernelDrops among them
	// lost because the capture ring was full.
	KernelPackets, KernelDrops uint64
	// CaptureGaps are stretches of bytes the capture missed,
	// CaptureMissingBytes their bytes.
	CaptureGaps, CaptureMissingBytes int64
	// Resyncs and ResyncSkippedBytes are the decoders' hunts for a
	// message start after a loss, and the bytes passed over.
	Resyncs, ResyncSkippedBytes int64
	// ReadErrors counts failed reads of the capture; LastReadError is
	// the latest, "" if none.
	ReadErrors    int64
	LastReadError string
}

// captureCounts are one capture's own counts, from its start.
type captureCounts struct {
	kernelPackets, kernelDrops uint64
	gaps, missing, readErrors  int64
}

func (c *captureCounts) add(o captureCounts) {
	c.kernelPackets += o.kernelPackets
	c.kernelDrops += o.kernelDrops
	c.gaps += o.gaps
	c.missing += o.missing
	c.readErrors += o.readErrors
}

// tapCapture is one running capture of a tap (see startCapture).
type tapCapture interface {
	counts() captureCounts
	lastError() error
	close() error
}

// tapRunner is a tap in the registry: one observer for its life, so its
// counters and connection ids go on across disable and enable, fed by a
// capture while it is enabled. A tap's "listening" is capturing.
type tapRunner struct {
	name, iface string
	obs         *proxy.Observer
	sink        proxy.Sink

	mu       sync.Mutex
	enabled  bool // capture while not stopped
	stopped  bool // for good: nothing captures again
	server   distcache.Addr
	cur      tapCapture    // nil while not capturing
	past     captureCounts // of the captures stopped
	lastRead error         // the last read error of any capture
}

// newTapRunner makes, without starting it, the tap cfg declares on
// iface; its connections are numbered from ids and its events go to
// sink.
func newTapRunner(cfg proxy.Config, iface string, ids *atomic.Uint64, sink proxy.Sink) *tapRunner {
	obs := proxy.NewObserver(cfg.Name, sink, proxy.ObserverOptions{
		CaptureData: cfg.Options.CaptureData, CaptureLimit: cfg.Options.CaptureLimit, ConnIDs: ids,
	})
	return &tapRunner{name: cfg.Name, iface: iface, obs: obs, sink: sink, server: cfg.Server, enabled: cfg.Enabled}
}

// Start opens the capture, if the tap is enabled; an error says why it
// could not (the interface, CAP_NET_RAW), as a FieldError on
// tap_interface or server.
func (t *tapRunner) Start() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.startLocked()
}

func (t *tapRunner) startLocked() error {
	if t.stopped {
		return fmt.Errorf("tap %s: %w", quote(t.name), proxy.ErrStopped)
	}
	if !t.enabled || t.cur != nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), resolveTimeout)
	srv, err := sniff.ParseServer(ctx, t.server.String())
	cancel()
	if err != nil {
		return &FieldError{Field: "server", Reason: err.Error(), Err: err}
	}
	c, err := startCapture(t.iface, srv, t.obs, t.sink)
	if err != nil {
		return err
	}
	t.cur = c
	return nil
}

// stopLocked ends the capture, if any, keeping its counts: the
// connections it followed are reported closed ("tap stopped").
func (t *tapRunner) stopLocked() error {
	if t.cur == nil {
		return nil
	}
	c := t.cur
	t.cur = nil
	err := c.close()
	t.past.add(c.counts())
	if le := c.lastError(); le != nil {
		t.lastRead = le
	}
	return err
}

// Enable starts capturing again after Disable.
func (t *tapRunner) Enable() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.enabled = true
	return t.startLocked()
}

// Disable stops capturing. Whether or not closeConns asks it, the
// connections followed are reported closed: a tap that does not look
// cannot tell when they end.
func (t *tapRunner) Disable(bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.enabled = false
	t.stopLocked()
}

// Listening reports whether the tap captures.
func (t *tapRunner) Listening() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.cur != nil
}

// Addr is the zero Addr: a tap listens nowhere.
func (t *tapRunner) Addr() distcache.Addr { return distcache.Addr{} }

// SetServer follows another server: a capturing tap starts a new
// capture on the new port; its connections to the old one are reported
// closed.
func (t *tapRunner) SetServer(a distcache.Addr) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if a == t.server {
		return nil
	}
	t.server = a
	if t.cur == nil {
		return nil
	}
	t.stopLocked()
	return t.startLocked()
}

// SetOptions changes nothing: a tap's capture options are fixed when it
// is made (an apply that changes them makes a new tap; see
// tapRecreated), and its other options are a proxy's.
func (t *tapRunner) SetOptions(proxy.Options) error { return nil }

// SetFaults refuses any fault (validation refuses them before).
func (t *tapRunner) SetFaults(fs []proxy.FaultSpec) error {
	if len(fs) > 0 {
		return fmt.Errorf("tap %s: %w", quote(t.name), ErrTapForwardsNothing)
	}
	return nil
}

// Stats returns the observer's counters: a proxy's, with nothing
// forwarded.
func (t *tapRunner) Stats() proxy.Stats { return t.obs.Stats() }

// ReadStats is Stats into s.
func (t *tapRunner) ReadStats(s *proxy.Stats, _ bool) { *s = t.obs.Stats() }

// Conditions: none a tap names yet.
func (t *tapRunner) Conditions(time.Time) []string { return nil }

// Conns is empty: a tap has no connections of its own to list or close.
func (t *tapRunner) Conns() []proxy.ConnInfo { return nil }

// CloseConn closes nothing: a tap cannot close what it only sees.
func (t *tapRunner) CloseConn(uint64) bool { return false }

// Stop ends the capture for good.
func (t *tapRunner) Stop(context.Context) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.stopped = true
	return t.stopLocked()
}

// Drain is Stop: there is nothing to wait for.
func (t *tapRunner) Drain(ctx context.Context) error { return t.Stop(ctx) }

// TapStats returns the capture's counts, of every capture so far.
func (t *tapRunner) TapStats() TapStats {
	t.mu.Lock()
	c, last := t.past, t.lastRead
	if t.cur != nil {
		c.add(t.cur.counts())
		if le := t.cur.lastError(); le != nil {
			last = le
		}
	}
	t.mu.Unlock()
	ps := t.obs.Stats()
	out := TapStats{
		Interface: t.iface, KernelPackets: c.kernelPackets, KernelDrops: c.kernelDrops,
		CaptureGaps: c.gaps, CaptureMissingBytes: c.missing,
		Resyncs: ps.Resyncs, ResyncSkippedBytes: ps.ResyncSkippedBytes, ReadErrors: c.readErrors,
	}
	if last != nil {
		out.LastReadError = last.Error()
	}
	return out
}
