package proxy

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/snoopd/snoopd/distcache"
)

// conn is one proxied client connection as both engines share it: its
// assembler (decoding, pairing, the events of its transactions), the
// counters and the timeouts. How the bytes move (two goroutines, or an
// event loop that owns both sockets) is the engine's; the engine calls
// inspect, afterForward and report, and installs kill, which closes the
// connection from any goroutine.
type conn struct {
	assembler
	p      *Proxy
	opened time.Time
	set    *settings

	bytesUp, bytesDown atomic.Int64

	reasonOnce sync.Once
	reason     string
	// midMessage is set, per direction (index Direction-1), while a
	// message is partly through; a direction that stopped decoding after
	// a protocol error counts as undecided and sets it too.
	midMessage [2]atomic.Bool

	// For the timeouts: when the last byte moved either way, and when the
	// message partly through in each direction began (0: none), as
	// UnixNano of the times the engine passes in (checkTimeouts compares
	// them with its own).
	lastIO   atomic.Int64
	msgStart [2]atomic.Int64

	// kill closes the connection; the first reason given is reported.
	kill func(reason string)
	// recheckFaults, if set, makes the connection look at the messages
	// faults hold, soon (a fault left the set: they go at once). Safe
	// from any goroutine.
	recheckFaults func()
}

func (c *conn) init(p *Proxy, id uint64, clientAddr string, s *settings, now time.Time) {
	c.p, c.set, c.opened = p, s, now
	c.assembler = assembler{proxy: p.name, id: id, client: clientAddr, stats: &p.stats, sink: p.sink,
		capture: s.opts.CaptureData, captureLimit: s.opts.CaptureLimit, echo: p}
	c.lastIO.Store(now.UnixNano())
}

func (c *conn) info() ConnInfo {
	pending := c.pendingCount()
	return ConnInfo{
		ID: c.id, Client: c.client, Opened: c.opened,
		BytesUp: c.bytesUp.Load(), BytesDown: c.bytesDown.Load(),
		Transactions: c.transactions.Load(), Pending: pending,
	}
}

// idle reports whether the connection is between transactions: every
// request answered, no message partly through in either direction, and
// both directions still decoded (otherwise the proxy cannot tell).
func (c *conn) idle() bool {
	if c.midMessage[0].Load() || c.midMessage[1].Load() {
		return false
	}
	return c.pendingCount() == 0
}

func (c *conn) setReason(r string) {
	c.reasonOnce.Do(func() { c.reason = r })
}

// initHalf readies h to decode dir for the connection, its message
// times shown to the timeouts.
func (c *conn) initHalf(h *half, dir distcache.Direction) {
	c.assembler.initHalf(h, dir)
	h.started = &c.msgStart[dir-1]
}

// forwarded is what the engine does with a chunk it read from one side:
// how many leading bytes to forward, and the protocol error, if any, to
// handle once they are written (see afterForward).
type forwarded struct {
	n   int
	err error
}

// inspect decodes chunk, read from h's source at now, updates the
// counters and returns how much of it to forward. The engine writes that
// much, then calls afterForward.
func (c *conn) inspect(h *half, chunk []byte, now time.Time) forwarded {
	f := forwarded{n: len(chunk)}
	if h.decoding {
		var valid int
		valid, f.err = c.decode(h, chunk, now, nil)
		if f.err != nil && c.set.opts.OnCorrupt == CloseOnCorrupt {
			f.n = valid
		}
		if isLoopEcho(f.err) {
			f.n = 0 // the connection's first request: nothing before it
		}
	}
	c.count(h, f, now)
	return f
}

// count adds what a chunk carried to the counters.
func (c *conn) count(h *half, f forwarded, now time.Time) {
	st := &c.p.stats
	// Count before writing: once the far side has the bytes, a reader of
	// the counters must see them.
	if h.frames > 0 {
		if h.dir == distcache.ClientToServer {
			st.framesUp.Add(h.frames)
		} else {
			st.framesDown.Add(h.frames)
		}
		h.frames = 0
	}
	if f.n > 0 {
		if h.dir == distcache.ClientToServer {
			st.bytesUp.Add(int64(f.n))
			c.bytesUp.Add(int64(f.n))
		} else {
			st.bytesDown.Add(int64(f.n))
			c.bytesDown.Add(int64(f.n))
		}
	}
	c.lastIO.Store(now.UnixNano())
}

// afterForward publishes what the chunk completed and handles its protocol
// error. It reports false when the connection must close (the close policy
// met a protocol error, its reason set); the engine then closes it.
func (c *conn) afterForward(h *half, f forwarded) bool {
	c.flush(h)
	d := h.dir - 1
	c.midMessage[d].Store(!h.decoding || h.dec.InMessage())
	if f.err == nil {
		return true
	}
	if isLoopEcho(f.err) {
		c.setReason(f.err.Error())
		return false
	}
	policy := c.set.opts.OnCorrupt
	c.protocolError(h, f.err, policy, time.Now())
	if policy == CloseOnCorrupt {
		c.setReason("protocol error " + h.dir.String())
		return false
	}
	h.decoding = false
	c.midMessage[d].Store(true) // undecided from now on
	c.msgStart[d].Store(0)      // nor can a message be timed
	if h.dir == distcache.ClientToServer {
		c.upBroken.Store(true)
	}
	return true
}

// peerName names the peer a direction reads from (src) or writes to.
func peerName(dir distcache.Direction, src bool) string {
	if (dir == distcache.ClientToServer) == src {
		return "client"
	}
	return "server"
}

// plainErr strips the net.OpError wrapping down to the system's words.
func plainErr(err error) error {
	var se *os.SyscallError
	if errors.As(err, &se) {
		return se.Err
	}
	return err
}

// report runs once the connection's sockets are closed: it frees the
// connection's slot, reports requests that never got a response, and the
// close itself.
func (c *conn) report() {
	// Free the slot before reporting, so whoever sees the close event
	// can connect again under a connection limit.
	c.p.forget(c)
	now := time.Now()
	c.unanswered(now)
	c.setReason("closed")
	e := c.event(KindConnClosed, now)
	e.Closed = &ConnClosed{
		BytesUp: c.bytesUp.Load(), BytesDown: c.bytesDown.Load(),
		Duration: now.Sub(c.opened), Transactions: c.transactions.Load(), Reason: c.reason,
	}
	c.p.sink.Publish(e)
}

// connectFailed reports a connection whose server could not be reached;
// the engine has closed the client.
func (c *conn) connectFailed(err error) {
	c.p.stats.connectFailed.Add(1)
	c.p.forget(c)
	e := c.event(KindConnectFailed, time.Now())
	e.Err = fmt.Errorf("dial server %s: %w", c.set.server.addr, err)
	c.p.sink.Publish(e)
}

// publishOpened reports a connection whose server is connected.
func (c *conn) publishOpened() {
	c.p.sink.Publish(c.event(KindConnOpened, time.Now()))
}

// deadline returns when the connection's next timeout falls due, as
// UnixNano, and what it is; 0 means none is armed. It reads only atomics
// and the pending queue, so the goroutine engine's timer can call it.
func (c *conn) deadline() (int64, string) {
	o := &c.set.opts
	var when int64
	var what string
	arm := func(at int64, d time.Duration, name string) {
		if d <= 0 || at == 0 {
			return
		}
		if t := at + int64(d); when == 0 || t < when {
			when, what = t, name
		}
	}
	for d := range c.msgStart {
		dir := distcache.Direction(d + 1)
		arm(c.msgStart[d].Load(), o.MessageTimeout, "message timeout: "+peerName(dir, true)+" message incomplete after "+o.MessageTimeout.String())
	}
	if oldest := c.oldestPending(); !oldest.IsZero() {
		arm(oldest.UnixNano(), o.ResponseTimeout, "response timeout: no answer after "+o.ResponseTimeout.String())
	} else if !c.midMessage[0].Load() && !c.midMessage[1].Load() {
		arm(c.lastIO.Load(), o.IdleTimeout, "idle timeout: nothing moved for "+o.IdleTimeout.String())
	}
	return when, what
}

// minTimeout is the shortest timeout armed by the options, 0 for none: a
// connection's next deadline is never nearer than that from now, so the
// engine may check it that often instead of re-arming a timer per message.
func minTimeout(o *Options) time.Duration {
	var m time.Duration
	for _, d := range [...]time.Duration{o.IdleTimeout, o.MessageTimeout, o.ResponseTimeout} {
		if d > 0 && (m == 0 || d < m) {
			m = d
		}
	}
	return m
}

// checkTimeouts returns the timeout that has fallen due at now, counted,
// for the engine to close the connection with; or else when to check
// again (UnixNano; 0: never).
func (c *conn) checkTimeouts(now int64) (next int64, expired string) {
	when, what := c.deadline()
	if when != 0 && when <= now {
		c.p.stats.timeouts.Add(1)
		return 0, what
	}
	if m := minTimeout(&c.set.opts); m > 0 {
		next = now + int64(m)
	}
	if when != 0 && (next == 0 || when < next) {
		next = when
	}
	return next, ""
}
