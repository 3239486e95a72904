//go:build !linux && !darwin

package fdlimit

import "errors"

// Raise is not supported here: it returns an error and no limit, so the
// data path is not bounded.
func Raise() (was, now uint64, err error) {
	return 0, 0, errors.New("open-file limit: not supported on this system")
}
