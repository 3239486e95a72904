package daemon

import (
	"sort"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/snoopd/snoopd/distcache"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
	"github.com/snoopd/snoopd/internal/apiconv"
	"github.com/snoopd/snoopd/proxy"
)

func counters(s proxy.Stats) *snoopv1.ProxyCounters {
	c := &snoopv1.ProxyCounters{
		ConnectionsActive:  s.ConnsActive,
		ConnectionsTotal:   s.ConnsTotal,
		ConnectionsRefused: s.ConnsRefused,
		ConnectFailures:    s.ConnectFailed,
		ProtocolErrors:     s.ProtocolErrors,
		Timeouts:           s.Timeouts,
		LoopRefusals:       s.LoopRefusals,
		LoopEchoes:         s.LoopEchoes,
		BytesUp:            s.BytesUp,
		BytesDown:          s.BytesDown,
		FramesUp:           s.FramesUp,
		FramesDown:         s.FramesDown,
		Transactions:       s.Transactions(),
		Latency:            apiconv.LatencySummary(&s.Latency),
		Faults:             faultCounters(s.Faults),
		SparesDialled:      s.SparesDialled,
		SpareFailures:      s.SpareFailures,
		SparesLost:         s.SparesLost,
	}
	ops := make([]distcache.Op, 0, len(s.Results))
	for op := range s.Results {
		ops = append(ops, op)
	}
	sort.Slice(ops, func(i, j int) bool { return ops[i] < ops[j] })
	for _, op := range ops {
		oc := &snoopv1.OpCounters{Op: apiconv.Op(op), Results: map[string]int64{}, Latency: apiconv.LatencySummary(&s.LatencyOf[op])}
		for r, n := range s.Results[op] {
			oc.Results[r] = n
			oc.Count += n
		}
		c.Ops = append(c.Ops, oc)
	}
	return c
}

// minDuration reads an optional duration, nil as zero.
func minDuration(d *durationpb.Duration) time.Duration {
	if d == nil {
		return 0
	}
	return d.AsDuration()
}

// fillAnswer sets the fields every answer that carries a proxy has
// beside its spec: the listen address split into host and port (or path),
// so scripts need not parse the libnal form, and the effective spec.
func fillAnswer(out *snoopv1.Proxy, spec *snoopv1.ProxySpec, listen distcache.Addr) {
	switch listen.Network() {
	case distcache.NetworkTCP:
		out.ListenHost, out.ListenPort = listen.Host(), uint32(listen.Port())
	case distcache.NetworkUnix:
		out.ListenPath = listen.Path()
	}
	out.EffectiveSpec = effectiveSpec(spec)
}

// effectiveSpec is a normalised spec with every default the proxy package
// fills in written out, so a script sees what the proxy runs with. It
// mirrors proxy.Options' defaults; explicit zeros that mean "off" (spare
// connections, the three timeouts) stay zero.
func effectiveSpec(spec *snoopv1.ProxySpec) *snoopv1.ProxySpec {
	out := proto.Clone(spec).(*snoopv1.ProxySpec)
	if out.Enabled == nil {
		out.Enabled = proto.Bool(true)
	}
	if out.CaptureLimit == 0 {
		out.CaptureLimit = proxy.DefaultCaptureLimit
	}
	if isTap(out) {
		return out // the rest are a proxy's, which a tap does not have
	}
	if out.OnCorrupt == snoopv1.CorruptPolicy_CORRUPT_POLICY_UNSPECIFIED {
		out.OnCorrupt = snoopv1.CorruptPolicy_CORRUPT_POLICY_CLOSE
	}
	if out.SocketMode == 0 {
		out.SocketMode = uint32(proxy.DefaultSocketMode)
	}
	if out.SpareConnections == nil {
		out.SpareConnections = proto.Uint32(proxy.DefaultSpares)
	}
	if d := out.GetDialTimeout(); d == nil || d.AsDuration() <= 0 {
		out.DialTimeout = durationpb.New(proxy.DefaultDialTimeout)
	}
	for _, t := range []struct {
		d   **durationpb.Duration
		def time.Duration
	}{
		{&out.IdleTimeout, proxy.DefaultIdleTimeout},
		{&out.MessageTimeout, proxy.DefaultMessageTimeout},
		{&out.ResponseTimeout, proxy.DefaultResponseTimeout},
	} {
		if *t.d == nil {
			*t.d = durationpb.New(t.def)
		}
	}
	// The faults with their defaults (direction, probability, the ops and
	// status a miss or an ADD error implies), as the proxy runs them. The
	// spec was validated, so they convert.
	if _, faults, err := faultSpecs(out.GetFaults()); err == nil {
		out.Faults = faults
	}
	return out
}

// tapCounters renders a tap's own counters.
func tapCounters(s TapStats) *snoopv1.TapCounters {
	return &snoopv1.TapCounters{
		KernelPackets: s.KernelPackets, KernelDrops: s.KernelDrops,
		CaptureGaps: s.CaptureGaps, CaptureMissingBytes: s.CaptureMissingBytes,
		Resyncs: s.Resyncs, ResyncSkippedBytes: s.ResyncSkippedBytes,
		ReadErrors: s.ReadErrors, LastReadError: s.LastReadError,
	}
}
