// Package sniff turns captured packets into the byte streams of the TCP
// connections to one server, the way the server and its clients saw
// them, and hands them to a Sink of connections: for snoopd, a
// proxy.Observer, whose assembler makes transactions of them as it does
// for a proxy's own connections.
//
// A Sniffer reads any gopacket.PacketDataSource (a pcap or pcapng file,
// a live socket) of a link type it decodes (Ethernet, Linux cooked v1
// and v2, BSD loopback, raw IP; IPv4 and IPv6), keeps the TCP segments
// to or from the server, and reassembles each direction of each
// connection itself: in sequence order, with a bounded buffer for what
// arrives early, the first copy of a retransmitted or overlapping byte
// winning. What the capture missed is never guessed at: the sink is told
// of the gap (stream offsets, bytes missing) and the direction resyncs.
// A hole becomes a gap when the peer acknowledges the bytes after it (it
// has them, so the capture lost them; and the answer that follows must
// not reach the assembler before what it answers), when the buffer bound
// is reached, or when the connection ends. So a capture that puts a
// segment after the peer's acknowledgement of it (one taken of two
// directions on separate queues) shows a gap there, not a transaction
// rebuilt from bytes that came late.
//
// Memory is bounded: at most Options.MaxConns connections (the least
// recently active is closed to make room; idle ones close after
// Options.IdleTimeout of capture time), at most Options.MaxHeld
// out-of-order bytes per direction and Options.MaxHeldTotal in all, plus
// a few hundred bytes of state per connection and a record of the
// connections closed in the last two minutes of capture time (at most
// MaxConns of them), so that their trailing ACKs start nothing.
package sniff
