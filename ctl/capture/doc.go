// Package capture writes and reads snoopctl's capture files: JSON Lines,
// one snoop.v1.WatchEventsResponse per line in protojson with the .proto
// field names (an event, or a drop notice {"dropped":"N"}), exactly what
// snoopctl tail -o json prints.
//
// The Writer only ever hands whole lines to the file, in one write per
// batch, and cuts a failed write back to the last whole line, so a capture
// stopped by Ctrl-C, a broken stream or a full disk still reads back
// line by line. It can rotate: when the file reaches the size limit it is
// renamed FILE.1 (then FILE.2, ...: a higher number is newer) and a new
// FILE is started, so reading FILE.1 FILE.2 ... FILE gives the events in
// order.
//
// The Reader takes plain or gzip-compressed files, or standard input, and
// reports a truncated last line (a capture cut short) as ErrTruncated,
// after every whole line, rather than as a failure.
package capture
