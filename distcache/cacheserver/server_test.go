package cacheserver

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/snoopd/snoopd/distcache"
)

// TestOps walks one connection through every operation and every status
// byte the server sends, with hand-built payloads and exact expected
// response payloads.
func TestOps(t *testing.T) {
	forEachNetwork(t, func(t *testing.T, nw network) {
		s := startServer(t, nw.Addr(t), Config{})
		c := dial(t, s.Addr())
		id64 := strings.Repeat("k", 64)
		steps := []struct {
			name    string
			op      distcache.Op
			payload []byte
			want    []byte
		}{
			{"HAVE miss", distcache.OpHave, []byte("sid1"), respNotOK},
			{"GET miss", distcache.OpGet, []byte("sid1"), respNotOK},
			{"REMOVE miss", distcache.OpRemove, []byte("sid1"), respNotOK},
			{"GET empty id", distcache.OpGet, nil, respNotOK},
			{"ADD", distcache.OpAdd, cat(u32(60000), u32(4), []byte("sid1"), []byte("hello")), respOK},
			{"ADD again", distcache.OpAdd, addPayload(60000, "sid1", "other"), respExists},
			{"HAVE hit", distcache.OpHave, []byte("sid1"), respOK},
			{"GET hit", distcache.OpGet, []byte("sid1"), []byte("hello")},
			{"GET other id", distcache.OpGet, []byte("sid2"), respNotOK},
			// 100: id_len does not fit the payload.
			{"ADD id_len overruns", distcache.OpAdd, cat(u32(1000), u32(6), []byte("abcde")), respCorrupt},
			{"ADD id_len huge", distcache.OpAdd, cat(u32(1000), u32(0x80000000), []byte("abcde")), respCorrupt},
			// 102: timeout above 7 days.
			{"ADD timeout 7d+1ms", distcache.OpAdd, addPayload(604800001, "t", "x"), respTimeout},
			{"ADD timeout max", distcache.OpAdd, addPayload(604800000, "t", "x"), respOK},
			{"ADD timeout 0xffffffff", distcache.OpAdd, addPayload(0xffffffff, "t2", "x"), respTimeout},
			// 103: id length outside 1..64.
			{"ADD id empty", distcache.OpAdd, addPayload(1000, "", "data"), respIDRange},
			{"ADD id 65", distcache.OpAdd, addPayload(1000, id64+"k", "data"), respIDRange},
			{"ADD id 64", distcache.OpAdd, addPayload(1000, id64, "data"), respOK},
			{"GET id 64", distcache.OpGet, []byte(id64), []byte("data")},
			// No session data: like dc_server, id_len >= rest is checked
			// first, so this is 100, not 104 (104 cannot happen over the
			// wire: data that long does not fit a message).
			{"ADD data empty", distcache.OpAdd, addPayload(1000, "nodata", ""), respCorrupt},
			{"HAVE after failed ADD", distcache.OpHave, []byte("nodata"), respNotOK},
			{"REMOVE hit", distcache.OpRemove, []byte("sid1"), respOK},
			{"REMOVE again", distcache.OpRemove, []byte("sid1"), respNotOK},
			{"HAVE removed", distcache.OpHave, []byte("sid1"), respNotOK},
			{"GET removed", distcache.OpGet, []byte("sid1"), respNotOK},
			{"ADD after REMOVE", distcache.OpAdd, addPayload(1000, "sid1", "again"), respOK},
			{"GET re-added", distcache.OpGet, []byte("sid1"), []byte("again")},
		}
		for _, st := range steps {
			if got := c.do(st.op, st.payload); !bytes.Equal(got, st.want) {
				t.Errorf("%s: got % x, want % x", st.name, short(got), st.want)
			}
		}
		stats := s.Stats()
		var want [distcache.NumOps]uint64
		for _, st := range steps {
			want[st.op]++
		}
		if stats.Requests != want || stats.GetHits != 3 || stats.Sessions != 3 {
			t.Errorf("stats %+v, want requests %v, 3 GET hits, 3 sessions", stats, want)
		}
	})
}

// TestWireBytes checks a whole exchange at the byte level, independent of
// distcache.AppendMessage: the request frames are spelled out, and so are
// the response frames the server must send back.
func TestWireBytes(t *testing.T) {
	s := startServer(t, unixAddr(t), Config{})
	c := dial(t, s.Addr())
	h := func(s string) []byte {
		b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	exchanges := []struct{ name, req, resp string }{
		{"ADD uid 0x01020304, 1000 ms, id ab, data xyz",
			"00110000 00 01020304 00 00 01 000d  000003e8 00000002 6162 78797a",
			"00110000 01 01020304 00 00 01 0001  00"},
		{"ADD duplicate, patch level 0x1234 accepted",
			"00111234 00 00000005 00 00 01 000d  000003e8 00000002 6162 78797a",
			"00110000 01 00000005 00 00 01 0001  65"},
		{"GET hit",
			"00110000 00 ffffffff 00 01 01 0002  6162",
			"00110000 01 ffffffff 00 01 01 0003  78797a"},
		{"HAVE hit",
			"00110000 00 00000007 00 03 01 0002  6162",
			"00110000 01 00000007 00 03 01 0001  00"},
		{"REMOVE hit",
			"00110000 00 00000008 00 02 01 0002  6162",
			"00110000 01 00000008 00 02 01 0001  00"},
		{"GET miss",
			"00110000 00 00000009 00 01 01 0002  6162",
			"00110000 01 00000009 00 01 01 0001  01"},
		{"ADD timeout range",
			"00110000 00 0000000a 00 00 01 000d  240c8401 00000002 6162 78797a",
			"00110000 01 0000000a 00 00 01 0001  66"},
		{"ADD id range",
			"00110000 00 0000000b 00 00 01 000b  000003e8 00000000 78797a",
			"00110000 01 0000000b 00 00 01 0001  67"},
		{"ADD corrupt",
			"00110000 00 0000000c 00 00 01 000b  000003e8 00000004 78797a",
			"00110000 01 0000000c 00 00 01 0001  64"},
		{"ADD without data is corrupt (id_len uses up the rest)",
			"00110000 00 0000000d 00 00 01 000a  000003e8 00000002 6162",
			"00110000 01 0000000d 00 00 01 0001  64"},
	}
	for _, ex := range exchanges {
		if err := c.write(h(ex.req)); err != nil {
			t.Fatal(err)
		}
		want := h(ex.resp)
		got := make([]byte, len(want))
		c.nc.SetReadDeadline(time.Now().Add(ioTimeout))
		if _, err := io.ReadFull(c.nc, got); err != nil {
			t.Fatalf("%s: %v", ex.name, err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s:\n got % x\nwant % x", ex.name, got, want)
		}
	}
}

func TestExpiry(t *testing.T) {
	clk := newFakeClock()
	s := startServer(t, unixAddr(t), Config{Now: clk.Now})
	c := dial(t, s.Addr())
	c.expect(distcache.OpAdd, addPayload(1000, "s", "data"), respOK)
	c.expect(distcache.OpAdd, addPayload(0, "zero", "data"), respOK)
	c.expect(distcache.OpHave, []byte("zero"), respOK) // expires only once the clock moves past it
	clk.Advance(time.Second)
	c.expect(distcache.OpGet, []byte("s"), []byte("data"))
	c.expect(distcache.OpHave, []byte("zero"), respNotOK)
	clk.Advance(time.Millisecond)
	c.expect(distcache.OpHave, []byte("s"), respNotOK)
	c.expect(distcache.OpGet, []byte("s"), respNotOK)
	c.expect(distcache.OpRemove, []byte("s"), respNotOK)
	c.expect(distcache.OpAdd, addPayload(1000, "s", "new"), respOK)
	c.expect(distcache.OpGet, []byte("s"), []byte("new"))
}

func TestSessionLimit(t *testing.T) {
	clk := newFakeClock()
	s := startServer(t, unixAddr(t), Config{MaxSessions: 3, Now: clk.Now})
	c := dial(t, s.Addr())
	c.expect(distcache.OpAdd, addPayload(10000, "a", "1"), respOK)
	c.expect(distcache.OpAdd, addPayload(5000, "b", "2"), respOK)
	c.expect(distcache.OpAdd, addPayload(20000, "c", "3"), respOK)
	c.expect(distcache.OpAdd, addPayload(30000, "d", "4"), respOK) // drops b, closest to expiry
	c.expect(distcache.OpHave, []byte("b"), respNotOK)
	clk.Advance(11 * time.Second)
	c.expect(distcache.OpAdd, addPayload(1000, "e", "5"), respOK) // drops a, expired
	for id, want := range map[string][]byte{"a": respNotOK, "b": respNotOK, "c": respOK, "d": respOK, "e": respOK} {
		c.expect(distcache.OpHave, []byte(id), want)
	}
	if n := s.Stats().Sessions; n != 3 {
		t.Errorf("Sessions = %d, want 3", n)
	}
}

// TestPipelining sends 50 requests in one write and checks that they are
// answered in order, with one write.
func TestPipelining(t *testing.T) {
	forEachNetwork(t, func(t *testing.T, nw network) {
		l, err := Listen(nw.Addr(t))
		if err != nil {
			t.Fatal(err)
		}
		cl := &countingListener{Listener: l}
		s := New(Config{})
		served := make(chan error, 1)
		go func() { served <- s.Serve(cl) }()
		t.Cleanup(func() {
			s.Close()
			if err := <-served; err != nil {
				t.Errorf("Serve = %v after Close, want nil", err)
			}
		})
		addr, err := distcache.AddrFromNet(l.Addr())
		if err != nil {
			t.Fatal(err)
		}
		c := dial(t, addr)

		type req struct {
			op            distcache.Op
			payload, want []byte
		}
		var reqs []req
		for i := range 50 {
			id := fmt.Sprintf("id%02d", i%10)
			switch {
			case i < 10:
				reqs = append(reqs, req{distcache.OpAdd, addPayload(60000, id, "data-"+id), respOK})
			case i < 20:
				reqs = append(reqs, req{distcache.OpAdd, addPayload(60000, id, "x"), respExists})
			case i < 30:
				reqs = append(reqs, req{distcache.OpGet, []byte(id), []byte("data-" + id)})
			case i < 40:
				reqs = append(reqs, req{distcache.OpRemove, []byte(id), respOK})
			default:
				reqs = append(reqs, req{distcache.OpHave, []byte(id), respNotOK})
			}
		}
		var batch []byte
		for i, r := range reqs {
			batch = distcache.AppendMessage(batch, false, uint32(1000+i), r.op, r.payload)
		}
		if err := c.write(batch); err != nil {
			t.Fatal(err)
		}
		for i, r := range reqs {
			m, err := c.recv()
			if err != nil {
				t.Fatalf("response %d: %v", i, err)
			}
			if err := checkAnswer(m, uint32(1000+i), r.op); err != nil {
				t.Fatalf("response %d: %v", i, err)
			}
			if !bytes.Equal(m.Payload, r.want) {
				t.Errorf("response %d (%s): got %q, want %q", i, r.op, m.Payload, r.want)
			}
		}
		if w := cl.writes.Load(); w != 1 {
			t.Errorf("server answered the batch with %d writes, want 1", w)
		}
	})
}

// TestPartialRequestDoesNotDelayAnswers checks that the answer to a whole
// request is written even though the next request has only partly
// arrived: the server must flush before it waits for more input.
func TestPartialRequestDoesNotDelayAnswers(t *testing.T) {
	s := startServer(t, unixAddr(t), Config{})
	c := dial(t, s.Addr())
	first := distcache.AppendMessage(nil, false, 1, distcache.OpHave, []byte("x"))
	second := distcache.AppendMessage(nil, false, 2, distcache.OpHave, []byte("x"))
	if err := c.write(cat(first, second[:5])); err != nil {
		t.Fatal(err)
	}
	m, err := c.recv()
	if err != nil || checkAnswer(m, 1, distcache.OpHave) != nil {
		t.Fatalf("first answer: %+v, %v", m, err)
	}
	if err := c.write(second[5:]); err != nil {
		t.Fatal(err)
	}
	if m, err := c.recv(); err != nil || checkAnswer(m, 2, distcache.OpHave) != nil {
		t.Fatalf("second answer: %+v, %v", m, err)
	}
}

// TestLargeSessions checks multi-frame messages both ways: the largest
// session (32768 bytes, which only Cache.Add can store because an ADD
// payload also carries a header and an id) comes back as 16 frames, the
// largest ADD the protocol can carry is stored, and 2048 bytes fit one
// frame.
func TestLargeSessions(t *testing.T) {
	forEachNetwork(t, func(t *testing.T, nw network) {
		s := startServer(t, nw.Addr(t), Config{})
		c := dial(t, s.Addr())
		pattern := func(n int) []byte {
			b := make([]byte, n)
			for i := range b {
				b[i] = byte(i * 7)
			}
			return b
		}

		big := pattern(distcache.MaxSessionDataLen)
		if st := s.Cache().Add([]byte("big"), big, time.Hour); st != distcache.StatusOK {
			t.Fatalf("Cache.Add = %v", st)
		}
		uid, _ := c.send(distcache.OpGet, []byte("big"))
		m, err := c.recv()
		if err != nil || checkAnswer(m, uid, distcache.OpGet) != nil {
			t.Fatalf("GET big: %+v, %v", m, err)
		}
		if m.Frames != 16 || !bytes.Equal(m.Payload, big) {
			t.Errorf("GET big: %d frames, %d bytes; want 16 frames of the stored 32768 bytes", m.Frames, len(m.Payload))
		}

		// The largest ADD: 8 header bytes + 1-byte id + 32759 bytes of
		// data = 32768, sent as 16 frames.
		data := pattern(distcache.MaxMessageData - 9)
		c.expect(distcache.OpAdd, addPayload(60000, "m", string(data)), respOK)
		if got := c.do(distcache.OpGet, []byte("m")); !bytes.Equal(got, data) {
			t.Errorf("GET of the largest ADD: %d bytes back, want %d", len(got), len(data))
		}

		// 2048 bytes of session data: one frame, read here as raw bytes.
		data = pattern(2048)
		c.expect(distcache.OpAdd, addPayload(60000, "one", string(data)), respOK)
		uid, _ = c.send(distcache.OpGet, []byte("one"))
		raw := make([]byte, distcache.HeaderSize+2048)
		c.nc.SetReadDeadline(time.Now().Add(ioTimeout))
		if _, err := io.ReadFull(c.nc, raw); err != nil {
			t.Fatal(err)
		}
		h, err := distcache.ParseHeader(raw)
		if err != nil || !h.Complete || h.DataLen != 2048 || h.RequestUID != uid || !bytes.Equal(raw[distcache.HeaderSize:], data) {
			t.Errorf("2048-byte GET: header %+v (%v); want one complete frame of 2048 bytes", h, err)
		}
		// An ADD whose payload is exactly 2048 bytes travels as one frame.
		p := addPayload(60000, "frame", string(pattern(2048-8-5)))
		if n := len(distcache.AppendMessage(nil, false, 1, distcache.OpAdd, p)); n != distcache.HeaderSize+2048 {
			t.Fatalf("test bug: the ADD is %d bytes on the wire", n)
		}
		c.expect(distcache.OpAdd, p, respOK)
		c.expect(distcache.OpHave, []byte("frame"), respOK)
		// Check nothing else was left unread.
		c.expect(distcache.OpHave, []byte("none"), respNotOK)
	})
}

// header returns the 14 bytes of a frame header, for building corrupt
// frames byte by byte.
func header(resp bool, uid uint32, op distcache.Op, complete bool, dataLen int) []byte {
	return distcache.AppendHeader(nil, distcache.FrameHeader{
		ProtoLevel: distcache.ProtocolLevel, IsResponse: resp, RequestUID: uid,
		Op: op, Complete: complete, DataLen: uint16(dataLen),
	})
}

func frameBytes(uid uint32, op distcache.Op, complete bool, dataLen int) []byte {
	return append(header(false, uid, op, complete, dataLen), make([]byte, dataLen)...)
}

func setByte(b []byte, i int, v byte) []byte {
	b = bytes.Clone(b)
	b[i] = v
	return b
}

func TestCorruptInputCloses(t *testing.T) {
	get := frameBytes(1, distcache.OpGet, true, 2)
	fullFrames := func(n int) []byte {
		var b []byte
		for range n {
			b = append(b, frameBytes(9, distcache.OpAdd, false, 2048)...)
		}
		return b
	}
	cases := []struct {
		name   string
		stream []byte
	}{
		{"protocol version 0x0012", setByte(get, 1, 0x12)},
		{"protocol version 0x0111", setByte(get, 0, 0x01)},
		{"response travelling client->server", setByte(get, 4, 1)},
		{"is_response 7", setByte(get, 4, 7)},
		{"op_class 1", setByte(get, 9, 1)},
		{"operation 4", setByte(get, 10, 4)},
		{"operation 255", setByte(get, 10, 255)},
		{"complete 2", setByte(get, 11, 2)},
		{"data_len 2049", append(header(false, 1, distcache.OpGet, true, 2049), make([]byte, 2049)...)},
		{"data_len 0xffff", setByte(setByte(get, 12, 0xff), 13, 0xff)},
		{"short non-final frame", frameBytes(1, distcache.OpAdd, false, 100)},
		{"continuation with another uid", cat(fullFrames(1), frameBytes(10, distcache.OpAdd, true, 1))},
		{"continuation with another op", cat(fullFrames(1), frameBytes(9, distcache.OpGet, true, 1))},
		{"message over 32768 bytes", cat(fullFrames(16), frameBytes(9, distcache.OpAdd, true, 1))},
		{"valid request, then garbage", cat(frameBytes(1, distcache.OpHave, true, 1), []byte("GET / HTTP/1.0\r\n\r\n"))},
		// dc_server drops a client whose ADD is shorter than its 8-byte
		// header, without answering it.
		{"ADD of 7 bytes", distcache.AppendMessage(nil, false, 1, distcache.OpAdd, []byte{0, 0, 0, 1, 0, 0, 0})},
	}
	forEachNetwork(t, func(t *testing.T, nw network) {
		s := startServer(t, nw.Addr(t), Config{Logger: testLogger(t)})
		for i, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				c := dial(t, s.Addr())
				if err := c.write(tc.stream); err != nil && !isClosed(err) {
					t.Fatal(err)
				}
				if strings.HasPrefix(tc.name, "valid request") {
					// Requests before the corruption are still answered.
					m, err := c.recv()
					if err != nil || checkAnswer(m, 1, distcache.OpHave) != nil || !bytes.Equal(m.Payload, respNotOK) {
						t.Fatalf("answer before the corruption: %+v, %v", m, err)
					}
				}
				c.expectClosed()
				if got := s.Stats().CorruptCloses; got != uint64(i+1) {
					t.Errorf("CorruptCloses = %d, want %d", got, i+1)
				}
			})
		}
		// The server is unharmed.
		dial(t, s.Addr()).expect(distcache.OpHave, []byte("x"), respNotOK)
	})
}

// TestCutMidMessage checks that a stream ending inside a message closes
// the connection, after answering the whole requests before it.
func TestCutMidMessage(t *testing.T) {
	have := distcache.AppendMessage(nil, false, 1, distcache.OpHave, []byte("x"))
	add := distcache.AppendMessage(nil, false, 2, distcache.OpAdd, addPayload(1000, "id", strings.Repeat("d", 3000)))
	cases := []struct {
		name    string
		stream  []byte
		answers int
		cut     bool
	}{
		{"half a header", have[:7], 0, true},
		{"header without its data", have[:distcache.HeaderSize], 0, true},
		{"after the first of two frames", add[:distcache.HeaderSize+2048], 0, true},
		{"whole request, then half a header", cat(have, have[:3]), 1, true},
		{"whole request only", have, 1, false},
		{"nothing", nil, 0, false},
	}
	forEachNetwork(t, func(t *testing.T, nw network) {
		s := startServer(t, nw.Addr(t), Config{Logger: testLogger(t)})
		cuts := uint64(0)
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				c := dial(t, s.Addr())
				if err := c.write(tc.stream); err != nil {
					t.Fatal(err)
				}
				c.closeWrite()
				for range tc.answers {
					if m, err := c.recv(); err != nil || checkAnswer(m, 1, distcache.OpHave) != nil {
						t.Fatalf("answer: %+v, %v", m, err)
					}
				}
				c.expectClosed()
				if tc.cut {
					cuts++
				}
				if got := s.Stats().CutCloses; got != cuts {
					t.Errorf("CutCloses = %d, want %d", got, cuts)
				}
			})
		}
		if n := s.Stats().CorruptCloses; n != 0 {
			t.Errorf("CorruptCloses = %d; a cut stream is not corrupt", n)
		}
	})
}

func TestManyConnections(t *testing.T) {
	forEachNetwork(t, func(t *testing.T, nw network) {
		s := startServer(t, nw.Addr(t), Config{})
		const conns, rounds = 40, 50
		var wg sync.WaitGroup
		var added atomic.Int64
		errs := make(chan error, conns)
		for g := range conns {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs <- func() error {
					c, err := dialErr(s.Addr())
					if err != nil {
						return err
					}
					defer c.nc.Close()
					// Every connection races to add the same id; exactly
					// one must win.
					p, err := c.roundTrip(distcache.OpAdd, addPayload(60000, "shared", fmt.Sprint(g)))
					if err != nil {
						return err
					}
					switch {
					case bytes.Equal(p, respOK):
						added.Add(1)
					case !bytes.Equal(p, respExists):
						return fmt.Errorf("shared ADD answered % x", p)
					}
					for i := range rounds {
						id := fmt.Sprintf("c%d-%d", g, i)
						data := strings.Repeat(id, i%50+1)
						for _, step := range []struct {
							op            distcache.Op
							payload, want []byte
						}{
							{distcache.OpAdd, addPayload(60000, id, data), respOK},
							{distcache.OpGet, []byte(id), []byte(data)},
							{distcache.OpHave, []byte(id), respOK},
							{distcache.OpRemove, []byte(id), respOK},
							{distcache.OpGet, []byte(id), respNotOK},
						} {
							p, err := c.roundTrip(step.op, step.payload)
							if err != nil {
								return err
							}
							if !bytes.Equal(p, step.want) {
								return fmt.Errorf("%s %s: got %q, want %q", step.op, id, short(p), short(step.want))
							}
						}
					}
					return nil
				}()
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Error(err)
			}
		}
		if n := added.Load(); n != 1 {
			t.Errorf("%d connections added the shared id, want 1", n)
		}
		waitFor(t, "connections to close", func() bool { return s.Stats().ConnectionsActive == 0 })
		st := s.Stats()
		if st.ConnectionsTotal != conns || st.Requests[distcache.OpGet] != 2*conns*rounds || st.GetHits != conns*rounds {
			t.Errorf("stats %+v", st)
		}
	})
}

// TestCloseWithIdleConnections checks that Close does not wait for idle
// clients: it closes their connections and returns (goleak in TestMain
// checks that nothing is left running).
func TestCloseWithIdleConnections(t *testing.T) {
	forEachNetwork(t, func(t *testing.T, nw network) {
		s, err := Start(nw.Addr(t), Config{})
		if err != nil {
			t.Fatal(err)
		}
		var clients []*client
		for range 10 {
			c := dial(t, s.Addr())
			c.expect(distcache.OpHave, []byte("x"), respNotOK)
			clients = append(clients, c)
		}
		// One more is left inside a message.
		partial := dial(t, s.Addr())
		partial.write(frameBytes(1, distcache.OpAdd, false, 2048))

		closed := make(chan error)
		go func() { closed <- s.Close() }()
		select {
		case err := <-closed:
			if err != nil {
				t.Errorf("Close = %v", err)
			}
		case <-time.After(ioTimeout):
			t.Fatal("Close did not return with idle connections open")
		}
		for _, c := range append(clients, partial) {
			c.expectClosed()
		}
		if n := s.Stats().ConnectionsActive; n != 0 {
			t.Errorf("ConnectionsActive = %d after Close", n)
		}
		if err := s.Close(); err != nil {
			t.Errorf("second Close = %v", err)
		}
		if _, err := net.Dial(s.Addr().Network().String(), s.Addr().NetAddr()); err == nil {
			t.Error("still accepting after Close")
		}
	})
}

func TestServeAfterClose(t *testing.T) {
	s := New(Config{})
	s.Close()
	l, err := Listen(unixAddr(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Serve(l); err != nil {
		t.Errorf("Serve on a closed server = %v, want nil", err)
	}
	if _, err := l.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Serve left the listener open: Accept = %v", err)
	}
}

func TestServeReturnsListenerError(t *testing.T) {
	s := New(Config{})
	defer s.Close()
	want := errors.New("listener broke")
	if err := s.Serve(failingListener{want}); err != want {
		t.Errorf("Serve = %v, want %v", err, want)
	}
}

type failingListener struct{ err error }

func (l failingListener) Accept() (net.Conn, error) { return nil, l.err }
func (l failingListener) Close() error              { return nil }
func (l failingListener) Addr() net.Addr            { return &net.UnixAddr{Name: "/nowhere", Net: "unix"} }

func TestShutdown(t *testing.T) {
	forEachNetwork(t, func(t *testing.T, nw network) {
		s, err := Start(nw.Addr(t), Config{})
		if err != nil {
			t.Fatal(err)
		}
		idle := dial(t, s.Addr())
		idle.expect(distcache.OpHave, []byte("x"), respNotOK)
		ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Fatalf("Shutdown = %v", err)
		}
		idle.expectClosed()
		if err := s.Close(); err != nil {
			t.Errorf("Close after Shutdown = %v", err)
		}
	})
}

// TestShutdownTimeout checks that Shutdown gives up on a client that does
// not read its answers, closes it, and still leaves nothing running.
func TestShutdownTimeout(t *testing.T) {
	s, err := Start(unixAddr(t), Config{})
	if err != nil {
		t.Fatal(err)
	}
	s.Cache().Add([]byte("big"), make([]byte, distcache.MaxSessionDataLen), time.Hour)
	c := dial(t, s.Addr())
	var batch []byte
	for i := range 200 {
		batch = distcache.AppendMessage(batch, false, uint32(i), distcache.OpGet, []byte("big"))
	}
	// Keep asking for 32 KiB answers without reading any, until the
	// socket buffers fill both ways and the writer blocks.
	writerDone := make(chan struct{})
	var writes atomic.Int64
	go func() {
		defer close(writerDone)
		for {
			c.nc.SetWriteDeadline(time.Now().Add(ioTimeout))
			if _, err := c.nc.Write(batch); err != nil {
				return
			}
			writes.Add(1)
		}
	}()
	waitFor(t, "the client's writes to stall", func() bool {
		n := writes.Load()
		time.Sleep(50 * time.Millisecond)
		return n > 0 && writes.Load() == n
	})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := s.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown = %v, want %v", err, context.DeadlineExceeded)
	}
	c.nc.Close()
	<-writerDone
	if n := s.Stats().ConnectionsActive; n != 0 {
		t.Errorf("ConnectionsActive = %d", n)
	}
}

func TestStartAddr(t *testing.T) {
	s := startServer(t, distcache.MustParseAddr("IP:127.0.0.1:0"), Config{})
	a := s.Addr()
	if a.Network() != distcache.NetworkTCP || a.Host() != "127.0.0.1" || a.Port() == 0 {
		t.Fatalf("Addr = %s, want IP:127.0.0.1 with the real port", a)
	}
	if want := fmt.Sprintf("IP:127.0.0.1:%d", a.Port()); a.String() != want {
		t.Errorf("Addr = %s, want %s", a, want)
	}
	// Serve with a caller's listener reports that listener's address.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s2 := New(Config{})
	done := make(chan error, 1)
	go func() { done <- s2.Serve(l) }()
	waitFor(t, "Serve to register", func() bool { return !s2.Addr().IsZero() })
	if got, want := s2.Addr().Port(), l.Addr().(*net.TCPAddr).Port; got != want {
		t.Errorf("Addr().Port() = %d, want %d", got, want)
	}
	s2.Close()
	if err := <-done; err != nil {
		t.Errorf("Serve = %v", err)
	}
}

func TestUnixSocketFile(t *testing.T) {
	addr := unixAddr(t)
	path := addr.Path()

	// A socket file left by a dead process is replaced.
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	if _, err := os.Lstat(path); err != nil {
		t.Fatalf("test setup: stale socket file missing: %v", err)
	}
	s, err := Start(addr, Config{})
	if err != nil {
		t.Fatalf("Start over a stale socket file: %v", err)
	}
	dial(t, s.Addr()).expect(distcache.OpHave, []byte("x"), respNotOK)

	// A live server is not displaced.
	if s2, err := Start(addr, Config{}); err == nil {
		s2.Close()
		t.Fatal("Start succeeded on the socket of a running server")
	} else if !errors.Is(err, syscall.EADDRINUSE) {
		t.Errorf("Start on a live socket: %v, want EADDRINUSE", err)
	}
	dial(t, s.Addr()).expect(distcache.OpHave, []byte("x"), respNotOK)

	// Close removes the socket file.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket file after Close: %v, want it gone", err)
	}

	// A regular file in the way is never removed.
	if err := os.WriteFile(path, []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	if s3, err := Start(addr, Config{}); err == nil {
		s3.Close()
		t.Fatal("Start replaced a regular file")
	}
	if b, err := os.ReadFile(path); err != nil || string(b) != "keep" {
		t.Errorf("regular file touched: %q, %v", b, err)
	}
}

// TestHandleAllocs checks that answering requests does not allocate once
// a connection's buffers have grown.
func TestHandleAllocs(t *testing.T) {
	s := New(Config{})
	defer s.Close()
	s.Cache().Add([]byte("hit"), bytes.Repeat([]byte{1}, 300), time.Hour)
	c := &conn{srv: s}
	msgs := []distcache.Message{
		{RequestUID: 1, Op: distcache.OpGet, Payload: []byte("hit")},
		{RequestUID: 2, Op: distcache.OpGet, Payload: []byte("miss")},
		{RequestUID: 3, Op: distcache.OpHave, Payload: []byte("hit")},
		{RequestUID: 4, Op: distcache.OpRemove, Payload: []byte("miss")},
		{RequestUID: 5, Op: distcache.OpAdd, Payload: addPayload(1000, "hit", "dup")},
		{RequestUID: 6, Op: distcache.OpAdd, Payload: addPayload(1000, "", "bad")},
	}
	run := func() {
		c.out = c.out[:0]
		for _, m := range msgs {
			c.handle(m)
		}
		c.flushStats()
	}
	run()
	if n := testing.AllocsPerRun(100, run); n != 0 {
		t.Errorf("%v allocations per batch, want 0", n)
	}
}

// testLogger sends the server's debug log to the test log, so a failing
// corruption test shows why the server closed.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}
