package proxy

import (
	"fmt"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The epoll engine serves connections from a few event loops. Each loop is
// a goroutine locked to its OS thread that blocks in epoll_wait, reads
// what is ready without blocking, decodes it in place and writes it on at
// once: both sockets of a proxied connection belong to the same loop, so
// forwarding a message never hands off to another thread, and a
// transaction costs the system calls a C select loop makes (two reads, two
// writes) plus the wait. docs/benchmarks.md has the figures that chose
// this shape over two goroutines per connection.
//
// Everything a loop owns (its file descriptors, connections, spares,
// listeners, timers) is touched only on the loop's thread; other
// goroutines hand it work with post, which wakes the loop through an
// eventfd.

// DefaultEngine is the engine NewEngine("") returns.
const DefaultEngine = EngineEpoll

type epollEngine struct {
	loops []*loop
	next  atomic.Uint32
	once  sync.Once
}

func newEpollEngine(n int) (Engine, error) {
	e := &epollEngine{}
	// The loop waits through the runtime's system call path by default
	// (see loop.wait); SNOOPD_EPOLL_WAIT=raw makes it keep its P, which is
	// only fair when a P is left for everything else.
	raw := runtime.GOMAXPROCS(0) > n && os.Getenv("SNOOPD_EPOLL_WAIT") == "raw"
	for i := 0; i < n; i++ {
		l, err := newLoop(raw)
		if err != nil {
			e.Close()
			return nil, fmt.Errorf("epoll engine: %w", err)
		}
		e.loops = append(e.loops, l)
		go l.run()
	}
	return e, nil
}

func (e *epollEngine) Name() string { return EngineEpoll }
func (e *epollEngine) Loops() int   { return len(e.loops) }

// Close stops the loops and waits for them to end.
func (e *epollEngine) Close() error {
	e.once.Do(func() {
		for _, l := range e.loops {
			l.post(func() { l.stopping = true })
		}
		for _, l := range e.loops {
			<-l.done
		}
	})
	return nil
}

// pick chooses the loop for a new proxy: all of a proxy's connections,
// spares and its listener live on one loop, so a connection never needs
// a spare from another thread.
func (e *epollEngine) pick() *loop {
	return e.loops[int(e.next.Add(1))%len(e.loops)]
}

func (e *epollEngine) loopOf(p *Proxy) *loop {
	p.mu.Lock()
	defer p.mu.Unlock()
	return e.loopOfLocked(p)
}

func (e *epollEngine) loopOfLocked(p *Proxy) *loop {
	if l, ok := p.pinned.(*loop); ok {
		return l
	}
	l := e.pick()
	p.pinned = l
	return l
}

// serve takes over ln's socket: the loop accepts on a duplicate of its
// descriptor and ln is closed, so the runtime's poller no longer watches
// it. A unix socket's file is removed by stop.
func (e *epollEngine) serve(p *Proxy, ln net.Listener, done chan struct{}) (func(), error) {
	sc, ok := ln.(syscall.Conn)
	if !ok {
		return nil, fmt.Errorf("listener %T has no file descriptor", ln)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil, err
	}
	fd := -1
	var derr error
	if err := rc.Control(func(s uintptr) { fd, derr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return nil, err
	}
	if derr != nil {
		return nil, fmt.Errorf("duplicate listener: %w", derr)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("listener non-blocking: %w", err)
	}
	var unlink string
	if ul, ok := ln.(*net.UnixListener); ok {
		ul.SetUnlinkOnClose(false)
		// An abstract socket (@name) has no file to remove.
		if name := ul.Addr().String(); name != "" && name[0] != '@' {
			unlink = name
		}
	}
	_, tcp := ln.(*net.TCPListener)
	ln.Close()
	l := e.loopOfLocked(p)
	ll := &llistener{l: l, p: p, fd: fd, tcp: tcp, unlink: unlink, done: done}
	ll.tm.owner = ll
	l.post(ll.start)
	return func() { l.post(ll.stop) }, nil
}

func (e *epollEngine) newSpares(p *Proxy, s *settings) sparePool {
	sp := &lspares{l: e.loopOfLocked(p), p: p, s: s, want: s.opts.Spares}
	sp.tm.owner = sp
	return sp
}

// loop is one event loop.
type loop struct {
	epfd   int
	wakefd int // an eventfd: post writes it, the loop reads it

	mu    sync.Mutex
	tasks []func()
	woken atomic.Bool // a wake-up is on its way: post need not write again

	slots  []fdSlot // by file descriptor
	events []unix.EpollEvent
	buf    []byte   // the read buffer every connection of the loop shares
	spareB [][]byte // free backlog buffers
	timers timerHeap
	now    time.Time // when the current batch of events arrived
	raw    bool
	// reserve is a descriptor kept open to be closed when accept fails for
	// want of descriptors, so the loop can accept and close the client
	// instead of leaving it in the backlog (and being woken for it
	// forever).
	reserve  int
	stopping bool
	done     chan struct{}
	// waits counts the returns from epoll_wait, so a test can tell a
	// loop that waits from one that spins.
	waits    atomic.Uint64
	tasksRun []func()
}

// fdSlot is what the loop knows of one of its descriptors. gen changes
// whenever the descriptor is (re)registered or released, and travels in
// the epoll event, so an event for a descriptor number that has since
// been closed and reused is recognised and ignored.
type fdSlot struct {
	gen uint32
	h   handler
}

type handler interface {
	onEvent(ev uint32)
}

const (
	loopBufSize = 64 << 10
	maxEvents   = 256
)

func newLoop(raw bool) (*loop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	wfd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	reserve, err := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		reserve = -1
	}
	l := &loop{epfd: epfd, wakefd: wfd, raw: raw, reserve: reserve,
		events: make([]unix.EpollEvent, maxEvents), buf: make([]byte, loopBufSize), done: make(chan struct{})}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(wfd)}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wfd, &ev); err != nil {
		l.closeFDs()
		return nil, fmt.Errorf("epoll_ctl eventfd: %w", err)
	}
	return l, nil
}

func (l *loop) closeFDs() {
	unix.Close(l.epfd)
	unix.Close(l.wakefd)
	if l.reserve >= 0 {
		unix.Close(l.reserve)
	}
}

// post runs f on the loop's thread, soon. Safe from any goroutine.
func (l *loop) post(f func()) {
	l.mu.Lock()
	l.tasks = append(l.tasks, f)
	l.mu.Unlock()
	if !l.woken.Swap(true) {
		var one = [8]byte{1}
		unix.Write(l.wakefd, one[:])
	}
}

func (l *loop) runTasks() {
	var b [8]byte
	unix.Read(l.wakefd, b[:])
	l.woken.Store(false)
	l.mu.Lock()
	l.tasksRun, l.tasks = l.tasks, l.tasksRun[:0]
	l.mu.Unlock()
	for i, f := range l.tasksRun {
		f()
		l.tasksRun[i] = nil
	}
}

// run is the loop: wait, dispatch, fire timers, until the engine closes.
func (l *loop) run() {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	defer close(l.done)
	defer l.closeFDs()
	for !l.stopping {
		n := l.wait(l.timers.timeout(time.Now()))
		l.waits.Add(1)
		l.now = time.Now()
		for i := 0; i < n; i++ {
			ev := &l.events[i]
			fd := int(ev.Fd)
			if fd == l.wakefd {
				l.runTasks()
				continue
			}
			if fd >= len(l.slots) {
				continue
			}
			s := &l.slots[fd]
			if s.h == nil || s.gen != uint32(ev.Pad) {
				continue // stale: the descriptor was closed since
			}
			s.h.onEvent(ev.Events)
		}
		l.timers.fire(l.now.UnixNano())
	}
}

// wait blocks in epoll_wait for at most msec milliseconds (-1: no limit).
//
// By default the call goes through the runtime's system call path, so a
// loop that waits gives its P back to the rest of the daemon (the event
// stream, the API) and the garbage collector need not interrupt it. Raw
// mode (SNOOPD_EPOLL_WAIT=raw) bypasses that bookkeeping: the prototype
// behind issue 8 measured one context switch per operation less with it,
// on another kernel; on this machine it measured the same for one client
// and 6% slower for eight (docs/benchmarks.md), so the cooperative path
// is the default. In raw mode the loop's thread holds its P while it
// waits (the engine allows it only when GOMAXPROCS leaves a P for the
// rest of the process), and the runtime's preemption signal (every 10 ms
// while the loop waits, which the garbage collector relies on) interrupts
// the wait: on EINTR the loop yields before waiting again. Reads and
// writes are always raw: they never block.
func (l *loop) wait(msec int) int {
	if !l.raw {
		n, err := unix.EpollWait(l.epfd, l.events, msec)
		if err != nil {
			return 0
		}
		return n
	}
	r, _, e := syscall.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(l.epfd),
		uintptr(unsafe.Pointer(&l.events[0])), uintptr(len(l.events)), uintptr(msec), 0, 0)
	if e != 0 {
		if e == unix.EINTR {
			runtime.Gosched()
		}
		return 0
	}
	return int(r)
}

// add registers fd for events with h and returns its generation.
func (l *loop) add(fd int, h handler, events uint32) (uint32, error) {
	for fd >= len(l.slots) {
		l.slots = append(l.slots, make([]fdSlot, len(l.slots)+64)...)
	}
	s := &l.slots[fd]
	s.gen++
	s.h = h
	ev := unix.EpollEvent{Events: events, Fd: int32(fd), Pad: int32(s.gen)}
	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		s.h = nil
		return 0, err
	}
	return s.gen, nil
}

// rebind gives a registered fd a new handler, generation and events.
func (l *loop) rebind(fd int, h handler, events uint32) (uint32, error) {
	s := &l.slots[fd]
	s.gen++
	s.h = h
	ev := unix.EpollEvent{Events: events, Fd: int32(fd), Pad: int32(s.gen)}
	return s.gen, unix.EpollCtl(l.epfd, unix.EPOLL_CTL_MOD, fd, &ev)
}

// mod changes the events fd is watched for.
func (l *loop) mod(fd int, gen uint32, events uint32) error {
	ev := unix.EpollEvent{Events: events, Fd: int32(fd), Pad: int32(gen)}
	return unix.EpollCtl(l.epfd, unix.EPOLL_CTL_MOD, fd, &ev)
}

// release closes fd, which also takes it out of the epoll set, and marks
// its slot so that events already read for it are ignored.
func (l *loop) release(fd int) {
	if fd < 0 {
		return
	}
	if fd < len(l.slots) {
		s := &l.slots[fd]
		s.h = nil
		s.gen++
	}
	unix.Close(fd)
}

// backlog returns a buffer for bytes a peer could not take yet.
func (l *loop) backlog() []byte {
	if n := len(l.spareB); n > 0 {
		b := l.spareB[n-1]
		l.spareB = l.spareB[:n-1]
		return b[:0]
	}
	return make([]byte, 0, loopBufSize)
}

func (l *loop) freeBacklog(b []byte) {
	if cap(b) == loopBufSize && len(l.spareB) < 64 {
		l.spareB = append(l.spareB, b[:0])
	}
}

func rawRead(fd int, p []byte) (int, syscall.Errno) {
	r, _, e := syscall.RawSyscall(unix.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	return int(r), e
}

func rawWrite(fd int, p []byte) (int, syscall.Errno) {
	r, _, e := syscall.RawSyscall(unix.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	return int(r), e
}

// llistener accepts one proxy's clients on a loop.
type llistener struct {
	l      *loop
	p      *Proxy
	fd     int
	gen    uint32
	tcp    bool
	unlink string
	done   chan struct{}
	paused bool // out of descriptors: not watched until the timer fires
	tm     timerEntry
	raw    unix.RawSockaddrAny
}

func (ll *llistener) start() {
	gen, err := ll.l.add(ll.fd, ll, unix.EPOLLIN)
	if err != nil {
		// The descriptor is ours and valid, so this only fails when
		// the kernel is out of memory; the proxy then accepts nobody
		// and says so.
		ll.p.noteAcceptError(fmt.Errorf("epoll_ctl listener: %w", err))
	}
	ll.gen = gen
}

func (ll *llistener) stop() {
	ll.l.timers.remove(&ll.tm)
	ll.l.release(ll.fd)
	ll.fd = -1
	if ll.unlink != "" {
		os.Remove(ll.unlink)
	}
	close(ll.done)
}

// acceptBurst is the accepts per readiness: one, as the loop reads once
// per readiness too. The listener is level-triggered, so a backlog brings
// the loop back at once, and no accept is spent learning that the backlog
// is empty (with clients that open a connection per operation that would
// be a system call per operation).
const acceptBurst = 1

func (ll *llistener) onEvent(uint32) {
	for i := 0; i < acceptBurst && ll.fd >= 0 && !ll.paused; i++ {
		size := uint32(unsafe.Sizeof(ll.raw))
		r, _, e := syscall.RawSyscall6(unix.SYS_ACCEPT4, uintptr(ll.fd), uintptr(unsafe.Pointer(&ll.raw)),
			uintptr(unsafe.Pointer(&size)), unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0, 0)
		switch e {
		case 0:
		case unix.EAGAIN, unix.EINTR:
			return
		case unix.ECONNABORTED:
			continue
		case unix.EMFILE, unix.ENFILE, unix.ENOBUFS, unix.ENOMEM:
			ll.outOfDescriptors(e)
			return
		default:
			ll.p.noteAcceptError(e)
			return
		}
		dataFDs.Add(1)
		ll.admit(int(r))
	}
}

// outOfDescriptors refuses the client that could not be accepted (with the
// reserve descriptor), counts it, and stops watching the listener for a
// moment, so the loop does not spin on a backlog it cannot take.
func (ll *llistener) outOfDescriptors(e syscall.Errno) {
	ll.p.noteAcceptError(e)
	if ll.l.reserve >= 0 {
		unix.Close(ll.l.reserve)
		r, _, ae := syscall.RawSyscall6(unix.SYS_ACCEPT4, uintptr(ll.fd), 0, 0, unix.SOCK_CLOEXEC, 0, 0)
		if ae == 0 {
			ll.p.refused(ll.p.ids.Add(1), "", ll.l.now, "out of file descriptors: "+e.Error())
			unix.Close(int(r))
		}
		ll.l.reserve, _ = unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	}
	ll.paused = true
	ll.l.mod(ll.fd, ll.gen, 0)
	ll.l.timers.schedule(&ll.tm, ll.l.now.Add(acceptPause).UnixNano())
}

// acceptPause is how long a listener rests after running out of
// descriptors.
const acceptPause = 100 * time.Millisecond

func (ll *llistener) onTimer(int64) {
	if ll.fd < 0 || !ll.paused {
		return
	}
	ll.paused = false
	ll.l.mod(ll.fd, ll.gen, unix.EPOLLIN)
}

// admit starts serving an accepted client, or refuses it.
func (ll *llistener) admit(fd int) {
	p, l := ll.p, ll.l
	s := p.current.Load()
	clientAddr := "unix"
	if ll.tcp {
		clientAddr = sockaddrString(&ll.raw)
	}
	id := p.ids.Add(1)
	if reason := p.refusal(s, 1); reason != "" {
		// Count before closing: whoever sees the close sees the count.
		p.refused(id, clientAddr, l.now, reason)
		unix.Close(fd)
		dataFDs.Add(-1)
		return
	}
	if ll.tcp {
		// As Go's net package does: a request must not wait for the
		// acknowledgement of the previous one (pipelining clients).
		unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	}
	lc := &lconn{l: l}
	lc.init(p, id, clientAddr, s, l.now)
	lc.kill = lc.killFromAnywhere
	lc.side[0] = lside{lc: lc, idx: 0, fd: fd}
	lc.side[1] = lside{lc: lc, idx: 1, fd: -1}
	lc.tm.owner = lc
	if !p.register(&lc.conn) {
		unix.Close(fd)
		dataFDs.Add(-1)
		return
	}
	lc.initHalf(&lc.h[0], 1)
	lc.initHalf(&lc.h[1], 2)
	lc.start()
}

// sockaddrString formats an accepted TCP peer as ip:port.
func sockaddrString(raw *unix.RawSockaddrAny) string {
	switch raw.Addr.Family {
	case unix.AF_INET:
		sa := (*unix.RawSockaddrInet4)(unsafe.Pointer(raw))
		p := (*[2]byte)(unsafe.Pointer(&sa.Port))
		return fmt.Sprintf("%d.%d.%d.%d:%d", sa.Addr[0], sa.Addr[1], sa.Addr[2], sa.Addr[3], int(p[0])<<8|int(p[1]))
	case unix.AF_INET6:
		sa := (*unix.RawSockaddrInet6)(unsafe.Pointer(raw))
		p := (*[2]byte)(unsafe.Pointer(&sa.Port))
		return net.JoinHostPort(net.IP(sa.Addr[:]).String(), fmt.Sprint(int(p[0])<<8|int(p[1])))
	}
	return "unix"
}
