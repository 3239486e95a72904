package daemon

import (
	"fmt"

	"github.com/snoopd/snoopd/daemon/hub"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
	"github.com/snoopd/snoopd/match"
)

// acquireWatcher takes one of the MaxWatchers event-stream slots, or fails
// with ErrTooManyWatchers saying what the limit is and how to raise it. A
// stream that stops reading holds its last batch and gRPC's buffers (about
// 0.3 MB at a low rate, up to about 3 MB of RSS under heavy load, as the
// README's --max-watchers says and measures), so the limit is what bounds
// the memory that clients can make the daemon keep.
func (d *Daemon) acquireWatcher() (release func(), err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.watching >= d.cfg.MaxWatchers {
		return nil, fmt.Errorf("%w: this snoopd serves at most %d at once; end another watch, or start snoopd with a higher --max-watchers", ErrTooManyWatchers, d.cfg.MaxWatchers)
	}
	d.watching++
	return func() {
		d.mu.Lock()
		d.watching--
		d.mu.Unlock()
	}, nil
}

// watchOptions turns a watch request into the hub's watcher options. When
// the request names proxies, its history holds only the events of their
// current instances: a proxy deleted and created again under the same name
// does not pass off the old one's events as its own. A named proxy that
// does not exist (any more) keeps all of its history; its events carry
// their instance (Event.proxy_instance) all the same.
func (d *Daemon) watchOptions(req *snoopv1.WatchEventsRequest, f hub.Filter) hub.WatchOptions {
	o := hub.WatchOptions{Filter: f, History: int(req.GetHistory())}
	if o.History == 0 || len(req.GetProxies()) == 0 {
		return o
	}
	current := map[string]string{}
	d.reg.locked(func(h held) error {
		for _, name := range req.GetProxies() {
			if e, err := h.lookup(name); err == nil {
				current[name] = e.instance
			}
		}
		return nil
	})
	o.HistoryFilter = func(v *match.View, inst string) bool {
		cur, ok := current[v.Proxy]
		return !ok || inst == cur
	}
	return o
}
