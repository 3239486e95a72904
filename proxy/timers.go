package proxy

import "time"

// timerHeap is an event loop's timers: dial deadlines, the timeouts of
// its connections, spare refills, a paused listener (and, for fault
// injection, held messages). Each owner has at most one entry, which it
// re-arms when it fires; a connection checks its timeouts at most every
// minTimeout instead of re-arming per message, so the data path pays
// nothing per message for them.
type timerHeap struct {
	h []*timerEntry
}

// timerEntry is an owner's place in the heap.
type timerEntry struct {
	when  int64 // UnixNano
	idx   int   // position in the heap, -1 when not in it
	owner timed
	armed bool
}

type timed interface {
	onTimer(now int64)
}

// schedule arms e for when, moving it if it is armed already.
func (t *timerHeap) schedule(e *timerEntry, when int64) {
	if e.armed {
		e.when = when
		t.fix(e.idx)
		return
	}
	e.when, e.idx, e.armed = when, len(t.h), true
	t.h = append(t.h, e)
	t.up(e.idx)
}

// remove disarms e.
func (t *timerHeap) remove(e *timerEntry) {
	if !e.armed {
		return
	}
	i, last := e.idx, len(t.h)-1
	if i != last {
		t.swap(i, last)
	}
	t.h[last] = nil
	t.h = t.h[:last]
	e.armed, e.idx = false, -1
	if i != last {
		t.fix(i)
	}
}

// timeout returns the epoll_wait timeout until the first timer: -1 when
// there is none, rounded up to whole milliseconds.
func (t *timerHeap) timeout(now time.Time) int {
	if len(t.h) == 0 {
		return -1
	}
	d := t.h[0].when - now.UnixNano()
	if d <= 0 {
		return 0
	}
	return int((d + int64(time.Millisecond) - 1) / int64(time.Millisecond))
}

// fire runs the owners of every entry due at now, each disarmed first so
// it may re-arm itself.
func (t *timerHeap) fire(now int64) {
	for len(t.h) > 0 && t.h[0].when <= now {
		e := t.h[0]
		t.remove(e)
		e.owner.onTimer(now)
	}
}

func (t *timerHeap) fix(i int) {
	if !t.down(i) {
		t.up(i)
	}
}

func (t *timerHeap) swap(i, j int) {
	t.h[i], t.h[j] = t.h[j], t.h[i]
	t.h[i].idx, t.h[j].idx = i, j
}

func (t *timerHeap) up(i int) {
	for i > 0 {
		parent := (i - 1) / 2
		if t.h[parent].when <= t.h[i].when {
			return
		}
		t.swap(i, parent)
		i = parent
	}
}

func (t *timerHeap) down(i int) bool {
	start, n := i, len(t.h)
	for {
		l := 2*i + 1
		if l >= n {
			break
		}
		m := l
		if r := l + 1; r < n && t.h[r].when < t.h[l].when {
			m = r
		}
		if t.h[i].when <= t.h[m].when {
			break
		}
		t.swap(i, m)
		i = m
	}
	return i > start
}
