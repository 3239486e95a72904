package export_test

import (
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/snoopd/snoopd/daemon"
	"github.com/snoopd/snoopd/daemon/export"
	"github.com/snoopd/snoopd/daemon/hub"
	"github.com/snoopd/snoopd/distcache"
	"github.com/snoopd/snoopd/internal/natstest"
)

// relay stands between the exporter and NATS on loopback, so that a test
// can hold what goes one way or the other: holding what the server sends
// is a JetStream whose acknowledgements are late; holding both ways is a
// server that stopped answering without the connection breaking.
type relay struct {
	t        *testing.T
	ln       net.Listener
	upstream string

	mu       sync.Mutex
	cond     *sync.Cond
	holdDown bool // server to client
	holdUp   bool // client to server
	cut      bool
	conns    []net.Conn
	wg       sync.WaitGroup
}

func startRelay(t *testing.T, upstream string) *relay {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &relay{t: t, ln: ln, upstream: upstream}
	r.cond = sync.NewCond(&r.mu)
	r.wg.Add(1)
	go r.accept()
	t.Cleanup(r.close)
	return r
}

func (r *relay) URL() string { return "nats://" + r.ln.Addr().String() }

func (r *relay) accept() {
	defer r.wg.Done()
	for {
		c, err := r.ln.Accept()
		if err != nil {
			return
		}
		u, err := net.Dial("tcp", r.upstream)
		r.mu.Lock()
		if err != nil || r.cut {
			r.mu.Unlock()
			c.Close()
			if u != nil {
				u.Close()
			}
			continue
		}
		r.conns = append(r.conns, c, u)
		r.wg.Add(2)
		r.mu.Unlock()
		go r.copy(c, u, &r.holdDown)
		go r.copy(u, c, &r.holdUp)
	}
}

// copy moves bytes from src to dst, waiting before each write while
// *held; it closes both when either side ends or the relay is cut.
func (r *relay) copy(dst, src net.Conn, held *bool) {
	defer r.wg.Done()
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			r.mu.Lock()
			for *held && !r.cut {
				r.cond.Wait()
			}
			cut := r.cut
			r.mu.Unlock()
			if cut {
				return
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				r.t.Logf("relay: %v", err)
			}
			return
		}
	}
}

// hold holds what the server sends (down) and what the client sends (up)
// until release.
func (r *relay) hold(down, up bool) {
	r.mu.Lock()
	r.holdDown, r.holdUp = down, up
	r.mu.Unlock()
}

func (r *relay) release() { r.hold(false, false); r.cond.Broadcast() }

// close cuts every connection, dropping what is held, and refuses new
// ones: the server is gone as the client sees it.
func (r *relay) close() {
	r.ln.Close()
	r.mu.Lock()
	r.cut = true
	for _, c := range r.conns {
		c.Close()
	}
	r.mu.Unlock()
	r.cond.Broadcast()
	r.wg.Wait()
}

// exact fails the test unless published + dropped = matched (nothing is
// queued any more) with the given figures.
func exact(t *testing.T, when string, x *export.Exporter, published, dropped uint64) {
	t.Helper()
	s := x.Stats()
	if s.GetPublished()+s.GetDropped() != s.GetMatched() || s.GetPublished() != published || s.GetDropped() != dropped {
		t.Fatalf("%s: published %d + dropped %d, matched %d; want %d + %d = %d",
			when, s.GetPublished(), s.GetDropped(), s.GetMatched(), published, dropped, published+dropped)
	}
}

// TestExportCountsEachEventOnceAtClose: the events of batches whose
// acknowledgements are still due when the export closes are counted as
// dropped, each once, by events and not by messages; and nothing nats.go
// reports later (an acknowledgement timer that fires after Close) counts
// them again. published + dropped = matched, exactly, after Close and
// after the acknowledgement timeout has passed, whether NATS was slow to
// acknowledge, stopped answering, or went away before the shutdown.
func TestExportCountsEachEventOnceAtClose(t *testing.T) {
	const ackTimeout = 2 * time.Second
	defer export.SetAckTimeout(ackTimeout)()
	for _, c := range []struct {
		name string
		// Once the first events are published, what the server sends
		// is held (its acknowledgements); after, if set, runs once the
		// rest are out.
		// up holds what the exporter sends too.
		up    bool
		after func(t *testing.T, srv *natstest.Server, r *relay)
	}{
		{name: "acknowledgements late"},
		{name: "server not answering", up: true},
		{name: "server gone before the shutdown",
			after: func(t *testing.T, srv *natstest.Server, r *relay) {
				srv.Stop()
				r.close()
			}},
	} {
		t.Run(c.name, func(t *testing.T) {
			srv := natstest.Start(t)
			r := startRelay(t, srv.URL()[len("nats://"):])
			h := hub.New(hub.Config{Interval: time.Millisecond, NewEncoder: daemon.NewEventEncoder})
			defer h.Close()
			x, err := export.Start(h, export.Config{Servers: []string{r.URL()}, Daemon: "d", Stream: "SNOOP",
				Batch: 10, FlushInterval: 5 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			defer x.Close(time.Second)
			const first, rest = 20, 500
			publish(h, "p", 0, first, distcache.OpGet)
			waitFor(t, "the first events published", func() bool { return x.Stats().GetPublished() == first })

			r.hold(true, c.up)
			publish(h, "p", first, rest, distcache.OpGet)
			// Batches of at most 10 events: 50 messages or more,
			// none acknowledged. Where the server still takes them,
			// wait until it has them all: they are in flight.
			if !c.up {
				waitFor(t, "the rest stored", func() bool {
					return eventsIn(storedMessages(t, srv.URL(), "SNOOP")) == first+rest
				})
			}
			if s := x.Stats(); s.GetPublished() != first || s.GetDropped() != 0 {
				t.Fatalf("before the shutdown: %v", s)
			}
			if c.after != nil {
				c.after(t, srv, r)
			}
			h.Close()
			x.Close(300 * time.Millisecond)
			exact(t, "after Close", x, first, rest)
			// The acknowledgement timers of the publishes that were
			// due run out now: they must not count anything again.
			time.Sleep(ackTimeout + 500*time.Millisecond)
			exact(t, "after the acknowledgement timeout", x, first, rest)
		})
	}
}

// TestExportCloseWithTheHubOpenCountsWhatWasQueued: Close while the hub
// is still open, with NATS not answering and events queued for the
// export: what was queued counts as dropped, and the counters stay as
// they are while the hub goes on for its other watchers.
func TestExportCloseWithTheHubOpenCountsWhatWasQueued(t *testing.T) {
	srv := natstest.Start(t)
	r := startRelay(t, srv.URL()[len("nats://"):])
	h := hub.New(hub.Config{Interval: time.Millisecond, NewEncoder: daemon.NewEventEncoder})
	defer h.Close()
	// Another watcher keeps the hub's log going after the export's
	// watcher has left it.
	other := h.Watch(hub.WatchOptions{})
	defer other.Close()
	x, err := export.Start(h, export.Config{Servers: []string{r.URL()}, Daemon: "d", Stream: "SNOOP", Batch: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer x.Close(time.Second)
	waitFor(t, "connected", func() bool { return x.Stats().GetConnected() })
	// The first event makes the exporter look the stream up, which
	// waits for an answer that does not come; the rest queue behind it.
	r.hold(true, true)
	publish(h, "p", 0, 1, distcache.OpGet)
	waitFor(t, "the first event matched", func() bool { return x.Stats().GetMatched() == 1 })
	// The exporter takes it within the hub's interval (a millisecond);
	// were it to take the others with it, they would be dropped at the
	// lookup instead, and the counts the same.
	time.Sleep(50 * time.Millisecond)
	publish(h, "p", 1, 100, distcache.OpGet)
	waitFor(t, "the events matched", func() bool { return x.Stats().GetMatched() == 101 })
	x.Close(100 * time.Millisecond)
	exact(t, "after Close", x, 0, 101)
	publish(h, "p", 101, 100, distcache.OpGet)
	waitFor(t, "the hub's log went on", func() bool { q, _ := other.Backlog(); return q == 201 })
	exact(t, "later", x, 0, 101)
}
