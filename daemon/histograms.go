package daemon

import (
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
	"github.com/snoopd/snoopd/internal/apiconv"
	"github.com/snoopd/snoopd/proxy"
)

// addHistograms gives the described proxies their latency histograms, per
// proxy and per operation, for callers that asked (GetProxy and
// ListProxies with include_histograms: snoopctl top, scripts computing
// interval percentiles). The histograms are read just after the counters,
// so their counts may run a few transactions ahead of them.
func (d *Daemon) addHistograms(ps []*snoopv1.Proxy) {
	for _, p := range ps {
		name := p.GetSpec().GetName()
		e, err := d.lookup(name)
		if err != nil {
			continue
		}
		fillHistograms(p.GetCounters(), e.p.Stats())
	}
}

func fillHistograms(c *snoopv1.ProxyCounters, s proxy.Stats) {
	if c == nil {
		return
	}
	c.Histogram = apiconv.Histogram(&s.Latency)
	for _, oc := range c.GetOps() {
		if op, ok := apiconv.OpFromAPI(oc.GetOp()); ok {
			oc.Histogram = apiconv.Histogram(&s.LatencyOf[op])
		}
	}
}
