package proxy

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/snoopd/snoopd/distcache"
)

// gconn is a connection of the goroutine engine. Two goroutines serve it:
// run dials the server and then pumps client->server; a second pumps
// server->client. Whichever finishes last closes the sockets and reports.
// A timer checks the timeouts.
type gconn struct {
	conn
	client net.Conn
	server net.Conn // set by run before the second goroutine starts

	aborted    atomic.Bool
	halvesLeft atomic.Int32
	serverSet  chan struct{} // closed once server is dialled (or never will be)

	timerMu sync.Mutex
	timer   *time.Timer // nil when no timeout is armed or the conn is done
	done    bool
}

// serveGoroutines accepts on ln until it is closed, for the goroutine
// engine. Temporary errors (out of file descriptors) back off instead of
// spinning or giving up.
func (p *Proxy) serveGoroutines(ln net.Listener, done chan struct{}) {
	defer p.wg.Done()
	defer close(done)
	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			p.noteAcceptError(err)
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			select {
			case <-time.After(backoff):
			case <-p.ctx.Done():
				return
			}
			continue
		}
		backoff = 0
		dataFDs.Add(1)
		p.admitGoroutines(c)
	}
}

// admitGoroutines registers a new client and starts its goroutine, or
// refuses it at once when the proxy is at its connection limit.
func (p *Proxy) admitGoroutines(client net.Conn) {
	s := p.current.Load()
	now := time.Now()
	clientAddr := remoteString(client)
	id := p.ids.Add(1)
	reason := p.refusal(s, 1)
	if reason == "" && !reserveFDs(1) {
		p.unadmit()
		reason = fmt.Sprintf("file descriptor limit reached (%d held by the data path)", dataFDs.Load())
	}
	if reason != "" {
		// Count before closing: whoever sees the close sees the count.
		p.refused(id, clientAddr, now, reason)
		client.Close()
		dataFDs.Add(-1)
		return
	}
	// The server's descriptor is reserved above, before its dial: the
	// dials run on their own goroutines, and an accept loop that counted
	// only what they had opened so far would admit clients faster than
	// they dial, until the process itself ran out of descriptors and the
	// control API could accept nothing.
	c := &gconn{client: client, serverSet: make(chan struct{})}
	c.init(p, id, clientAddr, s, now)
	c.kill = c.abort
	if !p.register(&c.conn) {
		client.Close()
		dataFDs.Add(-2)
		return
	}
	go c.run()
}

// run dials the server off the accept loop, then forwards client->server.
func (c *gconn) run() {
	defer c.p.wg.Done()
	// admitGoroutines reserved a descriptor for the server: a spare is
	// counted already, so its reservation goes back; a failed dial gives
	// it back too.
	server := c.set.goSpares().takeConn()
	var err error
	if server != nil {
		dataFDs.Add(-1)
	} else if spoke, timedOut := c.awaitRequest(); !spoke {
		// No server was dialled for a client that went, was killed or
		// idled out before its first byte: at one end of a loop through
		// another daemon, that is what stops the chain of dials.
		if timedOut {
			c.p.stats.timeouts.Add(1)
		}
		close(c.serverSet)
		c.client.Close()
		dataFDs.Add(-2)
		c.p.forget(&c.conn)
		return
	} else {
		server, err = c.set.server.dial(c.p.ctx, c.set.opts.DialTimeout, &c.p.stats)
	}
	if c.aborted.Load() {
		// Stopped or killed while dialling: not the server's fault, so
		// not a connect failure; the client is simply gone.
		if err == nil {
			server.Close()
		}
		close(c.serverSet)
		c.client.Close()
		dataFDs.Add(-2)
		c.p.forget(&c.conn)
		return
	}
	if err != nil {
		close(c.serverSet)
		c.client.Close()
		dataFDs.Add(-2)
		c.connectFailed(err)
		return
	}
	c.server = server
	close(c.serverSet)
	if c.aborted.Load() {
		// abort ran before server was set and could not close it.
		server.Close()
	}
	c.publishOpened()
	c.halvesLeft.Store(2)
	c.armTimer(time.Now().UnixNano())
	c.p.wg.Add(1)
	go func() {
		defer c.p.wg.Done()
		c.pump(server, c.client, distcache.ServerToClient)
	}()
	c.pump(c.client, server, distcache.ClientToServer)
}

// awaitRequest waits, parked in the poller, until the client has sent
// its first bytes (spoke), before the server is dialled for it; it gives
// up when the client closes or fails, is killed, or sends nothing within
// the idle timeout (timedOut). A client's first request usually arrives
// with its connection, so the dial starts as early as before for any
// client that speaks.
func (c *gconn) awaitRequest() (spoke, timedOut bool) {
	if idle := c.set.opts.IdleTimeout; idle > 0 {
		c.client.SetReadDeadline(time.Now().Add(idle))
	}
	spoke, err := peekData(c.client)
	c.client.SetReadDeadline(time.Time{})
	return spoke && !c.aborted.Load(), errors.Is(err, os.ErrDeadlineExceeded)
}

// armTimer checks the timeouts at the time checkTimeouts asks for.
func (c *gconn) armTimer(now int64) {
	next, expired := c.checkTimeouts(now)
	if expired != "" {
		c.abort(expired)
		return
	}
	c.timerMu.Lock()
	defer c.timerMu.Unlock()
	if c.done || next == 0 {
		return
	}
	d := time.Duration(next - now)
	if c.timer == nil {
		c.timer = time.AfterFunc(d, func() { c.armTimer(time.Now().UnixNano()) })
	} else {
		c.timer.Reset(d)
	}
}

func (c *gconn) stopTimer() {
	c.timerMu.Lock()
	c.done = true
	if c.timer != nil {
		c.timer.Stop()
	}
	c.timerMu.Unlock()
}

// abort closes both sockets; the pumps notice and end. The first reason
// given is the one reported.
func (c *gconn) abort(reason string) {
	c.setReason(reason)
	c.aborted.Store(true)
	c.client.Close()
	select {
	case <-c.serverSet:
		if c.server != nil {
			c.server.Close()
		}
	default:
		// Still dialling: run sees aborted and closes the server itself.
	}
}

// pump forwards src to dst until src ends or either side fails, decoding
// what passes.
func (c *gconn) pump(src, dst net.Conn, dir distcache.Direction) {
	h := &half{}
	c.initHalf(h, dir)
	// Buffers come from a pool: clients that open a connection per
	// operation would otherwise cost two allocations and their garbage
	// for every request.
	// The client's first bytes let the spares refill (see takeConn).
	var refill *spares
	if dir == distcache.ClientToServer {
		refill = c.set.goSpares()
	}
	bp := c.set.buffers.Get().(*[]byte)
	defer c.set.buffers.Put(bp)
	buf := *bp
	for {
		n, rerr := src.Read(buf)
		if n > 0 {
			chunk := buf[:n]
			f := c.inspect(h, chunk, time.Now())
			var werr error
			if f.n > 0 {
				_, werr = dst.Write(chunk[:f.n])
			}
			if !c.afterForward(h, f) {
				c.abort(c.reason)
				break
			}
			if werr != nil {
				c.abort(fmt.Sprintf("%s write failed: %v", peerName(dir, false), plainErr(werr)))
				break
			}
			if refill != nil && f.n > 0 {
				refill.refill()
				refill = nil
			}
		}
		if rerr != nil {
			if rerr == io.EOF {
				if h.decoding && h.dec.InMessage() {
					c.setReason(peerName(dir, true) + " closed mid-message")
				}
				if c.idle() {
					// Nothing is owed either way, so nothing can
					// follow (a distcache server never speaks
					// unasked): close both at once. This saves the
					// shutdown calls of a half-close on every
					// connection of a client that opens one per
					// operation.
					c.abort(peerName(dir, true) + " closed")
					break
				}
				// Pass the half-close on: the far side may still answer.
				if cw, ok := dst.(interface{ CloseWrite() error }); ok && cw.CloseWrite() == nil {
					break
				}
				c.abort(peerName(dir, true) + " closed")
				break
			}
			if c.aborted.Load() {
				break
			}
			c.abort(fmt.Sprintf("%s read failed: %v", peerName(dir, true), plainErr(rerr)))
			break
		}
	}
	if c.halvesLeft.Add(-1) == 0 {
		c.stopTimer()
		c.client.Close()
		c.server.Close()
		dataFDs.Add(-2)
		c.report()
	}
}
