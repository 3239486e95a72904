package pcapout

import (
	"bytes"
	"encoding/binary"

	"github.com/snoopd/snoopd/distcache"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
)

// payload is a message's payload as the Writer keeps it until its
// connection is written: the bytes the events give (an ADD's timeout,
// id_len and id, a session id, a status byte, captured data) and the
// payload's full size, the rest being zeros. Kept so, a connection that
// stays open for a whole save costs tens of bytes a message, not its
// session data.
type payload struct {
	known []byte
	size  int
}

// bytes is the payload, cut or padded with zeros to its size.
func (p payload) bytes() []byte { return fit(p.known, p.size) }

// requestPayload rebuilds the payload of tx's request: an ADD's timeout,
// id_len, session id and data, or the session id of the others, at the
// request's size (a malformed request keeps its size). data holds the
// session data to write, or nil for zeros.
func requestPayload(tx *snoopv1.Transaction, data []byte) payload {
	id := fit(tx.GetSessionId(), int(tx.GetSessionIdLength()))
	p := id
	if tx.GetOp() == snoopv1.Op_OP_ADD {
		p = make([]byte, 0, 8+len(id)+len(data))
		p = binary.BigEndian.AppendUint32(p, tx.GetTimeoutMs())
		p = binary.BigEndian.AppendUint32(p, tx.GetSessionIdLength())
		p = append(p, id...)
		p = append(p, data[:min(len(data), int(tx.GetDataLength()))]...)
	}
	return payload{known: p, size: int(tx.GetRequestSize())}
}

// responsePayload rebuilds the payload of tx's response: a GET hit's
// session data (data, or zeros when nil), or the status byte, at the
// response's size.
func responsePayload(tx *snoopv1.Transaction, hit bool, data []byte) payload {
	n := int(tx.GetResponseSize())
	if hit {
		return payload{known: bytes.Clone(data[:min(len(data), n)]), size: n}
	}
	return payload{known: []byte{byte(tx.GetStatus())}, size: n}
}

// fit returns b cut or padded with zeros to n bytes, in a new slice.
func fit(b []byte, n int) []byte {
	out := make([]byte, n)
	copy(out, b)
	return out
}

// opOf is the wire operation of an API operation (the API counts from 1,
// keeping 0 for unspecified).
func opOf(op snoopv1.Op) distcache.Op {
	return distcache.Op(op - 1)
}
