package distcache

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

// fuzzSeeds are valid and corrupt streams every stream fuzzer starts from.
func fuzzSeeds() [][]byte {
	return [][]byte{
		AppendMessage(nil, false, 1, OpGet, []byte("abc")),
		AppendMessage(nil, true, 1, OpGet, make([]byte, 5000)),
		AppendMessage(AppendMessage(nil, false, 2, OpAdd, AppendAddRequest(nil, 10, []byte("id"), []byte("data"))), false, 3, OpHave, []byte("id")),
		AppendMessage(nil, true, 4, OpAdd, []byte{101}),
		{0x00, 0x11, 0, 0, 7},
		{0x00, 0x11, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x08, 0x00},
	}
}

// FuzzDecoder checks that any stream decodes the same whole, byte by byte
// and in chunks, that a stream is accepted or rejected at one offset, and
// that the decoder accounts for every byte it accepts.
func FuzzDecoder(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add(s, uint8(0), uint16(7))
	}
	f.Fuzz(func(t *testing.T, stream []byte, dirByte uint8, chunk uint16) {
		dir := Direction(dirByte % 3)
		whole := decodeWhole(dir, stream)
		if err := sameDecoded(whole, decodeBytewise(dir, stream)); err != nil {
			t.Fatalf("byte-by-byte: %v", err)
		}
		step := int(chunk%4096) + 1
		if err := sameDecoded(whole, decodeChunks(dir, stream, func() int { return step })); err != nil {
			t.Fatalf("chunks of %d: %v", step, err)
		}
		if whole.err == nil && whole.valid != len(stream) {
			t.Fatalf("accepted %d of %d bytes without an error", whole.valid, len(stream))
		}
		if whole.err != nil && whole.err.Offset != int64(whole.valid) {
			t.Fatalf("error at %d but %d bytes accepted", whole.err.Offset, whole.valid)
		}
		total := 0
		for i, h := range whole.headers {
			if len(whole.data[i]) > int(h.DataLen) || int(h.DataLen) > MaxFrameData {
				t.Fatalf("frame %d carries %d bytes for data_len %d", i, len(whole.data[i]), h.DataLen)
			}
			total += HeaderSize + len(whole.data[i])
		}
		if total > whole.valid || whole.valid-total >= HeaderSize+MaxFrameData {
			t.Fatalf("frames account for %d of %d accepted bytes", total, whole.valid)
		}
		// Whatever was accepted is valid on its own too: a proxy that
		// forwards exactly the accepted bytes hands the far side no error.
		if again := decodeWhole(dir, stream[:whole.valid]); again.err != nil {
			t.Fatalf("the accepted prefix is rejected: %v", again.err)
		}
	})
}

// FuzzReader checks message assembly: every message read back is within the
// protocol's limits, its payload is exactly the data of its frames, and the
// reader ends with EOF, unexpected EOF or a protocol error.
func FuzzReader(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, stream []byte) {
		want := decodeWhole(AnyDirection, stream)
		r := NewReader(bytes.NewReader(stream), AnyDirection)
		frame := 0
		for {
			m, err := r.ReadMessage()
			if err != nil {
				var pe *ProtocolError
				switch {
				case err == io.EOF, errors.Is(err, io.ErrUnexpectedEOF):
				case errors.As(err, &pe):
					if want.err == nil || *pe != *want.err {
						t.Fatalf("reader error %v, decoder error %v", pe, want.err)
					}
				default:
					t.Fatalf("unexpected error %v", err)
				}
				return
			}
			if len(m.Payload) > MaxMessageData || m.Frames < 1 || !m.Op.Valid() {
				t.Fatalf("message out of limits: op %s, %d frames, %d bytes", m.Op, m.Frames, len(m.Payload))
			}
			var concat []byte
			for i := 0; i < m.Frames; i++ {
				h := want.headers[frame+i]
				if h.RequestUID != m.RequestUID || h.Op != m.Op || h.IsResponse != m.IsResponse {
					t.Fatalf("frame %d does not belong to its message", frame+i)
				}
				concat = append(concat, want.data[frame+i]...)
			}
			if !bytes.Equal(concat, m.Payload) {
				t.Fatalf("payload is not the frames' data")
			}
			frame += m.Frames
		}
	})
}

// FuzzPayload checks that the streaming scanner agrees with the whole-payload
// parsers, however the payload is cut.
func FuzzPayload(f *testing.F) {
	f.Add(uint8(0), false, AppendAddRequest(nil, 10, []byte("id"), []byte("data")), uint8(3))
	f.Add(uint8(1), true, []byte{1}, uint8(1))
	f.Add(uint8(1), true, []byte("session"), uint8(2))
	f.Add(uint8(0), false, []byte{0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 1}, uint8(1))
	f.Add(uint8(3), false, []byte("x"), uint8(1))
	f.Fuzz(func(t *testing.T, opByte uint8, resp bool, p []byte, chunk uint8) {
		op := Op(opByte % NumOps)
		s := NewPayloadScanner(ScanOptions{Digest: true, CaptureLimit: 64})
		sum := scanChunked(s, op, resp, p, int(chunk)+1)
		if sum.Size != len(p) || len(sum.SessionID) > MaxSessionIDLen || len(sum.Data) > 64 {
			t.Fatalf("summary out of bounds: %+v", sum)
		}
		switch {
		case resp:
			r, err := ParseResponse(op, p)
			if (err != nil) != sum.Malformed {
				t.Fatalf("ParseResponse err %v, scanner malformed %v", err, sum.Malformed)
			}
			if err == nil && (r.Status != sum.Status || len(r.Data) != sum.DataLen) {
				t.Fatalf("ParseResponse %+v, scanner %+v", r, sum)
			}
		case op == OpAdd:
			req, err := ParseAddRequest(p)
			if (err != nil) != sum.Malformed {
				t.Fatalf("ParseAddRequest err %v, scanner malformed %v", err, sum.Malformed)
			}
			if err == nil {
				id := req.SessionID[:min(len(req.SessionID), MaxSessionIDLen)]
				if req.TimeoutMS != sum.TimeoutMS || !bytes.Equal(id, sum.SessionID) || len(req.SessionID) != sum.IDLen ||
					len(req.Data) != sum.DataLen || !bytes.Equal(req.Data[:min(64, len(req.Data))], sum.Data) {
					t.Fatalf("ParseAddRequest %+v, scanner %+v", req, sum)
				}
			}
		default:
			if sum.IDLen != len(p) || !bytes.Equal(sum.SessionID, p[:min(len(p), MaxSessionIDLen)]) {
				t.Fatalf("id request: scanner %+v", sum)
			}
		}
	})
}
