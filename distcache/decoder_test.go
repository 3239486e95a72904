package distcache

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
)

// hexBytes turns "00 11 00 00 ..." into bytes, so vectors read like the spec.
func hexBytes(t testing.TB, s string) []byte {
	t.Helper()
	var out []byte
	for _, f := range strings.Fields(s) {
		var b byte
		if _, err := fmt.Sscanf(f, "%02x", &b); err != nil {
			t.Fatalf("bad hex %q: %v", f, err)
		}
		out = append(out, b)
	}
	return out
}

// decoded is everything a decoder reported for a stream, in a form that can
// be compared across different ways of cutting the stream.
type decoded struct {
	headers []FrameHeader
	data    [][]byte // per frame
	msgEnds []int    // index of the frame that ended each message
	valid   int      // bytes accepted before an error (or all)
	err     *ProtocolError
}

// decodeChunks feeds stream to a fresh decoder in chunks whose sizes come
// from next, and records the outcome.
func decodeChunks(dir Direction, stream []byte, next func() int) decoded {
	d := NewDecoder(dir)
	var out decoded
	for len(stream) > 0 {
		c := min(next(), len(stream))
		chunk := stream[:c]
		stream = stream[c:]
		for len(chunk) > 0 {
			n, s, err := d.Next(chunk)
			out.valid += n
			if s.Header {
				out.headers = append(out.headers, d.Header())
				out.data = append(out.data, []byte{})
			}
			if len(s.Data) > 0 {
				i := len(out.data) - 1
				out.data[i] = append(out.data[i], s.Data...)
			}
			if s.MessageEnd {
				out.msgEnds = append(out.msgEnds, len(out.headers)-1)
			}
			if err != nil {
				var pe *ProtocolError
				if !errors.As(err, &pe) {
					panic("decoder returned a non-protocol error")
				}
				out.err = pe
				return out
			}
			chunk = chunk[n:]
		}
	}
	return out
}

func decodeWhole(dir Direction, stream []byte) decoded {
	return decodeChunks(dir, stream, func() int { return len(stream) + 1 })
}

func decodeBytewise(dir Direction, stream []byte) decoded {
	return decodeChunks(dir, stream, func() int { return 1 })
}

func sameDecoded(a, b decoded) error {
	if a.valid != b.valid {
		return fmt.Errorf("valid bytes %d vs %d", a.valid, b.valid)
	}
	if (a.err == nil) != (b.err == nil) {
		return fmt.Errorf("error %v vs %v", a.err, b.err)
	}
	if a.err != nil && *a.err != *b.err {
		return fmt.Errorf("error %+v vs %+v", *a.err, *b.err)
	}
	if len(a.headers) != len(b.headers) {
		return fmt.Errorf("%d frames vs %d", len(a.headers), len(b.headers))
	}
	for i := range a.headers {
		if a.headers[i] != b.headers[i] || !bytes.Equal(a.data[i], b.data[i]) {
			return fmt.Errorf("frame %d differs", i)
		}
	}
	if fmt.Sprint(a.msgEnds) != fmt.Sprint(b.msgEnds) {
		return fmt.Errorf("message ends %v vs %v", a.msgEnds, b.msgEnds)
	}
	return nil
}

func TestDecoderHandVectors(t *testing.T) {
	// GET request, request_uid 0x01020304, session id "abc".
	get := hexBytes(t, "00 11 00 00  00  01 02 03 04  00  01  01  00 03  61 62 63")
	// Its miss response: one status byte 1 (NOTOK), patch level 0xabcd
	// (any patch level is allowed).
	miss := hexBytes(t, "00 11 ab cd  01  01 02 03 04  00  01  01  00 01  01")

	got := decodeWhole(ClientToServer, get)
	if got.err != nil || len(got.headers) != 1 {
		t.Fatalf("GET request: %+v", got)
	}
	want := FrameHeader{ProtoLevel: 0x00110000, RequestUID: 0x01020304, Op: OpGet, Complete: true, DataLen: 3}
	if got.headers[0] != want || string(got.data[0]) != "abc" {
		t.Errorf("GET request decoded as %+v %q", got.headers[0], got.data[0])
	}
	if enc := AppendMessage(nil, false, 0x01020304, OpGet, []byte("abc")); !bytes.Equal(enc, get) {
		t.Errorf("AppendMessage = % x, want % x", enc, get)
	}

	got = decodeWhole(ServerToClient, miss)
	if got.err != nil || len(got.headers) != 1 || !got.headers[0].IsResponse || got.headers[0].ProtoLevel != 0x0011abcd {
		t.Fatalf("GET response: %+v", got)
	}
	if r, err := ParseResponse(OpGet, got.data[0]); err != nil || r.Hit || r.Status != StatusNotOK {
		t.Errorf("GET miss parsed as %+v, %v", r, err)
	}
}

func TestAppendMessageSplitting(t *testing.T) {
	for _, tc := range []struct {
		size       int
		frameSizes []int
	}{
		{0, []int{0}},
		{1, []int{1}},
		{2047, []int{2047}},
		{2048, []int{2048}},
		{2049, []int{2048, 1}},
		{4096, []int{2048, 2048}},
		{32768, []int{2048, 2048, 2048, 2048, 2048, 2048, 2048, 2048, 2048, 2048, 2048, 2048, 2048, 2048, 2048, 2048}},
	} {
		payload := bytes.Repeat([]byte{0xa5}, tc.size)
		enc := AppendMessage(nil, true, 7, OpGet, payload)
		if len(enc) != MessageSize(tc.size) {
			t.Errorf("size %d: encoded %d bytes, MessageSize says %d", tc.size, len(enc), MessageSize(tc.size))
		}
		got := decodeWhole(ServerToClient, enc)
		if got.err != nil {
			t.Fatalf("size %d: %v", tc.size, got.err)
		}
		var sizes []int
		for i, h := range got.headers {
			sizes = append(sizes, int(h.DataLen))
			if h.Complete != (i == len(got.headers)-1) {
				t.Errorf("size %d: frame %d complete=%v", tc.size, i, h.Complete)
			}
		}
		if fmt.Sprint(sizes) != fmt.Sprint(tc.frameSizes) {
			t.Errorf("size %d: frames %v, want %v", tc.size, sizes, tc.frameSizes)
		}
		if len(got.msgEnds) != 1 {
			t.Errorf("size %d: %d messages", tc.size, len(got.msgEnds))
		}
	}
}

// frame builds one frame's bytes from a header description.
func frame(resp bool, uid uint32, op Op, complete bool, dataLen int) []byte {
	h := FrameHeader{ProtoLevel: ProtocolLevel, IsResponse: resp, RequestUID: uid, Op: op, Complete: complete, DataLen: uint16(dataLen)}
	b := AppendHeader(nil, h)
	return append(b, make([]byte, dataLen)...)
}

func TestDecoderCorruption(t *testing.T) {
	full := func(n int) []byte { // n full non-final request frames, uid 9, ADD
		var b []byte
		for range n {
			b = append(b, frame(false, 9, OpAdd, false, 2048)...)
		}
		return b
	}
	set := func(b []byte, i int, v byte) []byte { b = bytes.Clone(b); b[i] = v; return b }
	get := frame(false, 1, OpGet, true, 3)
	cases := []struct {
		name   string
		dir    Direction
		stream []byte
		rule   Rule
		offset int64
		field  string
	}{
		{"version first byte", ClientToServer, set(get, 0, 0x01), RuleVersion, 0, "proto_level"},
		{"version second byte", ClientToServer, set(get, 1, 0x12), RuleVersion, 1, "proto_level"},
		{"version after a good frame", ClientToServer, append(bytes.Clone(get), set(get, 1, 0x10)...), RuleVersion, int64(len(get)) + 1, "proto_level"},
		{"is_response 7", ClientToServer, set(get, 4, 7), RuleIsResponse, 4, "is_response"},
		{"is_response 7, any direction", AnyDirection, set(get, 4, 7), RuleIsResponse, 4, "is_response"},
		{"response client->server", ClientToServer, set(get, 4, 1), RuleDirection, 4, "is_response"},
		{"request server->client", ServerToClient, get, RuleDirection, 4, "is_response"},
		{"op_class 1", ClientToServer, set(get, 9, 1), RuleClass, 9, "op_class"},
		{"operation 4", ClientToServer, set(get, 10, 4), RuleOperation, 10, "operation"},
		{"complete 2", ClientToServer, set(get, 11, 2), RuleComplete, 11, "complete"},
		{"data_len high byte 9", ClientToServer, set(get, 12, 0x09), RuleDataLen, 12, "data_len"},
		{"data_len 2049", ClientToServer, set(set(get, 12, 0x08), 13, 0x01), RuleDataLen, 13, "data_len"},
		{"trickle high byte", ClientToServer, set(frame(false, 1, OpAdd, false, 2048), 12, 0x07), RuleShortFrame, 12, "data_len"},
		{"continuation uid", ClientToServer, append(full(1), frame(false, 9|1<<8, OpAdd, true, 1)...), RuleContinuation, 2062 + 7, "request_uid"},
		{"continuation op", ClientToServer, append(full(1), frame(false, 9, OpGet, true, 1)...), RuleContinuation, 2062 + 10, "operation"},
		{"continuation kind", AnyDirection, append(full(1), frame(true, 9, OpAdd, true, 1)...), RuleContinuation, 2062 + 4, "is_response"},
		{"17th full frame", ClientToServer, full(17), RuleMessageTooLong, 16*2062 + 11, "complete"},
		{"17th frame with data", ClientToServer, append(full(16), frame(false, 9, OpAdd, true, 1)...), RuleMessageTooLong, 16*2062 + 13, "data_len"},
		{"17th frame with 256+ bytes", ClientToServer, append(full(16), frame(false, 9, OpAdd, true, 256)...), RuleMessageTooLong, 16*2062 + 12, "data_len"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			whole := decodeWhole(tc.dir, tc.stream)
			if whole.err == nil {
				t.Fatalf("no error; decoded %d frames", len(whole.headers))
			}
			e := whole.err
			if e.Rule != tc.rule || e.Offset != tc.offset || e.Field != tc.field {
				t.Errorf("got rule %s offset %d field %s, want %s %d %s (%v)", e.Rule, e.Offset, e.Field, tc.rule, tc.offset, tc.field, e)
			}
			if int64(whole.valid) != tc.offset {
				t.Errorf("accepted %d bytes before the error at %d", whole.valid, tc.offset)
			}
			if !errors.Is(e, ErrCorrupt) {
				t.Errorf("error does not wrap ErrCorrupt")
			}
			if err := sameDecoded(whole, decodeBytewise(tc.dir, tc.stream)); err != nil {
				t.Errorf("byte-by-byte differs: %v", err)
			}
			// The error is sticky.
			d := NewDecoder(tc.dir)
			p := tc.stream
			for len(p) > 0 {
				n, _, err := d.Next(p)
				p = p[n:]
				if err != nil {
					break
				}
			}
			if n, _, err := d.Next(get); n != 0 || err == nil || d.Err() == nil {
				t.Errorf("decoder not sticky: n=%d err=%v", n, err)
			}
		})
	}
}

func TestDecoderLongestMessages(t *testing.T) {
	// 16 full frames whose last is complete: the largest message.
	var b []byte
	for i := range 16 {
		b = append(b, frame(true, 3, OpGet, i == 15, 2048)...)
	}
	got := decodeWhole(ServerToClient, b)
	if got.err != nil || len(got.msgEnds) != 1 || got.msgEnds[0] != 15 {
		t.Fatalf("32768-byte message: %+v", got.err)
	}
	// 16 full incomplete frames and an empty complete one also add up to
	// 32768 bytes, which the rule allows.
	b = nil
	for range 16 {
		b = append(b, frame(true, 3, OpGet, false, 2048)...)
	}
	b = append(b, frame(true, 3, OpGet, true, 0)...)
	d := NewDecoder(ServerToClient)
	for p := b; len(p) > 0; {
		n, s, err := d.Next(p)
		if err != nil {
			t.Fatalf("17-frame message of 32768 bytes: %v", err)
		}
		p = p[n:]
		if s.MessageEnd && (d.MessageFrames() != 17 || d.MessageLen() != 32768 || len(p) != 0) {
			t.Errorf("message ended with %d frames, %d bytes, %d left", d.MessageFrames(), d.MessageLen(), len(p))
		}
	}
	if d.InMessage() {
		t.Error("decoder still inside a message")
	}
}

func TestDecoderInMessage(t *testing.T) {
	b := AppendMessage(nil, false, 5, OpAdd, make([]byte, 3000))
	for cut := 0; cut <= len(b); cut++ {
		d := NewDecoder(ClientToServer)
		for p := b[:cut]; len(p) > 0; {
			n, _, err := d.Next(p)
			if err != nil {
				t.Fatal(err)
			}
			p = p[n:]
		}
		if want := cut > 0 && cut < len(b); d.InMessage() != want {
			t.Errorf("cut at %d: InMessage=%v", cut, d.InMessage())
		}
	}
}

// randomStream builds a stream of valid messages, then maybe corrupts one
// byte, so the property tests see both outcomes.
func randomStream(r *rand.Rand, dir Direction) []byte {
	var b []byte
	for range 1 + r.IntN(6) {
		size := r.IntN(5000)
		if r.IntN(4) == 0 {
			size = r.IntN(MaxMessageData + 1)
		}
		resp := dir == ServerToClient || (dir == AnyDirection && r.IntN(2) == 0)
		b = AppendMessage(b, resp, r.Uint32(), Op(r.IntN(4)), make([]byte, size))
	}
	if r.IntN(2) == 0 {
		b[r.IntN(len(b))] = byte(r.IntN(256))
	}
	return b
}

func TestDecoderChunkingProperty(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 300 {
		dir := Direction(i % 3)
		stream := randomStream(r, dir)
		whole := decodeWhole(dir, stream)
		if whole.err == nil && whole.valid != len(stream) {
			t.Fatalf("stream %d: accepted %d of %d bytes without error", i, whole.valid, len(stream))
		}
		if err := sameDecoded(whole, decodeBytewise(dir, stream)); err != nil {
			t.Fatalf("stream %d, byte-by-byte: %v", i, err)
		}
		if err := sameDecoded(whole, decodeChunks(dir, stream, func() int { return 1 + r.IntN(3000) })); err != nil {
			t.Fatalf("stream %d, random chunks: %v", i, err)
		}
	}
}

func TestParseHeader(t *testing.T) {
	h := FrameHeader{ProtoLevel: ProtocolLevel | 7, IsResponse: true, RequestUID: 0xdeadbeef, Op: OpHave, Complete: true, DataLen: 1}
	got, err := ParseHeader(AppendHeader(nil, h))
	if err != nil || got != h || got.Version() != ProtocolVersion {
		t.Fatalf("ParseHeader round trip: %+v, %v", got, err)
	}
	if _, err := ParseHeader(make([]byte, 13)); err == nil {
		t.Error("13 bytes parsed as a header")
	}
	if _, err := ParseHeader(make([]byte, 14)); !errors.Is(err, ErrCorrupt) {
		t.Errorf("zero header: %v, want a version error", err)
	}
}

func TestOpAndRuleNames(t *testing.T) {
	for op := Op(0); op < NumOps; op++ {
		got, err := ParseOp(strings.ToLower(op.String()))
		if err != nil || got != op {
			t.Errorf("ParseOp(%q) = %v, %v", op, got, err)
		}
	}
	if _, err := ParseOp("PUT"); err == nil {
		t.Error("ParseOp accepted PUT")
	}
	if Op(9).String() != "OP(9)" || Op(9).Valid() {
		t.Error("invalid op not reported")
	}
	for r := RuleVersion; r <= RuleMessageTooLong; r++ {
		if strings.HasPrefix(r.String(), "rule(") {
			t.Errorf("rule %d has no name", r)
		}
	}
}
