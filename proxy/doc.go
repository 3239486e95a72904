// Package proxy runs one snoop proxy: it listens on a distcache address,
// gives every client a server connection (one of a few dialled ahead if
// one is ready, else one dialled once the client's first bytes have come),
// forwards the bytes of both directions unchanged, and decodes them on the
// way through into transactions and connection events for a
// caller-supplied Sink.
//
// Forwarding comes first. An Engine moves the bytes and is shared by all
// the proxies of a process. The epoll engine (Linux) runs a few event
// loops, one per CPU by default; every proxy spreads its connections over
// all of them (a listener per loop on a TCP port with SO_REUSEPORT, or one
// unix socket listener that places each client on the loop with the
// fewest open connections, its own on a tie), and
// both sockets of a connection belong to one loop, which reads, decodes
// and writes them without blocking. The portable goroutine engine gives
// each connection two goroutines, one per direction. Either way decoding
// happens on the bytes already read for forwarding, and publishing an
// event is a call the Sink promises not to block in; what the proxy's
// connections share (counters, ids, limits, faults) is atomic or locked.
//
// Beside forwarding, a proxy closes connections that pass the idle,
// message or response timeout (Options), refuses a server connection that
// leads back to one of its process's listeners (a proxy loop), names the
// forwarding-loop condition when requests come back to it around a loop
// it cannot see (echo.go), and, on the epoll engine, injects the faults
// it is given (SetFaults: latency, stall, bandwidth, drop, reset, answers
// replaced or corrupted).
//
// One assembler (assemble.go) pairs requests with responses for both
// engines and the fault path. An Observer feeds the same assembler with
// traffic it only sees (a packet capture, a file), with nothing
// forwarded: its connections hunt for the next message start where bytes
// were lost (hunt.go), and it reports the same events and counters as a
// proxy.
//
// The package knows nothing of gRPC; the daemon maps its events and
// counters to the API.
package proxy
