// Package loadgen is a distcache client and load generator in the manner
// of the reference dc_test: the test driver and benchmark driver for
// distcache servers and for the snoop proxy in front of them.
//
// Client is one connection, with synchronous calls (Add, Get, Remove,
// Have) and a pipelined Send/Flush/Recv form that checks every response
// answers the oldest outstanding request.
//
// Run drives a load described by a Config: a number of workers, each on a
// persistent connection (optionally pipelining) or opening a connection per
// operation; a weighted mix of ADD, GET, REMOVE and HAVE over a set of
// session ids with data of a size range; bounded by an operation count, a
// duration, or both, and optionally rate-limited. Its Report counts answers
// by operation and outcome, errors by cause, and latency percentiles from
// the project's shared log-linear histogram (internal/histogram), one per
// worker, merged at the end.
//
// With Config.Verify every answer is checked. Each worker owns a disjoint
// set of session ids and keeps a model of what the server must hold for
// them, updated in request order, the order the server applies a
// connection's requests; session data is derived from the session and a
// version number, so a GET answer is checked byte for byte without storing
// the data. A wrong status, a hit where a miss is due (or the reverse) and
// wrong data are each counted with their cause. After a failure the
// session's state is unknown and goes unchecked until the worker's next
// REMOVE of it, so one fault is reported once rather than for every later
// operation on that id.
package loadgen
