// Package distcache implements the distcache session-cache wire protocol
// (version 0x11): endpoint addresses in libnal syntax, the 14-byte frame
// codec, an incremental validating Decoder, whole-message reading and
// writing, and the decoding of ADD, GET, REMOVE and HAVE payloads into
// transaction summaries.
//
// The package is pure code: it starts no goroutines and opens no sockets,
// so it can be tested and fuzzed on byte slices. The Decoder and
// PayloadScanner never allocate in steady state, because a proxy runs
// them over every byte it forwards.
//
// The reference for every rule and number here is the protocol write-up in
// the project's shared documents (distcache-protocol.md).
//
// Two packages build on it: cacheserver, an in-memory session cache server
// (dccache), and loadgen, a client and load generator (dcload).
package distcache
