package distcache

import (
	"errors"
	"fmt"
)

// Direction says which way a stream travels, and so which kind of frame it
// may carry.
type Direction uint8

const (
	// AnyDirection accepts requests and responses; the decoder then only
	// checks that a message does not switch kind half way.
	AnyDirection Direction = iota
	// ClientToServer carries requests only.
	ClientToServer
	// ServerToClient carries responses only.
	ServerToClient
)

// String names the direction as it is shown to users.
func (d Direction) String() string {
	switch d {
	case ClientToServer:
		return "client->server"
	case ServerToClient:
		return "server->client"
	default:
		return "any"
	}
}

// Rule identifies the protocol rule a corrupt stream broke.
type Rule uint8

// The corruption rules of the protocol reference, in the order a header's
// bytes are checked.
const (
	RuleVersion        Rule = iota + 1 // proto_level's version half is not 0x0011
	RuleIsResponse                     // is_response is neither 0 nor 1
	RuleDirection                      // a request server->client, or a response client->server
	RuleContinuation                   // a continuation frame's request_uid, operation or kind differs from its message's first frame
	RuleClass                          // op_class is not 0
	RuleOperation                      // operation is not 0..3
	RuleComplete                       // complete is neither 0 nor 1
	RuleDataLen                        // data_len above 2048
	RuleShortFrame                     // complete = 0 with data_len other than 2048 ("trickling")
	RuleMessageTooLong                 // the frames of one message add up to more than 32768 bytes
)

var ruleNames = [...]string{
	RuleVersion:        "version",
	RuleIsResponse:     "is-response",
	RuleDirection:      "direction",
	RuleContinuation:   "continuation",
	RuleClass:          "op-class",
	RuleOperation:      "operation",
	RuleComplete:       "complete",
	RuleDataLen:        "data-len",
	RuleShortFrame:     "short-frame",
	RuleMessageTooLong: "message-too-long",
}

// String returns the rule's short kebab-case name, stable for filters and
// logs.
func (r Rule) String() string {
	if int(r) < len(ruleNames) && ruleNames[r] != "" {
		return ruleNames[r]
	}
	return fmt.Sprintf("rule(%d)", uint8(r))
}

// ErrCorrupt is wrapped by every *ProtocolError, for callers that only need
// to know that a stream broke the protocol.
var ErrCorrupt = errors.New("corrupt distcache stream")

// ProtocolError says which rule a stream broke, where, and with what value.
type ProtocolError struct {
	Rule      Rule
	Direction Direction
	Field     string // the header field holding the offending byte
	Offset    int64  // stream offset of the first byte that broke the rule
	Frame     int64  // index of the frame, counting from 0
	Value     uint32 // the offending value, as far as it had arrived
	Detail    string // the rule in words, with the values involved
}

// Error describes the corruption in one line.
func (e *ProtocolError) Error() string {
	return fmt.Sprintf("distcache: corrupt stream (%s) at offset %d, frame %d, field %s: %s",
		e.Rule, e.Offset, e.Frame, e.Field, e.Detail)
}

// Unwrap lets errors.Is(err, ErrCorrupt) match.
func (e *ProtocolError) Unwrap() error { return ErrCorrupt }

// Step is what one call of Decoder.Next completed.
type Step struct {
	// Header is set when a frame header was completed; Decoder.Header
	// returns it.
	Header bool
	// Data holds the current frame's data bytes consumed in this step. It
	// aliases the input slice.
	Data []byte
	// FrameEnd is set when the current frame was completed.
	FrameEnd bool
	// MessageEnd is set when that frame was the last of its message.
	MessageEnd bool
}

// Decoder is an incremental, validating frame decoder for one direction of
// a connection. Feed it bytes with Next in slices of any size: the result,
// including where a corruption is reported, does not depend on how the
// stream was cut. It never allocates and never retains the input.
//
// The zero value decodes AnyDirection; NewDecoder picks a direction.
type Decoder struct {
	dir Direction

	offset int64 // stream bytes consumed
	frames int64 // frames completed
	err    *ProtocolError

	hdr [HeaderSize]byte
	hn  int // header bytes collected for the current frame
	// frameStart is the stream offset of the current frame's first byte.
	frameStart int64
	remain     int // data bytes still to come in the current frame
	cur        FrameHeader

	// Message state: set by the first frame, checked by continuations.
	inMessage  bool
	msgUID     [4]byte
	msgOp      byte
	msgResp    byte
	msgLen     int // data bytes of the message so far, including the current frame's
	msgFrames  int
	msgStarted int64 // offset of the message's first byte
}

// NewDecoder returns a decoder for a stream travelling in dir.
func NewDecoder(dir Direction) *Decoder {
	return &Decoder{dir: dir}
}

// Reset makes d ready for a new stream in dir.
func (d *Decoder) Reset(dir Direction) {
	*d = Decoder{dir: dir}
}

// Next consumes a prefix of p and returns how many bytes it took and what
// they completed. It stops after completing a frame (header and data), so a
// caller loops until p is used up:
//
//	for len(p) > 0 {
//		n, step, err := d.Next(p)
//		...
//		p = p[n:]
//	}
//
// On a protocol violation err is a *ProtocolError and n counts only the
// bytes before the offending one: p[:n] is valid so far and may be
// forwarded, p[n] is not. The error is sticky.
func (d *Decoder) Next(p []byte) (n int, s Step, err error) {
	if d.err != nil {
		return 0, Step{}, d.err
	}
	if d.hn < HeaderSize {
		if d.hn == 0 {
			d.frameStart = d.offset
		}
		for n < len(p) && d.hn < HeaderSize {
			if err := d.checkHeaderByte(d.hn, p[n]); err != nil {
				return n, Step{}, err
			}
			d.hdr[d.hn] = p[n]
			d.hn++
			n++
		}
		d.offset += int64(n)
		if d.hn < HeaderSize {
			return n, Step{}, nil
		}
		d.finishHeader()
		s.Header = true
		if d.remain == 0 {
			d.endFrame(&s)
			return n, s, nil
		}
	}
	take := len(p) - n
	if take > d.remain {
		take = d.remain
	}
	s.Data = p[n : n+take]
	n += take
	d.remain -= take
	d.offset += int64(take)
	if d.remain == 0 {
		d.endFrame(&s)
	}
	return n, s, nil
}

// checkHeaderByte validates header byte i of the current frame as soon as it
// arrives, so corruption is caught at the first byte that proves it.
func (d *Decoder) checkHeaderByte(i int, b byte) error {
	switch i {
	case 0:
		if b != byte(ProtocolVersion>>8) {
			return d.fail(RuleVersion, "proto_level", uint32(b)<<24,
				fmt.Sprintf("protocol version starts with 0x%02x, want 0x%04x", b, ProtocolVersion))
		}
	case 1:
		if b != byte(ProtocolVersion) {
			v := uint32(d.hdr[0])<<8 | uint32(b)
			return d.fail(RuleVersion, "proto_level", v<<16,
				fmt.Sprintf("protocol version 0x%04x, want 0x%04x", v, ProtocolVersion))
		}
	case 4:
		if b > 1 {
			return d.fail(RuleIsResponse, "is_response", uint32(b),
				fmt.Sprintf("is_response is %d, want 0 or 1", b))
		}
		if d.dir == ClientToServer && b == 1 {
			return d.fail(RuleDirection, "is_response", 1, "a response frame travelling client->server")
		}
		if d.dir == ServerToClient && b == 0 {
			return d.fail(RuleDirection, "is_response", 0, "a request frame travelling server->client")
		}
		if d.inMessage && b != d.msgResp {
			return d.fail(RuleContinuation, "is_response", uint32(b),
				fmt.Sprintf("continuation frame has is_response %d, its message started with %d", b, d.msgResp))
		}
	case 5, 6, 7, 8:
		if d.inMessage && b != d.msgUID[i-5] {
			return d.fail(RuleContinuation, "request_uid", uint32(b),
				fmt.Sprintf("continuation frame's request_uid differs from 0x%08x of its message's first frame at byte %d",
					be32(d.msgUID[:]), i-5))
		}
	case 9:
		if b != ClassUser {
			return d.fail(RuleClass, "op_class", uint32(b), fmt.Sprintf("op_class is %d, want 0", b))
		}
	case 10:
		if b >= NumOps {
			return d.fail(RuleOperation, "operation", uint32(b), fmt.Sprintf("operation is %d, want 0..3", b))
		}
		if d.inMessage && b != d.msgOp {
			return d.fail(RuleContinuation, "operation", uint32(b),
				fmt.Sprintf("continuation frame has operation %s, its message is %s", Op(b), Op(d.msgOp)))
		}
	case 11:
		if b > 1 {
			return d.fail(RuleComplete, "complete", uint32(b), fmt.Sprintf("complete is %d, want 0 or 1", b))
		}
		if b == 0 && d.msgSoFar()+MaxFrameData > MaxMessageData {
			return d.fail(RuleMessageTooLong, "complete", 0,
				fmt.Sprintf("message already holds %d bytes; another full frame exceeds %d", d.msgSoFar(), MaxMessageData))
		}
	case 12:
		hi := int(b) << 8
		if hi > MaxFrameData {
			return d.fail(RuleDataLen, "data_len", uint32(hi),
				fmt.Sprintf("data_len is at least %d, the limit is %d", hi, MaxFrameData))
		}
		if d.hdr[11] == 0 && hi != MaxFrameData {
			return d.fail(RuleShortFrame, "data_len", uint32(hi),
				fmt.Sprintf("frame with complete=0 has data_len below %d", MaxFrameData))
		}
		if d.msgSoFar()+hi > MaxMessageData {
			return d.fail(RuleMessageTooLong, "data_len", uint32(hi),
				fmt.Sprintf("message would hold at least %d bytes, the limit is %d", d.msgSoFar()+hi, MaxMessageData))
		}
	case 13:
		l := int(d.hdr[12])<<8 | int(b)
		if l > MaxFrameData {
			return d.fail(RuleDataLen, "data_len", uint32(l),
				fmt.Sprintf("data_len is %d, the limit is %d", l, MaxFrameData))
		}
		if d.hdr[11] == 0 && l != MaxFrameData {
			return d.fail(RuleShortFrame, "data_len", uint32(l),
				fmt.Sprintf("frame with complete=0 has data_len %d, want %d", l, MaxFrameData))
		}
		if d.msgSoFar()+l > MaxMessageData {
			return d.fail(RuleMessageTooLong, "data_len", uint32(l),
				fmt.Sprintf("message would hold %d bytes, the limit is %d", d.msgSoFar()+l, MaxMessageData))
		}
	}
	return nil
}

// msgSoFar is the data carried by earlier frames of the current message.
func (d *Decoder) msgSoFar() int {
	if d.inMessage {
		return d.msgLen
	}
	return 0
}

func (d *Decoder) fail(r Rule, field string, v uint32, detail string) error {
	d.err = &ProtocolError{
		Rule:      r,
		Direction: d.dir,
		Field:     field,
		Offset:    d.frameStart + int64(d.hn),
		Frame:     d.frames,
		Value:     v,
		Detail:    detail,
	}
	return d.err
}

func (d *Decoder) finishHeader() {
	b := &d.hdr
	d.cur = FrameHeader{
		ProtoLevel: be32(b[0:4]),
		IsResponse: b[4] == 1,
		RequestUID: be32(b[5:9]),
		Class:      b[9],
		Op:         Op(b[10]),
		Complete:   b[11] == 1,
		DataLen:    uint16(b[12])<<8 | uint16(b[13]),
	}
	d.remain = int(d.cur.DataLen)
	if !d.inMessage {
		d.inMessage = true
		copy(d.msgUID[:], b[5:9])
		d.msgOp = b[10]
		d.msgResp = b[4]
		d.msgLen = 0
		d.msgFrames = 0
		d.msgStarted = d.frameStart
	}
	d.msgLen += d.remain
	d.msgFrames++
}

func (d *Decoder) endFrame(s *Step) {
	s.FrameEnd = true
	d.frames++
	d.hn = 0
	if d.cur.Complete {
		s.MessageEnd = true
		d.inMessage = false
	}
}

// Header returns the header of the frame being decoded (or last decoded).
func (d *Decoder) Header() FrameHeader { return d.cur }

// Offset is the number of stream bytes consumed so far.
func (d *Decoder) Offset() int64 { return d.offset }

// Frames is the number of whole frames decoded so far.
func (d *Decoder) Frames() int64 { return d.frames }

// Err returns the protocol error that stopped the decoder, or nil.
func (d *Decoder) Err() *ProtocolError { return d.err }

// Direction is the direction d was made for.
func (d *Decoder) Direction() Direction { return d.dir }

// MessageFrames is the number of frames of the current (or last) message
// whose headers have arrived.
func (d *Decoder) MessageFrames() int { return d.msgFrames }

// MessageLen is the payload length of the current (or last) message, as
// announced by the headers that have arrived.
func (d *Decoder) MessageLen() int { return d.msgLen }

// MessageOffset is the stream offset of the current (or last) message's
// first byte.
func (d *Decoder) MessageOffset() int64 { return d.msgStarted }

// InMessage reports whether the stream stopped inside a message: bytes of
// an unfinished frame, or a finished frame with complete = 0. A stream that
// ends while this is true was cut short.
func (d *Decoder) InMessage() bool { return d.inMessage || d.hn > 0 }

func be32(b []byte) uint32 {
	_ = b[3]
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}
