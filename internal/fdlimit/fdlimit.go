package fdlimit

import "math"

// minReserve is the smallest reserve: enough for the control listeners,
// a few dozen concurrent control calls and event streams, the metrics
// server, writing the state file (a temporary file and its directory),
// the log and the runtime's own descriptors (epoll, pipes).
const minReserve = 64

// Reserve is how many of limit's descriptors the control plane keeps:
// max(64, limit/16), but never more than half. A sixteenth grows with
// the limit because a daemon given many descriptors tends to have many
// watchers and control clients too, while costing the data path little
// (61,440 of 65,536); at small limits the floor of 64 matters, and the
// cap of half keeps a data path at a very low limit usable at all.
func Reserve(limit uint64) uint64 {
	return min(max(minReserve, limit/16), limit/2)
}

// DataLimit is the number of descriptors the data path may hold under
// limit: limit less the reserve. An unlimited or unknown limit (0, or
// too large for an int64 count) gives 0, meaning no bound.
func DataLimit(limit uint64) int64 {
	if limit == 0 || limit > math.MaxInt64 {
		return 0
	}
	return int64(limit - Reserve(limit))
}
