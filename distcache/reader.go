package distcache

import (
	"fmt"
	"io"
)

// Message is one whole distcache message: the fields its frames share and
// its payload.
type Message struct {
	IsResponse bool
	RequestUID uint32
	Op         Op
	Frames     int
	Payload    []byte
}

// Append appends the message's frames to dst (see AppendMessage).
func (m Message) Append(dst []byte) []byte {
	return AppendMessage(dst, m.IsResponse, m.RequestUID, m.Op, m.Payload)
}

// Reader reads whole messages from a byte stream, validating every frame
// with a Decoder. It buffers its input, so it must be the only reader of
// the stream.
type Reader struct {
	r       io.Reader
	dec     Decoder
	buf     []byte
	start   int
	end     int
	payload []byte
	readErr error
}

// DefaultReadBuffer is the read buffer size of a Reader: large enough for a
// pipelined batch of small messages, small enough for many idle
// connections.
const DefaultReadBuffer = 16 << 10

// NewReader returns a Reader of messages travelling in dir.
func NewReader(r io.Reader, dir Direction) *Reader {
	return &Reader{r: r, dec: Decoder{dir: dir}, buf: make([]byte, DefaultReadBuffer)}
}

// Buffered reports whether bytes of the stream are waiting in the buffer,
// so a server can flush its answers before blocking on a read.
func (r *Reader) Buffered() int { return r.end - r.start }

// ReadMessage returns the next message. Its Payload is only valid until the
// next call. At a clean end of stream between messages it returns io.EOF;
// a stream cut inside a message gives an error wrapping
// io.ErrUnexpectedEOF, and a protocol violation a *ProtocolError.
func (r *Reader) ReadMessage() (Message, error) {
	r.payload = r.payload[:0]
	var m Message
	for {
		for r.start < r.end {
			n, s, err := r.dec.Next(r.buf[r.start:r.end])
			r.start += n
			if err != nil {
				return Message{}, err
			}
			if s.Header && r.dec.MessageFrames() == 1 {
				h := r.dec.Header()
				m = Message{IsResponse: h.IsResponse, RequestUID: h.RequestUID, Op: h.Op}
			}
			r.payload = append(r.payload, s.Data...)
			if s.MessageEnd {
				m.Frames = r.dec.MessageFrames()
				m.Payload = r.payload
				return m, nil
			}
		}
		if r.readErr != nil {
			err := r.readErr
			if err == io.EOF && r.dec.InMessage() {
				err = fmt.Errorf("distcache: stream ended inside a message at offset %d: %w", r.dec.Offset(), io.ErrUnexpectedEOF)
			}
			return Message{}, err
		}
		r.start, r.end = 0, 0
		n, err := r.r.Read(r.buf)
		r.end = n
		if err != nil {
			r.readErr = err
		} else if n == 0 {
			// A reader that returns nothing and no error would make us spin.
			r.readErr = io.ErrNoProgress
		}
	}
}
