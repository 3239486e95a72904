package faultsuite

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/snoopd/snoopd/distcache"
	"github.com/snoopd/snoopd/distcache/loadgen"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
	"github.com/snoopd/snoopd/internal/testutil"
)

// TestBackendKilledMidLoad kills the cache server behind a proxy with
// SIGKILL in the middle of a load, restarts it on the same address, and
// checks that the load saw errors while it was down, that the proxy
// counted the failed connects and carries transactions again by itself,
// and that a verifying load afterwards has no error at all.
func TestBackendKilledMidLoad(t *testing.T) {
	listen := "IP:" + testutil.FreeAddr(t)
	cache := startCache(t, listen)
	d := startSnoopd(t, daemonOpts{})
	s := startSampler(t, d, pick(250*time.Millisecond, time.Second))
	addr := d.addProxy(t, "p", cache.addr, "--dial-timeout", "1s")

	cycles := pick(1, 5)
	down := pick(500*time.Millisecond, 2*time.Second)
	gap := pick(time.Duration(0), 5*time.Second)
	loadFor := pick(8*time.Second, 60*time.Second)
	during := make(chan loadgen.Report, 1)
	var loadErr error
	go func() {
		rep, err := runLoad("-addr", addr, "-conns", "4", "-duration", loadFor.String(), "-rate", "3000",
			"-max-errors", "0", "-timeout", "2s", "-data", "50-512")
		loadErr = err
		during <- rep
	}()
	// Answered transactions, since a request the proxy could not
	// forward is a transaction too (unanswered).
	transactions := func() int64 { return answered(d.proxy(t, "p")) }
	// waitMore waits until the proxy has carried answered transactions
	// beyond from, or the load has ended; it returns how long it took
	// and whether transactions came.
	var rep loadgen.Report
	loadDone := false
	waitMore := func(from int64) (time.Duration, bool) {
		t0 := time.Now()
		for deadline := t0.Add(waitLimit); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
			if transactions() > from {
				return time.Since(t0), true
			}
			if !loadDone {
				select {
				case rep = <-during:
					loadDone = true
				default:
				}
			}
			if loadDone {
				return time.Since(t0), transactions() > from
			}
		}
		return time.Since(t0), false
	}
	var recoveries []string
	for c := range cycles {
		if _, ok := waitMore(transactions()); !ok {
			t.Logf("the load ended before cycle %d", c+1)
			break
		}
		cache.kill(t)
		s.mark(fmt.Sprintf("backend killed (%d)", c+1))
		time.Sleep(down)
		cache = startCache(t, listen)
		s.mark(fmt.Sprintf("backend restarted (%d)", c+1))
		took, ok := waitMore(transactions())
		if !ok {
			break
		}
		recoveries = append(recoveries, took.Round(100*time.Microsecond).String())
		time.Sleep(gap)
	}
	if !loadDone {
		rep = <-during
	}
	if loadErr != nil {
		t.Fatalf("the load during the kills: %v", loadErr)
	}
	p := d.proxy(t, "p")
	before := transactions()
	failures := p.GetCounters().GetConnectFailures()
	if rep.Errors == 0 {
		t.Errorf("the load saw no error while the backend was down (%d ops): was it killed at all?", rep.Ops)
	}
	if failures == 0 {
		t.Errorf("the proxy counted no failed connects while the backend was down")
	}

	// Afterwards: a verifying load has no error, with nothing done to
	// the proxy.
	after := dcload(t, "-addr", addr, "-conns", "4", "-ops", fmt.Sprint(pick(2000, 20000)), "-verify", "-data", "50-512")
	if after.Errors != 0 || after.Ops == 0 {
		t.Errorf("after the restart: %d ops, %d errors (%s)", after.Ops, after.Errors, causes(after))
	}
	if tx := transactions(); tx <= before {
		t.Errorf("the proxy carried no transaction after the restart (%d before, %d after)", before, tx)
	}
	s.mark("after")
	s.end()
	record(t, "Backend killed and restarted mid-load", []string{
		fmt.Sprintf("%d kill(s) with SIGKILL, the backend down %v each time, under dcload -conns 4 -rate 3000 for %v", cycles, down, loadFor),
		fmt.Sprintf("during: %d ops answered, %d errors (%s), %d unanswered", rep.Ops, rep.Errors, causes(rep), rep.Unanswered),
		fmt.Sprintf("the proxy counted %d failed connects; first transaction after each restart in %s (nothing done to the proxy)", failures, strings.Join(recoveries, ", ")),
		fmt.Sprintf("after: dcload -verify, %d ops, %d errors", after.Ops, after.Errors),
	}, s.samples())
}

// answered counts a proxy's transactions that got an answer.
func answered(p *snoopv1.Proxy) int64 {
	return p.GetCounters().GetTransactions() - result(p, "unanswered") - result(p, "orphan")
}

// fake is a backend that reads requests and answers after a delay, or
// never, or closes every connection as soon as it accepts it.
type fake struct {
	l        net.Listener
	delay    time.Duration // < 0: never answer
	hangUp   bool          // close each connection at once
	accepted atomic.Int64
	open     atomic.Int64
	done     chan struct{}
	wg       sync.WaitGroup
	mu       sync.Mutex
	conns    map[net.Conn]bool
}

// startFake starts a fake backend on loopback; it stops when the test
// ends.
func startFake(t *testing.T, delay time.Duration) *fake {
	return serveFake(t, &fake{delay: delay})
}

// serveFake starts f, configured, as startFake does.
func serveFake(t *testing.T, f *fake) *fake {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.l, f.done, f.conns = l, make(chan struct{}), map[net.Conn]bool{}
	f.wg.Add(1)
	go f.accept()
	t.Cleanup(func() {
		close(f.done)
		l.Close()
		f.mu.Lock()
		for c := range f.conns {
			c.Close()
		}
		f.mu.Unlock()
		f.wg.Wait()
	})
	return f
}

func (f *fake) addr() string { return "IP:" + f.l.Addr().String() }

func (f *fake) accept() {
	defer f.wg.Done()
	for {
		c, err := f.l.Accept()
		if err != nil {
			return
		}
		f.accepted.Add(1)
		if f.hangUp {
			c.Close()
			continue
		}
		f.mu.Lock()
		f.conns[c] = true
		f.mu.Unlock()
		f.open.Add(1)
		f.wg.Add(1)
		go f.serve(c)
	}
}

func (f *fake) serve(c net.Conn) {
	defer f.wg.Done()
	defer func() {
		c.Close()
		f.mu.Lock()
		delete(f.conns, c)
		f.mu.Unlock()
		f.open.Add(-1)
	}()
	if f.delay < 0 {
		io.Copy(io.Discard, c)
		return
	}
	r := distcache.NewReader(c, distcache.ClientToServer)
	for {
		m, err := r.ReadMessage()
		if err != nil {
			return
		}
		select {
		case <-time.After(f.delay):
		case <-f.done:
			return
		}
		// One status byte: NOTOK, a miss for a GET.
		if _, err := c.Write(distcache.AppendMessage(nil, true, m.RequestUID, m.Op, []byte{1})); err != nil {
			return
		}
	}
}

// TestBackendThatClosesEveryConnection puts a proxy in front of a backend
// that accepts every connection and closes it at once, as one at its
// connection limit does: the proxy's spare connections back off instead
// of redialling in a loop (before, the epoll engine dialled about 20,000
// times a second and took a whole core), clients see their connection
// closed, and the daemon stays responsive.
func TestBackendThatClosesEveryConnection(t *testing.T) {
	d := startSnoopd(t, daemonOpts{})
	s := startSampler(t, d, pick(250*time.Millisecond, time.Second))
	f := serveFake(t, &fake{hangUp: true})
	cpu0 := cpuTicks(t, d.pid())
	addr := d.addProxy(t, "p", f.addr())
	watch := pick(3*time.Second, 30*time.Second)
	var clients, closed int64
	for start := time.Now(); time.Since(start) < watch; time.Sleep(100 * time.Millisecond) {
		clients++
		b, err := askAndRead(addr, uint32(clients), false)
		if len(b) > 0 || (err != nil && !isConnReset(err)) {
			t.Errorf("client %d: %d bytes, %v; want its connection closed", clients, len(b), err)
			continue
		}
		closed++
	}
	t0 := time.Now()
	d.mustCtl(t, "list")
	listTook := time.Since(t0)
	cpu := cpuTicks(t, d.pid()) - cpu0
	// Each client's own dial is a connection too (it finds no spare).
	spareDials := f.accepted.Load() - clients
	s.end()
	// Not a timing bound: a slower machine dials less, never more. With
	// the back-off it is a few dials per doubling of the time watched.
	if spareDials > 60 {
		t.Errorf("%d connections beside the clients' in %v: the spares redial in a loop", spareDials, watch)
	}
	// The operator sees it in the proxy's counters and in show.
	c := d.proxy(t, "p").GetCounters()
	if c.GetSparesLost() < 4 || c.GetSparesDialled() < c.GetSparesLost() {
		t.Errorf("spares: %d dialled, %d lost; want at least 4 lost", c.GetSparesDialled(), c.GetSparesLost())
	}
	if out := d.mustCtl(t, "show", "p"); !strings.Contains(out, " closed by the server unused") {
		t.Errorf("snoopctl show says nothing of the lost spares:\n%s", out)
	}
	record(t, "A backend that closes every connection at once", []string{
		fmt.Sprintf("%v with a client every 100 ms: %d clients, %d saw their connection closed", watch, clients, closed),
		fmt.Sprintf("connections the backend accepted: %d, of which %d the proxy's spares (the pool of 2 refilled at once twice, then backing off from 1 s)", f.accepted.Load(), spareDials),
		fmt.Sprintf("the proxy's counters: %d spares dialled, %d closed by the server unused, %d failed to dial", c.GetSparesDialled(), c.GetSparesLost(), c.GetSpareFailures()),
		fmt.Sprintf("snoopd's CPU over the run: %.2f s; `snoopctl list` answered in %v", float64(cpu)/100, listTook.Round(time.Millisecond)),
	}, s.samples())
}

// cpuTicks is the user and system CPU time of process pid so far, in
// clock ticks (1/100 s on Linux).
func cpuTicks(t *testing.T, pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// The fields after the command name, which is in parentheses and may
	// hold spaces: utime and stime are the 14th and 15th of the line.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	if len(f) < 13 {
		t.Fatalf("/proc/%d/stat: %q", pid, b)
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)
	k, _ := strconv.ParseInt(f[12], 10, 64)
	return u + k
}

// getRequest is a GET of id, as a client sends it.
func getRequest(uid uint32, id string) []byte {
	return distcache.AppendMessage(nil, false, uid, distcache.OpGet, []byte(id))
}

// askAndRead connects to addr, sends a GET (and shuts its side down if
// halfClose), and reads until the proxy closes the connection. It
// returns the bytes read.
func askAndRead(addr string, uid uint32, halfClose bool) ([]byte, error) {
	c, err := net.DialTimeout("tcp", strings.TrimPrefix(addr, "IP:"), 10*time.Second)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	if _, err := c.Write(getRequest(uid, fmt.Sprintf("faults-%d", uid))); err != nil {
		return nil, err
	}
	if halfClose {
		if err := c.(*net.TCPConn).CloseWrite(); err != nil {
			return nil, err
		}
	}
	c.SetReadDeadline(time.Now().Add(waitLimit))
	b, err := io.ReadAll(c)
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return b, err
}

// isConnReset tells a connection reset, which a proxy closing with a
// request of ours unread may cause, from other errors.
func isConnReset(err error) bool {
	return err != nil && strings.Contains(err.Error(), "connection reset")
}

// TestSilentAndSlowBackends puts proxies with a 300 ms response timeout in
// front of a backend that reads and never answers and one that answers
// after 2 s: every request is reported unanswered, every client's
// connection and its server connection are closed, and snoopd's
// descriptors do not grow from one round of clients to the next.
func TestSilentAndSlowBackends(t *testing.T) {
	d := startSnoopd(t, daemonOpts{})
	s := startSampler(t, d, pick(250*time.Millisecond, time.Second))
	backends := map[string]*fake{"silent": startFake(t, -1), "slow": startFake(t, 2*time.Second)}
	addrs := map[string]string{}
	for _, name := range []string{"silent", "slow"} {
		addrs[name] = d.addProxy(t, name, backends[name].addr(), "--response-timeout", "300ms")
	}
	rounds, clients := pick(2, 10), pick(20, 100)
	var fdsAfter []int
	var figures []string
	for r := range rounds {
		var wg sync.WaitGroup
		var answered, closed, failed atomic.Int64
		for _, name := range []string{"silent", "slow"} {
			for i := range clients {
				wg.Add(1)
				go func() {
					defer wg.Done()
					b, err := askAndRead(addrs[name], uint32(i+1), false)
					switch {
					case err != nil && !isConnReset(err):
						failed.Add(1)
					case len(b) > 0:
						answered.Add(1)
					default:
						closed.Add(1)
					}
				}()
			}
		}
		wg.Wait()
		if answered.Load() != 0 || failed.Load() != 0 {
			t.Errorf("round %d: %d answered, %d failed; want every client closed unanswered", r+1, answered.Load(), failed.Load())
		}
		for _, name := range []string{"silent", "slow"} {
			d.waitProxy(t, name, "without connections", func(p *snoopv1.Proxy) bool { return p.GetCounters().GetConnectionsActive() == 0 })
		}
		s.mark(fmt.Sprintf("round %d done", r+1))
		fdsAfter = append(fdsAfter, d.fds(t))
	}
	total := int64(rounds * clients)
	for _, name := range []string{"silent", "slow"} {
		p := d.proxy(t, name)
		c := p.GetCounters()
		if un := result(p, "unanswered"); un != total {
			t.Errorf("%s: %d transactions reported unanswered, want %d", name, un, total)
		}
		if c.GetTimeouts() < total {
			t.Errorf("%s: %d connections closed by a timeout, want %d", name, c.GetTimeouts(), total)
		}
		// The server side is closed too: what stays open at the backend
		// is at most the proxy's spare connections.
		for deadline := time.Now().Add(waitLimit); backends[name].open.Load() > 2; time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Errorf("%s: %d connections still open at the backend", name, backends[name].open.Load())
				break
			}
		}
		figures = append(figures, fmt.Sprintf("%s backend: %d requests, %d reported unanswered, %d connections closed by the response timeout, %d left open at the backend (spares)",
			name, total, result(p, "unanswered"), c.GetTimeouts(), backends[name].open.Load()))
	}
	if last := fdsAfter[len(fdsAfter)-1]; last > fdsAfter[0]+4 {
		t.Errorf("snoopd's descriptors grew from %d after the first round to %d after the last", fdsAfter[0], last)
	}
	s.end()
	record(t, "Silent and slow backends (response timeout 300ms)", append([]string{
		fmt.Sprintf("%d rounds of %d clients per proxy, one GET each; the slow backend answers after 2s", rounds, clients),
	}, append(figures, fmt.Sprintf("snoopd's descriptors after each round: %v", fdsAfter))...), s.samples())
}

// TestIdleAndHalfOpenClients opens many connections that send nothing to
// a proxy with a 300 ms idle timeout and checks they are all closed; then
// clients that send a request and shut their side down (half-open) get
// their answer and the end of the stream from a real cache, and the end
// of the stream after the response timeout from a silent one.
func TestIdleAndHalfOpenClients(t *testing.T) {
	cache := startCache(t, "IP:127.0.0.1:0")
	silent := startFake(t, -1)
	d := startSnoopd(t, daemonOpts{})
	s := startSampler(t, d, pick(250*time.Millisecond, time.Second))
	addr := d.addProxy(t, "idle", cache.addr, "--idle-timeout", "300ms")
	silentAddr := d.addProxy(t, "silent", silent.addr(), "--response-timeout", "300ms")
	fdsBefore := d.fds(t)

	idle := pick(200, 2000)
	conns := make([]net.Conn, 0, idle)
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	for range idle {
		c, err := net.DialTimeout("tcp", strings.TrimPrefix(addr, "IP:"), 10*time.Second)
		if err != nil {
			t.Fatalf("idle client %d: %v", len(conns), err)
		}
		conns = append(conns, c)
	}
	opened := time.Now()
	s.mark(fmt.Sprintf("%d idle clients open", idle))
	var eof, other int
	for _, c := range conns {
		c.SetReadDeadline(time.Now().Add(waitLimit))
		n, err := c.Read(make([]byte, 1))
		switch {
		case n == 0 && (errors.Is(err, io.EOF) || isConnReset(err)):
			eof++
		default:
			other++
		}
	}
	allClosed := time.Since(opened)
	p := d.waitProxy(t, "idle", "without connections", func(p *snoopv1.Proxy) bool { return p.GetCounters().GetConnectionsActive() == 0 })
	s.mark("idle clients closed")
	if eof != idle {
		t.Errorf("%d of %d idle clients were closed by the proxy (%d read something else)", eof, idle, other)
	}
	if p.GetCounters().GetTimeouts() < int64(idle) {
		t.Errorf("%d connections closed by a timeout, want %d", p.GetCounters().GetTimeouts(), idle)
	}
	fdsIdle := d.fds(t)

	half := pick(50, 500)
	var answered, silentClosed, bad atomic.Int64
	var wg sync.WaitGroup
	for i := range half {
		wg.Add(2)
		go func() {
			defer wg.Done()
			b, err := askAndRead(addr, uint32(i+1), true)
			if err == nil && oneResponse(b) {
				answered.Add(1)
			} else {
				bad.Add(1)
			}
		}()
		go func() {
			defer wg.Done()
			b, err := askAndRead(silentAddr, uint32(i+1), true)
			if (err == nil || isConnReset(err)) && len(b) == 0 {
				silentClosed.Add(1)
			} else {
				bad.Add(1)
			}
		}()
	}
	wg.Wait()
	for _, name := range []string{"idle", "silent"} {
		d.waitProxy(t, name, "without connections", func(p *snoopv1.Proxy) bool { return p.GetCounters().GetConnectionsActive() == 0 })
	}
	s.mark("half-open clients resolved")
	if answered.Load() != int64(half) || silentClosed.Load() != int64(half) {
		t.Errorf("half-open clients: %d of %d answered by the cache, %d of %d closed unanswered by the silent one's timeout, %d otherwise",
			answered.Load(), half, silentClosed.Load(), half, bad.Load())
	}
	if un := result(d.proxy(t, "silent"), "unanswered"); un != int64(half) {
		t.Errorf("silent: %d reported unanswered, want %d", un, half)
	}
	fdsAfter := d.fds(t)
	if fdsAfter > fdsBefore+4 {
		t.Errorf("snoopd's descriptors: %d before the clients, %d after they were all closed", fdsBefore, fdsAfter)
	}
	s.end()
	record(t, "Idle and half-open clients (idle timeout 300ms)", []string{
		fmt.Sprintf("%d idle clients: %d closed by the proxy, the last %v after the last one opened", idle, eof, allClosed.Round(time.Millisecond)),
		fmt.Sprintf("%d half-open clients (request sent, write side shut) per proxy: %d answered then closed by the cache's proxy, %d closed unanswered by the silent backend's response timeout",
			half, answered.Load(), silentClosed.Load()),
		fmt.Sprintf("snoopd's descriptors: %d before, %d after the idle clients, %d at the end", fdsBefore, fdsIdle, fdsAfter),
	}, s.samples())
}

// oneResponse reports whether b is exactly one whole response message.
func oneResponse(b []byte) bool {
	r := distcache.NewReader(bytes.NewReader(b), distcache.ServerToClient)
	m, err := r.ReadMessage()
	if err != nil || !m.IsResponse {
		return false
	}
	_, err = r.ReadMessage()
	return errors.Is(err, io.EOF)
}
