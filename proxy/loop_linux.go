package proxy

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/snoopd/snoopd/distcache"
	"github.com/snoopd/snoopd/internal/listen"
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
// Every proxy spreads its connections over all the loops, so one busy
// proxy can use every core. On a TCP address each loop has a listener of
// its own, all bound to the proxy's port with SO_REUSEPORT, and the kernel
// spreads the clients over them by their address and port. A unix socket
// cannot be shared that way, so one loop accepts on it and places each
// client on the loop with the fewest open connections, itself on a tie:
// clients that are open together spread evenly, and a client that opens
// one connection at a time stays on the accepting loop, with no hand-off
// to another thread (handing them out in turn cost a connection per
// operation 4.7% of its throughput; docs/benchmarks.md, "A unix socket's
// clients stay on the accepting loop"). Each loop keeps its own share of
// the proxy's spare server connections, so a connection never takes a
// spare from another thread. What the proxy shares between its loops (the
// counters, the connection ids, the table of live connections, the
// faults' state) is atomic or locked.
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
	// A loop keeps its P while it waits when a P is left for everything
	// else (see loop.wait); SNOOPD_EPOLL_WAIT=runtime makes it wait
	// through the runtime's system call path regardless.
	raw := RawWaits(n)
	for i := 0; i < n; i++ {
		l, err := newLoop(raw)
		if err != nil {
			e.Close()
			return nil, fmt.Errorf("epoll engine: %w", err)
		}
		l.idx = i
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

// pick chooses the loop that accepts on a listener the loops cannot each
// have one of (a unix socket), so that the accepting work of many such
// proxies is spread too.
func (e *epollEngine) pick() *loop {
	return e.loops[int(e.next.Add(1))%len(e.loops)]
}

// listen gives each loop a listener of its own on a TCP address, so the
// kernel spreads the clients over the loops with no hand-off between
// threads; anything else gets one listener (see serve).
func (e *epollEngine) listen(addr distcache.Addr, mode os.FileMode) ([]net.Listener, error) {
	if len(e.loops) == 1 || addr.Network() != distcache.NetworkTCP {
		ln, err := Listen(addr, mode)
		if err != nil {
			return nil, err
		}
		return []net.Listener{ln}, nil
	}
	return listenReusePort(addr, len(e.loops))
}

// listenReusePort opens n TCP listeners on one port with SO_REUSEPORT.
//
// SO_REUSEPORT lets any socket of the same user that sets it join the
// port, including another proxy or another snoopd on the same address,
// which would then silently take part of the clients. So a port asked for
// by number is first bound plainly, as a single listener would be: if
// anyone listens there, that fails with ErrAddrInUse as it always has.
// (Between that probe and the first real bind a few system calls pass;
// another process that binds the port in between with SO_REUSEPORT of
// its own is not caught.) Port 0 needs no probe: the kernel never picks
// a port in use for it. The first listener's port and address are then
// the ones the others bind, so that with port 0 they all share the port
// the kernel picked.
func listenReusePort(addr distcache.Addr, n int) ([]net.Listener, error) {
	ctx := context.Background()
	if addr.Port() != 0 {
		probe, err := listen.Config{KeepAlive: -1}.Listen(ctx, addr)
		if err != nil {
			return nil, err
		}
		probe.Close()
	}
	cfg := listen.Config{KeepAlive: -1, Control: setReusePort}
	first, err := cfg.Listen(ctx, addr)
	if err != nil {
		return nil, err
	}
	lns := []net.Listener{first}
	at, err := distcache.AddrFromNet(first.Addr())
	for err == nil && len(lns) < n {
		var ln net.Listener
		if ln, err = cfg.Listen(ctx, at); err == nil {
			lns = append(lns, ln)
		}
	}
	if err != nil {
		for _, ln := range lns {
			ln.Close()
		}
		return nil, fmt.Errorf("listener %d of %d on %s: %w", len(lns)+1, n, addr, err)
	}
	return lns, nil
}

func setReusePort(_, _ string, c syscall.RawConn) error {
	var serr error
	if err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	}); err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("SO_REUSEPORT: %w", serr)
	}
	return nil
}

// serve takes over the listeners' sockets: the loops accept on duplicates
// of their descriptors and the listeners are closed, so the runtime's
// poller no longer watches them. Listener i is served by loop i; a single
// listener (a unix socket, or one loop) by a loop chosen with pick, which
// places the clients it accepts over every loop when there are several
// (llistener.place). A unix socket's file is removed by stop.
func (e *epollEngine) serve(p *Proxy, lns []net.Listener, done chan struct{}) (func(), error) {
	if len(lns) > len(e.loops) {
		return nil, fmt.Errorf("%d listeners for %d loops", len(lns), len(e.loops))
	}
	fds := make([]int, 0, len(lns))
	for _, ln := range lns {
		fd, err := listenerFD(ln)
		if err != nil {
			for _, fd := range fds {
				unix.Close(fd)
			}
			return nil, err
		}
		fds = append(fds, fd)
	}
	var unlink string
	if ul, ok := lns[0].(*net.UnixListener); ok {
		ul.SetUnlinkOnClose(false)
		// An abstract socket (@name) has no file to remove.
		if name := ul.Addr().String(); name != "" && name[0] != '@' {
			unlink = name
		}
	}
	_, tcp := lns[0].(*net.TCPListener)
	for _, ln := range lns {
		ln.Close()
	}
	g := &lgroup{done: done}
	g.left.Store(int32(len(fds)))
	lls := make([]*llistener, len(fds))
	for i, fd := range fds {
		l := e.loops[i]
		if len(fds) == 1 {
			l = e.pick()
		}
		ll := &llistener{l: l, p: p, fd: fd, tcp: tcp, unlink: unlink, g: g}
		if tcp {
			// Linux gives an accepted socket the listener's TCP_NODELAY:
			// set once here, it spares every connection a system call
			// (accepted sets it on each client only where this failed).
			ll.nodelay = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1) == nil
		}
		if len(fds) < len(e.loops) {
			ll.spread, ll.next = e.loops, l.idx
		}
		ll.tm.owner = ll
		lls[i] = ll
	}
	for _, ll := range lls {
		ll.l.post(ll.start)
	}
	return func() {
		for _, ll := range lls {
			ll.l.post(ll.stop)
		}
	}, nil
}

// listenerFD returns a non-blocking duplicate of ln's descriptor.
func listenerFD(ln net.Listener) (int, error) {
	sc, ok := ln.(syscall.Conn)
	if !ok {
		return -1, fmt.Errorf("listener %T has no file descriptor", ln)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	var derr error
	if err := rc.Control(func(s uintptr) { fd, derr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return -1, err
	}
	if derr != nil {
		return -1, fmt.Errorf("duplicate listener: %w", derr)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("listener non-blocking: %w", err)
	}
	return fd, nil
}

// newSpares gives each loop its share of the proxy's spares.
func (e *epollEngine) newSpares(p *Proxy, s *settings) sparePool {
	set := &lsparesSet{pools: make([]*lspares, len(e.loops))}
	for i, l := range e.loops {
		sp := &lspares{l: l, p: p, s: s, want: spareShare(s.opts.Spares, len(e.loops), i)}
		sp.tm.owner = sp
		set.pools[i] = sp
	}
	return set
}

// spareShare is loop i's share of a proxy's n spares over loops loops:
// the total split as evenly as it goes, and at least one per loop, since
// a loop without a spare makes each of its clients wait for a dial.
func spareShare(n, loops, i int) int {
	if n <= 0 {
		return 0
	}
	share := n / loops
	if i < n%loops {
		share++
	}
	return max(share, 1)
}

// loop is one event loop.
type loop struct {
	idx    int // its place in the engine's loops
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
	// quiet is set when the last wait returned no event: the next one goes
	// through the runtime (see wait) even in raw mode.
	quiet bool
	// reserve is a descriptor kept open to be closed when accept fails for
	// want of descriptors, so the loop can accept and close the client
	// instead of leaving it in the backlog (and being woken for it
	// forever).
	reserve  int
	stopping bool
	done     chan struct{}
	// waits counts the returns from epoll_wait, so a test can tell a
	// loop that waits from one that spins; admitted counts the clients
	// the loop took on, so a test can tell where connections went.
	waits atomic.Uint64
	// rawWaits counts the waits that kept the loop's P.
	rawWaits atomic.Uint64
	admitted atomic.Uint64
	// open counts the connections placed on the loop that have not ended,
	// of every proxy, hand-offs on their way included: a unix socket's
	// listener places each client by it (llistener.place). Other loops
	// read it, so it is atomic; it is only a guide, never a limit.
	open atomic.Int64
	// sa4, sa6 and saUnix are the loop's copies of the address it
	// connects to (see connectSocket).
	sa4      unix.SockaddrInet4
	sa6      unix.SockaddrInet6
	saUnix   unix.SockaddrUnix
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
		l.quiet = n == 0
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
// A raw wait (the default where GOMAXPROCS leaves a P beyond the loops,
// as snoopd arranges: RawWaits) keeps the loop's P while its thread
// waits. Through the runtime's system call path instead, a waiting loop's
// P is handed to whatever else is runnable (the event pipeline, a watch
// stream, the API), by sysmon after 20 µs or more; when epoll_wait returns
// the loop has to win a P back, and its clients wait until the goroutine
// holding it yields. Keeping the P also spares sysmon, which in the
// runtime path polled every 20 µs to hand Ps off and was about a tenth of
// a busy snoopd's CPU. With two loops and a third P, snoopbench measured
// 2–12% more throughput against a C select loop and 10–24% less proxy
// CPU a transaction than two loops waiting through the runtime (docs/benchmarks.md, "A P for
// everything else"). The runtime's preemption signal (every 10 ms while
// a loop waits, which the garbage collector relies on) interrupts a raw
// wait: on EINTR the loop yields before waiting again. A loop whose last
// wait found nothing (it timed out, or was interrupted) waits through the
// runtime until events come again: an idle loop holding its P would be
// interrupted every 10 ms for nothing, and a busy one rarely finds
// nothing. Reads and writes are always raw: they never block.
func (l *loop) wait(msec int) int {
	if !l.raw || l.quiet {
		n, err := unix.EpollWait(l.epfd, l.events, msec)
		if err != nil {
			return 0
		}
		return n
	}
	l.rawWaits.Add(1)
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
	g      *lgroup
	// spread, when set, are the loops the accepted clients are placed on
	// (see place; next is where its search for another loop starts): a
	// listener that is the proxy's only one while the engine has several
	// loops.
	spread []*loop
	next   int
	paused bool // out of descriptors: not watched until the timer fires
	// nodelay: the listener has TCP_NODELAY, which its accepted sockets
	// inherit.
	nodelay bool
	tm      timerEntry
	raw     unix.RawSockaddrAny
}

// lgroup is the listeners of one bind of a proxy, one per loop or one in
// all: done is closed once the last of them has stopped.
type lgroup struct {
	left atomic.Int32
	done chan struct{}
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
	if ll.g.left.Add(-1) == 0 {
		close(ll.g.done)
	}
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
		ll.accepted(int(r))
	}
}

// accepted admits a client on this loop, or hands it to the loop place
// chooses. A hand-off is counted in the proxy's wait group until the other
// loop has taken the client on (or closed it), so Stop waits for it; it
// is added before this listener can stop, which is before Stop waits.
func (ll *llistener) accepted(fd int) {
	p, tcp := ll.p, ll.tcp
	clientAddr := "unix"
	if tcp {
		clientAddr = sockaddrString(&ll.raw)
	}
	to := ll.place()
	to.open.Add(1)
	if tcp && !ll.nodelay {
		// As Go's net package does: a request must not wait for the
		// acknowledgement of the previous one (pipelining clients).
		unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	}
	if to == ll.l {
		admit(to, p, fd, clientAddr)
		return
	}
	p.wg.Add(1)
	to.post(func() {
		admit(to, p, fd, clientAddr)
		p.wg.Done()
	})
}

// place chooses the loop for the next client: this listener's own,
// unless another loop has fewer open connections, and then the one with
// the fewest (the search for it starts one loop further at each hand-off,
// so ties among the others take turns). Staying put on a tie is what
// keeps a client that opens a connection per operation on one thread: a
// hand-off wakes the other loop and its connection starts there cold.
func (ll *llistener) place() *loop {
	best := ll.l
	if ll.spread == nil {
		return best
	}
	least := best.open.Load()
	n := len(ll.spread)
	for i := range n {
		l := ll.spread[(ll.next+i)%n]
		if k := l.open.Load(); k < least {
			best, least = l, k
		}
	}
	if best != ll.l {
		ll.next = (best.idx + 1) % n
	}
	return best
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

// admit starts serving an accepted client on loop l, or refuses it.
func admit(l *loop, p *Proxy, fd int, clientAddr string) {
	s := p.current.Load()
	id := p.ids.Add(1)
	// The server's descriptor is reserved with the admission, in one
	// step with the check against the bound, as the goroutine engine
	// does: the loops admit clients at the same time, and a check now
	// with the reservation later would let another loop's client take
	// the room between them, leaving an admitted client no descriptor
	// for its server.
	reason := p.refusal(s, 1)
	if reason == "" && !reserveFDs(1) {
		p.unadmit()
		reason = fmt.Sprintf("file descriptor limit reached (%d held by the data path)", dataFDs.Load())
	}
	if reason != "" {
		// Count before closing: whoever sees the close sees the count.
		p.refused(id, clientAddr, l.now, reason)
		unix.Close(fd)
		dataFDs.Add(-1)
		l.open.Add(-1)
		return
	}
	lc := &lconn{l: l}
	lc.init(p, id, clientAddr, s, l.now)
	lc.kill = lc.killFromAnywhere
	lc.recheckFaults = lc.recheckFaultsFromAnywhere
	lc.side[0] = lside{lc: lc, idx: 0, fd: fd}
	lc.side[1] = lside{lc: lc, idx: 1, fd: -1}
	lc.reserved = true
	lc.tm.owner = lc
	if !p.register(&lc.conn) {
		unix.Close(fd)
		dataFDs.Add(-2)
		l.open.Add(-1)
		return
	}
	l.admitted.Add(1)
	lc.initHalf(&lc.h[0], 1)
	lc.initHalf(&lc.h[1], 2)
	lc.start()
}

// sockaddrString formats an accepted TCP peer as ip:port, as net.Conn's
// RemoteAddr would (an IPv4-mapped IPv6 address as IPv4), with one
// allocation: it runs for every connection accepted.
func sockaddrString(raw *unix.RawSockaddrAny) string {
	var ap netip.AddrPort
	switch raw.Addr.Family {
	case unix.AF_INET:
		sa := (*unix.RawSockaddrInet4)(unsafe.Pointer(raw))
		p := (*[2]byte)(unsafe.Pointer(&sa.Port))
		ap = netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(p[0])<<8|uint16(p[1]))
	case unix.AF_INET6:
		sa := (*unix.RawSockaddrInet6)(unsafe.Pointer(raw))
		p := (*[2]byte)(unsafe.Pointer(&sa.Port))
		ap = netip.AddrPortFrom(netip.AddrFrom16(sa.Addr).Unmap(), uint16(p[0])<<8|uint16(p[1]))
	default:
		return "unix"
	}
	var buf [64]byte
	return string(ap.AppendTo(buf[:0]))
}
