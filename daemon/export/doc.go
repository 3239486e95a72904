// Package export publishes the daemon's events to NATS, with JetStream
// keeping them, so that one snoopctl (or anything else that speaks NATS)
// can follow and replay a whole fleet of daemons.
//
// The exporter is a hub watcher like any event stream, and it never slows
// the traffic: the proxies publish into the hub as always, and the
// exporter reads the hub's shared log of encoded events through a cursor
// of its own. One goroutine takes the events in batches, writes each as
// the hub encoded it (the protobuf bytes with the daemon's name added, or
// JSON through internal/apijson), and hands it to NATS with an
// asynchronous publish whose acknowledgement is counted when it arrives.
// When NATS is slow or gone the exporter falls behind, and once it is
// behind the log's start it loses its oldest events, no other watcher's;
// those, a publish that cannot be sent and a publish that is not
// acknowledged count as dropped, so that at every moment
//
//	published + dropped + queued = matched
//
// exactly, in events (a batched message counts the events it carries;
// queued is what waits in the log for the exporter, in a batch and for an
// acknowledgement), each counted once whichever way its message ends:
// acknowledged, refused, timed out, or still due when Close gives up
// waiting. The connection reconnects by itself (forever), and the stream
// is created or checked again after every reconnect.
//
// Subjects are PREFIX.DAEMON.PROXY.KIND[.OP] (snoop.web-7.sessions.tx.get),
// so that NATS filters by daemon, proxy, kind and operation with subject
// wildcards before anything reaches a consumer.
package export
