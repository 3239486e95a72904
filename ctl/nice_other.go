//go:build !unix

package ctl

import "errors"

// lowerPriority is not supported here: streams run at the priority
// snoopctl was started with.
func lowerPriority(int) error { return errors.ErrUnsupported }
