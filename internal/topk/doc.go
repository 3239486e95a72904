// Package topk finds the heaviest keys of a stream in bounded memory with
// the space-saving algorithm (Metwally, Agrawal and El Abbadi, "Efficient
// Computation of Frequent and Top-k Elements in Data Streams", 2005).
//
// A Sketch keeps m counters. A key already counted adds its weight to its
// counter; a new key takes a free counter, or else the counter with the
// least count, whose key it evicts, and starts from that count (its
// error) plus its weight. With N the sum of the weights added, that
// gives, for every key at all times:
//
//   - a key's count is never below its true weight, and overestimates it
//     by at most its error, which is at most N/m;
//   - every key whose true weight exceeds N/m has a counter.
//
// So with 1,000 counters, a session seen in more than 0.1% of a stream's
// GETs is always in the sketch, with its count within 0.1% of the stream.
// Each counter carries a value of the caller's (per-key figures other than
// the count), which starts at its zero value when a key takes the
// counter: such figures cover only the time the key has held it.
package topk
