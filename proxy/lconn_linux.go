package proxy

import (
	"errors"
	"fmt"
	"net/netip"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/snoopd/snoopd/distcache"
)

// lconn is a connection of the epoll engine: a client socket and its
// server socket, both owned by one loop.
type lconn struct {
	conn
	l     *loop
	side  [2]lside // 0: the client, 1: the server
	h     [2]half  // 0 decodes client->server (read from side 0), 1 the reverse
	state uint8
	cands []unix.Sockaddr
	cand  int
	tm    timerEntry
	fc    *lfaults // nil until the connection reads under faults
	// reserved: a data-path descriptor is counted for the server while
	// it has no socket (admit reserves it; a spare taken or a socket
	// made takes it over, releaseFDs gives it back).
	reserved bool
	// refill is the loop's pool of spares, to top up once the client has
	// sent its first bytes (nil once done, or without spares).
	refill *lspares
}

const (
	stDialing uint8 = iota // resolving or connecting to the server
	stOpen
	stClosed
	// stWaiting: no spare was ready; the server is dialled once the
	// client has sent its first bytes.
	stWaiting
)

// lside is one socket of a connection and the bytes waiting to be written
// to it. While a side has a backlog its peer is not read (backpressure:
// memory per connection stays bounded by one read).
type lside struct {
	lc     *lconn
	idx    int
	fd     int
	gen    uint32
	events uint32
	out    []byte
	// rdClosed: end of stream was read from this socket; shutPending: a
	// half-close is to be passed on to it once out is written.
	rdClosed, shutPending bool
	// detached: the socket hung up while the loop neither read from it
	// nor wrote to it, so it was taken out of the epoll set; otherwise
	// its level-triggered hang-up would be reported at every wait and the
	// loop would spin (a client that closes with its request unanswered).
	// setEvents puts it back when there is something to wait for.
	detached bool
}

func (s *lside) peer() *lside { return &s.lc.side[1-s.idx] }

// dir is the direction of the bytes read from s.
func (s *lside) dir() distcache.Direction { return distcache.Direction(s.idx + 1) }

func (s *lside) setEvents(ev uint32) {
	if s.fd < 0 || s.events == ev && !s.detached {
		return
	}
	s.events = ev
	if s.detached {
		if ev == 0 {
			return
		}
		s.detached = false
		e := unix.EpollEvent{Events: ev, Fd: int32(s.fd), Pad: int32(s.gen)}
		unix.EpollCtl(s.lc.l.epfd, unix.EPOLL_CTL_ADD, s.fd, &e)
		return
	}
	s.lc.l.mod(s.fd, s.gen, ev)
}

// detachIfIdle takes a hung-up socket out of the epoll set while nothing
// is read from it or written to it (see lside.detached).
func (s *lside) detachIfIdle(ev uint32) {
	if ev&(unix.EPOLLHUP|unix.EPOLLERR) == 0 || s.detached || s.fd < 0 || s.lc.state != stOpen ||
		s.events&(unix.EPOLLIN|unix.EPOLLOUT) != 0 {
		return
	}
	s.detached = true
	unix.EpollCtl(s.lc.l.epfd, unix.EPOLL_CTL_DEL, s.fd, nil)
}

func (lc *lconn) killFromAnywhere(reason string) {
	lc.l.post(func() { lc.close(reason) })
}

func (lc *lconn) recheckFaultsFromAnywhere() {
	lc.l.post(func() {
		if lc.fc != nil && lc.state == stOpen {
			lc.fc.onTimer(0)
		}
	})
}

// start connects the server side: a spare if one is ready, else a dial
// once the client has sent its first bytes. Neither a spare taken nor a
// server dialled is replaced before then: a client that never speaks
// costs no dial, which is what ends a loop of spares dialled into each
// other across two daemons (each spare a client of the other side).
func (lc *lconn) start() {
	if set, _ := lc.set.spares.(*lsparesSet); set != nil {
		sp := set.pools[lc.l.idx]
		lc.refill = sp
		if fd := sp.take(); fd >= 0 {
			// The spare is registered for input already: only its owner
			// changes. Its generation stays, since events still pending
			// for it are about this same socket.
			lc.side[1].fd = fd
			slot := &lc.l.slots[fd]
			slot.h, lc.side[1].gen = &lc.side[1], slot.gen
			// The spare is counted already: the reservation goes back.
			lc.reserved = false
			dataFDs.Add(-1)
			lc.opened()
			return
		}
	}
	lc.awaitRequest()
}

// awaitRequest watches the client for its first bytes, under the idle
// timeout; spoke dials the server when they come. A client's first
// request usually arrives with its connection, so for a client that
// speaks the dial starts at the loop's next turn.
func (lc *lconn) awaitRequest() {
	// The server's descriptor stays reserved while the client waits (see
	// admit): an admitted client has room for its server, and silent
	// clients cannot take the room of those that speak.
	lc.state = stWaiting
	c := &lc.side[0]
	gen, err := lc.l.add(c.fd, c, unix.EPOLLIN)
	c.gen, c.events = gen, unix.EPOLLIN
	if err != nil {
		lc.close(fmt.Sprintf("epoll_ctl: %v", err))
		return
	}
	if idle := lc.set.opts.IdleTimeout; idle > 0 {
		lc.l.timers.schedule(&lc.tm, lc.l.now.Add(idle).UnixNano())
	}
}

// spoke handles the client's socket turning readable while the
// connection waits: bytes dial the server (the client is not read until
// it is connected); an end of stream or an error closes the client, with
// no server ever dialled for it.
func (lc *lconn) spoke() {
	var b [1]byte
	n, _, err := unix.Recvfrom(lc.side[0].fd, b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
	switch {
	case err == unix.EAGAIN || err == unix.EINTR:
		return
	case err != nil:
		lc.close(fmt.Sprintf("client read failed: %v", err))
		return
	case n == 0:
		lc.close("client closed")
		return
	}
	// Out of the epoll set while the server is dialled, as before a
	// connection opens: a client that sent its request and hung up is
	// reported hung up at every wait, yet its request is still to go
	// on. opened adds it back.
	lc.state = stDialing
	unix.EpollCtl(lc.l.epfd, unix.EPOLL_CTL_DEL, lc.side[0].fd, nil)
	lc.dialNow()
}

// dialNow dials the server under the dial timeout.
func (lc *lconn) dialNow() {
	lc.state = stDialing
	lc.l.timers.schedule(&lc.tm, lc.l.now.Add(lc.set.opts.DialTimeout).UnixNano())
	lc.dial()
}

// dial connects to the server's first candidate address; host names are
// resolved off the loop first.
func (lc *lconn) dial() {
	cands, err := lc.l.dialAddrs(lc.p, lc.set.server, lc.set.opts.DialTimeout, lc)
	if err != nil {
		lc.failConnect(err)
		return
	}
	if cands == nil {
		return // resolving: resolved carries on
	}
	lc.cands, lc.cand = cands, 0
	lc.connectNext()
}

// resolved carries on a dial once the server's name is looked up.
func (lc *lconn) resolved(err error) {
	if lc.state != stDialing {
		return
	}
	if err != nil {
		lc.failConnect(err)
		return
	}
	lc.dial()
}

func (lc *lconn) connectNext() {
	for {
		fd, done, err := connectSocket(lc.l, lc.cands[lc.cand])
		if err != nil {
			if errors.Is(err, unix.ECONNREFUSED) && lc.cand+1 < len(lc.cands) {
				lc.cand++
				continue
			}
			lc.set.server.forget()
			lc.failConnect(err)
			return
		}
		lc.side[1].fd = fd
		lc.reserved = false // the socket holds the count now
		if done {
			gen, err := lc.l.add(fd, &lc.side[1], unix.EPOLLIN)
			lc.side[1].gen = gen
			if err != nil {
				lc.close(fmt.Sprintf("epoll_ctl: %v", err))
				return
			}
			lc.opened()
			return
		}
		// Edge-triggered: the completion is one event.
		gen, err := lc.l.add(fd, &lc.side[1], unix.EPOLLOUT|unix.EPOLLET)
		lc.side[1].gen = gen
		if err != nil {
			lc.close(fmt.Sprintf("epoll_ctl: %v", err))
		}
		return
	}
}

// connectSocket starts a non-blocking connect from loop l; done reports
// that it completed at once (unix sockets usually do). The caller has
// counted the descriptor in dataFDs before (reserveFDs), in one step with
// the check against the bound: the loops connect at the same time, and
// each must not pass the bound on what the others have not counted yet.
// The count stays the caller's whether the connect starts or fails.
func connectSocket(l *loop, sa unix.Sockaddr) (fd int, done bool, err error) {
	// The target's addresses are shared by all the loops, and Connect
	// writes its encoding into the Sockaddr it is given: each loop
	// connects with a copy of its own.
	family := unix.AF_UNIX
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		family = unix.AF_INET
		l.sa4 = *a
		sa = &l.sa4
	case *unix.SockaddrInet6:
		family = unix.AF_INET6
		l.sa6 = *a
		sa = &l.sa6
	case *unix.SockaddrUnix:
		l.saUnix = *a
		sa = &l.saUnix
	}
	fd, err = unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, false, fmt.Errorf("socket: %w", err)
	}
	if family != unix.AF_UNIX {
		unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	}
	err = unix.Connect(fd, sa)
	switch {
	case err == nil:
		done = true
	case errors.Is(err, unix.EINPROGRESS):
	default:
		unix.Close(fd)
		return -1, false, fmt.Errorf("connect: %w", err)
	}
	return fd, done, nil
}

// connectOutcome returns the outcome of a non-blocking connect whose
// socket reported ev: writable with no error or hang-up flagged means
// connected, which spares a getsockopt on every connect that works (the
// kernel flags a failed one with EPOLLERR); otherwise connectResult says.
func connectOutcome(fd int, ev uint32) error {
	if ev&(unix.EPOLLERR|unix.EPOLLHUP) == 0 {
		return nil
	}
	return connectResult(fd)
}

// connectResult returns the outcome of a non-blocking connect.
func connectResult(fd int) error {
	soerr, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
	if err != nil {
		return err
	}
	if soerr != 0 {
		return syscall.Errno(soerr)
	}
	return nil
}

// connectDone handles the completion of the server connect, reported
// with ev.
func (lc *lconn) connectDone(ev uint32) {
	s := &lc.side[1]
	if err := connectOutcome(s.fd, ev); err != nil {
		// The socket goes; its count stays as the server's reservation,
		// for the next candidate or for releaseFDs.
		lc.l.release(s.fd)
		s.fd = -1
		lc.reserved = true
		if errors.Is(err, unix.ECONNREFUSED) && lc.cand+1 < len(lc.cands) {
			lc.cand++
			lc.connectNext()
			return
		}
		lc.set.server.forget()
		lc.failConnect(fmt.Errorf("connect: %w", err))
		return
	}
	gen, err := lc.l.rebind(s.fd, s, unix.EPOLLIN)
	s.gen = gen
	if err != nil {
		lc.close(fmt.Sprintf("epoll_ctl: %v", err))
		return
	}
	lc.opened()
}

// opened starts forwarding once both sockets are connected, and reads the
// client at once: its first request has usually arrived by now, which
// saves a wait.
func (lc *lconn) opened() {
	l := lc.l
	lc.state = stOpen
	lc.side[1].events = unix.EPOLLIN
	gen, err := l.add(lc.side[0].fd, &lc.side[0], unix.EPOLLIN)
	lc.side[0].gen, lc.side[0].events = gen, unix.EPOLLIN
	if err != nil {
		lc.close(fmt.Sprintf("epoll_ctl: %v", err))
		return
	}
	lc.publishOpened()
	lc.tm.owner = lc
	if m := minTimeout(&lc.set.opts); m > 0 {
		l.timers.schedule(&lc.tm, l.now.Add(m).UnixNano())
	} else {
		l.timers.remove(&lc.tm)
	}
	lc.side[0].read()
}

// failConnect ends a connection whose server could not be reached.
func (lc *lconn) failConnect(err error) {
	if lc.state == stClosed {
		return
	}
	lc.state = stClosed
	lc.l.timers.remove(&lc.tm)
	lc.releaseFDs()
	lc.l.open.Add(-1)
	lc.connectFailed(err)
	lc.p.wg.Done()
}

func (lc *lconn) releaseFDs() {
	if lc.reserved {
		lc.reserved = false
		dataFDs.Add(-1)
	}
	for i := range lc.side {
		s := &lc.side[i]
		if s.fd >= 0 {
			lc.l.release(s.fd)
			dataFDs.Add(-1)
			s.fd = -1
		}
		if s.out != nil {
			lc.l.freeBacklog(s.out)
			s.out = nil
		}
	}
}

// close ends the connection; the first reason given is reported.
func (lc *lconn) close(reason string) {
	if lc.state == stClosed {
		return
	}
	dialing := lc.state == stDialing || lc.state == stWaiting
	lc.state = stClosed
	lc.setReason(reason)
	lc.l.timers.remove(&lc.tm)
	if lc.fc != nil {
		lc.l.timers.remove(&lc.fc.tm)
	}
	lc.releaseFDs()
	lc.l.open.Add(-1)
	if dialing {
		// Stopped or killed while dialling, or the client went before
		// its first byte: not the server's fault, so not a connect
		// failure; the client is simply gone.
		lc.p.forget(&lc.conn)
	} else {
		lc.report()
	}
	lc.p.wg.Done()
}

func (lc *lconn) onTimer(now int64) {
	switch lc.state {
	case stWaiting:
		lc.p.stats.timeouts.Add(1)
		lc.close("idle timeout: no request after " + lc.set.opts.IdleTimeout.String())
	case stDialing:
		lc.failConnect(fmt.Errorf("dial timeout after %v", lc.set.opts.DialTimeout))
	case stOpen:
		next, expired := lc.checkTimeouts(now)
		if expired != "" {
			lc.close(expired)
			return
		}
		if next != 0 {
			lc.l.timers.schedule(&lc.tm, next)
		}
	}
}

func (s *lside) onEvent(ev uint32) {
	lc := s.lc
	switch lc.state {
	case stWaiting:
		lc.spoke()
		return
	case stDialing:
		if s.idx == 1 {
			lc.connectDone(ev)
		}
		return
	case stClosed:
		return
	}
	if ev&unix.EPOLLOUT != 0 && len(s.out) > 0 {
		s.flush()
		if lc.state != stOpen {
			return
		}
	}
	if ev&(unix.EPOLLIN|unix.EPOLLHUP|unix.EPOLLERR|unix.EPOLLRDHUP) != 0 && !s.rdClosed {
		s.read()
	}
	s.detachIfIdle(ev)
}

// readOnce reads what s has, once, into the loop's buffer. ok is false
// when there is nothing to do: nothing to read yet, or the read failed
// and the connection is closed. An empty chunk is the end of the stream.
// Both read paths (read, readFaulty) use it.
func (s *lside) readOnce() (chunk []byte, ok bool) {
	n, e := rawRead(s.fd, s.lc.l.buf)
	if e != 0 {
		if e != unix.EAGAIN && e != unix.EINTR {
			s.lc.close(fmt.Sprintf("%s read failed: %v", peerName(s.dir(), true), e))
		}
		return nil, false
	}
	return s.lc.l.buf[:n], true
}

// read reads what s has, once, and forwards it to the peer.
func (s *lside) read() {
	lc, l := s.lc, s.lc.l
	if fs := lc.p.faults.Load(); fs != nil || lc.fc != nil {
		s.readFaulty(fs)
		return
	}
	chunk, ok := s.readOnce()
	if !ok {
		return
	}
	if len(chunk) == 0 {
		s.ended()
		return
	}
	h := &lc.h[s.idx]
	f := lc.inspect(h, chunk, l.now)
	dst := s.peer()
	var werr syscall.Errno
	if f.n > 0 {
		werr = dst.send(chunk[:f.n])
	}
	if !lc.afterForward(h, f) {
		lc.close(lc.reason)
		return
	}
	if werr != 0 {
		lc.close(fmt.Sprintf("%s write failed: %v", peerName(s.dir(), false), werr))
		return
	}
	if s.idx == 0 && lc.refill != nil {
		lc.refilled()
	}
	if len(dst.out) > 0 {
		// The peer cannot take more: stop reading until it has.
		s.setEvents(0)
	}
	lc.closeIfDone()
}

// refilled tops up the loop's spares once the client has spoken: its
// request is on its way, so the new dial is not in that request's path.
func (lc *lconn) refilled() {
	sp := lc.refill
	lc.refill = nil
	sp.fill()
}

// send writes p to s, keeping what s cannot take yet.
func (s *lside) send(p []byte) syscall.Errno {
	if len(s.out) > 0 {
		s.out = append(s.out, p...)
		return 0
	}
	w, e := rawWrite(s.fd, p)
	if e == unix.EAGAIN {
		w, e = 0, 0
	}
	if e != 0 {
		return e
	}
	if w < len(p) {
		if s.out == nil {
			s.out = s.lc.l.backlog()
		}
		s.out = append(s.out, p[w:]...)
		s.setEvents(s.events | unix.EPOLLOUT)
	}
	return 0
}

// flush writes s's backlog; once it is gone the peer is read again and a
// half-close waiting for it is passed on.
func (s *lside) flush() {
	lc := s.lc
	w, e := rawWrite(s.fd, s.out)
	if e == unix.EAGAIN {
		return
	}
	if e != 0 {
		lc.close(fmt.Sprintf("%s write failed: %v", peerName(s.peer().dir(), false), e))
		return
	}
	n := copy(s.out, s.out[w:])
	s.out = s.out[:n]
	if n > 0 {
		return
	}
	lc.l.freeBacklog(s.out)
	s.out = nil
	s.setEvents(s.events &^ unix.EPOLLOUT)
	if lc.fc != nil {
		// Held bytes may be due; the fault layer resumes reading and
		// passes a half-close on once none are left.
		lc.fc.pump(s.peer().idx)
		return
	}
	if src := s.peer(); !src.rdClosed {
		src.setEvents(src.events | unix.EPOLLIN)
	}
	if s.shutPending {
		s.shutPending = false
		unix.Shutdown(s.fd, unix.SHUT_WR)
	}
	lc.closeIfDone()
}

// ended handles the end of stream read from s.
func (s *lside) ended() {
	lc := s.lc
	dir := s.dir()
	h := &lc.h[s.idx]
	if h.decoding && h.dec.InMessage() {
		lc.setReason(peerName(dir, true) + " closed mid-message")
	}
	s.rdClosed = true
	dst := s.peer()
	owes := lc.fc != nil && lc.fc.owes()
	if owes && dst.rdClosed {
		// Both ended, bytes held: closed once they are out.
		s.setEvents(s.events &^ unix.EPOLLIN)
		return
	}
	if !owes && (dst.rdClosed || (len(dst.out) == 0 && lc.idle())) {
		// Nothing is owed either way, so nothing can follow (a distcache
		// server never speaks unasked): close both at once. This saves
		// the shutdown calls of a half-close on every connection of a
		// client that opens one per operation.
		lc.close(peerName(dir, true) + " closed")
		return
	}
	// Pass the half-close on: the far side may still answer.
	s.setEvents(s.events &^ unix.EPOLLIN)
	if len(dst.out) > 0 || lc.fc != nil && lc.fc.holds(s.idx) {
		dst.shutPending = true
		return
	}
	if err := unix.Shutdown(dst.fd, unix.SHUT_WR); err != nil {
		lc.close(peerName(dir, true) + " closed")
	}
}

// closeIfDone closes a connection one side of which has ended once nothing
// is owed any more, rather than wait for the other side to notice the
// half-close and end too.
func (lc *lconn) closeIfDone() {
	if lc.state != stOpen {
		return
	}
	c, sv := &lc.side[0], &lc.side[1]
	if !c.rdClosed && !sv.rdClosed || len(c.out) > 0 || len(sv.out) > 0 || !lc.idle() || lc.fc != nil && lc.fc.owes() {
		return
	}
	who := "client"
	if !c.rdClosed {
		who = "server"
	}
	lc.close(who + " closed")
}

// resolveWaiter is a dial from the loop (a client's, or a spare's) that
// waits for the server's name to be looked up.
type resolveWaiter interface {
	// resolved is called on the loop when the lookup ends.
	resolved(err error)
}

// dialAddrs returns the addresses for a dial from l to t, after checking
// that they do not lead back into this process's proxies (ErrProxyLoop,
// counted in p's stats). While t's name is not resolved yet it returns
// nil and no error and looks the name up off the loop, then calls
// w.resolved on the loop, which dials again.
func (l *loop) dialAddrs(p *Proxy, t *target, timeout time.Duration, w resolveWaiter) ([]unix.Sockaddr, error) {
	cands, strs := t.sockaddrs()
	if cands == nil {
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			_, err := t.candidates(p.ctx, timeout)
			l.post(func() { w.resolved(err) })
		}()
		return nil, nil
	}
	if err := t.checkLoop(strs, &p.stats); err != nil {
		return nil, err
	}
	return cands, nil
}

// sockaddrs returns the server's candidate addresses as sockets take them,
// with their text; nil while a host name is not resolved yet.
func (t *target) sockaddrs() ([]unix.Sockaddr, []string) {
	if t.addr.Network() == distcache.NetworkUnix {
		t.mu.Lock()
		defer t.mu.Unlock()
		sa, ok := t.raw.([]unix.Sockaddr)
		if !ok {
			sa = []unix.Sockaddr{&unix.SockaddrUnix{Name: t.addr.Path()}}
			t.raw = sa
		}
		return sa, nil
	}
	strs := t.cached()
	if strs == nil {
		return nil, nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if sa, ok := t.raw.([]unix.Sockaddr); ok && len(sa) == len(strs) {
		return sa, strs
	}
	out := make([]unix.Sockaddr, 0, len(strs))
	for _, s := range strs {
		ap, err := netip.ParseAddrPort(s)
		if err != nil {
			continue
		}
		ip := ap.Addr().Unmap()
		if ip.Is4() {
			out = append(out, &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ip.As4()})
		} else {
			out = append(out, &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ip.As16()})
		}
	}
	t.raw = out
	return out, strs
}
