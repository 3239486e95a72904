// Package tap follows a distcache server's traffic live from a network
// interface without being in its path: an afpacket.Source captures the
// server port's TCP packets, a sniff.Sniffer reassembles the connections
// to the server, and a proxy.Observer makes them into the events and
// counters a proxy has, published to the same kind of sink. A tap
// forwards nothing, so it can neither delay nor break the traffic, and
// has nothing faults could act on.
//
// A Tap owns one goroutine, which reads the ring and runs the sniffer
// and the observer; Close stops it, closes the connections still open
// (reason "tap stopped") and waits for it. What the tap could not see
// is counted, never guessed: packets the kernel dropped for want of ring
// space (Stats.Kernel), bytes the reassembly found missing (capture gaps,
// published as events, and Stats.Capture), and the resyncs of the
// observer's decoders (Stats.Proxy).
//
// snoopd runs one Tap at a time per tap of its registry, each feeding
// the same Config.Observer, so that a tap disabled and enabled again,
// or moved to another server, keeps its counters and connection ids.
package tap
