package tshark

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/snoopd/snoopd/distcache"
	"github.com/snoopd/snoopd/internal/skip"
	"github.com/snoopd/snoopd/vocab"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// capture is a Capture in memory, for one test, with times counted in
// microseconds from its start.
type capture struct {
	t    *testing.T
	buf  bytes.Buffer
	c    *Capture
	base time.Time
}

func newCapture(t *testing.T) *capture {
	c := &capture{t: t, base: time.Date(2026, 12, 7, 14, 0, 0, 0, time.UTC)}
	var err error
	if c.c, err = NewCapture(&c.buf); err != nil {
		t.Fatal(err)
	}
	return c
}

// conn is one TCP stream of a capture.
type conn struct {
	c *capture
	s *Stream
}

func (c *capture) conn(client, server string) *conn {
	s, err := c.c.Stream(c.base, netip.MustParseAddrPort(client), netip.MustParseAddrPort(server))
	if err != nil {
		c.t.Fatal(err)
	}
	return &conn{c: c, s: s}
}

// send writes data from the client (up) or the server at us
// microseconds after the capture's start, one segment.
func (k *conn) send(us int, up bool, data []byte) {
	if err := k.s.Send(k.c.base.Add(time.Duration(us)*time.Microsecond), up, data); err != nil {
		k.c.t.Fatal(err)
	}
}

// run writes the capture to a file and returns tshark's PDUs.
func (c *capture) run(args ...string) []PDU {
	c.t.Helper()
	if err := c.c.Flush(); err != nil {
		c.t.Fatal(err)
	}
	path := filepath.Join(c.t.TempDir(), "c.pcapng")
	if d := os.Getenv("KEEP_PCAP"); d != "" {
		path = filepath.Join(d, c.t.Name()+".pcapng")
	}
	if err := os.WriteFile(path, c.buf.Bytes(), 0o600); err != nil {
		c.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pdus, err := Run(ctx, path, args...)
	if err != nil {
		c.t.Fatal(err)
	}
	return pdus
}

func needTshark(t *testing.T) {
	t.Helper()
	if err := Available(); err != nil {
		skip.Missing(t, "%v", err)
	}
}

func req(uid uint32, op distcache.Op, payload []byte) []byte {
	return distcache.AppendMessage(nil, false, uid, op, payload)
}

func resp(uid uint32, op distcache.Op, payload []byte) []byte {
	return distcache.AppendMessage(nil, true, uid, op, payload)
}

// cuts splits b at the given offsets.
func cuts(b []byte, at ...int) [][]byte {
	var out [][]byte
	prev := 0
	for _, a := range at {
		out = append(out, b[prev:a])
		prev = a
	}
	return append(out, b[prev:])
}

func TestDissectorReassemblesSplitAndMultiFrameMessages(t *testing.T) {
	needTshark(t)
	c := newCapture(t)
	id := []byte("session-0123456789")
	data := bytes.Repeat([]byte{7}, 5000) // three frames: 2048, 2048, 904 + the ADD's header and id
	add := req(1, distcache.OpAdd, distcache.AppendAddRequest(nil, 60000, id, data))
	k := c.conn("10.0.0.1:40001", "10.0.0.2:9001")
	// The ADD in four segments: inside the first header, inside the
	// first frame's data, inside the second frame's header, and the rest.
	for i, seg := range cuts(add, 5, 1000, 2048+14+6) {
		k.send(100+i*10, true, seg)
	}
	k.send(300, false, resp(1, distcache.OpAdd, []byte{0}))
	// A GET split in the middle of its header; its hit in two segments.
	get := req(2, distcache.OpGet, id)
	k.send(400, true, get[:9])
	k.send(410, true, get[9:])
	hit := resp(2, distcache.OpGet, data)
	k.send(500, false, hit[:3000])
	k.send(520, false, hit[3000:])
	// Two pipelined requests in one segment, their answers in one.
	both := append(req(3, distcache.OpHave, id), req(4, distcache.OpGet, []byte("other"))...)
	k.send(600, true, both)
	k.send(700, false, append(resp(3, distcache.OpHave, []byte{0}), resp(4, distcache.OpGet, []byte{1})...))
	// A REMOVE that is never answered.
	k.send(800, true, req(5, distcache.OpRemove, id))

	pdus := c.run()
	client, sid := "10.0.0.1:40001", hex.EncodeToString(id)
	want := []Transaction{
		{client, "add", 1, "ok", sid, 200 * time.Microsecond},
		{client, "get", 2, "hit", sid, 120 * time.Microsecond},
		{client, "have", 3, "ok", sid, 100 * time.Microsecond},
		{client, "get", 4, "miss", hex.EncodeToString([]byte("other")), 100 * time.Microsecond},
		{client, "remove", 5, "unanswered", sid, 0},
	}
	if d := Compare(want, Transactions(pdus), time.Microsecond); len(d) > 0 {
		t.Fatalf("tshark's transactions differ:\n%s\nPDUs: %+v", strings.Join(d, "\n"), pdus)
	}
	byUID := map[uint32]PDU{}
	for _, p := range pdus {
		if !p.IsResponse {
			byUID[p.UID] = p
		}
	}
	if p := byUID[1]; p.Frames != 3 || p.Length != len(add)-3*distcache.HeaderSize {
		t.Errorf("the ADD shows %d frames, %d payload bytes; want 3 and %d", p.Frames, p.Length, len(add)-3*distcache.HeaderSize)
	}
	if p := byUID[3]; p.Frame != byUID[4].Frame {
		t.Errorf("pipelined requests in one segment shown in frames %d and %d", p.Frame, byUID[4].Frame)
	}
}

// ruleCases are header violations, each the client's bytes after a valid
// GET; the rule expected is the one snoopd's decoder names for them.
var ruleCases = []struct {
	name  string
	bytes func() []byte
}{
	{"version", func() []byte {
		b := req(9, distcache.OpGet, []byte("x"))
		b[1] = 0x12
		return b
	}},
	{"is-response", func() []byte {
		b := req(9, distcache.OpGet, []byte("x"))
		b[4] = 7
		return b
	}},
	{"direction", func() []byte { return resp(9, distcache.OpGet, []byte{1}) }},
	{"continuation", func() []byte {
		b := req(9, distcache.OpGet, make([]byte, 3000))
		b[distcache.HeaderSize+distcache.MaxFrameData+8] ^= 1 // the second frame's uid
		return b
	}},
	{"op-class", func() []byte {
		b := req(9, distcache.OpGet, []byte("x"))
		b[9] = 1
		return b
	}},
	{"operation", func() []byte {
		b := req(9, distcache.OpGet, []byte("x"))
		b[10] = 9
		return b
	}},
	{"complete", func() []byte {
		b := req(9, distcache.OpGet, []byte("x"))
		b[11] = 2
		return b
	}},
	{"data-len", func() []byte {
		b := req(9, distcache.OpGet, []byte("x"))
		binary.BigEndian.PutUint16(b[12:], 3000)
		return append(b, make([]byte, 3000)...)
	}},
	{"short-frame", func() []byte {
		b := req(9, distcache.OpGet, make([]byte, 100))
		b[11] = 0
		return b
	}},
	{"message-too-long", func() []byte {
		var b []byte
		h := distcache.FrameHeader{ProtoLevel: distcache.ProtocolLevel, RequestUID: 9, Op: distcache.OpGet}
		for range distcache.MaxMessageFrames + 1 {
			b = distcache.AppendFrame(b, h, make([]byte, distcache.MaxFrameData))
		}
		return b
	}},
}

// decoderRule is the rule snoopd's decoder names for b travelling client
// to server.
func decoderRule(t *testing.T, b []byte) string {
	t.Helper()
	var d distcache.Decoder
	d.Reset(distcache.ClientToServer)
	for len(b) > 0 {
		n, _, err := d.Next(b)
		if err != nil {
			var pe *distcache.ProtocolError
			if !errors.As(err, &pe) {
				t.Fatal(err)
			}
			return pe.Rule.String()
		}
		b = b[n:]
	}
	t.Fatal("the decoder found no broken rule")
	return ""
}

func TestDissectorNamesTheRuleSnoopdsDecoderNames(t *testing.T) {
	needTshark(t)
	c := newCapture(t)
	id := []byte("good")
	for i, rc := range ruleCases {
		k := c.conn(fmt.Sprintf("10.0.1.%d:41000", i+1), "10.0.0.2:9001")
		k.send(i*1000, true, req(1, distcache.OpGet, id))
		k.send(i*1000+50, false, resp(1, distcache.OpGet, []byte{1}))
		k.send(i*1000+100, true, rc.bytes())
		// Bytes after the violation are not decoded as messages.
		k.send(i*1000+200, true, req(2, distcache.OpGet, id))
	}
	pdus := c.run()
	for i, rc := range ruleCases {
		want := decoderRule(t, rc.bytes())
		if want != rc.name {
			t.Fatalf("case %s: the decoder names %q", rc.name, want)
		}
		client := fmt.Sprintf("10.0.1.%d:41000", i+1)
		var rules []string
		var got []Transaction
		for _, p := range pdus {
			if p.Src != client && p.Dst != client {
				continue
			}
			if p.Rule != "" {
				rules = append(rules, p.Rule)
				if !slices.ContainsFunc(p.Expert, func(m string) bool { return strings.HasPrefix(m, p.Rule+": ") }) {
					t.Errorf("%s: no expert info naming the rule, have %q", rc.name, p.Expert)
				}
			}
			got = append(got, Transactions([]PDU{p})...)
		}
		if !slices.Equal(rules, []string{want}) {
			t.Errorf("%s: the dissector names rules %q, want [%s]", rc.name, rules, want)
		}
		// The GET before it is whole; nothing after it is a transaction.
		var answered int
		for _, tx := range Transactions(pdusOf(pdus, client)) {
			if tx.Result == "miss" && tx.UID == 1 {
				answered++
			} else {
				t.Errorf("%s: a transaction after the violation: %v", rc.name, tx)
			}
		}
		if answered != 1 {
			t.Errorf("%s: the GET before the violation shows %d times", rc.name, answered)
		}
	}
}

func pdusOf(pdus []PDU, client string) []PDU {
	var out []PDU
	for _, p := range pdus {
		if p.Src == client || p.Dst == client {
			out = append(out, p)
		}
	}
	return out
}

func TestDissectorTakesThePortPreferenceWhereTheHeuristicCannot(t *testing.T) {
	needTshark(t)
	c := newCapture(t)
	k := c.conn("10.0.0.1:40001", "10.0.0.2:7777")
	get := req(1, distcache.OpGet, []byte("abc"))
	// The request's first segment is shorter than a header, so the
	// heuristic cannot take the stream there.
	k.send(0, true, get[:3])
	k.send(10, true, get[3:])
	k.send(50, false, resp(1, distcache.OpGet, []byte{1}))
	want := []Transaction{{"10.0.0.1:40001", "get", 1, "miss", hex.EncodeToString([]byte("abc")), 50 * time.Microsecond}}
	if d := Compare(want, Transactions(c.run("-o", "distcache.port:7777")), time.Microsecond); len(d) > 0 {
		t.Errorf("with the port set: %s", strings.Join(d, "\n"))
	}
	// Without it, the heuristic takes the stream at the response, which
	// then answers nothing the dissector saw; the request's segments
	// before stay out of it on the second pass too, rather than showing
	// as broken frames.
	pdus := c.run()
	got := Transactions(pdus)
	if len(got) != 1 || got[0].Result != "orphan" {
		t.Errorf("without the port: %v, want one orphan response", got)
	}
	for _, p := range pdus {
		if p.Rule != "" || p.Frames == 0 {
			t.Errorf("without the port, frame %d shows as %+v", p.Frame, p)
		}
	}
}

func TestDissectorNamesResultsAsSnoopdDoes(t *testing.T) {
	needTshark(t)
	id := []byte("sid")
	add := distcache.AppendAddRequest(nil, 1000, id, []byte("data"))
	cases := []struct {
		op       distcache.Op
		req      []byte
		response []byte
	}{
		{distcache.OpAdd, add, []byte{0}},
		{distcache.OpAdd, add, []byte{101}},
		{distcache.OpAdd, add, []byte{104}},
		{distcache.OpAdd, add, []byte{2}},
		{distcache.OpGet, id, []byte("session data")},
		{distcache.OpGet, id, []byte{1}},
		{distcache.OpGet, id, []byte{0}},
		{distcache.OpGet, id, nil},
		{distcache.OpRemove, id, []byte{1}},
		{distcache.OpRemove, id, []byte{0, 0}},
		{distcache.OpHave, id, []byte{9}},
	}
	c := newCapture(t)
	k := c.conn("10.0.0.1:40001", "10.0.0.2:9001")
	var want []Transaction
	for i, tc := range cases {
		uid := uint32(i + 1)
		k.send(i*100, true, req(uid, tc.op, tc.req))
		k.send(i*100+10, false, resp(uid, tc.op, tc.response))
		tx := distcache.Describe(distcache.Message{RequestUID: uid, Op: tc.op, Payload: tc.req},
			distcache.Message{IsResponse: true, RequestUID: uid, Op: tc.op, Payload: tc.response}, distcache.ScanOptions{})
		want = append(want, Transaction{"10.0.0.1:40001", opName(int(tc.op)), uid, vocab.ResultOf(&tx, false, false).String(),
			hex.EncodeToString(id), 10 * time.Microsecond})
	}
	// A response to no request.
	k.send(2000, false, resp(77, distcache.OpGet, []byte{1}))
	want = append(want, Transaction{"10.0.0.1:40001", "get", 77, vocab.ResultOrphan.String(), "", 0})
	if d := Compare(want, Transactions(c.run()), time.Microsecond); len(d) > 0 {
		t.Errorf("tshark's results differ from snoopd's:\n%s", strings.Join(d, "\n"))
	}
}
