package waitgroup

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// An empty group is waited for at once, even with a context already done.
func TestWaitOnEmptyGroupReturnsAtOnce(t *testing.T) {
	var g Group
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := g.Wait(ctx); err != nil {
		t.Fatalf("Wait on an empty group: %v", err)
	}
	g.Add(2)
	g.Done()
	g.Done()
	if err := g.Wait(ctx); err != nil {
		t.Fatalf("Wait on a drained group: %v", err)
	}
}

// Wait returns when the last Done comes from another goroutine.
func TestWaitReturnsWhenTheCountDrains(t *testing.T) {
	var g Group
	g.Add(3)
	for range 3 {
		go func() {
			time.Sleep(10 * time.Millisecond)
			g.Done()
		}()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := g.Wait(ctx); err != nil {
		t.Fatalf("Wait: %v", err)
	}
}

// A Wait whose context ends first returns the context's error and leaves
// no goroutine behind, though the count never drains.
func TestWaitThatTimesOutLeavesNoGoroutine(t *testing.T) {
	defer goleak.VerifyNone(t)
	var g Group
	g.Add(1)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := g.Wait(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait = %v, want the deadline's error", err)
	}
}

// Taking more than was added is a bug in the caller, said at once.
func TestDoneBelowZeroPanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("Done on an empty group did not panic")
		}
	}()
	var g Group
	g.Done()
}
