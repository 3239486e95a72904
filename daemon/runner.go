package daemon

import (
	"context"
	"time"

	"github.com/snoopd/snoopd/distcache"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
	"github.com/snoopd/snoopd/proxy"
)

// runner is what the registry holds for each name: a proxy in the
// traffic's path (*proxy.Proxy) or a tap beside it (*tapRunner). The
// registry, the API, the state file, the stats and the hub treat both
// alike through it; the few places that differ ask isTap.
type runner interface {
	// Start begins listening (a tap: capturing); Enable does so again
	// after Disable.
	Start() error
	Enable() error
	Disable(closeConns bool)
	// Listening reports whether it listens (a tap: captures).
	Listening() bool
	// Addr is the listen address; a tap's is the zero Addr.
	Addr() distcache.Addr
	SetServer(distcache.Addr) error
	SetOptions(proxy.Options) error
	SetFaults([]proxy.FaultSpec) error
	Stats() proxy.Stats
	ReadStats(s *proxy.Stats, latency bool)
	Conditions(now time.Time) []string
	Conns() []proxy.ConnInfo
	CloseConn(id uint64) bool
	Stop(ctx context.Context) error
	Drain(ctx context.Context) error
}

var (
	_ runner = (*proxy.Proxy)(nil)
	_ runner = (*tapRunner)(nil)
)

// isTap reports whether spec declares a tap rather than a proxy.
func isTap(spec *snoopv1.ProxySpec) bool { return spec.GetTapInterface() != "" }

// kindOf is spec's kind, as Proxy.kind says it.
func kindOf(spec *snoopv1.ProxySpec) snoopv1.ProxyKind {
	if isTap(spec) {
		return snoopv1.ProxyKind_PROXY_KIND_TAP
	}
	return snoopv1.ProxyKind_PROXY_KIND_PROXY
}
