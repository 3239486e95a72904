package loadgen

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"time"

	"github.com/snoopd/snoopd/distcache"
)

// ErrUnexpectedResponse is wrapped by the error a Client returns when a
// response does not answer its oldest outstanding request: another
// request_uid or operation. The stream is out of step and the connection
// unusable.
var ErrUnexpectedResponse = errors.New("response does not match the oldest outstanding request")

// ErrClientBroken is wrapped by the errors of calls made after an earlier
// I/O or protocol error, which leaves a pipelined connection in an unknown
// state; dial a new Client.
var ErrClientBroken = errors.New("connection unusable after an earlier error")

// OpError is an error of a Client: the operation (or the dial) that
// failed, the session id it concerned, the server, and the cause.
type OpError struct {
	// Stage is where it failed: "dial", "send", "write", "read" or
	// "response".
	Stage string
	// Op is the operation; it is meaningless when Stage is "dial".
	Op distcache.Op
	// ID is the session id, when known.
	ID   string
	Addr distcache.Addr
	Err  error
}

// Error says what failed, where, and why, in one line.
func (e *OpError) Error() string {
	if e.Stage == "dial" {
		return fmt.Sprintf("loadgen: dial %s: %v", e.Addr, e.Err)
	}
	return fmt.Sprintf("loadgen: %s %q at %s: %s: %v", e.Op, e.ID, e.Addr, e.Stage, e.Err)
}

// Unwrap returns the cause.
func (e *OpError) Unwrap() error { return e.Err }

// Reply is a response read by Client.Recv.
type Reply struct {
	// Message is the response. Its Payload is valid until the next call
	// of a Client method.
	Message distcache.Message
	// Latency runs from the write of the request (the Flush that carried
	// it) to the arrival of the last byte of the response.
	Latency time.Duration
	// at is when that last byte arrived, so a caller can measure to the
	// same instant from an earlier start, such as the dial.
	at time.Time
}

// pending is a request sent and not yet answered.
type pending struct {
	uid   uint32
	op    distcache.Op
	sent  time.Time // zero until flushed
	idLen uint8
	id    [distcache.MaxSessionIDLen]byte // copied so errors can name it
}

// Client is one connection to a distcache server. It offers synchronous
// calls (Add, Get, Remove, Have) and a pipelined form: Send queues
// requests, Flush writes them, and Recv returns the responses in request
// order, checking that each answers the oldest outstanding request.
//
// After any I/O or protocol error the connection is in an unknown state and
// every later call fails with an error wrapping ErrClientBroken. A Client
// is not safe for concurrent use, except that Close may be called from
// another goroutine to abort a blocked call.
type Client struct {
	addr    distcache.Addr
	conn    net.Conn
	timeout time.Duration
	err     error // sticky, see ErrClientBroken

	// Reading: a Decoder over a buffer this Client owns, so that a read
	// stopped by a soft deadline (see recv) can resume mid-message, and so
	// buffers survive a reconnect (see attach).
	dec       distcache.Decoder
	rbuf      []byte
	rstart    int
	rend      int
	readErr   error
	cur       distcache.Message // header fields of the message being read
	payload   []byte
	rdeadline time.Time
	wbuf      []byte
	uid       uint32
	queue     []pending // ring buffer of outstanding requests
	qhead     int
	qlen      int
	unflushed int // the last unflushed entries of queue have not been written
	syncBuf   []byte
}

// Dial connects to addr. timeout bounds the dial and, afterwards, every
// operation: a response must arrive within timeout of the request's write.
// Zero means DefaultTimeout.
func Dial(ctx context.Context, addr distcache.Addr, timeout time.Duration) (*Client, error) {
	c := &Client{}
	if err := c.dial(ctx, addr, timeout); err != nil {
		return nil, err
	}
	return c, nil
}

// dial (re)connects c, reusing its buffers.
func (c *Client) dial(ctx context.Context, addr distcache.Addr, timeout time.Duration) error {
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	if !addr.CanConnect() {
		return &OpError{Stage: "dial", Addr: addr, Err: errors.New("not an address to connect to (it needs a host and a port, or a unix path)")}
	}
	d := net.Dialer{Timeout: timeout}
	conn, err := d.DialContext(ctx, addr.Network().String(), addr.NetAddr())
	if err != nil {
		return &OpError{Stage: "dial", Addr: addr, Err: err}
	}
	c.attach(conn, addr, timeout)
	return nil
}

// attach makes c a fresh client on conn, keeping its buffers.
func (c *Client) attach(conn net.Conn, addr distcache.Addr, timeout time.Duration) {
	c.addr, c.conn, c.timeout, c.err = addr, conn, timeout, nil
	c.dec.Reset(distcache.ServerToClient)
	if c.rbuf == nil {
		c.rbuf = make([]byte, distcache.DefaultReadBuffer)
	}
	c.rstart, c.rend, c.readErr = 0, 0, nil
	c.payload = c.payload[:0]
	c.rdeadline = time.Time{}
	c.wbuf = c.wbuf[:0]
	c.uid = 1
	c.qhead, c.qlen, c.unflushed = 0, 0, 0
}

// Addr is the server c is connected to.
func (c *Client) Addr() distcache.Addr { return c.addr }

// Pending is the number of requests sent (or queued by Send) and not yet
// answered.
func (c *Client) Pending() int { return c.qlen }

// Close closes the connection. Requests still outstanding are abandoned.
func (c *Client) Close() error {
	if c.conn == nil {
		return nil
	}
	return c.conn.Close()
}

// Send queues a request of op with payload and returns its request_uid.
// Nothing is written until Flush (or Recv, which flushes first).
func (c *Client) Send(op distcache.Op, payload []byte) (uint32, error) {
	if c.err != nil {
		return 0, c.broken(op, nil)
	}
	if !op.Valid() {
		return 0, &OpError{Stage: "send", Op: op, Addr: c.addr, Err: errors.New("invalid operation")}
	}
	if len(payload) > distcache.MaxMessageData {
		return 0, &OpError{Stage: "send", Op: op, ID: string(requestID(op, payload)), Addr: c.addr,
			Err: fmt.Errorf("payload of %d bytes exceeds the %d a message can carry", len(payload), distcache.MaxMessageData)}
	}
	uid := c.uid
	c.uid++
	c.wbuf = distcache.AppendMessage(c.wbuf, false, uid, op, payload)
	p := c.push()
	p.uid, p.op, p.sent = uid, op, time.Time{}
	id := requestID(op, payload)
	p.idLen = uint8(copy(p.id[:], id))
	c.unflushed++
	return uid, nil
}

// requestID extracts the session id from a request payload, as far as the
// layout allows; it is only used to name the request in errors.
func requestID(op distcache.Op, payload []byte) []byte {
	if op != distcache.OpAdd {
		return payload
	}
	req, err := distcache.ParseAddRequest(payload)
	if err != nil {
		return nil
	}
	return req.SessionID
}

// Flush writes the requests queued by Send. Their latency is measured from
// now.
func (c *Client) Flush() error {
	if c.unflushed == 0 {
		return nil
	}
	first := c.at(c.qlen - c.unflushed)
	if c.err != nil {
		return c.broken(first.op, first)
	}
	now := time.Now()
	if err := c.conn.SetWriteDeadline(now.Add(c.timeout)); err != nil {
		return c.fail("write", first, err)
	}
	if _, err := c.conn.Write(c.wbuf); err != nil {
		return c.fail("write", first, err)
	}
	for i := c.qlen - c.unflushed; i < c.qlen; i++ {
		c.at(i).sent = now
	}
	c.unflushed = 0
	c.wbuf = c.wbuf[:0]
	return nil
}

// Recv returns the response to the oldest outstanding request, flushing
// queued requests first. It fails if the response's request_uid or
// operation differ from that request's, or if it does not arrive within
// the timeout of the request's write.
func (c *Client) Recv() (Reply, error) {
	r, _, err := c.recv(time.Time{})
	return r, err
}

// recv is Recv with a soft deadline: when soft is not zero and passes
// before a whole response has arrived, recv returns ok == false and no
// error, and a later call resumes where this one stopped. A worker waiting
// for its next send slot uses it to take in responses as they arrive, so
// their latency is not inflated by the wait.
func (c *Client) recv(soft time.Time) (r Reply, ok bool, err error) {
	if c.err != nil {
		var p *pending
		if c.qlen > 0 {
			p = c.at(0)
		}
		return Reply{}, false, c.broken(distcache.OpGet, p)
	}
	if c.qlen == 0 {
		return Reply{}, false, &OpError{Stage: "read", Addr: c.addr, Err: errors.New("no request outstanding")}
	}
	if err := c.Flush(); err != nil {
		return Reply{}, false, err
	}
	p := c.at(0)
	hard := p.sent.Add(c.timeout)
	for {
		for c.rstart < c.rend {
			n, s, err := c.dec.Next(c.rbuf[c.rstart:c.rend])
			c.rstart += n
			if err != nil {
				return Reply{}, false, c.fail("read", p, err)
			}
			if s.Header && c.dec.MessageFrames() == 1 {
				h := c.dec.Header()
				c.cur = distcache.Message{IsResponse: h.IsResponse, RequestUID: h.RequestUID, Op: h.Op}
				if s.MessageEnd {
					// A single frame wholly in the buffer: its data
					// stays valid until the next read, so no copy.
					c.payload = c.payload[:0]
					return c.deliver(s.Data)
				}
				c.payload = append(c.payload[:0], s.Data...)
				continue
			}
			c.payload = append(c.payload, s.Data...)
			if s.MessageEnd {
				return c.deliver(c.payload)
			}
		}
		if c.readErr != nil {
			err := c.readErr
			if err == io.EOF && c.dec.InMessage() {
				err = fmt.Errorf("connection closed inside a response at stream offset %d: %w", c.dec.Offset(), io.ErrUnexpectedEOF)
			}
			return Reply{}, false, c.fail("read", p, err)
		}
		deadline := hard
		if !soft.IsZero() && soft.Before(hard) {
			deadline = soft
		}
		if !deadline.Equal(c.rdeadline) {
			if err := c.conn.SetReadDeadline(deadline); err != nil {
				return Reply{}, false, c.fail("read", p, err)
			}
			c.rdeadline = deadline
		}
		n, err := c.conn.Read(c.rbuf)
		c.rstart, c.rend = 0, n
		if err != nil {
			if deadline.Equal(soft) && errors.Is(err, os.ErrDeadlineExceeded) && time.Now().Before(hard) {
				// Only the caller's own wait ended; nothing is lost,
				// the Decoder keeps any partial message.
				return Reply{}, false, nil
			}
			if errors.Is(err, os.ErrDeadlineExceeded) {
				err = fmt.Errorf("no response within %v: %w", c.timeout, err)
			}
			c.readErr = err
		} else if n == 0 {
			c.readErr = io.ErrNoProgress
		}
	}
}

// deliver checks that the message just read answers the oldest request and
// pops that request.
func (c *Client) deliver(payload []byte) (Reply, bool, error) {
	now := time.Now()
	p := c.at(0)
	m := c.cur
	m.Frames = c.dec.MessageFrames()
	m.Payload = payload
	if m.RequestUID != p.uid || m.Op != p.op {
		return Reply{}, false, c.fail("response", p, fmt.Errorf("%w: got %s uid %d, want %s uid %d",
			ErrUnexpectedResponse, m.Op, m.RequestUID, p.op, p.uid))
	}
	r := Reply{Message: m, Latency: now.Sub(p.sent), at: now}
	c.pop()
	return r, true, nil
}

// fail makes err sticky and returns it with context.
func (c *Client) fail(stage string, p *pending, err error) error {
	e := &OpError{Stage: stage, Addr: c.addr, Err: err}
	if p != nil {
		e.Op, e.ID = p.op, string(p.id[:p.idLen])
	}
	c.err = e
	return e
}

func (c *Client) broken(op distcache.Op, p *pending) error {
	e := &OpError{Stage: "send", Op: op, Addr: c.addr, Err: fmt.Errorf("%w: %v", ErrClientBroken, c.err)}
	if p != nil {
		e.Op, e.ID, e.Stage = p.op, string(p.id[:p.idLen]), "read"
	}
	return e
}

// The queue of outstanding requests is a ring that grows by doubling, so a
// steady pipeline never allocates.

func (c *Client) at(i int) *pending {
	return &c.queue[(c.qhead+i)%len(c.queue)]
}

func (c *Client) push() *pending {
	if c.qlen == len(c.queue) {
		q := make([]pending, max(2*len(c.queue), 4))
		for i := 0; i < c.qlen; i++ {
			q[i] = *c.at(i)
		}
		c.queue, c.qhead = q, 0
	}
	c.qlen++
	return c.at(c.qlen - 1)
}

func (c *Client) pop() {
	c.qhead = (c.qhead + 1) % len(c.queue)
	c.qlen--
}

// call is one synchronous round trip.
func (c *Client) call(op distcache.Op, payload []byte) (distcache.Response, error) {
	if c.err != nil {
		return distcache.Response{}, c.broken(op, nil)
	}
	if c.qlen > 0 {
		return distcache.Response{}, &OpError{Stage: "send", Op: op, ID: string(requestID(op, payload)), Addr: c.addr,
			Err: fmt.Errorf("synchronous call with %d pipelined requests outstanding", c.qlen)}
	}
	if _, err := c.Send(op, payload); err != nil {
		return distcache.Response{}, err
	}
	p := *c.at(0)
	r, err := c.Recv()
	if err != nil {
		return distcache.Response{}, err
	}
	resp, err := distcache.ParseResponse(op, r.Message.Payload)
	if err != nil {
		return distcache.Response{}, c.fail("response", &p, err)
	}
	return resp, nil
}

// Add stores data under id for timeout (rounded down to milliseconds) and
// returns the server's status: StatusOK, StatusAddExists, or another ADD
// status. A status is not an error; err reports failures to get one.
func (c *Client) Add(id, data []byte, timeout time.Duration) (distcache.Status, error) {
	ms := timeout.Milliseconds()
	if ms < 0 || ms > math.MaxUint32 {
		return 0, &OpError{Stage: "send", Op: distcache.OpAdd, ID: string(id), Addr: c.addr,
			Err: fmt.Errorf("session timeout %v does not fit the 32-bit milliseconds field", timeout)}
	}
	c.syncBuf = distcache.AppendAddRequest(c.syncBuf[:0], uint32(ms), id, data)
	resp, err := c.call(distcache.OpAdd, c.syncBuf)
	return resp.Status, err
}

// Get fetches the session stored under id. The data is a copy the caller
// owns. A miss is hit == false with no error; any status other than the
// miss status is an error.
func (c *Client) Get(id []byte) (data []byte, hit bool, err error) {
	resp, err := c.call(distcache.OpGet, id)
	switch {
	case err != nil:
		return nil, false, err
	case resp.Hit:
		return append([]byte(nil), resp.Data...), true, nil
	case resp.Status == distcache.StatusNotOK:
		return nil, false, nil
	}
	return nil, false, c.statusError(distcache.OpGet, id, resp.Status)
}

// Remove deletes the session under id and reports whether it existed.
func (c *Client) Remove(id []byte) (bool, error) {
	return c.yesNo(distcache.OpRemove, id)
}

// Have reports whether the server holds a session under id.
func (c *Client) Have(id []byte) (bool, error) {
	return c.yesNo(distcache.OpHave, id)
}

func (c *Client) yesNo(op distcache.Op, id []byte) (bool, error) {
	resp, err := c.call(op, id)
	switch {
	case err != nil:
		return false, err
	case resp.Status == distcache.StatusOK:
		return true, nil
	case resp.Status == distcache.StatusNotOK:
		return false, nil
	}
	return false, c.statusError(op, id, resp.Status)
}

// statusError reports an answer outside an operation's two outcomes; it
// leaves the connection usable, the exchange itself was well formed.
func (c *Client) statusError(op distcache.Op, id []byte, s distcache.Status) error {
	return &OpError{Stage: "response", Op: op, ID: string(id), Addr: c.addr,
		Err: fmt.Errorf("unexpected status %d (%s)", uint8(s), s)}
}
