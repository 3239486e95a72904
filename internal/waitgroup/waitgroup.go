// Package waitgroup is a sync.WaitGroup that can be waited for within a
// context: a proxy's Stop and a cache server's Shutdown wait for their
// goroutines until a deadline, then give up (or close what is left).
//
// A WaitGroup's Wait cannot be abandoned, so waiting for one with a
// deadline takes a goroutine that stays behind until the count drains,
// however long that takes; a Group's Wait leaves nothing behind.
package waitgroup

import (
	"context"
	"sync"
)

// Group counts what is running, as a sync.WaitGroup does. The zero value
// is an empty group.
type Group struct {
	mu sync.Mutex
	n  int
	// idle is closed when n falls to zero; nil while n is zero.
	idle chan struct{}
}

// Add adds d, which may be negative, to the count.
func (a *Group) Add(d int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.n == 0 && d > 0 {
		a.idle = make(chan struct{})
	}
	a.n += d
	switch {
	case a.n < 0:
		panic("waitgroup: count below zero")
	case a.n == 0 && a.idle != nil:
		close(a.idle)
		a.idle = nil
	}
}

// Done takes one from the count.
func (a *Group) Done() { a.Add(-1) }

// Wait waits until the count is zero, or ctx is done and returns
// ctx.Err().
func (a *Group) Wait(ctx context.Context) error {
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
