package faultsuite

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/snoopd/snoopd/distcache"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
)

// TestFaultClearReleasesHeldRequests holds many clients' GETs with a stall
// of an hour, clears the faults with snoopctl, and times each answer from
// the clear: every request held must be answered (the proxy's response
// timeout is off, so nothing else would end the wait), and the figure is
// how many within 2 s.
//
// The bound checked, 20 s, is a containment bound: without the release
// the answers would come an hour later; with it, they come within a
// second or two on a loaded two-core machine.
func TestFaultClearReleasesHeldRequests(t *testing.T) {
	const bound = 20 * time.Second
	cache := startCache(t, "IP:127.0.0.1:0")
	d := startSnoopd(t, daemonOpts{})
	s := startSampler(t, d, pick(250*time.Millisecond, 500*time.Millisecond))
	addr := d.addProxy(t, "p", cache.addr, "--response-timeout", "0", "--idle-timeout", "0")
	d.mustCtl(t, "fault", "add", "p", "hold", "--type", "stall", "--delay", "1h")
	clients := pick(500, 2000)
	conns := make([]net.Conn, 0, clients)
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	for i := range clients {
		c, err := net.DialTimeout("tcp", strings.TrimPrefix(addr, "IP:"), 10*time.Second)
		if err != nil {
			t.Fatalf("client %d: %v", i, err)
		}
		conns = append(conns, c)
		if _, err := c.Write(getRequest(uint32(i+1), "faultsuite-held")); err != nil {
			t.Fatalf("client %d: write: %v", i, err)
		}
	}
	d.waitProxy(t, "p", "holding every GET", func(p *snoopv1.Proxy) bool {
		f := p.GetCounters().GetFaults()
		return len(f) == 1 && f[0].GetApplied() >= int64(clients)
	})
	s.mark(fmt.Sprintf("%d GETs held", clients))
	// Each client waits for its answer; the clear starts the clock.
	var mu sync.Mutex
	var got []time.Time
	var failed []string
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			c.SetReadDeadline(time.Now().Add(bound))
			m, err := distcache.NewReader(c, distcache.ServerToClient).ReadMessage()
			at := time.Now()
			mu.Lock()
			defer mu.Unlock()
			if err != nil || m.RequestUID != uint32(i+1) {
				failed = append(failed, fmt.Sprintf("client %d: %v", i, err))
				return
			}
			got = append(got, at)
		}()
	}
	// Nothing came through before the clear.
	for _, c := range conns[:min(len(conns), 20)] {
		c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		var b [1]byte
		if n, _ := c.Read(b[:]); n > 0 {
			t.Fatal("a held GET was answered before the clear")
		}
	}
	t0 := time.Now()
	close(start)
	d.mustCtl(t, "fault", "clear", "p")
	ctlTook := time.Since(t0)
	s.mark("fault clear")
	wg.Wait()
	s.mark("all answered")
	s.end()
	if len(failed) > 0 {
		t.Fatalf("%d of %d held GETs not answered within %v of the clear; first: %s", len(failed), clients, bound, failed[0])
	}
	lat := make([]time.Duration, len(got))
	for i, at := range got {
		lat[i] = at.Sub(t0)
	}
	slices.Sort(lat)
	within := 0
	for _, l := range lat {
		if l <= 2*time.Second {
			within++
		}
	}
	p := d.proxy(t, "p")
	record(t, "Held requests released by fault clear", []string{
		fmt.Sprintf("%d clients each with one GET held by a stall of 1h (--response-timeout 0), then snoopctl fault clear (which took %v)", clients, ctlTook.Round(time.Millisecond)),
		fmt.Sprintf("answered within 2s of the clear: %d of %d (%.1f%%); median %v, p95 %v, last %v after it",
			within, clients, 100*float64(within)/float64(clients), lat[len(lat)/2].Round(time.Millisecond),
			lat[len(lat)*95/100].Round(time.Millisecond), lat[len(lat)-1].Round(time.Millisecond)),
		fmt.Sprintf("the proxy counted %d answered, %d unanswered", result(p, "hit")+result(p, "miss"), result(p, "unanswered")),
	}, s.samples())
}

// TestFaultEndSurvivesRestart adds a fault with --for, restarts snoopd on
// its state dir, and reads the same end back from snoopctl fault list:
// the restart does not grant the fault its hour again.
func TestFaultEndSurvivesRestart(t *testing.T) {
	cache := startCache(t, "IP:127.0.0.1:0")
	state := filepath.Join(t.TempDir(), "state")
	if err := os.Mkdir(state, 0o700); err != nil {
		t.Fatal(err)
	}
	d := startSnoopd(t, daemonOpts{stateDir: state})
	d.addProxy(t, "p", cache.addr)
	d.mustCtl(t, "fault", "add", "p", "slow", "--type", "latency", "--delay", "1ms", "--for", "1h")
	before := d.mustCtl(t, "fault", "list", "p")
	if !strings.Contains(before, "for 1h until ") {
		t.Fatalf("fault list does not say when the fault ends:\n%s", before)
	}
	end := before[strings.Index(before, "until "):]
	end = strings.Fields(end)[1]
	// A second later, so that an end computed anew would differ.
	time.Sleep(1100 * time.Millisecond)
	d.stop(t)
	d = startSnoopd(t, daemonOpts{dir: d.dir, stateDir: state})
	after := d.mustCtl(t, "fault", "list", "p")
	if !strings.Contains(after, "until "+end) {
		t.Fatalf("after a restart the fault's end moved: before\n%s\nafter\n%s", before, after)
	}
}
