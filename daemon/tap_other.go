//go:build !linux

package daemon

import (
	"errors"

	"github.com/snoopd/snoopd/proxy"
	"github.com/snoopd/snoopd/sniff"
)

// errTapNeedsLinux refuses a tap where there is no AF_PACKET.
var errTapNeedsLinux = errors.New("a tap captures through AF_PACKET, which only Linux has")

// startCapture refuses: taps need Linux.
func startCapture(string, sniff.Server, *proxy.Observer, proxy.Sink) (tapCapture, error) {
	return nil, &FieldError{Field: "tap_interface", Reason: errTapNeedsLinux.Error(), Err: errTapNeedsLinux}
}
