package distcache

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Status is the one-byte result a server sends for ADD, REMOVE and HAVE,
// and for a GET miss.
type Status uint8

// Status values. Those below 100 are shared by all operations; from 100 up
// they are specific to ADD.
const (
	StatusOK              Status = 0   // done; for HAVE: the server has the session
	StatusNotOK           Status = 1   // failed; for GET a miss, for REMOVE/HAVE not found
	StatusDisconnected    Status = 2   // the server's own upstream went away
	StatusAddCorrupt      Status = 100 // ADD request's id_len does not fit the payload
	StatusAddExists       Status = 101 // a session with this id already exists
	StatusAddTimeoutRange Status = 102 // timeout above 7 days
	StatusAddIDRange      Status = 103 // session id length not 1..64
	StatusAddDataRange    Status = 104 // session data length not 1..32768
)

// String returns the status's stable lower-case name ("ok", "notok",
// "exists", ...), or "status(n)" for a value the protocol does not define.
func (s Status) String() string {
	switch s {
	case StatusOK:
		return "ok"
	case StatusNotOK:
		return "notok"
	case StatusDisconnected:
		return "disconnected"
	case StatusAddCorrupt:
		return "corrupt"
	case StatusAddExists:
		return "exists"
	case StatusAddTimeoutRange:
		return "timeout-range"
	case StatusAddIDRange:
		return "id-range"
	case StatusAddDataRange:
		return "data-range"
	}
	return fmt.Sprintf("status(%d)", uint8(s))
}

// Statuses lists the statuses the protocol defines, in order of value.
func Statuses() []Status {
	return []Status{StatusOK, StatusNotOK, StatusDisconnected,
		StatusAddCorrupt, StatusAddExists, StatusAddTimeoutRange, StatusAddIDRange, StatusAddDataRange}
}

// ParseStatus returns the status String names name, and whether the
// protocol defines one by that name.
func ParseStatus(name string) (Status, bool) {
	for _, s := range Statuses() {
		if s.String() == name {
			return s, true
		}
	}
	return 0, false
}

// Known reports whether the protocol defines s.
func (s Status) Known() bool {
	return s <= StatusDisconnected || (s >= StatusAddCorrupt && s <= StatusAddDataRange)
}

// ErrMalformedPayload is wrapped by errors for payloads whose layout does
// not match their operation.
var ErrMalformedPayload = errors.New("malformed distcache payload")

// addHeaderSize is the timeout and id_len that start an ADD request.
const addHeaderSize = 8

// AddRequest is the decoded payload of an ADD request.
type AddRequest struct {
	TimeoutMS uint32
	SessionID []byte
	Data      []byte
}

// AppendAddRequest appends an ADD request payload to dst.
func AppendAddRequest(dst []byte, timeoutMS uint32, id, data []byte) []byte {
	dst = binary.BigEndian.AppendUint32(dst, timeoutMS)
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(id)))
	dst = append(dst, id...)
	return append(dst, data...)
}

// ParseAddRequest splits an ADD request payload. The returned slices alias
// p. It checks only the layout; the ranges (id 1..64, data 1..32768,
// timeout) are the server's business, see CheckAdd.
func ParseAddRequest(p []byte) (AddRequest, error) {
	if len(p) < addHeaderSize {
		return AddRequest{}, fmt.Errorf("%w: ADD request of %d bytes, want at least %d", ErrMalformedPayload, len(p), addHeaderSize)
	}
	idLen := binary.BigEndian.Uint32(p[4:8])
	if uint64(idLen) > uint64(len(p)-addHeaderSize) {
		return AddRequest{}, fmt.Errorf("%w: ADD id_len %d does not fit a payload of %d bytes", ErrMalformedPayload, idLen, len(p))
	}
	end := addHeaderSize + int(idLen)
	return AddRequest{
		TimeoutMS: binary.BigEndian.Uint32(p[0:4]),
		SessionID: p[addHeaderSize:end],
		Data:      p[end:],
	}, nil
}

// CheckAdd applies the reference server's checks to an ADD request payload,
// in its order, and returns the status it answers with, or StatusOK when
// the request may be stored. Whether the id already exists is left to the
// caller. A payload shorter than the 8-byte header gets no answer at all:
// the reference server drops the connection, and CheckAdd returns an error
// wrapping ErrMalformedPayload.
//
// The order matters for what a client sees: the timeout is checked first
// (102), then whether id_len leaves room for at least one byte of data
// (100, so an ADD without data is "corrupt"), then the id length (103),
// then the data length (104). The data shares one message with the header
// and the id, so a valid stream carries at most 32768-8-len(id) bytes of it
// and 104 cannot happen over the wire; it is checked all the same. Note
// also that a one-byte session is stored, yet its GET answer is one byte,
// which every reader takes as a status byte: such a session is
// indistinguishable from a miss.
func CheckAdd(p []byte) (AddRequest, Status, error) {
	if len(p) < addHeaderSize {
		return AddRequest{}, 0, fmt.Errorf("%w: ADD request of %d bytes, want at least %d", ErrMalformedPayload, len(p), addHeaderSize)
	}
	timeout := binary.BigEndian.Uint32(p[0:4])
	idLen := uint64(binary.BigEndian.Uint32(p[4:8]))
	rest := uint64(len(p) - addHeaderSize)
	switch {
	case timeout > MaxAddTimeoutMS:
		return AddRequest{}, StatusAddTimeoutRange, nil
	case idLen >= rest:
		return AddRequest{}, StatusAddCorrupt, nil
	case idLen == 0 || idLen > MaxSessionIDLen:
		return AddRequest{}, StatusAddIDRange, nil
	case rest-idLen > MaxSessionDataLen:
		return AddRequest{}, StatusAddDataRange, nil
	}
	end := addHeaderSize + int(idLen)
	return AddRequest{TimeoutMS: timeout, SessionID: p[addHeaderSize:end], Data: p[end:]}, StatusOK, nil
}

// Response is the decoded payload of a response.
type Response struct {
	// Status is the status byte; for a GET hit it is StatusOK.
	Status Status
	// Hit is set for a GET that returned session data.
	Hit bool
	// Data is the session data of a GET hit, aliasing the payload.
	Data []byte
}

// ParseResponse decodes the payload of a response to op. A one-byte
// payload is always a status byte; only GET may return more (the session
// data), and no response may be empty.
func ParseResponse(op Op, p []byte) (Response, error) {
	switch {
	case len(p) == 1:
		return Response{Status: Status(p[0])}, nil
	case len(p) == 0:
		return Response{}, fmt.Errorf("%w: empty %s response", ErrMalformedPayload, op)
	case op == OpGet:
		return Response{Status: StatusOK, Hit: true, Data: p}, nil
	}
	return Response{}, fmt.Errorf("%w: %s response of %d bytes, want 1", ErrMalformedPayload, op, len(p))
}
