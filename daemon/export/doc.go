// Package export publishes the daemon's events to NATS, with JetStream
// keeping them, so that one snoopctl (or anything else that speaks NATS)
// can follow and replay a whole fleet of daemons.
//
// The exporter is a hub watcher like any event stream, and it never slows
// the traffic: the proxies publish into the hub as always; the hub hands
// the exporter's events to its own bounded queue; one goroutine takes
// them in batches, renders each with the daemon's conversion, and hands it
// to NATS with an asynchronous publish whose acknowledgement is counted
// when it arrives. When NATS is slow or gone the queue fills and the hub
// drops for the exporter alone, a publish that cannot be sent is dropped,
// and a publish that is not acknowledged counts as dropped, so that at
// every moment
//
//	published + dropped + queued = matched
//
// exactly, in events (a batched message counts the events it carries),
// each counted once whichever way its message ends: acknowledged, refused,
// timed out, or still due when Close gives up waiting. The connection reconnects by itself (forever), and the stream
// is created or checked again after every reconnect.
//
// Subjects are PREFIX.DAEMON.PROXY.KIND[.OP] (snoop.web-7.sessions.tx.get),
// so that NATS filters by daemon, proxy, kind and operation with subject
// wildcards before anything reaches a consumer.
package export
