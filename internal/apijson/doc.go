// Package apijson writes the snoop.v1 event messages as compact
// protojson, by hand: the JSON Lines of snoopctl's tail -o json and save,
// and the NATS exporter's --export-format json payloads.
//
// protojson builds its output through reflection (and snoopctl's then
// through a compaction pass): about ten allocations and several
// microseconds per event, most of snoopctl's CPU and most of the JSON
// export's. The encoder here appends straight into the caller's buffer
// without allocating, and what it appends is byte for byte what compact
// protojson (AppendProto) gives for the same message, with either key
// style; the tests run both over many generated messages. Anything it
// does not reproduce exactly goes through AppendProto instead, so the
// output is the same in every case.
package apijson
