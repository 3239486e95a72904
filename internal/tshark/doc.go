// Package tshark runs tshark with the distcache dissector
// (contrib/wireshark/distcache.lua) over a capture and reads back what it
// showed: each message PDU with its fields, the transactions its
// request/response links make, and the protocol rules it saw broken. It
// also turns snoopd's events into the same transactions and compares two
// lists of them, whatever their source, so tests hold the dissector (and
// any other reader of captures) to what snoopd reported. Capture writes
// pcapng files of TCP streams segment by segment, so a test decides where
// messages are cut.
//
// tshark prints its tree as PDML (-T pdml), which keeps each distcache PDU
// of a packet apart; -T fields would merge the fields of two messages in
// one segment into one row.
package tshark
