package ctl

import (
	"context"
	"sync"
	"time"

	"github.com/snoopd/snoopd/ctl/sessions"
	"github.com/snoopd/snoopd/ctl/top"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
)

// sessionWatch is top's sessions view over daemons (one, or several with
// -a): a watch of their transactions, opened the first time the view
// asks, so that top without the view costs the daemons no watcher, and
// counted until top ends.
type sessionWatch struct {
	ctx  context.Context
	open func() (eventSource, error)

	// mu guards the rest: a poll still running when the live view ends
	// may call Sessions while Close runs.
	mu      sync.Mutex
	counter *sessions.Counter // nil until the watch is opened
	src     eventSource
	cancel  context.CancelFunc
	done    chan struct{}
	err     error // why the watch ended
	closed  bool
}

var _ top.SessionSource = (*sessionWatch)(nil)

// topSessionWatch returns the sessions view's source for the daemons top
// polls. It watches transactions only, as only they carry a session.
func (e *env) topSessionWatch(ctx context.Context) *sessionWatch {
	req := &snoopv1.WatchEventsRequest{Kinds: []snoopv1.EventKind{snoopv1.EventKind_EVENT_KIND_TRANSACTION}, MaxBatch: watchBatch}
	return &sessionWatch{ctx: ctx, open: func() (eventSource, error) {
		if e.multi() {
			return e.openMany(ctx, req)
		}
		c, err := e.dial()
		if err != nil {
			return nil, err
		}
		return &daemonSource{e: e, c: c, req: req}, nil
	}}
}

// Sessions implements top.SessionSource. The first call opens the watch.
func (w *sessionWatch) Sessions(context.Context) (*sessions.Table, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return nil, context.Canceled
	}
	if w.counter == nil {
		src, err := w.open()
		if err != nil {
			return nil, err // tried again at the next refresh
		}
		w.src, w.counter, w.done = src, sessions.NewCounter(sessions.DefaultCounters, time.Now()), make(chan struct{})
		ctx, cancel := context.WithCancel(w.ctx)
		w.cancel = cancel
		go w.run(ctx, src, w.counter)
	}
	if w.err != nil {
		return nil, w.err
	}
	return w.counter.Take(time.Now()), nil
}

func (w *sessionWatch) run(ctx context.Context, src eventSource, counter *sessions.Counter) {
	defer close(w.done)
	_, err := src.stream(ctx, streamOptions{action: "top's sessions"}, func(r *snoopv1.WatchEventsResponse) error {
		if ev := r.GetEvent(); ev != nil {
			counter.Add(ev)
		} else {
			counter.Dropped(r.GetDropped())
		}
		return nil
	})
	if err != nil && ctx.Err() == nil {
		w.mu.Lock()
		w.err = err
		w.mu.Unlock()
	}
}

// Close ends the watch, if it was opened.
func (w *sessionWatch) Close() {
	w.mu.Lock()
	w.closed = true
	src, cancel, done := w.src, w.cancel, w.done
	w.mu.Unlock()
	if src == nil {
		return
	}
	cancel()
	<-done // run may take mu to record an error: not held here
	src.Close()
}
