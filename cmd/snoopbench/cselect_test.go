package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/snoopd/snoopd/distcache"
	"github.com/snoopd/snoopd/distcache/cacheserver"
	"github.com/snoopd/snoopd/distcache/loadgen"
	"github.com/snoopd/snoopd/internal/skip"
	"github.com/snoopd/snoopd/internal/testutil"
)

// cselectBin compiles the C proxy into a temporary directory of the
// test, as snoopbench does into its own; the test skips without cc.
func cselectBin(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("cc"); err != nil {
		skip.Missing(t, "cc is not on PATH")
	}
	bin, err := compileCSelect(testutil.SocketDir(t))
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// startCSelectT starts the proxy in front of server and stops (kills) it
// when the test ends.
func startCSelectT(t *testing.T, listen, server distcache.Addr) *cselectProc {
	t.Helper()
	p, err := startCSelect(cselectBin(t), listen.String(), server.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.stop)
	return p
}

func startCache(t *testing.T, addr distcache.Addr) *cacheserver.Server {
	t.Helper()
	s, err := cacheserver.Start(addr, cacheserver.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestCSelectLoad runs verified load through the C proxy in front of the
// in-memory cache, over TCP and unix sockets: persistent connections,
// a connection per operation, and pipelined requests with sessions larger
// than the proxy's 16 KiB buffer (so messages take several reads and
// writes). Every answer must be right.
func TestCSelectLoad(t *testing.T) {
	for _, nw := range testutil.Networks() {
		t.Run(nw.Name, func(t *testing.T) {
			cache := startCache(t, nw.Addr(t))
			server := cache.Addr()
			if nw.Name == "tcp" {
				// By name, as snoopbench gives it: resolved by the proxy.
				server = distcache.MustParseAddr("IP:localhost:" + strconv.Itoa(server.Port()))
			}
			p := startCSelectT(t, nw.Addr(t), server)
			for _, tc := range []struct {
				name string
				cfg  loadgen.Config
			}{
				{"persistent", loadgen.Config{Conns: 8, Persistent: true, Ops: 4000, MaxData: 1024}},
				{"conn-per-op", loadgen.Config{Conns: 8, Persistent: false, Ops: 2000, MaxData: 1024}},
				{"pipelined-large", loadgen.Config{Conns: 8, Persistent: true, Pipeline: 4, Ops: 2000, MinData: 100, MaxData: 30000}},
				// As many clients as snoopbench's conc100 scenario.
				{"100-clients", loadgen.Config{Conns: manyClients, Persistent: true, Ops: 5000, MaxData: 1024}},
			} {
				cfg := tc.cfg
				cfg.Addr, cfg.Verify, cfg.Seed = p.addr, true, 7
				cfg.Duration, cfg.IDPrefix = 60*time.Second, nw.Name+"-"+tc.name+"-"
				rep, err := loadgen.Run(context.Background(), cfg)
				if err != nil {
					t.Fatalf("%s: %v", tc.name, err)
				}
				if rep.Errors != 0 || rep.Ops != cfg.Ops {
					t.Errorf("%s: %d of %d operations answered, %d errors: %v", tc.name, rep.Ops, cfg.Ops, rep.Errors, rep.ErrorSamples)
				}
			}
		})
	}
}

// TestCSelectMaxConns holds cselectMaxConns to the C proxy: that many
// connections at once are each carried (fewer by half the descriptors it
// inherited), one more is closed at once.
func TestCSelectMaxConns(t *testing.T) {
	for _, nw := range testutil.Networks() {
		t.Run(nw.Name, func(t *testing.T) {
			ln, sa := listenOn(t, nw)
			// An echo server, one goroutine per connection, all ended
			// with the listener and the connections at the end.
			var wg sync.WaitGroup
			var mu sync.Mutex
			var served []net.Conn
			defer func() {
				ln.Close()
				mu.Lock()
				for _, c := range served {
					c.Close()
				}
				mu.Unlock()
				wg.Wait()
			}()
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					mu.Lock()
					served = append(served, c)
					mu.Unlock()
					wg.Add(1)
					go func() {
						defer wg.Done()
						io.Copy(c, c)
					}()
				}
			}()
			p := startCSelectT(t, nw.Addr(t), sa)
			// Descriptors it inherited beyond standard input, output and
			// error (this test's environment may leave some open) take
			// room from the connections.
			ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", p.pid()))
			if err != nil {
				t.Fatal(err)
			}
			inherited := 0
			for _, e := range ents {
				if fd, err := strconv.Atoi(e.Name()); err == nil && fd > 3 && fd < 1024 {
					inherited++
				}
			}
			limit := (1024 - 4 - inherited) / 2
			if inherited == 0 && limit != cselectMaxConns {
				t.Errorf("cselectMaxConns is %d, the C proxy's limit %d", cselectMaxConns, limit)
			}
			echo := func(c net.Conn) error {
				c.SetDeadline(time.Now().Add(10 * time.Second))
				if _, err := c.Write([]byte{'x'}); err != nil {
					return err
				}
				var b [1]byte
				_, err := io.ReadFull(c, b[:])
				return err
			}
			var clients []net.Conn
			defer func() {
				for _, c := range clients {
					c.Close()
				}
			}()
			for i := range limit + 1 {
				c, err := net.Dial(p.addr.Network().String(), p.addr.NetAddr())
				if err != nil {
					t.Fatalf("connection %d: %v", i+1, err)
				}
				clients = append(clients, c)
				err = echo(c)
				if i < limit && err != nil {
					t.Fatalf("connection %d of %d (%d descriptors inherited): %v", i+1, limit, inherited, err)
				}
				if i == limit && err == nil {
					t.Fatalf("connection %d carried; the limit is %d (%d descriptors inherited)", i+1, limit, inherited)
				}
			}
		})
	}
}

// TestCSelectBytes checks the forwarding itself against a raw server:
// 16 MiB each way arrives unchanged and in order while the receiver
// at first reads nothing (the proxy must keep what it could not write and
// stop reading meanwhile), and the client's EOF closes the server side.
func TestCSelectBytes(t *testing.T) {
	for _, nw := range testutil.Networks() {
		t.Run(nw.Name, func(t *testing.T) {
			ln, sa := listenOn(t, nw)
			p := startCSelectT(t, nw.Addr(t), sa)

			// More than loopback TCP's autotuned socket buffers hold.
			up, down := pattern(16<<20, 1), pattern(16<<20, 2)
			c, err := net.Dial(p.addr.Network().String(), p.addr.NetAddr())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(30 * time.Second))
			s, err := ln.Accept()
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			s.SetDeadline(time.Now().Add(30 * time.Second))

			// Both ends write their megabyte before either reads: the
			// proxy fills the socket buffers and must hold the rest.
			var wg sync.WaitGroup
			var cErr, sErr error
			wg.Add(2)
			go func() { defer wg.Done(); _, cErr = c.Write(up) }()
			go func() { defer wg.Done(); _, sErr = s.Write(down) }()
			time.Sleep(200 * time.Millisecond) // let the buffers fill; not a timing assertion
			gotUp, gotDown := make([]byte, len(up)), make([]byte, len(down))
			wg.Add(2)
			var rcErr, rsErr error
			go func() { defer wg.Done(); _, rsErr = io.ReadFull(s, gotUp) }()
			go func() { defer wg.Done(); _, rcErr = io.ReadFull(c, gotDown) }()
			wg.Wait()
			for _, err := range []error{cErr, sErr, rcErr, rsErr} {
				if err != nil {
					t.Fatal(err)
				}
			}
			if !bytes.Equal(gotUp, up) || !bytes.Equal(gotDown, down) {
				t.Fatal("bytes changed on the way through the proxy")
			}
			// The client's EOF: the proxy closes both sides.
			c.Close()
			if n, err := s.Read(make([]byte, 1)); n != 0 || !errors.Is(err, io.EOF) {
				t.Errorf("server side after the client closed: %d bytes, %v; want EOF", n, err)
			}
		})
	}
}

// pattern returns n bytes that differ from any shifted copy of
// themselves, so a lost, repeated or reordered chunk shows.
func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	x := uint32(seed) * 2654435761
	for i := range b {
		x = x*1664525 + 1013904223
		b[i] = byte(x >> 24)
	}
	return b
}

// TestCSelectRefusesBeyondFDSetSize opens more connections than select
// can watch: the first ones are proxied, the rest closed at once, and
// once some close, new ones are proxied again.
func TestCSelectRefusesBeyondFDSetSize(t *testing.T) {
	cache := startCache(t, distcache.MustParseAddr("IP:127.0.0.1:0"))
	p := startCSelectT(t, distcache.MustParseAddr("IP:127.0.0.1:0"), cache.Addr())
	const n = 530 // each proxied connection takes two of 1024 descriptors
	var ok []*loadgen.Client
	defer func() {
		for _, c := range ok {
			c.Close()
		}
	}()
	refused := 0
	for i := range n {
		c, err := loadgen.Dial(context.Background(), p.addr, 5*time.Second)
		if err != nil {
			t.Fatal(err) // the kernel completes the handshake either way
		}
		if _, err := c.Have([]byte("x")); err != nil {
			c.Close()
			// Refused means closed, not left hanging (a descriptor
			// beyond FD_SETSIZE in select would be silently missed).
			if !closedByPeer(err) {
				t.Fatalf("connection %d: %v; want it closed by the proxy", i, err)
			}
			refused++
			continue
		}
		if refused > 0 {
			t.Fatalf("connection %d proxied after %d were refused", i, refused)
		}
		ok = append(ok, c)
	}
	// 0-2 are stdio and 3 the listener; 1020 descriptors make 510 pairs.
	if len(ok) < 500 || len(ok) > 510 || refused == 0 {
		t.Fatalf("%d proxied, %d refused; want about 510 proxied and the rest refused", len(ok), refused)
	}
	for _, c := range ok[:10] {
		c.Close()
	}
	ok = ok[10:]
	// The proxy notices the closes in its own time; retry, bounded.
	for i := 0; ; i++ {
		c, err := loadgen.Dial(context.Background(), p.addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.Have([]byte("x"))
		c.Close()
		if err == nil {
			break
		}
		if i == 50 {
			t.Fatalf("no connection proxied after 10 closed: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// closedByPeer reports whether err says the other side closed the
// connection (EOF or a reset), as opposed to a timeout.
// closedByPeer reports an error that says the proxy closed the
// connection: at the read (end of stream, reset) or, when the close came
// before the request was written, at the write (broken pipe).
func closedByPeer(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE)
}

// TestCSelectNoServer: with nothing at the server address the client's
// connection is closed at once and the proxy keeps running.
func TestCSelectNoServer(t *testing.T) {
	dir := testutil.SocketDir(t)
	server := distcache.MustParseAddr("UNIX:" + filepath.Join(dir, "nobody.sock"))
	p := startCSelectT(t, distcache.MustParseAddr("UNIX:"+filepath.Join(dir, "p.sock")), server)
	for range 3 {
		c, err := loadgen.Dial(context.Background(), p.addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.Have([]byte("x"))
		c.Close()
		if !closedByPeer(err) {
			t.Fatalf("with no server: %v; want the connection closed", err)
		}
	}
	// Now a server appears at that address: the same proxy serves.
	startCache(t, server)
	c, err := loadgen.Dial(context.Background(), p.addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Have([]byte("x")); err != nil {
		t.Fatal(err)
	}
}

// TestCSelectBadArgs: bad addresses end the proxy with a one-line error,
// not a "ready" line.
func TestCSelectBadArgs(t *testing.T) {
	bin := cselectBin(t)
	for _, args := range [][]string{
		{"-listen", "TCP:1", "-server", "IP:127.0.0.1:1"},
		{"-listen", "IP:127.0.0.1:0", "-server", "IP:127.0.0.1:0"},
		{"-listen", "IP:127.0.0.1:0", "-server", "IP:1234"},
		{"-listen", "IP:127.0.0.1:99999", "-server", "IP:127.0.0.1:1"},
		{"-listen", "IP:127.0.0.1:0"},
		{"-listen", "UNIX:", "-server", "IP:127.0.0.1:1"},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
		cancel()
		if err == nil || !bytes.HasPrefix(out, []byte("cselect: ")) || bytes.Contains(out, []byte("ready")) {
			t.Errorf("cselect %v: %v, %q; want a failure with a cselect: message", args, err, out)
		}
	}
}

// listenOn listens on a fresh address of nw, closed at the end of the
// test, and returns the listener and its address.
func listenOn(t *testing.T, nw testutil.Network) (net.Listener, distcache.Addr) {
	t.Helper()
	a := nw.Addr(t)
	ln, err := net.Listen(a.Network().String(), a.NetAddr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	sa, err := distcache.AddrFromNet(ln.Addr())
	if err != nil {
		t.Fatal(err)
	}
	return ln, sa
}
