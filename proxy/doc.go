// Package proxy runs one snoop proxy: it listens on a distcache address,
// dials the server for every client, forwards the bytes of both directions
// unchanged, and decodes them on the way through into transactions and
// connection events for a caller-supplied Sink.
//
// Forwarding comes first. Each connection costs two goroutines (one per
// direction, the first also dialling the server), decoding happens on the
// bytes already read for forwarding, and publishing an event is a call the
// Sink promises not to block in. The package knows nothing of gRPC; the
// daemon maps its events and counters to the API.
package proxy
