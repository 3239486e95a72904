package proxy

import (
	"errors"
	"fmt"
	"slices"
	"time"
)

// Fault injection: a proxy may carry faults that change the traffic they
// match (hold it, replace an answer, close the connection, pace it, damage
// a header). The proxy keeps its compiled faults in an atomic pointer that
// is nil when it has none; the epoll engine loads it once per read, and
// with nil the data path is what it is without faults. Decisions are made
// on the loop that serves the message's connection, at each message's
// end, in message order, from each fault's own seeded random sequence,
// which all the proxy's loops draw from in the order they reach it: the
// same traffic in the same order gets the same choices again (clients
// that take turns fix that order; concurrent clients on several loops
// may interleave their draws differently from run to run).
//
// This file is the proxy's side (SetFaults, Faults); fault_spec.go checks
// specs, fault_compile.go compiles them into a set, fault_decide.go
// decides on messages, and lfault_linux.go is the epoll engine's carrying
// out of the verdicts (the assembler's fault step hands them over).

// ErrFaultsNeedEpoll is returned when faults are given to a proxy served
// by an engine other than epoll.
var ErrFaultsNeedEpoll = errors.New("faults need the epoll engine (snoopd --engine epoll)")

// FaultStats are one fault's counters.
type FaultStats struct {
	Name string
	// Matched counts messages its ops, direction and filter selected;
	// Applied those it was applied to.
	Matched, Applied int64
}

// SetFaults replaces the proxy's faults. It takes effect at once, on live
// connections too: each reads the set anew at its next read, and what a
// fault that left the set (removed, changed, cleared) holds is released
// at once, in order. A fault whose spec is unchanged keeps its state
// (random sequence, budget, counters, held messages). Faults need the
// epoll engine.
func (p *Proxy) SetFaults(specs []FaultSpec) error {
	if len(specs) > 0 && p.engine.Name() != EngineEpoll {
		return fmt.Errorf("proxy %q: %w", p.name, ErrFaultsNeedEpoll)
	}
	p.faultMu.Lock()
	defer p.faultMu.Unlock()
	old := p.faults.Load()
	fs, err := compileFaults(specs, old, time.Now())
	if err != nil {
		return fmt.Errorf("%w: proxy %q: %w", ErrInvalidConfig, p.name, err)
	}
	p.faults.Store(fs)
	left := false
	for _, f := range old.list() {
		if !slices.Contains(fs.list(), f) {
			f.gone.Store(true)
			left = true
		}
	}
	if left {
		// Held messages wait on their connection's timer, which may be
		// an hour away: every connection looks at its holds now.
		p.mu.Lock()
		list := p.connListLocked()
		p.mu.Unlock()
		for _, c := range list {
			if c.recheckFaults != nil {
				c.recheckFaults()
			}
		}
	}
	return nil
}

// Faults returns the proxy's fault specs, with defaults filled in.
func (p *Proxy) Faults() []FaultSpec {
	fs := p.faults.Load()
	if fs == nil {
		return nil
	}
	out := make([]FaultSpec, len(fs.faults))
	for i, f := range fs.faults {
		out[i] = f.spec
		out[i].Ops = slices.Clone(f.spec.Ops)
	}
	return out
}

func (fs *faultSet) stats() []FaultStats {
	if fs == nil {
		return nil
	}
	return fs.appendStats(make([]FaultStats, 0, len(fs.faults)))
}

// appendStats appends the faults' counters to dst.
func (fs *faultSet) appendStats(dst []FaultStats) []FaultStats {
	if fs == nil {
		return dst
	}
	for _, f := range fs.faults {
		dst = append(dst, FaultStats{Name: f.spec.Name, Matched: f.matched.Load(), Applied: f.applied.Load()})
	}
	return dst
}
