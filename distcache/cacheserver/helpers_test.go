package cacheserver

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/snoopd/snoopd/distcache"
	"github.com/snoopd/snoopd/internal/testutil"
)

// TestMain fails the package if any test leaves a goroutine behind: every
// test closes its servers, so a leak is a server that does not wait for
// what it started.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// ioTimeout bounds every blocking read and write of a test client, so a
// server that fails to answer fails the test instead of hanging it.
const ioTimeout = 10 * time.Second

// network is a transport the tests run over; see testutil.Networks.
type network = testutil.Network

var (
	networks = testutil.Networks()
	unixAddr = testutil.UnixAddr
)

// forEachNetwork runs f as a subtest per network.
func forEachNetwork(t *testing.T, f func(t *testing.T, nw network)) {
	for _, nw := range networks {
		t.Run(nw.Name, func(t *testing.T) { f(t, nw) })
	}
}

// startServer starts a server on addr and closes it when the test ends.
func startServer(t testing.TB, addr distcache.Addr, cfg Config) *Server {
	t.Helper()
	s, err := Start(addr, cfg)
	if err != nil {
		t.Fatalf("Start(%s): %v", addr, err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

// client is a minimal distcache client for tests: it writes requests with
// distcache.AppendMessage and reads responses with a validating Reader.
type client struct {
	t   testing.TB
	nc  net.Conn
	r   *distcache.Reader
	uid uint32
	buf []byte
}

func dial(t testing.TB, a distcache.Addr) *client {
	t.Helper()
	c, err := dialErr(a)
	if err != nil {
		t.Fatalf("dial %s: %v", a, err)
	}
	c.t = t
	t.Cleanup(func() { c.nc.Close() })
	return c
}

// dialErr is dial for goroutines other than the test's, which must not
// call t.Fatal; the caller closes the connection.
func dialErr(a distcache.Addr) (*client, error) {
	nc, err := net.DialTimeout(a.Network().String(), a.NetAddr(), ioTimeout)
	if err != nil {
		return nil, err
	}
	return &client{nc: nc, r: distcache.NewReader(nc, distcache.ServerToClient)}, nil
}

// write sends raw bytes.
func (c *client) write(b []byte) error {
	c.nc.SetWriteDeadline(time.Now().Add(ioTimeout))
	_, err := c.nc.Write(b)
	return err
}

// send writes one request and returns its request_uid.
func (c *client) send(op distcache.Op, payload []byte) (uint32, error) {
	c.uid++
	c.buf = distcache.AppendMessage(c.buf[:0], false, c.uid, op, payload)
	return c.uid, c.write(c.buf)
}

// recv reads one response. Its payload is valid until the next recv.
func (c *client) recv() (distcache.Message, error) {
	c.nc.SetReadDeadline(time.Now().Add(ioTimeout))
	return c.r.ReadMessage()
}

// roundTrip sends a request and returns a copy of its response's payload,
// checking that the response answers it.
func (c *client) roundTrip(op distcache.Op, payload []byte) ([]byte, error) {
	uid, err := c.send(op, payload)
	if err != nil {
		return nil, err
	}
	m, err := c.recv()
	if err != nil {
		return nil, err
	}
	if err := checkAnswer(m, uid, op); err != nil {
		return nil, err
	}
	return bytes.Clone(m.Payload), nil
}

func checkAnswer(m distcache.Message, uid uint32, op distcache.Op) error {
	if !m.IsResponse || m.RequestUID != uid || m.Op != op {
		return fmt.Errorf("got response uid %d op %s (response %v), want uid %d op %s", m.RequestUID, m.Op, m.IsResponse, uid, op)
	}
	return nil
}

// do is roundTrip for the test goroutine.
func (c *client) do(op distcache.Op, payload []byte) []byte {
	c.t.Helper()
	p, err := c.roundTrip(op, payload)
	if err != nil {
		c.t.Fatalf("%s: %v", op, err)
	}
	return p
}

// expect sends a request and checks the response payload byte for byte.
func (c *client) expect(op distcache.Op, payload, want []byte) {
	c.t.Helper()
	if got := c.do(op, payload); !bytes.Equal(got, want) {
		c.t.Errorf("%s %s: got % x, want % x", op, short(payload), short(got), short(want))
	}
}

// expectClosed checks that the server closed the connection. A server
// that closes with input it has not read makes the kernel send a reset
// instead of an orderly end, so that counts too.
func (c *client) expectClosed() {
	c.t.Helper()
	m, err := c.recv()
	if !isClosed(err) {
		c.t.Fatalf("want the connection closed, got %v (message %+v)", err, m)
	}
}

func isClosed(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// closeWrite half-closes the client's side, as a client does after its
// last request.
func (c *client) closeWrite() {
	c.t.Helper()
	cw, ok := c.nc.(interface{ CloseWrite() error })
	if !ok {
		c.t.Fatalf("%T cannot half-close", c.nc)
	}
	if err := cw.CloseWrite(); err != nil {
		c.t.Fatal(err)
	}
}

// short abbreviates long byte slices in failure messages.
func short(b []byte) []byte {
	if len(b) > 24 {
		return b[:24]
	}
	return b
}

// u32 is a big-endian uint32, for hand-built payloads.
func u32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }

// cat concatenates byte slices.
func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

// addPayload builds an ADD request payload by hand: timeout, id_len, id,
// data.
func addPayload(timeoutMS uint32, id, data string) []byte {
	return cat(u32(timeoutMS), u32(uint32(len(id))), []byte(id), []byte(data))
}

// Status bytes as response payloads.
var (
	respOK      = []byte{0}
	respNotOK   = []byte{1}
	respCorrupt = []byte{100}
	respExists  = []byte{101}
	respTimeout = []byte{102}
	respIDRange = []byte{103}
)

// fakeClock is a Config.Now that moves only when told to.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// countingListener wraps the connections it accepts so a test can count
// the writes the server makes.
type countingListener struct {
	net.Listener
	writes atomic.Int64
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &countingConn{Conn: c, writes: &l.writes}, nil
}

type countingConn struct {
	net.Conn
	writes *atomic.Int64
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

// waitFor polls cond until it holds, failing the test after ioTimeout. It
// is for state the server updates after the client has seen the effect,
// such as the active-connection count after a close.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(ioTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}
