package daemon

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// drainPoll is how often a draining delete looks whether the proxy's
// connections have ended. A drain lasts seconds to minutes, so a poll
// costs nothing that matters and keeps the proxy package out of it.
const drainPoll = 50 * time.Millisecond

// DeleteResult reports a deletion: how many connections ended on their own
// during the drain, and how many were still open when it ended and were
// closed.
type DeleteResult struct {
	Drained, Cut int64
}

// deletion is a delete in progress. A second delete of the same proxy (or
// one with force) cuts its drain short and waits for it to finish.
type deletion struct {
	force     chan struct{} // closed to end the drain now
	forceOnce sync.Once
	done      chan struct{} // closed when the delete has finished
	res       DeleteResult  // set before done is closed
	err       error         // set before done is closed: the delete was refused
	// counted is set once the listener is closed and the connections to
	// drain are counted: until then the proxy says it is closing its
	// listener, not how many it drains, so a connection that ends after
	// the proxy said "draining" is always counted as drained.
	counted atomic.Bool
}

func (del *deletion) cut() { del.forceOnce.Do(func() { close(del.force) }) }

// DeleteProxy deletes a proxy: it stops accepting at once, lets its live
// connections run on until they end, drain passes, the daemon's maximum
// drain (Config.MaxDrain) passes, the call's ctx ends, or another delete
// (or force) cuts it short; then it closes what is left, forgets the
// proxy and reports how many connections drained and how many were cut.
//
// A delete is never left half done: once it has started, it finishes even
// when ctx ends during the drain (that only cuts the drain short), so a
// caller whose deadline passed finds the proxy gone and the state saved,
// though the answer did not reach it. A ctx already ended when the call
// comes changes nothing. A delete of a proxy that another delete is
// draining cuts that drain and reports the same result once it is done.
func (d *Daemon) DeleteProxy(ctx context.Context, name string, drain time.Duration, force bool) (DeleteResult, error) {
	if err := ctx.Err(); err != nil {
		return DeleteResult{}, fmt.Errorf("delete proxy %q not started: %w", name, err)
	}
	c, e, del, running, err := d.reg.reserveDelete(name)
	if err != nil {
		return DeleteResult{}, err
	}
	if running {
		d.log.Info("delete of a draining proxy: cutting its drain", "proxy", name)
		del.cut()
		<-del.done
		return del.res, del.err
	}
	// The deletion is saved before the proxy is touched: a delete that
	// cannot be saved is refused with the proxy running, connections and
	// all, since stopping it cannot be undone.
	if err := c.commit(!e.ephemeral, func(h held) error { c.markRemoving(h, e); return nil }); err != nil {
		d.reg.locked(func(h held) error {
			e.deleting = nil
			c.releaseHeld(h)
			return nil
		})
		del.err = err
		close(del.done)
		return DeleteResult{}, err
	}
	if force {
		del.cut()
	}
	res := d.drainAndStop(ctx, e, del, drain)
	c.remove(name)
	c.release()
	del.res = res
	close(del.done)
	if ctx.Err() != nil {
		d.log.Warn("deleted proxy after its caller went away during the drain; what was left was cut", "proxy", name,
			"drained", res.Drained, "cut", res.Cut)
	} else {
		d.log.Info("deleted proxy", "proxy", name, "drained", res.Drained, "cut", res.Cut)
	}
	return res, nil
}

// drainAndStop closes the proxy's listener, waits for its connections to
// end (see DeleteProxy for what ends the wait), and stops it, closing what
// is left. The counts compare the live connections when the listener
// closed with those still open when the wait ended.
func (d *Daemon) drainAndStop(ctx context.Context, e *entry, del *deletion, drain time.Duration) DeleteResult {
	name := e.spec.GetName()
	e.p.Disable(false)
	before := int64(len(e.p.Conns()))
	del.counted.Store(true)
	left := before
	if drain > 0 && before > 0 {
		limit := min(drain, d.cfg.MaxDrain)
		d.log.Info("draining proxy", "proxy", name, "connections", before, "for", limit.String())
		dctx, cancel := context.WithTimeout(context.Background(), limit)
		// The caller's end ends the drain, not the delete.
		stop := context.AfterFunc(ctx, cancel)
		left = waitConns(dctx, del.force, e.p)
		stop()
		cancel()
	}
	sctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
	defer cancel()
	if err := e.p.Stop(sctx); err != nil {
		d.log.Warn("proxy did not stop in time; its connections end as their sockets close", "proxy", name, "err", err)
	}
	return DeleteResult{Drained: before - left, Cut: left}
}

// waitConns waits until p has no live connection, ctx is done or force is
// closed, and returns how many connections are live then.
func waitConns(ctx context.Context, force <-chan struct{}, p runner) int64 {
	t := time.NewTicker(drainPoll)
	defer t.Stop()
	for {
		if len(p.Conns()) == 0 {
			return 0
		}
		select {
		case <-ctx.Done():
		case <-force:
		case <-t.C:
			continue
		}
		return int64(len(p.Conns()))
	}
}

// drainingNote says, for describe, that a proxy is being deleted.
func drainingNote(p runner, del *deletion) string {
	if !del.counted.Load() {
		return "being deleted: closing its listener"
	}
	return fmt.Sprintf("being deleted: draining %d connections; delete it again, or with force, to close them now", len(p.Conns()))
}
