package daemon

import (
	"sort"
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
	d.mu.Lock()
	n := 0
	for _, e := range d.proxies {
		if !e.placeholder {
			n++
		}
	}
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

// ProxyStats reads every proxy's counters, sorted by name.
func (d *Daemon) ProxyStats() []ProxyStats {
	es := d.liveEntries()
	now := time.Now()
	out := make([]ProxyStats, 0, len(es))
	for _, e := range es {
		spec, state, _ := d.proxyState(e)
		out = append(out, ProxyStats{
			Name:   spec.GetName(),
			Listen: e.p.Addr().String(),
			Server: spec.GetServer(),
			State:  state,
			Stats:  e.p.Stats(),
			// One clock for the snapshot: a scrape is a moment.
			Conditions: e.p.Conditions(now),
		})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// proxyState reads a proxy's spec and works out its state; bindErr is the last
// bind error of a failed proxy, if any.
func (d *Daemon) proxyState(e *entry) (spec *snoopv1.ProxySpec, state ProxyState, bindErr error) {
	d.mu.Lock()
	spec, bindErr = e.spec, e.bindErr
	deleting := e.deleting != nil
	d.mu.Unlock()
	switch {
	case deleting:
		// Being deleted: it accepts nobody any more, whatever its spec.
		return spec, ProxyDisabled, nil
	case e.p.Listening():
		return spec, ProxyListening, nil
	case !spec.GetEnabled():
		return spec, ProxyDisabled, nil
	}
	return spec, ProxyFailed, bindErr
}
