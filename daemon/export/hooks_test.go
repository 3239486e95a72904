package export

import "time"

// SetAckTimeout sets how long a publish waits for its acknowledgement, for
// exporters started from now on, and returns what restores it: a test can
// then see timeouts come, or make sure they come after Close, without
// waiting the default's seconds.
func SetAckTimeout(d time.Duration) (restore func()) {
	old := ackTimeout
	ackTimeout = d
	return func() { ackTimeout = old }
}
