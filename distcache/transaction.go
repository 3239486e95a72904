package distcache

import (
	"crypto/sha256"
	"encoding/binary"
	"hash"
)

// DigestSize is the length of a session data digest: the first bytes of the
// data's SHA-256. It tells sessions apart without revealing their contents,
// which in SSL/TLS caching include the master secret.
const DigestSize = 8

// ScanOptions choose what a PayloadScanner keeps of session data. The zero
// value keeps nothing but lengths.
type ScanOptions struct {
	// Digest computes the SHA-256 digest of the session data.
	Digest bool
	// CaptureLimit keeps up to this many bytes of the session data itself;
	// 0 keeps none.
	CaptureLimit int
}

// PayloadSummary is what a PayloadScanner learned of one payload.
type PayloadSummary struct {
	Size int // payload bytes
	// SessionID holds up to MaxSessionIDLen bytes of the session id. It
	// aliases the scanner and is valid until the scanner's next Start.
	SessionID []byte
	// IDLen is the id length the request declared (ADD) or carried
	// (GET, REMOVE, HAVE); it may exceed len(SessionID).
	IDLen     int
	TimeoutMS uint32 // ADD requests
	// DataLen is the length of the session data: an ADD request's data, or
	// a GET response's payload when it is a hit.
	DataLen   int
	Digest    [DigestSize]byte
	HasDigest bool
	// Data is the captured session data (ScanOptions.CaptureLimit), aliasing
	// the scanner; DataTruncated is set when the data was longer.
	Data          []byte
	DataTruncated bool
	// Status is the status byte of a one-byte response.
	Status Status
	// Malformed is set when the layout does not fit the operation: an ADD
	// request shorter than 8 bytes or whose id_len overruns it, an empty
	// response, or a non-GET response longer than one byte.
	Malformed bool
}

// PayloadScanner summarises a payload as its bytes pass, in slices of any
// size, without retaining more than the session id and what ScanOptions
// ask for. Reuse one per stream: after the first message it does not
// allocate.
type PayloadScanner struct {
	opts     ScanOptions
	op       Op
	response bool

	size    int
	head    [addHeaderSize]byte
	idLen   int // declared by an ADD request; -1 until known
	id      [MaxSessionIDLen]byte
	idKept  int
	first   byte
	dataLen int

	digest   hash.Hash
	sum      [sha256.Size]byte
	capture  []byte
	overflow bool
}

// NewPayloadScanner returns a scanner with the given options.
func NewPayloadScanner(opts ScanOptions) *PayloadScanner {
	return &PayloadScanner{opts: opts}
}

// SetOptions changes what the scanner keeps, from the next Start on.
func (s *PayloadScanner) SetOptions(opts ScanOptions) { s.opts = opts }

// Start begins a new payload of op; isResponse says which kind.
func (s *PayloadScanner) Start(op Op, isResponse bool) {
	s.op, s.response = op, isResponse
	s.size, s.idKept, s.dataLen, s.idLen = 0, 0, 0, -1
	s.capture = s.capture[:0]
	s.overflow = false
	if s.opts.Digest {
		if s.digest == nil {
			s.digest = sha256.New()
		}
		s.digest.Reset()
	}
}

// Write adds the next bytes of the payload. It never fails.
func (s *PayloadScanner) Write(p []byte) {
	if len(p) == 0 {
		return
	}
	if s.size == 0 {
		s.first = p[0]
	}
	switch {
	case s.response:
		if s.op == OpGet {
			s.data(p)
		}
	case s.op == OpAdd:
		s.writeAdd(p)
	default:
		s.keepID(p)
	}
	s.size += len(p)
}

// writeAdd splits an ADD request into timeout, id_len, id and data.
func (s *PayloadScanner) writeAdd(p []byte) {
	off := s.size
	if off < addHeaderSize {
		n := copy(s.head[off:], p)
		off += n
		p = p[n:]
		if off == addHeaderSize {
			s.idLen = int(binary.BigEndian.Uint32(s.head[4:8]))
			if s.idLen < 0 { // a 32-bit length beyond int on 32-bit builds
				s.idLen = 1 << 30
			}
		}
	}
	if len(p) == 0 {
		return
	}
	if idRest := addHeaderSize + s.idLen - off; idRest > 0 {
		n := min(idRest, len(p))
		s.keepID(p[:n])
		p = p[n:]
	}
	s.data(p)
}

func (s *PayloadScanner) keepID(p []byte) {
	s.idKept += copy(s.id[s.idKept:], p)
}

func (s *PayloadScanner) data(p []byte) {
	if len(p) == 0 {
		return
	}
	s.dataLen += len(p)
	if s.digest != nil && s.opts.Digest {
		s.digest.Write(p)
	}
	if lim := s.opts.CaptureLimit; lim > 0 {
		room := lim - len(s.capture)
		if len(p) > room {
			s.overflow = true
			p = p[:max(room, 0)]
		}
		s.capture = append(s.capture, p...)
	}
}

// Summary returns what the scanner learned of the payload so far.
func (s *PayloadScanner) Summary() PayloadSummary {
	sum := PayloadSummary{Size: s.size, SessionID: s.id[:s.idKept]}
	switch {
	case s.response:
		switch {
		case s.size == 1:
			sum.Status = Status(s.first)
		case s.size == 0 || s.op != OpGet:
			sum.Malformed = true
		default:
			sum.Status = StatusOK
			s.finishData(&sum)
		}
	case s.op == OpAdd:
		if s.size < addHeaderSize || s.idLen > s.size-addHeaderSize {
			sum.Malformed = true
		}
		sum.TimeoutMS = binary.BigEndian.Uint32(s.head[0:4])
		sum.IDLen = max(s.idLen, 0)
		s.finishData(&sum)
	default:
		sum.IDLen = s.size
	}
	return sum
}

func (s *PayloadScanner) finishData(sum *PayloadSummary) {
	sum.DataLen = s.dataLen
	if s.opts.Digest && s.digest != nil {
		copy(sum.Digest[:], s.digest.Sum(s.sum[:0]))
		sum.HasDigest = true
	}
	if s.opts.CaptureLimit > 0 {
		sum.Data = s.capture
		sum.DataTruncated = s.overflow
	}
}

// Transaction describes one request and its response.
type Transaction struct {
	Op         Op
	RequestUID uint32
	// SessionID holds up to MaxSessionIDLen bytes of the id; SessionIDLen
	// is its full length.
	SessionID      []byte
	SessionIDLen   int
	TimeoutMS      uint32 // ADD only
	RequestSize    int    // request payload bytes
	ResponseSize   int    // response payload bytes
	RequestFrames  int
	ResponseFrames int
	// Status is the response's status byte (StatusOK for a GET hit).
	Status Status
	// Hit is set for a GET that returned data.
	Hit bool
	// RequestMalformed and ResponseMalformed flag payloads whose layout
	// does not fit the operation.
	RequestMalformed  bool
	ResponseMalformed bool
	// DataLen is the session data length: stored by an ADD, or returned by
	// a GET hit.
	DataLen       int
	Digest        [DigestSize]byte
	HasDigest     bool
	Data          []byte // only when captured
	DataTruncated bool
}

// NewTransaction pairs the summaries of a request and its response. The
// session id and captured data still alias the scanners that made the
// summaries; Clone detaches them.
func NewTransaction(op Op, uid uint32, req, resp PayloadSummary, reqFrames, respFrames int) Transaction {
	t := Transaction{
		Op:                op,
		RequestUID:        uid,
		SessionID:         req.SessionID,
		SessionIDLen:      req.IDLen,
		TimeoutMS:         req.TimeoutMS,
		RequestSize:       req.Size,
		ResponseSize:      resp.Size,
		RequestFrames:     reqFrames,
		ResponseFrames:    respFrames,
		Status:            resp.Status,
		RequestMalformed:  req.Malformed,
		ResponseMalformed: resp.Malformed,
	}
	data := req
	if op == OpGet {
		data = resp
		t.Hit = !resp.Malformed && resp.Size > 1
	}
	if op == OpAdd || t.Hit {
		t.DataLen = data.DataLen
		t.Digest, t.HasDigest = data.Digest, data.HasDigest
		t.Data, t.DataTruncated = data.Data, data.DataTruncated
	}
	return t
}

// Describe summarises a whole request and response message.
func Describe(req, resp Message, opts ScanOptions) Transaction {
	var rs, ps PayloadScanner
	rs.opts, ps.opts = opts, opts
	rs.Start(req.Op, false)
	rs.Write(req.Payload)
	ps.Start(req.Op, true)
	ps.Write(resp.Payload)
	return NewTransaction(req.Op, req.RequestUID, rs.Summary(), ps.Summary(), req.Frames, resp.Frames).Clone()
}

// Clone returns t with its own copies of the session id and data.
func (t Transaction) Clone() Transaction {
	t.SessionID = append([]byte(nil), t.SessionID...)
	if t.Data != nil {
		t.Data = append([]byte(nil), t.Data...)
	}
	return t
}
