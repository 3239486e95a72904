package daemon

import (
	"crypto/rand"
	"fmt"
)

// newInstanceID returns a random id for a new incarnation of a proxy, in
// the form of a version 4 UUID, so that events of a proxy deleted and
// created again under the same name can be told apart
// (Proxy.instance_id, Event.proxy_instance).
func newInstanceID() string {
	var b [16]byte
	rand.Read(b[:]) // never fails (crypto/rand panics rather)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
