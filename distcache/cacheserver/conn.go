package cacheserver

import (
	"errors"
	"io"
	"net"
	"os"
	"time"

	"github.com/snoopd/snoopd/distcache"
)

// conn is the io.Reader its distcache.Reader reads through.
var _ io.Reader = (*conn)(nil)

// conn is the state of one client connection. Its buffers live as long as
// the connection so that answering a request does not allocate.
type conn struct {
	srv *Server
	nc  net.Conn
	r   *distcache.Reader // reads from the conn itself, see Read

	out    []byte // responses not yet written
	now    int64  // Cache clock when the input being answered arrived
	val    []byte // scratch space for the data of a GET hit
	status [1]byte

	// Counts since the last flush, added to the server's atomics once
	// per batch.
	reqs [distcache.NumOps]uint64
	hits uint64
}

// serve reads and answers requests until the stream ends, breaks the
// protocol, or the server stops.
func (c *conn) serve() {
	s := c.srv
	defer func() {
		c.nc.Close()
		s.removeConn(c)
		s.stats.connsActive.Add(-1)
		s.wg.Done()
	}()
	for {
		m, err := c.r.ReadMessage()
		if err != nil {
			c.end(err)
			return
		}
		if err := c.handle(m); err != nil {
			c.end(err)
			return
		}
		if len(c.out) >= flushAt {
			if err := c.flush(); err != nil {
				c.end(err)
				return
			}
		}
	}
}

// Read is the io.Reader the distcache.Reader reads from. The Reader calls
// it only when it has used up its buffer, which is exactly when this
// connection would wait for the client, so it writes the pending responses
// first: a pipelined batch is answered with one write, and a partly
// arrived request never holds back the answers to the requests before it.
func (c *conn) Read(p []byte) (int, error) {
	if err := c.flush(); err != nil {
		return 0, err
	}
	if c.srv.draining.Load() {
		return 0, errDraining
	}
	n, err := c.nc.Read(p)
	if n > 0 {
		// Requests are judged as of when they arrived: one clock
		// reading serves every request in this chunk.
		c.now = c.srv.cache.clock()
	}
	if err != nil && errors.Is(err, os.ErrDeadlineExceeded) && c.srv.draining.Load() {
		err = errDraining
	}
	return n, err
}

// flush writes the pending responses, after publishing the batch's
// request counts so that Stats agrees with what a client has seen.
func (c *conn) flush() error {
	c.flushStats()
	if len(c.out) == 0 {
		return nil
	}
	_, err := c.nc.Write(c.out)
	c.out = c.out[:0]
	return err
}

func (c *conn) flushStats() {
	st := &c.srv.stats
	for op, n := range c.reqs {
		if n != 0 {
			st.requests[op].Add(n)
			c.reqs[op] = 0
		}
	}
	if c.hits != 0 {
		st.getHits.Add(c.hits)
		c.hits = 0
	}
}

// handle answers one request, appending the response to c.out. The
// Reader has already checked that the message is a well-formed request
// with a valid operation.
func (c *conn) handle(m distcache.Message) error {
	cache := c.srv.cache
	c.reqs[m.Op]++
	st := distcache.StatusNotOK
	switch m.Op {
	case distcache.OpAdd:
		// The checks are distcache.CheckAdd's, in dc_server's order, so
		// every part of the project agrees on them.
		req, status, err := distcache.CheckAdd(m.Payload)
		if err != nil {
			// dc_server drops a client whose ADD is shorter than its
			// header, without an answer.
			return err
		}
		st = status
		if st == distcache.StatusOK {
			st = cache.addAt(c.now, req.SessionID, req.Data, time.Duration(req.TimeoutMS)*time.Millisecond)
		}
	case distcache.OpGet:
		if v, ok := cache.appendGetAt(c.now, c.val[:0], m.Payload); ok {
			c.val = v
			c.hits++
			c.out = distcache.AppendMessage(c.out, true, m.RequestUID, m.Op, v)
			return nil
		}
	case distcache.OpRemove:
		if cache.removeAt(c.now, m.Payload) {
			st = distcache.StatusOK
		}
	case distcache.OpHave:
		if cache.haveAt(c.now, m.Payload) {
			st = distcache.StatusOK
		}
	}
	c.status[0] = byte(st)
	c.out = distcache.AppendMessage(c.out, true, m.RequestUID, m.Op, c.status[:])
	return nil
}

// end logs why the connection ends and updates the counters. For a
// corrupt or cut stream it first writes the answers to the requests that
// came before the fault: they were valid, and a client that half-closed
// after its last request is still waiting for them.
func (c *conn) end(err error) {
	s := c.srv
	remote := remoteString(c.nc)
	var pe *distcache.ProtocolError
	switch {
	case err == io.EOF:
		s.log.Debug("cacheserver: connection closed by client", "remote", remote)
	case errors.As(err, &pe), errors.Is(err, distcache.ErrMalformedPayload):
		s.stats.corrupt.Add(1)
		c.flush()
		s.log.Debug("cacheserver: closing connection on corrupt input", "remote", remote, "err", err)
	case errors.Is(err, io.ErrUnexpectedEOF):
		s.stats.cut.Add(1)
		c.flush()
		s.log.Debug("cacheserver: stream ended inside a message", "remote", remote, "err", err)
	case errors.Is(err, errDraining):
		s.log.Debug("cacheserver: closing connection for shutdown", "remote", remote)
	case errors.Is(err, net.ErrClosed):
		s.log.Debug("cacheserver: connection closed by server", "remote", remote)
	default:
		s.log.Debug("cacheserver: connection failed", "remote", remote, "err", err)
	}
	c.flushStats()
}
