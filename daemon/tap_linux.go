package daemon

import (
	"errors"

	"github.com/snoopd/snoopd/internal/afpacket"
	"github.com/snoopd/snoopd/proxy"
	"github.com/snoopd/snoopd/sniff"
	"github.com/snoopd/snoopd/tap"
)

// liveTap is a capture by package tap.
type liveTap struct{ t *tap.Tap }

func (l liveTap) counts() captureCounts {
	s := l.t.Stats()
	return captureCounts{
		kernelPackets: s.Kernel.Packets, kernelDrops: s.Kernel.Drops,
		gaps: s.Capture.Gaps, missing: s.Capture.BytesSkipped, readErrors: s.ReadErrors,
	}
}

func (l liveTap) lastError() error { return l.t.LastError() }
func (l liveTap) close() error     { return l.t.Close() }

// startCapture starts capturing server's connections on iface into obs.
// A process without CAP_NET_RAW is refused with afpacket's one line, as
// a permission error on tap_interface; any other failure to open the
// capture (no such interface, one whose packets cannot be decoded) is
// that field's fault.
func startCapture(iface string, server sniff.Server, obs *proxy.Observer, sink proxy.Sink) (tapCapture, error) {
	t, err := tap.Start(tap.Config{Name: obs.Name(), Interface: iface, Server: server, Observer: obs}, sink)
	switch {
	case errors.Is(err, afpacket.ErrNeedCapNetRaw):
		return nil, &FieldError{Field: "tap_interface", Reason: afpacket.ErrNeedCapNetRaw.Error(), Err: err, Permission: true}
	case err != nil:
		return nil, &FieldError{Field: "tap_interface", Reason: "cannot capture: " + err.Error(), Err: err}
	}
	return liveTap{t}, nil
}
