package cacheserver

import (
	"math"
	"sync"
	"time"

	"github.com/snoopd/snoopd/distcache"
	"github.com/snoopd/snoopd/internal/heap"
)

// DefaultMaxSessions is the session limit used when Config.MaxSessions is 0.
const DefaultMaxSessions = 100000

// maxSlots bounds MaxSessions so that slot numbers fit the int32 indexes
// the cache uses to keep its bookkeeping small and pointer-free.
const maxSlots = math.MaxInt32

// maxTimeout is the longest session lifetime Add accepts: the protocol's
// limit, so a session stored directly behaves like one stored by ADD.
const maxTimeout = distcache.MaxAddTimeoutMS * time.Millisecond

// retainDataCap is the largest data buffer a freed slot keeps for the next
// session. Typical TLS sessions are a few hundred bytes, so reusing their
// buffers makes an ADD after a REMOVE or expiry allocate only the id
// string; rare large buffers are let go so a burst of big sessions does
// not pin memory for good.
const retainDataCap = 4096

// Cache is an in-memory session store with per-session expiry and a limit
// on the number of sessions. It is safe for concurrent use.
//
// A session whose timeout has passed is gone: Get, Have and Remove treat it
// as absent at once, and its memory is reclaimed by the next Add (or Len),
// which drops every expired session cheaply from the front of an expiry
// heap. No goroutine is involved, so a Cache needs no closing.
//
// When the cache holds MaxSessions sessions, Add makes room by first
// dropping the expired sessions and then, if still full, the one session
// closest to expiry (the oldest, among equal expiry times). That is the
// session a client is least likely to resume, and it is the order the
// reference server uses; unlike the reference, which drops a thirtieth of
// the cache at once to save memmoves, this cache drops exactly one, since a
// heap makes that cheap.
//
// One read-write mutex guards the whole cache rather than shards, because
// the limit and the eviction order are global: with shards, "full" and
// "closest to expiry" would only hold per shard. GET and HAVE, the
// operations a session cache mostly serves, take the lock shared.
type Cache struct {
	now  func() time.Time
	base time.Time // expiry times are kept as offsets from this instant
	max  int

	mu    sync.RWMutex
	index map[string]int32 // session id to slot number
	slots []slot
	free  []int32 // slot numbers not in use
	// expiry orders the slots in use by expiry time, and among equal
	// times by when they were stored.
	expiry heap.Heap[int64]
}

// slot holds one session. Slots are reused through Cache.free so a busy
// cache does not allocate a struct per session, and the GC sees one slice
// instead of a pointer per session.
type slot struct {
	id      string
	data    []byte
	expires int64 // nanoseconds after Cache.base; gone once the clock passes it
}

// NewCache returns an empty cache that uses cfg's MaxSessions and Now; the
// other fields of cfg are ignored.
func NewCache(cfg Config) *Cache {
	c := &Cache{
		now:   cfg.Now,
		max:   cfg.MaxSessions,
		index: make(map[string]int32),
	}
	if c.now == nil {
		c.now = time.Now
	}
	if c.max <= 0 {
		c.max = DefaultMaxSessions
	}
	c.max = min(c.max, maxSlots)
	c.base = c.now()
	return c
}

// MaxSessions returns the most sessions c holds at once.
func (c *Cache) MaxSessions() int { return c.max }

// clock returns the current time as an offset from c.base. Using a
// time.Duration from one base keeps the monotonic clock (wall-clock jumps
// do not expire sessions early) and makes comparisons integer compares.
func (c *Cache) clock() int64 {
	return int64(c.now().Sub(c.base))
}

// Add stores a copy of data under a copy of id for timeout. It returns
// distcache.StatusOK when stored and distcache.StatusAddExists when an
// unexpired session with that id is present. It applies the same ranges as
// the server (id 1..64 bytes, data 1..32768 bytes, timeout 0..7 days) and
// answers the matching status when they are broken, so a Cache never holds
// a session the protocol could not carry. A full cache makes room as
// described on Cache.
func (c *Cache) Add(id, data []byte, timeout time.Duration) distcache.Status {
	return c.addAt(c.clock(), id, data, timeout)
}

// The methods below ending in At take the time from the caller. The server
// reads the clock once per chunk of input rather than once per request:
// on some machines reading the clock costs as much as answering a GET.

func (c *Cache) addAt(now int64, id, data []byte, timeout time.Duration) distcache.Status {
	switch {
	case len(id) < 1 || len(id) > distcache.MaxSessionIDLen:
		return distcache.StatusAddIDRange
	case timeout < 0 || timeout > maxTimeout:
		return distcache.StatusAddTimeoutRange
	case len(data) < 1 || len(data) > distcache.MaxSessionDataLen:
		return distcache.StatusAddDataRange
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if i, ok := c.index[string(id)]; ok {
		if now <= c.slots[i].expires {
			return distcache.StatusAddExists
		}
		c.removeSlot(i)
	}
	c.purge(now)
	if len(c.index) >= c.max {
		first, _ := c.expiry.Min()
		c.removeSlot(first)
	}
	i := c.allocSlot()
	s := &c.slots[i]
	s.id = string(id)
	s.data = append(s.data[:0], data...)
	s.expires = now + int64(timeout)
	c.index[s.id] = i
	c.expiry.Set(i, s.expires)
	return distcache.StatusOK
}

// Get returns a copy of the data of the session id, and whether it was
// found.
func (c *Cache) Get(id []byte) ([]byte, bool) {
	return c.AppendGet(nil, id)
}

// AppendGet appends the data of the session id to dst and returns the
// extended slice and true; on a miss it returns dst unchanged and false.
// With a reused dst it does not allocate, which is why the server uses it.
func (c *Cache) AppendGet(dst, id []byte) ([]byte, bool) {
	return c.appendGetAt(c.clock(), dst, id)
}

func (c *Cache) appendGetAt(now int64, dst, id []byte) ([]byte, bool) {
	c.mu.RLock()
	i, ok := c.index[string(id)]
	if ok && now <= c.slots[i].expires {
		dst = append(dst, c.slots[i].data...)
	} else {
		ok = false
	}
	c.mu.RUnlock()
	return dst, ok
}

// Have reports whether the session id is present and unexpired.
func (c *Cache) Have(id []byte) bool {
	return c.haveAt(c.clock(), id)
}

func (c *Cache) haveAt(now int64, id []byte) bool {
	c.mu.RLock()
	i, ok := c.index[string(id)]
	ok = ok && now <= c.slots[i].expires
	c.mu.RUnlock()
	return ok
}

// Remove deletes the session id and reports whether it was present and
// unexpired. An expired session is deleted too, but reported as absent.
func (c *Cache) Remove(id []byte) bool {
	return c.removeAt(c.clock(), id)
}

func (c *Cache) removeAt(now int64, id []byte) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	i, ok := c.index[string(id)]
	if !ok {
		return false
	}
	live := now <= c.slots[i].expires
	c.removeSlot(i)
	return live
}

// Len returns the number of unexpired sessions. It drops the expired ones
// on the way, so it also serves as an explicit purge.
func (c *Cache) Len() int {
	now := c.clock()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.purge(now)
	return len(c.index)
}

// purge drops every session that expired before now. Expired sessions sit
// at the front of the heap, so this costs O(log n) per dropped session and
// nothing when none expired. c.mu must be held for writing.
func (c *Cache) purge(now int64) {
	for c.expiry.Len() > 0 {
		first, expires := c.expiry.Min()
		if now <= expires {
			return
		}
		c.removeSlot(first)
	}
}

// allocSlot returns a free slot number, growing c.slots when none is free.
func (c *Cache) allocSlot() int32 {
	if n := len(c.free); n > 0 {
		i := c.free[n-1]
		c.free = c.free[:n-1]
		return i
	}
	c.slots = append(c.slots, slot{})
	return int32(len(c.slots) - 1)
}

// removeSlot deletes the session in slot i from the index and the heap and
// frees the slot. The data is wiped before its buffer is kept or dropped:
// it is secret, and a kept buffer would otherwise hold it until reused.
func (c *Cache) removeSlot(i int32) {
	s := &c.slots[i]
	delete(c.index, s.id)
	c.expiry.Remove(i)
	clear(s.data)
	if cap(s.data) > retainDataCap {
		s.data = nil
	} else {
		s.data = s.data[:0]
	}
	s.id = ""
	c.free = append(c.free, i)
}
