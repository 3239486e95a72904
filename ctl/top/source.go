package top

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
)

// Snapshot is one poll: every proxy with its cumulative counters and
// latency histograms (ProxyCounters.histogram, OpCounters.histogram), and
// what is known of where they came from.
type Snapshot struct {
	// At is when the poll was answered.
	At time.Time
	// Source names where the numbers come from: a daemon's name, or its
	// address when it has none.
	Source string
	// Version is the daemon's version, if known.
	Version string
	// Started is when the source started (the daemon's start time), zero
	// if unknown.
	Started time.Time
	// Proxies are the proxies, with histograms.
	Proxies []*snoopv1.Proxy
	// Daemons, when set, names each proxy's daemon (Daemons[i] ran
	// Proxies[i]), for a source that sees a fleet, where proxies of
	// different daemons may share a name.
	Daemons []string
	// Since, when set, is when counting began: the counters are then not
	// the proxies' own since their creation but what an event-counting
	// source (EventCounter) has seen since it subscribed, and each proxy's
	// create_time is Since.
	Since time.Time
	// Dropped counts the events the source lost (a slow consumer): the
	// counters miss them.
	Dropped uint64
	// Notes say what is wrong with the source while it goes on (a lost
	// connection being re-made, events dropped), one line each.
	Notes []string
}

// Source gives snapshots on demand. Snapshot is called from one goroutine
// at a time, once per refresh.
type Source interface {
	Snapshot(ctx context.Context) (*Snapshot, error)
}

// APISource polls one daemon through its control API: GetDaemonInfo (so a
// restarted daemon shows its new uptime) and ListProxies with histograms,
// per snapshot.
type APISource struct {
	Proxies snoopv1.ProxyServiceClient
	Daemon  snoopv1.DaemonServiceClient
	// Address names the daemon when it reports no name.
	Address string
}

// Snapshot implements Source.
func (s *APISource) Snapshot(ctx context.Context) (*Snapshot, error) {
	info, err := s.Daemon.GetDaemonInfo(ctx, &snoopv1.GetDaemonInfoRequest{})
	if err != nil {
		return nil, fmt.Errorf("daemon info: %w", err)
	}
	r, err := s.Proxies.ListProxies(ctx, &snoopv1.ListProxiesRequest{IncludeHistograms: true})
	if err != nil {
		return nil, fmt.Errorf("list proxies: %w", err)
	}
	snap := &Snapshot{
		At:      time.Now(),
		Source:  info.GetName(),
		Version: info.GetVersion(),
		Proxies: r.GetProxies(),
	}
	if snap.Source == "" {
		snap.Source = s.Address
	}
	if t := info.GetStartTime(); t != nil {
		snap.Started = t.AsTime()
	}
	return snap, nil
}

// FleetSource polls several daemons' sources at once and merges their
// snapshots into one, naming each proxy's daemon by its source's name
// (Snapshot.Source), so that rows of daemons whose proxies share a name
// stay apart. The first source that fails fails the snapshot, as one
// daemon's failure ends top on one daemon.
type FleetSource struct {
	Sources []Source
}

// Snapshot implements Source.
func (f *FleetSource) Snapshot(ctx context.Context) (*Snapshot, error) {
	snaps := make([]*Snapshot, len(f.Sources))
	errs := make([]error, len(f.Sources))
	var wg sync.WaitGroup
	for i, s := range f.Sources {
		wg.Go(func() { snaps[i], errs[i] = s.Snapshot(ctx) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err // one line: the first daemon's in order
		}
	}
	out := &Snapshot{}
	var names []string
	for _, s := range snaps {
		if s.At.After(out.At) {
			out.At = s.At
		}
		names = append(names, s.Source)
		for _, p := range s.Proxies {
			out.Proxies = append(out.Proxies, p)
			out.Daemons = append(out.Daemons, s.Source)
		}
		out.Dropped += s.Dropped
		out.Notes = append(out.Notes, s.Notes...)
	}
	out.Source = strings.Join(names, ", ")
	return out, nil
}
