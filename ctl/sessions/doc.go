// Package sessions finds the hot sessions of a stream of snoop.v1
// events, as mctop finds memcached's hot keys: per session id, its GETs,
// their hits and misses, its ADDs and its bytes both ways, in bounded
// memory.
//
// A Counter keeps a fixed number of counters in a space-saving sketch
// (internal/topk) ranked by GETs, so its memory does not grow with the
// number of sessions: with m counters and N GETs counted, a session's GET
// count is at most N/m above the truth, and every session with more than
// N/m GETs is in it. Its other figures (hits, misses, ADDs, bytes) are
// exact from the moment the session took its counter, which is its first
// transaction of any kind unless the stream held so many sessions since
// that it was evicted and came back. It feeds snoopctl top's sessions
// view and snoopctl stats --by session.
package sessions
