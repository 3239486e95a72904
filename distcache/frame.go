package distcache

import (
	"encoding/binary"
	"fmt"
)

// Sizes and limits of the wire format (distcache protocol version 0x11).
const (
	// HeaderSize is the size of a frame header in bytes.
	HeaderSize = 14
	// MaxFrameData is the most data one frame carries; every frame of a
	// message but the last carries exactly this much.
	MaxFrameData = 2048
	// MaxMessageData is the most payload one message carries.
	MaxMessageData = 32768
	// MaxMessageFrames is the number of full frames MaxMessageData takes.
	MaxMessageFrames = MaxMessageData / MaxFrameData

	// ProtocolVersion is the high half of proto_level that every peer must
	// send. The reference library aborts the process on any other value.
	ProtocolVersion uint16 = 0x0011
	// ProtocolLevel is the proto_level this package writes: the version in
	// the high half and patch level 0.
	ProtocolLevel uint32 = uint32(ProtocolVersion) << 16

	// ClassUser is the only valid op_class.
	ClassUser uint8 = 0
)

// Limits the reference server applies to ADD requests.
const (
	// MaxAddTimeoutMS is the longest session timeout the server accepts
	// (7 days, in milliseconds).
	MaxAddTimeoutMS = 604800000
	// MaxSessionIDLen is the longest session id the server accepts.
	MaxSessionIDLen = 64
	// MaxSessionDataLen is the largest session the server accepts.
	MaxSessionDataLen = 32768
)

// Op is a distcache operation.
type Op uint8

// The four operations of the user class.
const (
	OpAdd    Op = 0
	OpGet    Op = 1
	OpRemove Op = 2
	OpHave   Op = 3
)

// NumOps is the number of valid operations; Op values are below it.
const NumOps = 4

var opNames = [NumOps]string{"ADD", "GET", "REMOVE", "HAVE"}

// String returns the operation's upper-case name, or "OP(n)" for an
// invalid value.
func (o Op) String() string {
	if o.Valid() {
		return opNames[o]
	}
	return fmt.Sprintf("OP(%d)", uint8(o))
}

// Valid reports whether o is one of the four defined operations.
func (o Op) Valid() bool { return o < NumOps }

// ParseOp parses an operation name, case-insensitively ("get", "ADD").
func ParseOp(s string) (Op, error) {
	for i, n := range opNames {
		if equalFoldASCII(s, n) {
			return Op(i), nil
		}
	}
	return 0, fmt.Errorf("unknown operation %q (want add, get, remove or have)", s)
}

// FrameHeader is the decoded 14-byte header of a frame.
type FrameHeader struct {
	ProtoLevel uint32 // version in the high half, patch level in the low half
	IsResponse bool
	RequestUID uint32
	Class      uint8
	Op         Op
	Complete   bool   // the last frame of its message
	DataLen    uint16 // 0..MaxFrameData
}

// Version is the protocol version half of ProtoLevel.
func (h FrameHeader) Version() uint16 { return uint16(h.ProtoLevel >> 16) }

// AppendHeader appends the 14-byte encoding of h to dst. It encodes what it
// is given, valid or not, so tests can build corrupt frames with it.
func AppendHeader(dst []byte, h FrameHeader) []byte {
	var b [HeaderSize]byte
	binary.BigEndian.PutUint32(b[0:4], h.ProtoLevel)
	b[4] = boolByte(h.IsResponse)
	binary.BigEndian.PutUint32(b[5:9], h.RequestUID)
	b[9] = h.Class
	b[10] = byte(h.Op)
	b[11] = boolByte(h.Complete)
	binary.BigEndian.PutUint16(b[12:14], h.DataLen)
	return append(dst, b[:]...)
}

// AppendFrame appends a header and its data. The header's DataLen is set
// from len(data).
func AppendFrame(dst []byte, h FrameHeader, data []byte) []byte {
	h.DataLen = uint16(len(data))
	dst = AppendHeader(dst, h)
	return append(dst, data...)
}

// ParseHeader decodes and checks one frame header on its own, without the
// message or direction context that a Decoder adds.
func ParseHeader(b []byte) (FrameHeader, error) {
	if len(b) < HeaderSize {
		return FrameHeader{}, fmt.Errorf("distcache: frame header needs %d bytes, have %d", HeaderSize, len(b))
	}
	var d Decoder
	if n, _, err := d.Next(b[:HeaderSize]); err != nil {
		return FrameHeader{}, err
	} else if n != HeaderSize {
		panic("distcache: decoder stopped inside a whole header")
	}
	return d.Header(), nil
}

// AppendMessage appends the frames that carry one message: payload split
// into frames of MaxFrameData, the frame with the final bytes marked
// complete, and an empty payload sent as one empty complete frame. It does
// not check the payload's size; a caller that sends more than
// MaxMessageData produces a message peers reject.
func AppendMessage(dst []byte, isResponse bool, uid uint32, op Op, payload []byte) []byte {
	h := FrameHeader{ProtoLevel: ProtocolLevel, IsResponse: isResponse, RequestUID: uid, Class: ClassUser, Op: op}
	for {
		n := len(payload)
		if n > MaxFrameData {
			n = MaxFrameData
		}
		h.Complete = n == len(payload)
		dst = AppendFrame(dst, h, payload[:n])
		payload = payload[n:]
		if h.Complete {
			return dst
		}
	}
}

// MessageSize is the number of bytes AppendMessage writes for a payload of
// n bytes.
func MessageSize(n int) int {
	frames := (n + MaxFrameData - 1) / MaxFrameData
	if frames == 0 {
		frames = 1
	}
	return frames*HeaderSize + n
}

func boolByte(b bool) byte {
	if b {
		return 1
	}
	return 0
}

// equalFoldASCII compares s to an upper-case ASCII name without allocating.
func equalFoldASCII(s, upper string) bool {
	if len(s) != len(upper) {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'a' <= c && c <= 'z' {
			c -= 'a' - 'A'
		}
		if c != upper[i] {
			return false
		}
	}
	return true
}
