// Package pcapout writes what a proxy carried as a pcapng capture that
// Wireshark and tshark read: each proxied connection becomes a TCP stream
// between its client and its server (handshake, data segments with
// consistent sequence and acknowledgement numbers, FIN at close), each
// transaction's request and response are encoded again as valid distcache
// frames with the uid, operation, status and sizes the events give, and
// each packet carries the time the event gives.
//
// Events say what was carried, not the bytes: session ids are written as
// the events hold them (the first 64 bytes, padded with zeros beyond),
// and session data is zeros unless the events carry it (a proxy with
// --capture-data watched with --data) and the Writer is told to keep it.
// So a file written by default is safe to hand around: it holds no TLS
// master secret.
//
// A connection's packets are written when it closes (or when the Writer
// is closed, without a FIN), in time order within the connection, so
// that pipelined requests and their answers interleave as they did; the
// file is thus grouped by connection, not globally in time order.
// Protocol errors are not written: the events do not carry the broken
// bytes.
//
// Unix sockets have no IP addresses; they get stable made-up ones (see
// UnixServer and UnixClient), so that one socket path always shows as
// one server.
package pcapout
