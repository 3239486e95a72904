// Package cacheserver is an in-memory distcache session cache server that
// answers ADD, GET, REMOVE and HAVE the way the reference dc_server does.
// It exists so the rest of the project has a peer to talk to without the C
// tools: tests run a Server on a loopback or unix socket, demos use it as a
// backend, and benchmarks use it as a target that is not itself the
// bottleneck.
//
// The package has two parts. Cache is the session store: a map with
// per-session expiry and a session-count limit, safe for concurrent use and
// usable on its own. Server speaks the wire protocol over any number of
// listeners, one goroutine per connection, reading with distcache.Reader
// and answering pipelined requests in order with one write per batch. A
// connection that breaks the protocol is closed, as the reference server
// does, and counted in Stats.
//
// Session data is a secret in the main use of distcache (a serialised TLS
// session holds its master secret), so the package never logs it and wipes
// the buffers it recycles.
package cacheserver
