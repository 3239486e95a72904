package proxy

import (
	"encoding/binary"
	"errors"
	"hash/maphash"
	"sync/atomic"
	"time"
)

// A forwarding loop through something this process cannot see (another
// snoopd, on this host or another, whose proxy leads back to this one)
// is caught by a symptom that ordinary traffic all but never has: the
// request a proxy forwarded to its server comes back to the same proxy,
// unchanged, as the first request of a new client connection, while the
// copy it forwarded is still unanswered; that copy, forwarded in its
// turn, comes back again, and so on, one lap after the other. Distcache
// bytes pass through a snoop proxy unchanged, request_uid included, so
// every lap brings the same message back.
//
// Each proxy remembers the first request of each of its connections until
// that request is answered or the connection ends (a fingerprint in a
// small lossy table, echoTable). A new connection whose first request has
// the fingerprint of one still unanswered, recorded less than echoWindow
// before, is an echo one lap deeper than it. A connection whose first
// request is loopDepth laps deep is closed before that request is
// forwarded: its closing runs back along the loop and ends every
// connection of it, the client's first, which gets an end of stream
// instead of waiting for a response timeout.
//
// Ordinary traffic does not fire it: that takes more than loopDepth
// connections to the same proxy whose first requests are byte for byte
// the same (operation, request_uid, session id, and for an ADD the same
// data), each arriving within echoWindow of the one before while none of
// them has been answered. Clients that look the same session up at the
// same moment do that: a browser opening its half dozen connections with
// one TLS session, say, behind web servers that number their requests
// from 1 on each connection. Such a burst is as deep as it is wide, and
// loopDepth is well above the width of any burst of real clients (the
// proxy tests send 24 at once; a burst of 32 or more identical requests
// into an unanswering server is a loop as far as this check can tell).
// What also looks the same is a server that answers nothing while clients
// send it the same request again and again on new connections, within a
// second of each other: those are closed as a loop too, and would have had
// no answer either. Connections that carry more than one request are
// checked on their first only: a loop makes a new connection at every
// lap, so its echoes are always first requests. Nothing finer tells a loop
// from such a burst: with spares, the connection that brings an echo back
// may have been accepted before the request it echoes arrived (the spare
// was dialled while the request was on its way), so the order of accepts
// proves nothing.
//
// A loop that carries no request (spares dialled into each other) is not
// seen here; it is contained instead: a spare is replaced, and a server
// dialled for a client without one, only once that client has sent its
// first bytes (see lconn.start and gconn.run), so a silent loop costs a
// pool's worth of connections, not a chain of them.
const (
	// echoSlots is the size of a proxy's table of first requests still
	// unanswered; a lap of a loop takes one slot at each proxy it
	// crosses, and a table that loses an entry to a collision only
	// detects a loop a few laps later.
	echoSlots = 256
	// loopDepth is how many laps deep an echo must be to close its
	// connection. A lap costs each daemon of the loop a connection and
	// a spare refill (three descriptors), and takes well under a
	// millisecond on one host, so 32 laps are about a hundred
	// descriptors for a few milliseconds; the depth is what keeps bursts
	// of identical requests of real clients from looking like a loop
	// (see above).
	loopDepth = 32
	// echoWindow is how soon after the copy before it an echo must come:
	// a lap of a loop is a forward and a connect, milliseconds even
	// between distant hosts; a client retrying a request after a timeout
	// of its own comes later.
	echoWindow = time.Second
	// loopConditionFor is how long a proxy reports the forwarding-loop
	// condition after the last echo it closed.
	loopConditionFor = time.Minute
	// loopLogEvery spaces the log lines about a loop.
	loopLogEvery = 10 * time.Second
)

// ConditionForwardingLoop is the condition of a proxy that closed a
// request that came back to it around a loop (see Proxy.Conditions).
const ConditionForwardingLoop = "forwarding-loop"

// KnownConditions lists every condition Conditions may name, for those
// who report each as present or absent.
var KnownConditions = []string{ConditionForwardingLoop}

// errLoopEcho stops the decoding of a connection whose first request is
// an echo of an echo: it is closed without forwarding that request.
var errLoopEcho = errors.New("forwarding loop: the request came back unanswered from the server's side")

// echoTable holds fingerprints of first requests still unanswered. A
// slot's key is the fingerprint with its low byte replaced by the echo
// depth of the connection that put it there, plus one, so 0 is an empty
// slot; at is when it was put there (UnixNano). The two words are not
// updated together: a reader that sees a new key with an old time only
// misjudges one echo, which the next lap corrects.
type echoTable struct {
	slots [echoSlots]echoSlot
}

type echoSlot struct {
	key atomic.Uint64
	at  atomic.Int64
}

var echoSeed = maphash.MakeSeed()

// requestKey is the fingerprint of a request just decoded in h, with its
// low byte cleared.
func requestKey(h *half) uint64 {
	hd := h.dec.Header()
	sum := h.scan.Summary()
	var b [32]byte
	binary.LittleEndian.PutUint32(b[0:], hd.RequestUID)
	b[4] = byte(hd.Op)
	binary.LittleEndian.PutUint32(b[5:], uint32(sum.Size))
	binary.LittleEndian.PutUint32(b[9:], uint32(sum.IDLen))
	binary.LittleEndian.PutUint32(b[13:], sum.TimeoutMS)
	binary.LittleEndian.PutUint32(b[17:], uint32(sum.DataLen))
	var m maphash.Hash
	m.SetSeed(echoSeed)
	m.Write(b[:21])
	m.Write(sum.SessionID)
	if sum.HasDigest {
		m.Write(sum.Digest[:])
	}
	return m.Sum64() &^ 0xff
}

// firstRequest records the first request of a's connection (its
// fingerprint key, decoded at now, UnixNano) in the echo table of the
// proxy a.echo and reports whether it is deep enough an echo to be a
// loop; then the connection is to be closed, and the proxy's condition
// is set.
func (a *assembler) firstRequest(key uint64, now int64) (loop bool) {
	p := a.echo
	slot := &p.echoes.slots[(key>>8)%echoSlots]
	depth := uint64(0)
	if v := slot.key.Load(); v != 0 && v&^0xff == key && now-slot.at.Load() < int64(echoWindow) {
		depth = v & 0xff // the earlier one's depth plus one
	}
	if depth >= loopDepth {
		p.noteLoop(now)
		return true
	}
	v := key | (depth + 1)
	slot.at.Store(now)
	slot.key.Store(v)
	a.echoKey.Store(v)
	return false
}

// forgetFirst takes the connection's first request out of the table: it
// was answered, or the connection ended. A slot taken over by another
// connection is left alone.
func (a *assembler) forgetFirst() {
	v := a.echoKey.Swap(0)
	if v == 0 {
		return
	}
	a.echo.echoes.slots[(v>>8)%echoSlots].key.CompareAndSwap(v, 0)
}

// noteLoop counts an echo closed as a loop, sets the condition and logs
// at most once per loopLogEvery, with the count since the last line.
func (p *Proxy) noteLoop(now int64) {
	p.stats.loopEchoes.Add(1)
	p.loopAt.Store(now)
	n := p.loopUnlogged.Add(1)
	last := p.lastLoopW.Load()
	if p.logf == nil || now-last < int64(loopLogEvery) || !p.lastLoopW.CompareAndSwap(last, now) {
		return
	}
	p.loopUnlogged.Add(-n)
	p.logf("proxy %q: forwarding loop: a request came back unanswered as a new client of this proxy, lap after lap (server %s leads back here, through another daemon or host); %d such clients closed since the last line", p.name, p.current.Load().server.addr, n)
}

// Conditions names what is wrong with the proxy now, for the operator:
// ConditionForwardingLoop while a request came back around a loop within
// the last minute. It is empty when nothing is.
func (p *Proxy) Conditions(now time.Time) []string {
	if at := p.loopAt.Load(); at != 0 && now.UnixNano()-at < int64(loopConditionFor) {
		return []string{ConditionForwardingLoop}
	}
	return nil
}

// isLoopEcho reports whether err is a connection's first request closed
// as a loop.
func isLoopEcho(err error) bool { return err == errLoopEcho }
