package sniff

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"

	"github.com/snoopd/snoopd/distcache"
)

// Conn is one observed connection as the sink sees it; *proxy.ObservedConn
// is one. sniff calls it from one goroutine, and Data's bytes are only
// valid during the call.
type Conn interface {
	ID() uint64
	// Data hands on in-order bytes of one direction.
	Data(dir distcache.Direction, p []byte, now time.Time)
	// Resync says bytes were lost before the next Data of dir.
	Resync(dir distcache.Direction, now time.Time)
	// Close ends the connection, saying why.
	Close(reason string, now time.Time)
}

// Sink receives the connections sniff finds.
type Sink interface {
	// Open starts a connection from client (its address, "ip:port").
	// midStream says the connection's start was not captured.
	Open(client string, now time.Time, midStream bool) Conn
	// Gap reports bytes of c the capture missed; c.Resync follows.
	Gap(c Conn, g Gap, now time.Time)
}

// Gap is a byte range of one direction that the capture missed, in
// stream offsets: 0 is the first byte after the SYN, or the first byte
// captured of a connection picked up mid-stream.
type Gap struct {
	Dir         distcache.Direction
	First, Last int64 // the first and last missing byte
}

// Missing is the number of bytes missed.
func (g Gap) Missing() int64 { return g.Last - g.First + 1 }

// Options bound what a Sniffer holds. The zero value of a field takes the
// default.
type Options struct {
	// Server says which end of a connection is the server; connections
	// to other addresses are ignored.
	Server Server
	// MaxConns is the number of connections followed at once (default
	// 16384); one more closes the least recently active, with reason
	// "evicted: too many connections".
	MaxConns int
	// MaxHeld is the out-of-order bytes one direction holds (default 256
	// KiB); past it the first hole is given up as a capture gap.
	MaxHeld int
	// MaxHeldTotal is the out-of-order bytes all connections hold
	// (default 64 MiB); past it the least recently active connections
	// give up their holes.
	MaxHeldTotal int
	// IdleTimeout closes a connection with no packet for that long in
	// capture time (default 10 minutes), with reason "idle in the
	// capture".
	IdleTimeout time.Duration
}

// Defaults of Options.
const (
	DefaultMaxConns     = 16384
	DefaultMaxHeld      = 256 << 10
	DefaultMaxHeldTotal = 64 << 20
	DefaultIdleTimeout  = 10 * time.Minute
)

// Stats counts what a Sniffer saw. All counts are totals since New.
type Stats struct {
	Packets      int64 // packets read from the source
	Segments     int64 // TCP segments to or from the server
	Other        int64 // packets of other traffic (not TCP, other addresses, fragments)
	Malformed    int64 // packets that could not be decoded
	Truncated    int64 // segments the capture cut short (its snap length)
	Conns        int64 // connections opened
	Gaps         int64 // capture gaps reported
	BytesSkipped int64 // bytes the gaps missed
	// Retransmitted bytes arrived more than once; Conflicts counts the
	// later copies whose bytes differed from the first, which won.
	Retransmitted int64
	Conflicts     int64
	Evicted       int64 // connections closed early: too many, or idle
}

// Sniffer follows the TCP connections to one server through a stream of
// packets. It is used from one goroutine (Run, or Packet and Finish);
// Stats may be called from any.
type Sniffer struct {
	sink Sink
	opts Options
	dec  decoder

	flows  map[flowKey]*flow
	lru    list.List // of *flow, the least recently active first
	closed closedSet
	held   int // out-of-order bytes held by all flows
	last   time.Time

	stats struct {
		packets, segments, other, malformed, truncated    atomic.Int64
		conns, gaps, skipped, retrans, conflicts, evicted atomic.Int64
	}
}

// New returns a Sniffer that opens connections on sink.
func New(sink Sink, opts Options) *Sniffer {
	if opts.MaxConns <= 0 {
		opts.MaxConns = DefaultMaxConns
	}
	if opts.MaxHeld <= 0 {
		opts.MaxHeld = DefaultMaxHeld
	}
	if opts.MaxHeldTotal <= 0 {
		opts.MaxHeldTotal = DefaultMaxHeldTotal
	}
	if opts.IdleTimeout <= 0 {
		opts.IdleTimeout = DefaultIdleTimeout
	}
	return &Sniffer{sink: sink, opts: opts, flows: map[flowKey]*flow{}}
}

// Run reads packets of the link type from src until it ends (io.EOF),
// the context is done or src fails, and hands the connections they carry
// to the sink. At the end of src it closes the connections still open
// with reason "end of capture"; otherwise they stay open for Finish. A
// packet that cannot be decoded is counted (Stats.Malformed) and
// skipped.
func (s *Sniffer) Run(ctx context.Context, src gopacket.PacketDataSource, link layers.LinkType) error {
	if !CanDecode(link) {
		return fmt.Errorf("%w: %s (%d)", ErrLinkType, link, int(link))
	}
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := s.ReadPacket(src, link); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
}

// ReadPacket reads one packet of the link type from src and takes it
// (Packet). At the end of src it closes the connections still open with
// reason "end of capture" and returns io.EOF; an error of src is
// returned wrapped, naming the packet. A pcapng source with interfaces
// of several link types is decoded by each packet's interface.
func (s *Sniffer) ReadPacket(src gopacket.PacketDataSource, link layers.LinkType) error {
	data, ci, err := src.ReadPacketData()
	if errors.Is(err, io.EOF) {
		s.Finish("end of capture")
		return io.EOF
	}
	if err != nil {
		return fmt.Errorf("read packet %d: %w", s.stats.packets.Load()+1, err)
	}
	if ng, ok := src.(*pcapgo.NgReader); ok && ng.NInterfaces() > 1 {
		if intf, err := ng.Interface(ci.InterfaceIndex); err == nil {
			link = intf.LinkType
		}
	}
	s.Packet(data, ci, link)
	return nil
}

// Packet takes one captured frame of the link type. data is only read
// during the call.
func (s *Sniffer) Packet(data []byte, ci gopacket.CaptureInfo, link layers.LinkType) {
	s.stats.packets.Add(1)
	now := ci.Timestamp
	if now.After(s.last) {
		s.last = now
	}
	seg, err := s.dec.decode(data, link)
	switch {
	case errors.Is(err, errNotTCP):
		s.stats.other.Add(1)
		return
	case err != nil:
		s.stats.malformed.Add(1)
		return
	}
	var (
		key flowKey
		dir distcache.Direction
	)
	switch {
	case s.opts.Server.Is(seg.dst):
		key, dir = flowKey{client: seg.src, server: seg.dst}, distcache.ClientToServer
	case s.opts.Server.Is(seg.src):
		key, dir = flowKey{client: seg.dst, server: seg.src}, distcache.ServerToClient
	default:
		s.stats.other.Add(1)
		return
	}
	s.stats.segments.Add(1)
	if seg.lost > 0 {
		s.stats.truncated.Add(1)
	}
	s.expire(now)
	f := s.flows[key]
	if f != nil && seg.syn && !seg.ackf && dir == distcache.ClientToServer &&
		f.dirs[0].started && f.dirs[0].base != seg.seq+1 {
		// A new SYN on the pair of a connection not seen to close: the
		// client is reconnecting on the same port, the old one is over.
		s.close(f, "client reconnected", now, false)
		f = nil
	}
	if f == nil {
		if f = s.open(key, dir, &seg, now); f == nil {
			return
		}
	}
	s.lru.MoveToBack(f.elem)
	f.segment(s, dir, &seg, now)
	if seg.rst {
		s.close(f, peer(dir)+" reset", now, true)
		return
	}
	if f.dirs[0].finished() && f.dirs[1].finished() {
		s.close(f, f.firstFin+" closed", now, true)
		return
	}
	if seg.fin && f.dirs[0].finSeen && f.dirs[1].finSeen {
		// Both ends are done and a hole is left: nothing will fill it.
		s.close(f, f.firstFin+" closed", now, true)
		return
	}
	s.bound(now)
}

// Finish closes every connection still open with the reason, and returns
// what was held out of order as capture gaps and data first.
func (s *Sniffer) Finish(reason string) {
	for s.lru.Len() > 0 {
		s.close(s.lru.Front().Value.(*flow), reason, s.last, false)
	}
}

// Stats returns the counts so far.
func (s *Sniffer) Stats() Stats {
	st := &s.stats
	return Stats{
		Packets: st.packets.Load(), Segments: st.segments.Load(), Other: st.other.Load(),
		Malformed: st.malformed.Load(), Truncated: st.truncated.Load(), Conns: st.conns.Load(),
		Gaps: st.gaps.Load(), BytesSkipped: st.skipped.Load(), Retransmitted: st.retrans.Load(),
		Conflicts: st.conflicts.Load(), Evicted: st.evicted.Load(),
	}
}

// open starts following a connection at its first segment, or returns
// nil for a segment that starts nothing: a stray ACK, FIN or RST, or
// any segment but a SYN of a connection that was closed lately.
func (s *Sniffer) open(key flowKey, dir distcache.Direction, seg *segmentInfo, now time.Time) *flow {
	if seg.rst || (!seg.syn && len(seg.payload) == 0 && seg.lost == 0) {
		return nil
	}
	if !seg.syn && s.closed.has(key, now) {
		return nil
	}
	for len(s.flows) >= s.opts.MaxConns {
		s.stats.evicted.Add(1)
		s.close(s.lru.Front().Value.(*flow), "evicted: too many connections", now, false)
	}
	s.closed.remove(key)
	f := &flow{key: key}
	midStream := !seg.syn
	f.conn = s.sink.Open(key.client.String(), now, midStream)
	f.elem = s.lru.PushBack(f)
	s.flows[key] = f
	s.stats.conns.Add(1)
	return f
}

// close hands on what is held (skipping the holes), closes the
// connection and forgets it. A connection that ended (FIN, RST) is
// remembered for a while, so its trailing segments start nothing; one
// closed for want of room or activity is not, so that if it goes on it
// is picked up again mid-stream.
func (s *Sniffer) close(f *flow, reason string, now time.Time, ended bool) {
	for i := range f.dirs {
		d := &f.dirs[i]
		before := d.heldBytes
		d.flush(f.out(s, i, now))
		s.held -= before - d.heldBytes
	}
	f.conn.Close(reason, now)
	s.lru.Remove(f.elem)
	delete(s.flows, f.key)
	if ended {
		s.closed.add(f.key, now, s.opts.MaxConns)
	}
}

// expire closes the connections idle for longer than the idle timeout.
func (s *Sniffer) expire(now time.Time) {
	for s.lru.Len() > 0 {
		f := s.lru.Front().Value.(*flow)
		if now.Sub(f.seen) <= s.opts.IdleTimeout {
			return
		}
		s.stats.evicted.Add(1)
		s.close(f, "idle in the capture", f.seen.Add(s.opts.IdleTimeout), false)
	}
}

// bound makes the least recently active connections give up their holes
// while all together hold more than MaxHeldTotal.
func (s *Sniffer) bound(now time.Time) {
	for e := s.lru.Front(); e != nil && s.held > s.opts.MaxHeldTotal; e = e.Next() {
		f := e.Value.(*flow)
		for i := range f.dirs {
			d := &f.dirs[i]
			before := d.heldBytes
			for len(d.held) > 0 {
				d.skipHole(f.out(s, i, now))
			}
			s.held -= before - d.heldBytes
		}
	}
}

// flowKey names a connection by its two ends.
type flowKey struct {
	client, server netip.AddrPort
}

// flow is one followed connection: dirs[0] is client to server, dirs[1]
// server to client.
type flow struct {
	key      flowKey
	conn     Conn
	elem     *list.Element
	seen     time.Time
	dirs     [2]stream
	sawSYN   bool   // the client's SYN was captured
	firstFin string // "client" or "server": who closed first
	outs     [2]flowOut
}

func dirIndex(dir distcache.Direction) int {
	if dir == distcache.ServerToClient {
		return 1
	}
	return 0
}

func peer(dir distcache.Direction) string {
	if dir == distcache.ServerToClient {
		return "server"
	}
	return "client"
}

// segment applies one segment of direction dir.
func (f *flow) segment(s *Sniffer, dir distcache.Direction, seg *segmentInfo, now time.Time) {
	f.seen = now
	i := dirIndex(dir)
	d, other := &f.dirs[i], &f.dirs[1-i]
	switch {
	case seg.syn && !d.started:
		d.start(seg.seq + 1)
		if dir == distcache.ClientToServer {
			f.sawSYN = true
		} else if seg.ackf && !other.started {
			// A SYN-ACK whose SYN was missed still says where the
			// client's bytes start.
			other.start(seg.ack)
		}
	case !d.started && (len(seg.payload) > 0 || seg.lost > 0 || seg.fin):
		d.start(seg.seq)
	}
	if dir == distcache.ClientToServer && seg.ackf && !other.started && f.sawSYN && !seg.syn {
		// The handshake's last ACK, when the SYN-ACK was missed, tells
		// where the server's bytes start.
		other.start(seg.ack)
	}
	if seg.ackf && other.started && !seg.rst {
		// The peer has what it acknowledges: bytes of the other direction
		// before the ACK that were not captured never will be, and what
		// this segment carries (an answer, say) must not be handed on
		// before what it answers.
		before := other.heldBytes
		other.acked(seg.ack, f.out(s, 1-i, now))
		s.held -= before - other.heldBytes
	}
	if !d.started {
		return
	}
	seq := seg.seq
	if seg.syn {
		seq++
	}
	if len(seg.payload) > 0 || seg.lost > 0 {
		var c counts
		before := d.heldBytes
		d.add(seq, seg.payload, seg.lost, s.opts.MaxHeld, f.out(s, i, now), &c)
		s.held += d.heldBytes - before
		s.stats.retrans.Add(c.retransmitted)
		s.stats.conflicts.Add(c.conflicts)
	}
	if seg.fin {
		if f.firstFin == "" {
			f.firstFin = peer(dir)
		}
		d.fin(seq + uint32(len(seg.payload)+seg.lost))
	}
}

// out returns the streamOut of direction i at time now.
func (f *flow) out(s *Sniffer, i int, now time.Time) *flowOut {
	o := &f.outs[i]
	o.s, o.f, o.now = s, f, now
	o.dir = distcache.ClientToServer
	if i == 1 {
		o.dir = distcache.ServerToClient
	}
	return o
}

// flowOut hands one direction's bytes and gaps to the connection.
type flowOut struct {
	s   *Sniffer
	f   *flow
	dir distcache.Direction
	now time.Time
}

func (o *flowOut) deliver(p []byte) { o.f.conn.Data(o.dir, p, o.now) }

func (o *flowOut) skip(first, last int64) {
	g := Gap{Dir: o.dir, First: first, Last: last}
	o.s.stats.gaps.Add(1)
	o.s.stats.skipped.Add(g.Missing())
	o.s.sink.Gap(o.f.conn, g, o.now)
	o.f.conn.Resync(o.dir, o.now)
}

// closedSet remembers the connections closed lately, so the segments
// that trail a close (the last ACKs, a retransmitted FIN) do not start a
// connection picked up mid-stream. It holds at most a bound of entries,
// each for closedLinger of capture time.
type closedSet struct {
	at    map[flowKey]time.Time
	order []closedEntry
}

type closedEntry struct {
	key flowKey
	at  time.Time
}

// closedLinger is how long a closed connection's stray segments are
// ignored: Linux's TIME_WAIT is 60 s.
const closedLinger = 2 * time.Minute

func (c *closedSet) add(key flowKey, now time.Time, bound int) {
	if c.at == nil {
		c.at = map[flowKey]time.Time{}
	}
	for len(c.order) > 0 && (len(c.order) >= bound || now.Sub(c.order[0].at) > closedLinger) {
		if e := c.order[0]; c.at[e.key] == e.at {
			delete(c.at, e.key)
		}
		c.order = c.order[1:]
	}
	c.at[key] = now
	c.order = append(c.order, closedEntry{key, now})
}

func (c *closedSet) has(key flowKey, now time.Time) bool {
	at, ok := c.at[key]
	return ok && now.Sub(at) <= closedLinger
}

func (c *closedSet) remove(key flowKey) { delete(c.at, key) }
