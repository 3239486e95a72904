package proxy

import (
	"context"
	"sync"
)

// activity counts what a proxy has running (its accept loops and
// connections), as a sync.WaitGroup does, and can be waited for within a
// context without a goroutine of its own: a WaitGroup's Wait cannot be
// abandoned, so waiting for one with a deadline left a goroutine behind
// until the count drained, however long that took.
type activity struct {
	mu sync.Mutex
	n  int
	// idle is closed when n falls to zero; nil while n is zero.
	idle chan struct{}
}

// Add adds d, which may be negative, to the count.
func (a *activity) Add(d int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.n == 0 && d > 0 {
		a.idle = make(chan struct{})
	}
	a.n += d
	switch {
	case a.n < 0:
		panic("proxy: activity count below zero")
	case a.n == 0 && a.idle != nil:
		close(a.idle)
		a.idle = nil
	}
}

// Done takes one from the count.
func (a *activity) Done() { a.Add(-1) }

// Wait waits until the count is zero or ctx is done.
func (a *activity) Wait(ctx context.Context) error {
	a.mu.Lock()
	idle := a.idle
	a.mu.Unlock()
	if idle == nil {
		return nil
	}
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
