// Package endpoint knows where snoopd's control API listens by default and
// how a control address is written, so that the daemon and snoopctl agree
// without either importing the other.
package endpoint

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/snoopd/snoopd/distcache"
)

// EnvAddress is the environment variable snoopctl reads for the daemon's
// address.
const EnvAddress = "SNOOPD_ADDRESS"

// DefaultSocket returns the default control socket:
// $XDG_RUNTIME_DIR/snoopd.sock, or /tmp/snoopd-<uid>/snoopd.sock when that
// variable is unset.
func DefaultSocket() string {
	if dir := os.Getenv("XDG_RUNTIME_DIR"); dir != "" {
		return filepath.Join(dir, "snoopd.sock")
	}
	return filepath.Join(os.TempDir(), fmt.Sprintf("snoopd-%d", os.Getuid()), "snoopd.sock")
}

// DefaultAddr is DefaultSocket as an address.
func DefaultAddr() distcache.Addr {
	return distcache.MustParseAddr("UNIX:" + DefaultSocket())
}

// Parse reads a control address in any form distcache.ParseAddr takes:
// UNIX:/path, unix:///path, IP:host:port, host:port.
func Parse(s string) (distcache.Addr, error) {
	a, err := distcache.ParseAddr(s)
	if err != nil {
		return distcache.Addr{}, fmt.Errorf("control address: %w", err)
	}
	return a, nil
}

// DialTarget is the gRPC target for a control address a.
func DialTarget(a distcache.Addr) string {
	if a.Network() == distcache.NetworkUnix {
		return "unix://" + a.Path()
	}
	return "passthrough:///" + a.NetAddr()
}

// Display writes a control address the way error messages show it:
// unix:///path or host:port.
func Display(a distcache.Addr) string {
	if a.Network() == distcache.NetworkUnix {
		return "unix://" + a.Path()
	}
	return a.NetAddr()
}
