package proxy

import (
	"time"

	"github.com/snoopd/snoopd/internal/heap"
)

// timerHeap is an event loop's timers: dial deadlines, the timeouts of
// its connections, spare refills, a paused listener (and, for fault
// injection, held messages). Each owner has at most one entry, which it
// re-arms when it fires; a connection checks its timeouts at most every
// minTimeout instead of re-arming per message, so the data path pays
// nothing per message for them.
//
// The heap orders ids, so each armed entry holds one, and entries[id]
// finds it again; ids are reused, so the tables stay as long as the most
// entries ever armed at once. The zero value is ready to use.
type timerHeap struct {
	h       heap.Heap[int64]
	entries []*timerEntry // by id; nil when free
	free    []int32
}

// timerEntry is an owner's place in the heap.
type timerEntry struct {
	when  int64 // UnixNano
	id    int32 // its id in the heap while armed
	owner timed
	armed bool
}

type timed interface {
	onTimer(now int64)
}

// schedule arms e for when, moving it if it is armed already.
func (t *timerHeap) schedule(e *timerEntry, when int64) {
	e.when = when
	if !e.armed {
		if n := len(t.free); n > 0 {
			e.id = t.free[n-1]
			t.free = t.free[:n-1]
		} else {
			e.id = int32(len(t.entries))
			t.entries = append(t.entries, nil)
		}
		t.entries[e.id] = e
		e.armed = true
	}
	t.h.Set(e.id, when)
}

// remove disarms e.
func (t *timerHeap) remove(e *timerEntry) {
	if !e.armed {
		return
	}
	t.h.Remove(e.id)
	t.entries[e.id] = nil
	t.free = append(t.free, e.id)
	e.armed = false
}

// timeout returns the epoll_wait timeout until the first timer: -1 when
// there is none, rounded up to whole milliseconds.
func (t *timerHeap) timeout(now time.Time) int {
	if t.h.Len() == 0 {
		return -1
	}
	_, first := t.h.Min()
	d := first - now.UnixNano()
	if d <= 0 {
		return 0
	}
	return int((d + int64(time.Millisecond) - 1) / int64(time.Millisecond))
}

// fire runs the owners of every entry due at now, each disarmed first so
// it may re-arm itself.
func (t *timerHeap) fire(now int64) {
	for t.h.Len() > 0 {
		id, when := t.h.Min()
		if when > now {
			return
		}
		e := t.entries[id]
		t.remove(e)
		e.owner.onTimer(now)
	}
}
