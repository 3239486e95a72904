package proxy

import (
	"bytes"
	"errors"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/snoopd/snoopd/distcache"
)

var (
	up   = distcache.ClientToServer
	down = distcache.ServerToClient
)

// observe feeds an observer a connection's two streams, the request
// stream first, each in the chunks given, and closes it.
func observe(o *Observer, midStream [2]bool, upChunks, downChunks [][]byte) {
	now := time.Unix(10, 0)
	c := o.Open("client", now, midStream[0] && midStream[1])
	if midStream[0] != midStream[1] {
		// One direction only starts mid-stream.
		if midStream[0] {
			c.Resync(up, now)
		} else {
			c.Resync(down, now)
		}
	}
	for _, p := range upChunks {
		c.Data(up, p, now)
	}
	for _, p := range downChunks {
		c.Data(down, p, now)
	}
	c.Close("client closed", now)
}

// bytewise splits b into chunks of one byte.
func bytewise(b []byte) [][]byte {
	out := make([][]byte, len(b))
	for i := range b {
		out[i] = b[i : i+1]
	}
	return out
}

// An observer that saw a connection from its start makes the same
// transactions as the proxy's assembler, however the streams are cut, and
// reports the connection opened and closed with its byte counts and
// reason.
func TestObserverAssemblesWholeStreamsAtEveryCut(t *testing.T) {
	r := newRecorded()
	want := append(slices.Clone(r.want), r.wantAtClose...)
	r.eachCut(func(how string, upChunks, downChunks [][]byte) {
		sink := &recSink{}
		o := NewObserver("cap", sink, ObserverOptions{})
		observe(o, [2]bool{}, upChunks, downChunks)
		ev := sink.take()
		if got := txLines(ev); !slices.Equal(got, want) {
			t.Fatalf("%s:\ngot  %s\nwant %s", how, strings.Join(got, "\n     "), strings.Join(want, "\n     "))
		}
		first, last := ev[0], ev[len(ev)-1]
		if first.Kind != KindConnOpened || first.Proxy != "cap" || first.ConnID != 1 || first.Client != "client" {
			t.Fatalf("%s: first event %+v, want the connection opened", how, first)
		}
		if last.Kind != KindConnClosed || last.Closed.BytesUp != int64(len(r.upBytes)) || last.Closed.BytesDown != int64(len(r.downBytes)) ||
			last.Closed.Reason != "client closed" || last.Closed.Transactions != 5 {
			t.Fatalf("%s: last event %+v %+v, want the close with %d/%d bytes and 5 transactions", how, last, last.Closed, len(r.upBytes), len(r.downBytes))
		}
	})
	s := NewObserver("cap", nil, ObserverOptions{})
	observe(s, [2]bool{}, [][]byte{r.upBytes}, [][]byte{r.downBytes})
	st := s.Stats()
	if st.ConnsTotal != 1 || st.ConnsActive != 0 || st.BytesUp != int64(len(r.upBytes)) || st.BytesDown != int64(len(r.downBytes)) ||
		st.FramesUp != 7 || st.FramesDown != 7 || st.Transactions() != 7 || st.Resyncs != 0 || st.ResyncSkippedBytes != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// lockBound is the offset from which a direction started mid-stream at k
// must decode every message: the second message start at or after k (the
// first may be a later frame's continuation it cannot prove a start).
func lockBound(starts []int, k int) int {
	n := 0
	for _, s := range starts {
		if s >= k {
			n++
			if n == 2 {
				return s
			}
		}
	}
	return 1 << 30
}

// checkMidStream checks the transactions of a connection whose direction
// dir was seen from offset k on: never one that the whole stream does not
// make or that a lost message would not explain (an orphan answer, an
// unanswered request), and every one whose message in dir starts at or
// after the lock-on bound.
func checkMidStream(t *testing.T, r *recorded, dir distcache.Direction, k int, how string, got []string) {
	t.Helper()
	allowed := map[string]bool{}
	for _, l := range append(slices.Clone(r.want), r.wantAtClose...) {
		allowed[l] = true
	}
	// Lost requests make their answers orphans; lost answers leave
	// their requests unanswered.
	starts, lost := r.upStarts, r.orphanOf
	if dir == down {
		starts, lost = r.downStarts, r.unansweredOf
	}
	for _, l := range lost {
		allowed[l] = true
	}
	for _, l := range got {
		if !allowed[l] {
			t.Fatalf("%s from %d: made %s, which no message of the stream is", how, k, l)
		}
	}
	bound := lockBound(starts, k)
	msgs := r.up
	if dir == down {
		msgs = r.down
	}
	for i, s := range starts {
		if s < bound {
			continue
		}
		m := msgs[i]
		found := false
		for _, l := range got {
			if strings.Contains(l, " uid="+itoa(m.uid)+" ") && strings.HasPrefix(l, m.op.String()+" ") &&
				!strings.Contains(l, " orphan ") && !strings.Contains(l, " unanswered ") ||
				m.uid == 99 && strings.HasPrefix(l, "GET uid=99 ") || m.uid == 5 && strings.HasPrefix(l, "GET uid=5 ") {
				found = true
			}
		}
		if !found {
			t.Fatalf("%s from %d (bound %d): no transaction of %s uid %d among\n%s", how, k, bound, m.op, m.uid, strings.Join(got, "\n"))
		}
	}
}

func itoa(u uint32) string { return strconv.FormatUint(uint64(u), 10) }

// A direction seen from any offset on, fed whole or a byte at a time,
// never makes a transaction the stream does not have, and makes the
// stream's own for every message after the point where it found its
// place; the bytes it passed over are counted, not reported as errors.
func TestObserverMidStreamAtEveryOffset(t *testing.T) {
	r := newRecorded()
	for _, dir := range []distcache.Direction{up, down} {
		b := r.upBytes
		if dir == down {
			b = r.downBytes
		}
		for k := 0; k < len(b); k++ {
			for _, how := range []string{"whole", "bytewise"} {
				chunks := [][]byte{b[k:]}
				if how == "bytewise" {
					chunks = bytewise(b[k:])
				}
				sink := &recSink{}
				o := NewObserver("cap", sink, ObserverOptions{})
				if dir == up {
					observe(o, [2]bool{true, false}, chunks, [][]byte{r.downBytes})
				} else {
					observe(o, [2]bool{false, true}, [][]byte{r.upBytes}, chunks)
				}
				ev := sink.take()
				for _, e := range ev {
					if e.Kind == KindProtocolError {
						t.Fatalf("%s from %d: protocol error %v while hunting", how, k, e.Err)
					}
				}
				checkMidStream(t, r, dir, k, how, txLines(ev))
				st := o.Stats()
				starts := r.upStarts
				if dir == down {
					starts = r.downStarts
				}
				if st.Resyncs != 1 || !slices.Contains(starts, k) && st.ResyncSkippedBytes == 0 {
					t.Fatalf("%s from %d: %d resyncs, %d bytes skipped", how, k, st.Resyncs, st.ResyncSkippedBytes)
				}
			}
		}
	}
}

// Bytes lost in the answers leave the requests they answered pending,
// reported unanswered at close; answers after the gap pair as before.
// Lost requests make their answers orphans.
func TestObserverResyncAfterLostBytes(t *testing.T) {
	r := newRecorded()
	sink := &recSink{}
	o := NewObserver("cap", sink, ObserverOptions{})
	now := time.Unix(10, 0)
	c := o.Open("client", now, false)
	c.Data(up, r.upBytes, now)
	// The GET answer (uid 2) loses its end, the REMOVE answer its first
	// bytes; the GET answer after it (uid 3) cannot be told from the end
	// of a longer one, its frame before having been cut, and is passed
	// over too.
	c.Data(down, r.downBytes[:r.downStarts[1]+100], now)
	c.Resync(down, now)
	c.Data(down, r.downBytes[r.downStarts[2]+3:], now)
	c.Close("capture ended", now)
	got := txLines(sink.take())
	want := []string{r.want[0], r.want[4], r.want[5],
		r.unansweredOf[1], r.unansweredOf[2], r.unansweredOf[3], r.wantAtClose[0]}
	if !slices.Equal(got, want) {
		t.Fatalf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	sink = &recSink{}
	o = NewObserver("cap", sink, ObserverOptions{})
	c = o.Open("client", now, false)
	c.Data(up, r.upBytes[:r.upStarts[2]], now)
	c.Resync(up, now)
	c.Data(up, r.upBytes[r.upStarts[2]+1:], now)
	c.Data(down, r.downBytes, now)
	c.Close("capture ended", now)
	got = txLines(sink.take())
	want = []string{r.want[0], r.want[1], r.want[2], r.orphanOf[3], r.want[4], r.want[5], r.wantAtClose[0]}
	if !slices.Equal(got, want) {
		t.Fatalf("lost request: got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if st := o.Stats(); st.Resyncs != 1 || st.ResyncSkippedBytes != int64(r.upStarts[3]-r.upStarts[2]-1) {
		t.Fatalf("%d resyncs, %d bytes skipped; want 1 and the rest of the lost request, %d", st.Resyncs, st.ResyncSkippedBytes, r.upStarts[3]-r.upStarts[2]-1)
	}
}

// A protocol error once the direction is decoded is reported (policy
// resync), and the direction finds its place again at the next message;
// the connection stays open.
func TestObserverReportsProtocolErrorsAndResyncs(t *testing.T) {
	r := newRecorded()
	b := slices.Clone(r.upBytes)
	b[r.upStarts[2]+10] = 9 // GET uid 3: operation 9
	for cut := 1; cut <= len(b); cut++ {
		sink := &recSink{}
		o := NewObserver("cap", sink, ObserverOptions{})
		observe(o, [2]bool{}, cutAt(b, cut), [][]byte{r.downBytes})
		ev := sink.take()
		var errs []*Event
		for _, e := range ev {
			if e.Kind == KindProtocolError {
				errs = append(errs, e)
			}
		}
		var pe *distcache.ProtocolError
		if len(errs) != 1 || errs[0].Policy != Resync || !errors.As(errs[0].Err, &pe) || pe.Rule != distcache.RuleOperation {
			t.Fatalf("cut %d: protocol errors %v, want one operation error under resync", cut, errs)
		}
		// The REMOVE after the corrupt GET pairs; the GET's answer is an
		// orphan (its request was never decoded).
		want := []string{r.want[0], r.want[1], r.want[2], r.orphanOf[3], r.want[4], r.want[5], r.wantAtClose[0]}
		if got := txLines(ev); !slices.Equal(got, want) {
			t.Fatalf("cut %d: got\n%s\nwant\n%s", cut, strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
		if ev[len(ev)-1].Kind != KindConnClosed {
			t.Fatalf("cut %d: the connection did not end with its close", cut)
		}
		if st := o.Stats(); st.ProtocolErrors != 1 || st.Resyncs != 1 {
			t.Fatalf("cut %d: %d protocol errors, %d resyncs; want 1 each", cut, st.ProtocolErrors, st.Resyncs)
		}
	}
}

// Captured data reaches an observer's events as a proxy's, and Data does
// not keep the caller's buffer.
func TestObserverCapturesDataWithoutKeepingInput(t *testing.T) {
	r := newRecorded()
	sink := &recSink{}
	o := NewObserver("cap", sink, ObserverOptions{CaptureData: true, CaptureLimit: 100})
	now := time.Unix(10, 0)
	c := o.Open("client", now, false)
	buf := slices.Clone(r.upBytes)
	c.Data(up, buf, now)
	clear(buf)
	buf = slices.Clone(r.downBytes)
	c.Data(down, buf, now)
	clear(buf)
	ev := sink.take()
	add := ev[1].Tx
	if !bytes.Equal(add.Data, session(100, 1)) || !add.DataTruncated || string(add.SessionID) != "sess-a" {
		t.Fatalf("ADD data %d bytes truncated %v id %q; want the first 100 bytes, truncated, of sess-a", len(add.Data), add.DataTruncated, add.SessionID)
	}
}

// FuzzObserverHunt feeds an observer streams that lose their place:
// valid traffic with bytes cut out and garbage put in where edits say,
// or nothing but the fuzzer's bytes. It must not panic, and every
// transaction it makes must stand in what it was fed: the request's and
// the response's first frame header (kind, uid, operation) and the
// session id.
func FuzzObserverHunt(f *testing.F) {
	f.Add([]byte{}, []byte{})
	f.Add([]byte{10, 0, 200, 1, 40, 2}, []byte{0, 0x11, 0, 0, 0, 0, 0, 0, 7, 0, 1, 1, 0, 1, 'x'})
	f.Add([]byte{255, 1, 3, 0, 90, 1}, []byte("garbage"))
	f.Add([]byte{1, 3}, distcache.AppendMessage(nil, false, 7, distcache.OpGet, []byte("id")))
	r := newRecorded()
	f.Fuzz(func(t *testing.T, edits, garbage []byte) {
		sink := &recSink{}
		o := NewObserver("fuzz", sink, ObserverOptions{CaptureData: true})
		now := time.Unix(10, 0)
		c := o.Open("client", now, len(edits)%2 == 1)
		var fed [2][]byte
		feed := func(dir distcache.Direction, p []byte) {
			fed[dir-1] = append(fed[dir-1], p...)
			c.Data(dir, p, now)
		}
		if len(edits) == 1 {
			// Nothing but the fuzzer's bytes, both ways.
			feed(up, garbage)
			feed(down, garbage)
		}
		for d, b := range [][]byte{r.upBytes, r.downBytes} {
			dir := distcache.Direction(d + 1)
			for i := 0; i+1 < len(edits) && len(edits) > 1; i += 2 {
				n := int(edits[i]) * len(b) / 256
				feed(dir, b[:n])
				b = b[n:]
				switch edits[i+1] % 3 {
				case 0: // lost bytes
					c.Resync(dir, now)
					b = b[min(len(b), int(edits[i+1])):]
				case 1: // garbage where the stream goes on
					feed(dir, garbage)
				}
			}
			feed(dir, b)
		}
		c.Close("end", now)
		for _, e := range sink.take() {
			if e.Kind != KindTransaction {
				continue
			}
			tx := e.Tx
			if !tx.Orphan && (!hasHeader(fed[0], false, tx) || !bytes.Contains(fed[0], tx.SessionID)) {
				t.Fatalf("request of %s was not fed", txLine(tx))
			}
			if !tx.Unanswered && !hasHeader(fed[1], true, tx) {
				t.Fatalf("response of %s was not fed", txLine(tx))
			}
		}
	})
}

// hasHeader reports whether b holds a frame header of the kind, uid and
// operation of tx.
func hasHeader(b []byte, resp bool, tx *Transaction) bool {
	want := distcache.AppendHeader(nil, distcache.FrameHeader{IsResponse: resp, RequestUID: tx.RequestUID, Op: tx.Op})
	for i := 0; i+distcache.HeaderSize <= len(b); i++ {
		h := b[i:]
		if h[0] == 0 && h[1] == 0x11 && bytes.Equal(h[4:11], want[4:11]) {
			return true
		}
	}
	return false
}

// BenchmarkObserver assembles the recorded connection (12 messages, 14
// frames, 6.2 KB) from its start, and from one byte in, which makes each
// direction hunt first.
func BenchmarkObserver(b *testing.B) {
	r := newRecorded()
	for _, c := range []struct {
		name string
		skip int
	}{{"from-start", 0}, {"mid-stream", 1}} {
		b.Run(c.name, func(b *testing.B) {
			o := NewObserver("bench", Discard, ObserverOptions{})
			now := time.Unix(10, 0)
			b.SetBytes(int64(len(r.upBytes) + len(r.downBytes) - 2*c.skip))
			b.ReportAllocs()
			for b.Loop() {
				conn := o.Open("client", now, c.skip > 0)
				conn.Data(up, r.upBytes[c.skip:], now)
				conn.Data(down, r.downBytes[c.skip:], now)
				conn.Close("end", now)
			}
		})
	}
}
