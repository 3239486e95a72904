//go:build linux || darwin

package fdlimit

import (
	"fmt"
	"syscall"
)

// Raise sets the soft RLIMIT_NOFILE to the hard limit and returns the
// soft limit before and after. (The Go runtime raises it at start-up on
// some systems already; Raise makes sure, and reports what holds.) When
// the soft limit cannot be raised, the error says so and now is the limit
// that still holds.
func Raise() (was, now uint64, err error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, 0, fmt.Errorf("open-file limit: %w", err)
	}
	was = uint64(lim.Cur)
	if lim.Cur >= lim.Max {
		return was, was, nil
	}
	want := lim
	want.Cur = lim.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want); err != nil {
		return was, was, fmt.Errorf("raise the open-file limit from %d to %d: %w", lim.Cur, lim.Max, err)
	}
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return was, uint64(want.Cur), nil
	}
	return was, uint64(lim.Cur), nil
}
