package proxy

import (
	"sync/atomic"
	"time"

	"github.com/snoopd/snoopd/distcache"
)

// Observer assembles the traffic of connections it only sees (a packet capture, a file):
// the same events, counters (Stats) and vocabulary as a Proxy, with no listener and nothing forwarded.
//
// A source that may have missed bytes (a capture started on a live
// connection, a lost segment) says so (Open with midStream, Resync); the
// direction then hunts for the next message start (hunt.go) and carries
// on from there. A protocol error in a direction is reported as such
// (Policy Resync) and that direction hunts again: an observer closes
// nothing.
//
// Different connections may be fed from different goroutines; the calls
// on one ObservedConn must not overlap.
type Observer struct {
	name  string
	sink  Sink
	opts  ObserverOptions
	ids   atomic.Uint64
	stats counters
}

// ObserverOptions are an Observer's settings.
type ObserverOptions struct {
	// CaptureData keeps session data (up to CaptureLimit bytes, 0 for
	// DefaultCaptureLimit) in transaction events, as Options does.
	CaptureData  bool
	CaptureLimit int
}

// NewObserver returns an observer whose events name it name and go to
// sink (nil discards them).
func NewObserver(name string, sink Sink, opts ObserverOptions) *Observer {
	if sink == nil {
		sink = Discard
	}
	if opts.CaptureLimit <= 0 {
		opts.CaptureLimit = DefaultCaptureLimit
	}
	return &Observer{name: name, sink: sink, opts: opts}
}

// Name returns the observer's name, as its events carry it.
func (o *Observer) Name() string { return o.name }

// Stats returns a snapshot of the observer's counters: the same as
// Proxy.Stats, with ResyncSkippedBytes and Resyncs saying how much of the
// traffic could not be placed.
func (o *Observer) Stats() Stats { return o.stats.snapshot() }

// ObservedConn is one connection an Observer sees.
type ObservedConn struct {
	assembler
	o      *Observer
	opened time.Time
	dirs   [2]observedDir // by Direction-1
	closed bool
}

// observedDir is one direction of an observed connection: its decoding
// and, while it has lost its place, its hunt.
type observedDir struct {
	h       half
	hunt    hunter
	hunting bool
	bytes   int64
}

// Open numbers a new connection of client and reports it opened
// (KindConnOpened) at now. midStream says the connection's start was not
// seen: both directions hunt for their first message start.
func (o *Observer) Open(client string, now time.Time, midStream bool) *ObservedConn {
	c := &ObservedConn{o: o, opened: now}
	c.assembler = assembler{proxy: o.name, id: o.ids.Add(1), client: client, stats: &o.stats, sink: o.sink,
		capture: o.opts.CaptureData, captureLimit: o.opts.CaptureLimit}
	for i := range c.dirs {
		d := &c.dirs[i]
		dir := distcache.Direction(i + 1)
		c.initHalf(&d.h, dir)
		d.hunt.dir = dir
		if midStream {
			c.startHunt(d)
		}
	}
	o.stats.connsTotal.Add(1)
	o.stats.connsActive.Add(1)
	o.sink.Publish(c.event(KindConnOpened, now))
	return c
}

// ID returns the connection's number, as its events carry it.
func (c *ObservedConn) ID() uint64 { return c.id }

// Data assembles the next bytes of direction dir, read at now: whatever
// they complete is published before Data returns. p is not kept. Bytes
// of a direction other than ClientToServer or ServerToClient, or after
// Close, are ignored.
func (c *ObservedConn) Data(dir distcache.Direction, p []byte, now time.Time) {
	d := c.dir(dir)
	if d == nil || c.closed {
		return
	}
	st := &c.o.stats
	if dir == distcache.ClientToServer {
		st.bytesUp.Add(int64(len(p)))
	} else {
		st.bytesDown.Add(int64(len(p)))
	}
	d.bytes += int64(len(p))
	for len(p) > 0 {
		if d.hunting {
			var locked bool
			p, locked = d.hunt.feed(p, &st.resyncSkipped)
			if !locked {
				return
			}
			d.hunting = false
			c.initHalf(&d.h, dir)
		}
		n, err := c.decode(&d.h, p, now, nil)
		c.countFrames(d)
		c.flush(&d.h)
		if err == nil {
			return
		}
		c.protocolError(&d.h, err, Resync, now)
		c.startHunt(d)
		p = p[n:]
	}
}

// Resync tells c that bytes of direction dir were lost before the next
// Data in dir: the message partly through is dropped and the direction
// hunts for the next message start. Requests already pending stay
// pending: their answers may still come.
func (c *ObservedConn) Resync(dir distcache.Direction, now time.Time) {
	if d := c.dir(dir); d != nil && !c.closed {
		c.startHunt(d)
	}
}

// Close ends the connection at now: its unanswered requests are reported,
// then KindConnClosed with its byte counts and reason. Later calls on c
// do nothing.
func (c *ObservedConn) Close(reason string, now time.Time) {
	if c.closed {
		return
	}
	c.closed = true
	for i := range c.dirs {
		if d := &c.dirs[i]; d.hunting {
			c.o.stats.resyncSkipped.Add(int64(d.hunt.drop()))
		}
	}
	c.unanswered(now)
	c.o.stats.connsActive.Add(-1)
	e := c.event(KindConnClosed, now)
	e.Closed = &ConnClosed{
		BytesUp: c.dirs[0].bytes, BytesDown: c.dirs[1].bytes,
		Duration: now.Sub(c.opened), Transactions: c.transactions.Load(), Reason: reason,
	}
	c.sink.Publish(e)
}

func (c *ObservedConn) dir(dir distcache.Direction) *observedDir {
	if dir != distcache.ClientToServer && dir != distcache.ServerToClient {
		return nil
	}
	return &c.dirs[dir-1]
}

// startHunt makes d hunt for the next message start, its partial
// message dropped and its earlier bytes forgotten.
func (c *ObservedConn) startHunt(d *observedDir) {
	if d.hunting {
		c.o.stats.resyncSkipped.Add(int64(d.hunt.drop()))
	}
	d.hunting = true
	d.hunt.reset()
	c.o.stats.resyncs.Add(1)
}

// countFrames adds the frames d decoded to the counters.
func (c *ObservedConn) countFrames(d *observedDir) {
	if d.h.frames == 0 {
		return
	}
	if d.h.dir == distcache.ClientToServer {
		c.o.stats.framesUp.Add(d.h.frames)
	} else {
		c.o.stats.framesDown.Add(d.h.frames)
	}
	d.h.frames = 0
}
