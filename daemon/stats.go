package daemon

import (
	"slices"
	"strings"
	"time"

	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
	"github.com/snoopd/snoopd/proxy"
)

// ProxyState is where a proxy stands.
type ProxyState uint8

// Proxy states.
const (
	// ProxyListening: the proxy accepts clients.
	ProxyListening ProxyState = iota + 1
	// ProxyDisabled: switched off on purpose.
	ProxyDisabled
	// ProxyFailed: enabled, but not listening (its bind failed).
	ProxyFailed
)

var proxyStateNames = [...]string{ProxyListening: "listening", ProxyDisabled: "disabled", ProxyFailed: "failed"}

// String returns the state's name: "listening", "disabled" or "failed".
func (s ProxyState) String() string {
	if s > 0 && int(s) < len(proxyStateNames) {
		return proxyStateNames[s]
	}
	return "unknown"
}

// ProxyStates lists the states in the order the API declares them.
func ProxyStates() []ProxyState { return []ProxyState{ProxyListening, ProxyDisabled, ProxyFailed} }

// api is the state as the API's enum.
func (s ProxyState) api() snoopv1.ProxyState {
	switch s {
	case ProxyListening:
		return snoopv1.ProxyState_PROXY_STATE_LISTENING
	case ProxyDisabled:
		return snoopv1.ProxyState_PROXY_STATE_DISABLED
	case ProxyFailed:
		return snoopv1.ProxyState_PROXY_STATE_FAILED
	}
	return snoopv1.ProxyState_PROXY_STATE_UNSPECIFIED
}

// ProxyStats is one proxy as an exporter reads it: its addresses, its
// state and the proxy's own counters and latency histogram, with no API
// message in between.
type ProxyStats struct {
	Name string
	// Listen is the address the proxy listens on, a port 0 replaced by
	// the real port once bound (the API's listen_address).
	Listen string
	// Server is the server address as declared.
	Server string
	State  ProxyState
	Stats  proxy.Stats
	// Conditions name what is wrong with the proxy now (see
	// proxy.Proxy.Conditions).
	Conditions []string
	// Tap is set for a tap only (Listen is then ""): what its capture
	// saw and missed.
	Tap *TapStats
}

// Stats describes the daemon as a whole.
type Stats struct {
	Version         string
	Started         time.Time
	Proxies         int
	Watchers        int
	EventsPublished uint64
	// Export is the NATS exporter's counters; nil without --export.
	Export *ExportCounters
}

// ExportCounters are the NATS exporter's figures (see daemon/export).
type ExportCounters struct {
	Servers, Stream             string
	Connected                   bool
	Published, Dropped, Matched uint64
}

// Stats returns the daemon's own figures.
func (d *Daemon) Stats() Stats {
	var n int
	d.reg.locked(func(h held) error { n = len(h.live()); return nil })
	d.mu.Lock()
	x := d.export
	d.mu.Unlock()
	st := Stats{
		Version:         Version,
		Started:         d.started,
		Proxies:         n,
		Watchers:        d.hub.Watchers(),
		EventsPublished: d.hub.Published(),
	}
	if x != nil {
		e := x.Stats()
		st.Export = &ExportCounters{Servers: e.GetServers(), Stream: e.GetStream(), Connected: e.GetConnected(),
			Published: e.GetPublished(), Dropped: e.GetDropped(), Matched: e.GetMatched()}
	}
	return st
}

// EachProxy reads the proxies one at a time, in name order, into one
// ProxyStats that it reuses from one proxy to the next, and calls f with
// it; f must not keep it, or anything it holds, past its return. It stops
// early when f returns false. The latency histograms are read only when
// latency is set (they are most of the cost of a read); otherwise they
// are left as the previous proxy's read left them. A proxy created during
// the walk may be missed, and one deleted during it may still be read.
// The exporter calls it once per metric family, so the memory it needs
// does not grow with the number of proxies beyond the sorted list.
func (d *Daemon) EachProxy(latency bool, f func(*ProxyStats) bool) {
	var es []named
	d.reg.locked(func(h held) error {
		for _, e := range h.live() {
			es = append(es, named{e.spec.GetName(), e})
		}
		return nil
	})
	slices.SortFunc(es, func(a, b named) int { return strings.Compare(a.name, b.name) })
	ps := new(ProxyStats)
	now := time.Now() // one clock for the pass: a scrape is a moment
	for _, n := range es {
		spec, state, _ := d.proxyState(n.e)
		ps.Name, ps.Listen, ps.Server, ps.State = spec.GetName(), n.e.p.Addr().String(), spec.GetServer(), state
		n.e.p.ReadStats(&ps.Stats, latency)
		ps.Conditions = n.e.p.Conditions(now)
		ps.Tap = nil
		if t, ok := n.e.p.(*tapRunner); ok {
			ts := t.TapStats()
			ps.Tap = &ts
		}
		if !f(ps) {
			return
		}
	}
}

// proxyState reads a proxy's spec and works out its state; bindErr is the last
// bind error of a failed proxy, if any.
func (d *Daemon) proxyState(e *entry) (spec *snoopv1.ProxySpec, state ProxyState, bindErr error) {
	var deleting bool
	d.reg.locked(func(held) error {
		spec, bindErr = e.spec, e.bindErr
		deleting = e.deleting != nil
		return nil
	})
	switch {
	case deleting:
		// Being deleted: it accepts nobody any more, whatever its spec.
		return spec, ProxyDisabled, nil
	case e.p.Listening():
		return spec, ProxyListening, nil
	case !enabledOf(spec):
		return spec, ProxyDisabled, nil
	}
	return spec, ProxyFailed, bindErr
}
