package tap

import (
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/snoopd/snoopd/internal/afpacket"
	"github.com/snoopd/snoopd/proxy"
	"github.com/snoopd/snoopd/sniff"
)

// Config is what a Tap captures and how.
type Config struct {
	// Name is the name its events carry, as a proxy's do.
	Name string
	// Interface is the network interface to capture on ("lo", "eth0").
	Interface string
	// Server is the server whose connections are followed; its port is
	// also the kernel filter's.
	Server sniff.Server
	// CaptureData and CaptureLimit are the observer's, as a proxy's.
	CaptureData  bool
	CaptureLimit int
	// Ring shapes the capture ring; the zero value takes afpacket's
	// defaults.
	Ring afpacket.Options
	// Sniff bounds the reassembly; its Server is set from Server.
	Sniff sniff.Options
	// Observer, if set, is fed instead of one the tap makes (Name,
	// CaptureData and CaptureLimit are then the observer's): a daemon
	// keeps one per tap, so that its counters and connection ids go on
	// across a stop and a new start.
	Observer *proxy.Observer
}

// Stats are a Tap's counters.
type Stats struct {
	// Proxy holds the observer's counters: connections, bytes, frames,
	// results, latency, resyncs; the same as a proxy's.
	Proxy proxy.Stats
	// Kernel holds the capture's counts: packets, and those dropped
	// because the ring was full.
	Kernel afpacket.Stats
	// Capture holds the reassembly's counts: segments, capture gaps and
	// the bytes they missed, retransmissions.
	Capture sniff.Stats
	// ReadErrors counts failed reads of the ring (the interface went
	// down, for one); capture goes on after each.
	ReadErrors int64
}

// Tap is a live capture of one server's connections on one interface.
type Tap struct {
	cfg     Config
	src     *afpacket.Source
	sniffer *sniff.Sniffer
	obs     *proxy.Observer

	closing    chan struct{}
	done       chan struct{}
	closeOnce  sync.Once
	readErrors atomic.Int64

	mu      sync.Mutex
	lastErr error // the last read error, for the operator
}

// retryAfter is how long the reader waits after a failed read before it
// reads again, so that a lasting failure does not spin.
const retryAfter = 100 * time.Millisecond

// Start opens the capture and starts following the server's
// connections; their events go to sink.
func Start(cfg Config, sink proxy.Sink) (*Tap, error) {
	if cfg.Server.Port == 0 {
		return nil, errors.New("tap: the server has no port")
	}
	src, err := afpacket.Open(cfg.Interface, cfg.Server.Port, cfg.Ring)
	if err != nil {
		return nil, fmt.Errorf("tap %s: %w", cfg.Name, err)
	}
	if !sniff.CanDecode(src.LinkType()) {
		src.Close()
		return nil, fmt.Errorf("tap %s: packets of link type %s on %s cannot be decoded", cfg.Name, src.LinkType(), cfg.Interface)
	}
	obs := cfg.Observer
	if obs == nil {
		obs = proxy.NewObserver(cfg.Name, sink, proxy.ObserverOptions{CaptureData: cfg.CaptureData, CaptureLimit: cfg.CaptureLimit})
	}
	opts := cfg.Sniff
	opts.Server = cfg.Server
	t := &Tap{
		cfg:     cfg,
		src:     src,
		obs:     obs,
		sniffer: sniff.New(sniff.ObserverSink{Observer: obs, Events: sink}, opts),
		closing: make(chan struct{}),
		done:    make(chan struct{}),
	}
	go t.run()
	return t, nil
}

// run is the data path: every packet goes from the ring through the
// sniffer to the observer, which publishes what it completes.
func (t *Tap) run() {
	defer close(t.done)
	link := t.src.LinkType()
	for {
		data, ci, err := t.src.ZeroCopyReadPacketData()
		if errors.Is(err, io.EOF) {
			t.sniffer.Finish("tap stopped")
			return
		}
		if err != nil {
			t.readErrors.Add(1)
			t.mu.Lock()
			t.lastErr = err
			t.mu.Unlock()
			select {
			case <-t.closing:
			case <-time.After(retryAfter):
			}
			continue
		}
		t.sniffer.Packet(data, ci, link)
	}
}

// Name is the name the tap's events carry.
func (t *Tap) Name() string { return t.cfg.Name }

// Interface is the interface captured.
func (t *Tap) Interface() string { return t.cfg.Interface }

// Stats returns the tap's counters so far.
func (t *Tap) Stats() Stats {
	kernel, _ := t.src.Stats() // on an error, the counts read before it
	return Stats{
		Proxy:      t.obs.Stats(),
		Kernel:     kernel,
		Capture:    t.sniffer.Stats(),
		ReadErrors: t.readErrors.Load(),
	}
}

// LastError is the last failed read of the ring, or nil.
func (t *Tap) LastError() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.lastErr
}

// Close stops the capture: the connections still open are closed with
// reason "tap stopped", and Close returns once the reader has ended.
func (t *Tap) Close() error {
	var err error
	t.closeOnce.Do(func() {
		close(t.closing)
		// The reader may be in the sniffer with a packet still in the
		// ring: it sees io.EOF and ends before the ring is unmapped.
		if err = t.src.Stop(); err != nil {
			return
		}
		<-t.done
		err = t.src.Close()
	})
	return err
}
