package proxy

import (
	"strings"
	"testing"

	"github.com/snoopd/snoopd/distcache"
	"github.com/snoopd/snoopd/internal/skip"
)

// BenchmarkProxyPathFaults is BenchmarkProxyPath on a proxy with faults:
// "removed" had one and has none now (the path must be the no-fault
// one), "idle" has one that applies to nothing the load sends (REMOVE
// answers), so the answers are buffered whole and decided on, and
// "miss" replaces every answer. "costly-filter" has one whose filter is
// about as expensive as a fault filter may be (match.MaxFaultCost) and
// never true, so it is evaluated for every answer and changes none: the
// difference from "idle" is what the filter costs the event loop.
func BenchmarkProxyPathFaults(b *testing.B) {
	if testEngine.Name() != EngineEpoll {
		skip.ByDesign(b, "faults need the epoll engine: run with the epoll suite")
	}
	for _, c := range []struct {
		name   string
		faults []FaultSpec
		keep   bool
	}{
		{"removed", []FaultSpec{{Name: "f", Type: FaultMiss, Probability: 1}}, false},
		{"idle", []FaultSpec{{Name: "f", Type: FaultError, Status: distcache.StatusNotOK, Ops: []distcache.Op{distcache.OpRemove}, Probability: 1}}, true},
		{"costly-filter", []FaultSpec{{Name: "f", Type: FaultError, Status: distcache.StatusNotOK, Probability: 1, Filter: costlyFaultFilter}}, true},
	} {
		b.Run(c.name, func(b *testing.B) {
			benchPath(b, func(p *Proxy) {
				if err := p.SetFaults(c.faults); err != nil {
					b.Fatal(err)
				}
				if !c.keep {
					p.SetFaults(nil)
				}
			})
		})
	}
}

// costlyFaultFilter is never true and costs nearly what a fault filter
// may: sixteen terms of three units each.
var costlyFaultFilter = strings.TrimSuffix(strings.Repeat(`conn + 1u == 0u || `, 16), " || ")
