package distcache

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"testing/iotest"
)

func TestReaderMessages(t *testing.T) {
	var stream []byte
	payloads := [][]byte{nil, []byte("a"), make([]byte, 2048), make([]byte, 2049), make([]byte, 32768)}
	for i, p := range payloads {
		for j := range p {
			p[j] = byte(i + j)
		}
		stream = AppendMessage(stream, false, uint32(i), Op(i%4), p)
	}
	// OneByteReader proves messages assemble across arbitrary reads.
	for _, r := range []io.Reader{bytes.NewReader(stream), iotest.OneByteReader(bytes.NewReader(stream))} {
		mr := NewReader(r, ClientToServer)
		for i, want := range payloads {
			m, err := mr.ReadMessage()
			if err != nil {
				t.Fatalf("message %d: %v", i, err)
			}
			wantFrames := max(1, (len(want)+MaxFrameData-1)/MaxFrameData)
			if m.RequestUID != uint32(i) || m.Op != Op(i%4) || m.IsResponse || m.Frames != wantFrames || !bytes.Equal(m.Payload, want) {
				t.Fatalf("message %d: uid %d op %s frames %d len %d", i, m.RequestUID, m.Op, m.Frames, len(m.Payload))
			}
		}
		if _, err := mr.ReadMessage(); err != io.EOF {
			t.Fatalf("after the last message: %v, want EOF", err)
		}
	}
}

func TestReaderErrors(t *testing.T) {
	msg := AppendMessage(nil, true, 1, OpGet, make([]byte, 3000))
	_, err := NewReader(bytes.NewReader(msg[:2100]), ServerToClient).ReadMessage()
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("cut message: %v, want unexpected EOF", err)
	}
	_, err = NewReader(bytes.NewReader(msg), ClientToServer).ReadMessage()
	var pe *ProtocolError
	if !errors.As(err, &pe) || pe.Rule != RuleDirection || pe.Offset != 4 {
		t.Errorf("response read as request: %v", err)
	}
	boom := errors.New("boom")
	_, err = NewReader(iotest.ErrReader(boom), ServerToClient).ReadMessage()
	if !errors.Is(err, boom) {
		t.Errorf("read error: %v", err)
	}
}

func TestReaderMessageRoundTrip(t *testing.T) {
	m := Message{IsResponse: true, RequestUID: 42, Op: OpRemove, Payload: []byte{1}}
	got, err := NewReader(bytes.NewReader(m.Append(nil)), ServerToClient).ReadMessage()
	m.Frames = 1
	if err != nil || got.IsResponse != m.IsResponse || got.RequestUID != m.RequestUID || got.Op != m.Op ||
		got.Frames != 1 || !bytes.Equal(got.Payload, m.Payload) {
		t.Fatalf("round trip: %+v, %v", got, err)
	}
}
