package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/snoopd/snoopd/distcache"
)

// conn is one proxied client connection. Two goroutines serve it: run
// dials the server and then pumps client->server; a second pumps
// server->client. Whichever finishes last closes the sockets and reports.
type conn struct {
	p          *Proxy
	id         uint64
	client     net.Conn
	server     net.Conn // set by run before the second goroutine starts
	clientAddr string
	opened     time.Time
	set        *settings

	bytesUp, bytesDown atomic.Int64
	transactions       atomic.Int64

	// mu guards the requests awaiting a response, shared by the two
	// directions.
	mu      sync.Mutex
	pending []pendingRequest

	reasonOnce sync.Once
	reason     string
	aborted    atomic.Bool
	upBroken   atomic.Bool // client->server decoding stopped (passthrough)
	// midMessage is set, per direction (index Direction-1), while a
	// message is partly through; a direction that stopped decoding after
	// a protocol error counts as undecided and sets it too.
	midMessage [2]atomic.Bool
	halvesLeft atomic.Int32
	serverSet  chan struct{} // closed once server is dialled (or never will be)
}

// pendingRequest is a request whose response has not arrived.
type pendingRequest struct {
	uid     uint32
	op      distcache.Op
	start   time.Time
	frames  int
	summary distcache.PayloadSummary // SessionID left nil: see request
	id      [distcache.MaxSessionIDLen]byte
	idLen   int
}

// request returns the summary with its session id, aliasing r.
func (r *pendingRequest) request() distcache.PayloadSummary {
	s := r.summary
	s.SessionID = r.id[:r.idLen:r.idLen]
	return s
}

func newConn(p *Proxy, id uint64, client net.Conn, clientAddr string, s *settings, now time.Time) *conn {
	return &conn{p: p, id: id, client: client, clientAddr: clientAddr, opened: now, set: s, serverSet: make(chan struct{})}
}

func (c *conn) info() ConnInfo {
	c.mu.Lock()
	pending := len(c.pending)
	c.mu.Unlock()
	return ConnInfo{
		ID: c.id, Client: c.clientAddr, Opened: c.opened,
		BytesUp: c.bytesUp.Load(), BytesDown: c.bytesDown.Load(),
		Transactions: c.transactions.Load(), Pending: pending,
	}
}

func (c *conn) event(kind EventKind, now time.Time) *Event {
	return &Event{Kind: kind, Time: now, Proxy: c.p.name, ConnID: c.id, Client: c.clientAddr}
}

// run dials the server off the accept loop, then forwards client->server.
func (c *conn) run() {
	defer c.p.wg.Done()
	server := c.set.spares.take()
	var err error
	if server == nil {
		server, err = c.set.server.dial(c.p.ctx, c.set.opts.DialTimeout)
	}
	if c.aborted.Load() {
		// Stopped or killed while dialling: not the server's fault, so
		// not a connect failure; the client is simply gone.
		if err == nil {
			server.Close()
		}
		close(c.serverSet)
		c.client.Close()
		c.p.forget(c)
		return
	}
	if err != nil {
		close(c.serverSet)
		c.client.Close()
		c.p.stats.connectFailed.Add(1)
		c.p.forget(c)
		e := c.event(KindConnectFailed, time.Now())
		e.Err = fmt.Errorf("dial server %s: %w", c.set.server.addr, err)
		c.p.sink.Publish(e)
		return
	}
	c.server = server
	close(c.serverSet)
	if c.aborted.Load() {
		// abort ran before server was set and could not close it.
		server.Close()
	}
	c.p.sink.Publish(c.event(KindConnOpened, time.Now()))
	c.halvesLeft.Store(2)
	c.p.wg.Add(1)
	go func() {
		defer c.p.wg.Done()
		c.pump(server, c.client, distcache.ServerToClient)
	}()
	c.pump(c.client, server, distcache.ClientToServer)
}

// abort closes both sockets; the pumps notice and end. The first reason
// given is the one reported.
func (c *conn) abort(reason string) {
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

// idle reports whether the connection is between transactions: every
// request answered, no message partly through in either direction, and
// both directions still decoded (otherwise the proxy cannot tell).
func (c *conn) idle() bool {
	if c.midMessage[0].Load() || c.midMessage[1].Load() {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.pending) == 0
}

func (c *conn) setReason(r string) {
	c.reasonOnce.Do(func() { c.reason = r })
}

// half is the decoding state of one direction.
type half struct {
	dir      distcache.Direction
	decoding bool
	dec      distcache.Decoder
	scan     distcache.PayloadScanner
	msgStart time.Time
	frames   int64       // frames completed since the last flush to the counters
	out      []EventCopy // events of the current chunk, out[:nout]
	nout     int
}

// pump forwards src to dst until src ends or either side fails, decoding
// what passes.
func (c *conn) pump(src, dst net.Conn, dir distcache.Direction) {
	h := &half{dir: dir, decoding: true}
	h.dec.Reset(dir)
	opts := c.set.opts
	scanOpts := distcache.ScanOptions{Digest: true}
	if opts.CaptureData {
		scanOpts.CaptureLimit = opts.CaptureLimit
	}
	h.scan.SetOptions(scanOpts)
	bytes, frames := &c.p.stats.bytesUp, &c.p.stats.framesUp
	connBytes := &c.bytesUp
	if dir == distcache.ServerToClient {
		bytes, frames, connBytes = &c.p.stats.bytesDown, &c.p.stats.framesDown, &c.bytesDown
	}
	// Buffers come from a pool: clients that open a connection per
	// operation would otherwise cost two allocations and their garbage
	// for every request.
	bp := c.set.buffers.Get().(*[]byte)
	defer c.set.buffers.Put(bp)
	buf := *bp
	for {
		n, rerr := src.Read(buf)
		if n > 0 {
			chunk := buf[:n]
			fwd, perr := n, error(nil)
			if h.decoding {
				var valid int
				valid, perr = c.decode(h, chunk, time.Now())
				if perr != nil && opts.OnCorrupt == CloseOnCorrupt {
					fwd = valid
				}
			}
			// Count before writing: once the far side has the bytes, a
			// reader of the counters must see them.
			if h.frames > 0 {
				frames.Add(h.frames)
				h.frames = 0
			}
			var werr error
			if fwd > 0 {
				bytes.Add(int64(fwd))
				connBytes.Add(int64(fwd))
				_, werr = dst.Write(chunk[:fwd])
			}
			c.flush(h)
			c.midMessage[dir-1].Store(!h.decoding || h.dec.InMessage())
			if perr != nil {
				c.protocolError(h, perr, opts.OnCorrupt)
				if opts.OnCorrupt == CloseOnCorrupt {
					c.abort("protocol error " + dir.String())
					break
				}
				h.decoding = false
				c.midMessage[dir-1].Store(true) // undecided from now on
				if dir == distcache.ClientToServer {
					c.upBroken.Store(true)
				}
			}
			if werr != nil {
				c.abort(fmt.Sprintf("%s write failed: %v", peerName(dir, false), plainErr(werr)))
				break
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
					// operation, which on some kernels cost as much
					// as the connect.
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
		c.finish()
	}
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

// decode runs the chunk through the direction's decoder and returns how
// many leading bytes are valid. Completed requests are queued at once (the
// response may race back); completed transactions wait in h.out until the
// chunk has been forwarded, so publishing never delays the bytes.
func (c *conn) decode(h *half, chunk []byte, now time.Time) (int, error) {
	consumed := 0
	for p := chunk; len(p) > 0; {
		if !h.dec.InMessage() {
			h.msgStart = now
		}
		n, s, err := h.dec.Next(p)
		consumed += n
		if err != nil {
			return consumed, err
		}
		if s.Header && h.dec.MessageFrames() == 1 {
			hd := h.dec.Header()
			h.scan.Start(hd.Op, hd.IsResponse)
		}
		h.scan.Write(s.Data)
		if s.FrameEnd {
			h.frames++
		}
		if s.MessageEnd {
			if h.dir == distcache.ClientToServer {
				c.requestDone(h)
			} else {
				c.responseDone(h, now)
			}
		}
		p = p[n:]
	}
	return consumed, nil
}

func (c *conn) requestDone(h *half) {
	hd := h.dec.Header()
	sum := h.scan.Summary()
	var data []byte
	if sum.Data != nil {
		// Captured data aliases the scanner, which the next request reuses.
		data = append([]byte(nil), sum.Data...)
	}
	c.mu.Lock()
	// Built in place: a local pendingRequest would escape to the heap on
	// every request.
	c.pending = append(c.pending, pendingRequest{uid: hd.RequestUID, op: hd.Op, start: h.msgStart, frames: h.dec.MessageFrames()})
	r := &c.pending[len(c.pending)-1]
	r.summary = sum
	r.idLen = copy(r.id[:], sum.SessionID)
	// The id lives in r.id; it is re-sliced where it is used (request),
	// because the queue moves its entries.
	r.summary.SessionID = nil
	r.summary.Data = data
	c.mu.Unlock()
}

func (c *conn) responseDone(h *half, now time.Time) {
	hd := h.dec.Header()
	resp := h.scan.Summary()
	frames := h.dec.MessageFrames()

	c.mu.Lock()
	i := 0
	for i < len(c.pending) && (c.pending[i].uid != hd.RequestUID || c.pending[i].op != hd.Op) {
		i++
	}
	var t *Transaction
	if i == len(c.pending) {
		c.mu.Unlock()
		if c.upBroken.Load() {
			// Requests are no longer decoded (passthrough after a
			// protocol error), so every response would look orphaned.
			return
		}
		t = c.txEvent(h.nextOut(), now)
		t.Transaction = distcache.NewTransaction(hd.Op, hd.RequestUID, distcache.PayloadSummary{}, resp, 0, frames)
		t.Orphan = true
		t.Start = now
		c.detach(t)
	} else {
		req := &c.pending[i]
		t = c.txEvent(h.nextOut(), now)
		t.Transaction = distcache.NewTransaction(req.op, req.uid, req.request(), resp, req.frames, frames)
		t.Start = req.start
		t.Latency = now.Sub(req.start)
		// Detach before the queue shifts: the id still lives in req.
		c.detach(t)
		c.pending = append(c.pending[:i], c.pending[i+1:]...)
		c.mu.Unlock()
	}
	// Count now, publish after forwarding: a client that has its answer
	// sees it in the counters, and the sink never delays the bytes.
	c.account(t)
}

// txEvent fills the event part of a transaction event in e.
func (c *conn) txEvent(e *EventCopy, now time.Time) *Transaction {
	e.Event = Event{Kind: KindTransaction, Time: now, Proxy: c.p.name, ConnID: c.id, Client: c.clientAddr}
	e.tx = Transaction{}
	return &e.tx
}

// nextOut returns a reusable slot for an event to publish after the chunk
// is forwarded. Sinks copy what they keep, so the slots, and the
// transactions in them, cost no allocation in steady state.
func (h *half) nextOut() *EventCopy {
	if h.nout == len(h.out) {
		h.out = append(h.out, EventCopy{})
	}
	h.nout++
	return &h.out[h.nout-1]
}

// detach copies what t borrows (the session id and captured data, from the
// scanners or a pending request) into memory the event owns.
func (c *conn) detach(t *Transaction) {
	n := copy(t.idBuf[:], t.SessionID)
	t.SessionID = t.idBuf[:n:n]
	if t.Data != nil && c.set.opts.CaptureData {
		t.Data = append([]byte(nil), t.Data...)
	} else {
		t.Data = nil
	}
}

// flush publishes the events a chunk completed.
func (c *conn) flush(h *half) {
	for i := range h.out[:h.nout] {
		e := &h.out[i]
		e.Event.Tx = &e.tx
		c.p.sink.Publish(&e.Event)
		e.tx.Data = nil // let captured data go
	}
	h.nout = 0
}

func (c *conn) account(t *Transaction) {
	op := t.Op
	if !op.Valid() {
		return
	}
	c.p.stats.results[op][slotOf(t)].Add(1)
	if !t.Unanswered && !t.Orphan {
		c.transactions.Add(1)
		c.p.stats.latency.Record(t.Latency)
	}
}

func (c *conn) protocolError(h *half, err error, policy CorruptPolicy) {
	c.p.stats.protocolErrors.Add(1)
	e := c.event(KindProtocolError, time.Now())
	e.Err, e.Direction, e.Policy = err, h.dir, policy
	c.p.sink.Publish(e)
}

// finish runs once both directions are done: it closes the sockets,
// reports requests that never got a response, and the close itself.
func (c *conn) finish() {
	c.client.Close()
	c.server.Close()
	// Free the slot before reporting, so whoever sees the close event
	// can connect again under a connection limit.
	c.p.forget(c)
	now := time.Now()
	c.mu.Lock()
	pending := c.pending
	c.pending = nil
	c.mu.Unlock()
	var scratch EventCopy
	for i := range pending {
		r := &pending[i]
		t := c.txEvent(&scratch, now)
		t.Transaction = distcache.NewTransaction(r.op, r.uid, r.request(), distcache.PayloadSummary{}, r.frames, 0)
		t.Start = r.start
		t.Unanswered = true
		c.detach(t)
		c.account(t)
		scratch.Event.Tx = t
		c.p.sink.Publish(&scratch.Event)
	}
	c.setReason("closed")
	e := c.event(KindConnClosed, now)
	e.Closed = &ConnClosed{
		BytesUp: c.bytesUp.Load(), BytesDown: c.bytesDown.Load(),
		Duration: now.Sub(c.opened), Transactions: c.transactions.Load(), Reason: c.reason,
	}
	c.p.sink.Publish(e)
}

// target is where a proxy dials its server. Host names are resolved once
// and the answer reused until a dial fails, because resolving on every
// connection (as a plain net.Dial does) costs more than the whole proxied
// round trip when clients open a connection per operation.
type target struct {
	addr distcache.Addr

	mu       sync.Mutex
	resolved []string // "ip:port" candidates, nil until resolved
}

func newTarget(a distcache.Addr) *target { return &target{addr: a} }

func (t *target) dial(ctx context.Context, timeout time.Duration) (net.Conn, error) {
	// No TCP keepalive: it costs four setsockopt calls per connection, and
	// a dead server shows up at the next request anyway.
	d := net.Dialer{Timeout: timeout, KeepAlive: -1}
	if t.addr.Network() == distcache.NetworkUnix {
		return d.DialContext(ctx, "unix", t.addr.Path())
	}
	cands, err := t.candidates(ctx, timeout)
	if err != nil {
		return nil, err
	}
	var first error
	for i, a := range cands {
		c, err := d.DialContext(ctx, "tcp", a)
		if err == nil {
			if i > 0 {
				// Try the address that answered first next time
				// ("localhost" often lists ::1 where nobody listens).
				t.prefer(a)
			}
			return c, nil
		}
		if first == nil {
			first = err
		}
		if errors.Is(err, syscall.ECONNREFUSED) {
			continue
		}
	}
	// Forget the answer: the server may have moved.
	t.mu.Lock()
	t.resolved = nil
	t.mu.Unlock()
	return nil, first
}

func (t *target) prefer(a string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := []string{a}
	for _, c := range t.resolved {
		if c != a {
			out = append(out, c)
		}
	}
	t.resolved = out
}

func (t *target) candidates(ctx context.Context, timeout time.Duration) ([]string, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.resolved != nil {
		return t.resolved, nil
	}
	host, port := t.addr.Host(), fmt.Sprint(t.addr.Port())
	if ip := net.ParseIP(host); ip != nil {
		t.resolved = []string{net.JoinHostPort(host, port)}
		return t.resolved, nil
	}
	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	ips, err := net.DefaultResolver.LookupIPAddr(rctx, host)
	if err != nil {
		return nil, fmt.Errorf("resolve %s: %w", host, err)
	}
	out := make([]string, 0, len(ips))
	for _, ip := range ips {
		out = append(out, net.JoinHostPort(ip.String(), port))
	}
	t.resolved = out
	return out, nil
}
