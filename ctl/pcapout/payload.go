package pcapout

import (
	"encoding/binary"

	"github.com/snoopd/snoopd/distcache"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
)

// requestPayload rebuilds the payload of tx's request: an ADD's timeout,
// id_len, session id and data, or the session id of the others, cut or
// padded with zeros to the request's size, so that a malformed request
// keeps its size. data holds the session data to write, or nil for zeros.
func requestPayload(tx *snoopv1.Transaction, data []byte) []byte {
	id := fit(tx.GetSessionId(), int(tx.GetSessionIdLength()))
	var p []byte
	if tx.GetOp() == snoopv1.Op_OP_ADD {
		p = make([]byte, 0, 8+len(id)+int(tx.GetDataLength()))
		p = binary.BigEndian.AppendUint32(p, tx.GetTimeoutMs())
		p = binary.BigEndian.AppendUint32(p, tx.GetSessionIdLength())
		p = append(p, id...)
		p = append(p, fit(data, int(tx.GetDataLength()))...)
	} else {
		p = id
	}
	return fit(p, int(tx.GetRequestSize()))
}

// responsePayload rebuilds the payload of tx's response: a GET hit's
// session data (data, or zeros when nil), or the status byte, cut or
// padded with zeros to the response's size.
func responsePayload(tx *snoopv1.Transaction, hit bool, data []byte) []byte {
	n := int(tx.GetResponseSize())
	if hit {
		return fit(data, n)
	}
	return fit([]byte{byte(tx.GetStatus())}, n)
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
