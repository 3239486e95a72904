// Package stats aggregates a stream of snoop.v1 events into per-proxy,
// per-operation statistics: counts, results, GET hit ratio, latency
// percentiles, errors, and the events the stream dropped.
//
// It is fed by snoopctl stats from a live stream. A Collector belongs to
// one goroutine; it keeps a fixed-size latency histogram per proxy and
// operation, so its memory does not grow with the number of events.
package stats
