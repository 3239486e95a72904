package proxy

import (
	"time"

	"github.com/snoopd/snoopd/distcache"
	"github.com/snoopd/snoopd/match"
	"github.com/snoopd/snoopd/vocab"
)

// EventKind tells what an Event reports; the kinds and their names are
// the vocabulary's.
type EventKind = vocab.Kind

// Event kinds (see vocab for each one's meaning).
const (
	KindTransaction   = vocab.KindTransaction
	KindConnOpened    = vocab.KindConnOpened
	KindConnClosed    = vocab.KindConnClosed
	KindConnectFailed = vocab.KindConnectFailed
	KindConnRefused   = vocab.KindConnRefused
	KindProtocolError = vocab.KindProtocolError
	KindCaptureGap    = vocab.KindCaptureGap
)

// Event is one thing a proxy saw. Which fields are set depends on Kind.
// The proxy hands each Event to the Sink once and never touches it again.
type Event struct {
	Kind   EventKind
	Time   time.Time
	Proxy  string
	ConnID uint64 // 0 for events before a connection was numbered
	Client string // the client's address as the listener saw it

	// Tx is set for KindTransaction.
	Tx *Transaction
	// Closed is set for KindConnClosed.
	Closed *ConnClosed
	// Err says why for KindConnectFailed and KindProtocolError.
	Err error
	// Direction of a protocol error; Policy is what the proxy did about it.
	Direction distcache.Direction
	Policy    CorruptPolicy
	// Gap is set for KindCaptureGap.
	Gap *CaptureGap
}

// CaptureGap is a byte range of one direction that a packet capture
// missed, in offsets of that direction's stream; the direction resyncs
// after it.
type CaptureGap struct {
	Direction   distcache.Direction
	First, Last int64 // the first and last missing byte
}

// Missing is the number of bytes missed.
func (g *CaptureGap) Missing() int64 { return g.Last - g.First + 1 }

// Transaction is a decoded request/response pair as the proxy saw it.
type Transaction struct {
	distcache.Transaction
	// Start is when the request's first byte was read. Latency is what
	// the client waited: from Start to when the response's last byte was
	// read, plus the time a latency or stall fault holds the answer (or
	// what is queued before it) on its way to the client. ServerLatency is
	// what the server took: Latency without the time faults held the
	// request or the answer.
	Start         time.Time
	Latency       time.Duration
	ServerLatency time.Duration
	// Unanswered marks a request whose connection ended before its
	// response; Orphan a response that matched no outstanding request.
	Unanswered bool
	Orphan     bool
	// Fault names the fault that touched the transaction, "" if none;
	// the other fields say what the client got.
	Fault string

	idBuf [distcache.MaxSessionIDLen]byte
}

// Outcome classifies the transaction in the vocabulary's terms.
func (t *Transaction) Outcome() vocab.Result {
	return vocab.ResultOf(&t.Transaction, t.Unanswered, t.Orphan)
}

// Result names the outcome in one word: "unanswered", "orphan", or the
// distcache result ("ok", "hit", "miss", "exists", ...).
func (t *Transaction) Result() string { return t.Outcome().String() }

// ConnClosed describes a finished connection.
type ConnClosed struct {
	BytesUp   int64 // client to server
	BytesDown int64 // server to client
	Duration  time.Duration
	// Transactions paired on the connection.
	Transactions int64
	// Reason says in words why it ended: "client closed", "server reset:
	// ...", "protocol error", "closed by operator", "proxy stopped".
	Reason string
}

// Sink receives a proxy's events. Publish is called from the connection's
// forwarding goroutines and must not block: a sink that cannot keep up
// drops events (and counts them) rather than slow the traffic. Nor may it
// keep e or what e points to after it returns, because the proxy reuses
// them; a sink that keeps events copies them (EventCopy.Set, Event.Clone).
type Sink interface {
	Publish(e *Event)
}

// EventCopy holds an Event together with the Transaction and ConnClosed it
// points to, so a sink can keep events in buffers it reuses. Fill one with
// Set and read it with Get: an EventCopy may be moved (copied by value, as
// append does) in between, and Get re-aims the pointers at the copy's own
// storage.
type EventCopy struct {
	Event
	tx     Transaction
	closed ConnClosed
	gap    CaptureGap
}

// Set makes c a deep copy of e. Err and captured data are shared: the
// proxy never changes them after publishing.
func (c *EventCopy) Set(e *Event) {
	c.Event = *e
	if e.Tx != nil {
		e.Tx.copyTo(&c.tx)
		c.Event.Tx = &c.tx
	}
	if e.Closed != nil {
		c.closed = *e.Closed
		c.Event.Closed = &c.closed
	}
	if e.Gap != nil {
		c.gap = *e.Gap
		c.Event.Gap = &c.gap
	}
}

// InPlace returns the copied event of an EventCopy that has not moved
// since Set (one in an array that is never reallocated), whose pointers
// still aim at its own storage. Unlike Get it writes nothing, so several
// goroutines may read one EventCopy at once.
func (c *EventCopy) InPlace() *Event { return &c.Event }

// Get returns the copied event, its pointers aimed at c's own storage.
func (c *EventCopy) Get() *Event {
	if c.Event.Tx != nil {
		c.Event.Tx = &c.tx
		n := len(c.tx.SessionID)
		c.tx.SessionID = c.tx.idBuf[:n:n]
	}
	if c.Event.Closed != nil {
		c.Event.Closed = &c.closed
	}
	if c.Event.Gap != nil {
		c.Event.Gap = &c.gap
	}
	return &c.Event
}

// Clone returns a deep copy of e that the caller may keep.
func (e *Event) Clone() *Event {
	c := new(EventCopy)
	c.Set(e)
	return &c.Event
}

// copyTo copies t into dst, pointing dst's session id at its own buffer.
func (t *Transaction) copyTo(dst *Transaction) {
	*dst = *t
	n := copy(dst.idBuf[:], t.SessionID)
	dst.SessionID = dst.idBuf[:n:n]
}

// SinkFunc adapts a function to a Sink.
type SinkFunc func(*Event)

// Publish calls f(e).
func (f SinkFunc) Publish(e *Event) { f(e) }

// Discard is a Sink that drops every event.
var Discard Sink = SinkFunc(func(*Event) {})

// MatchView fills v with the matcher's picture of e.
func (e *Event) MatchView(v *match.View) {
	*v = match.View{Proxy: e.Proxy, Conn: e.ConnID, Kind: e.Kind, Time: e.Time}
	if e.Kind != KindTransaction || e.Tx == nil {
		return
	}
	t := e.Tx
	v.Op, v.Result, v.SessionID = t.Op, t.Outcome(), t.SessionID
	v.ReqBytes, v.RespBytes = int64(t.RequestSize), int64(t.ResponseSize)
	v.Fault = t.Fault
	if !t.Unanswered && !t.Orphan {
		v.Latency, v.ServerLatency = t.Latency, t.ServerLatency
	}
}
