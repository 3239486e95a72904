//go:build linux || darwin

package fdlimit

import (
	"syscall"
	"testing"
)

// TestRaise lowers this test process's soft limit and checks that Raise
// brings it back to the hard limit and reports both.
func TestRaise(t *testing.T) {
	var orig syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &orig); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Setrlimit(syscall.RLIMIT_NOFILE, &orig) })
	if orig.Max < 128 {
		t.Fatalf("hard limit %d is too low to test with", orig.Max)
	}
	low := orig
	low.Cur = 100
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &low); err != nil {
		t.Fatal(err)
	}
	was, now, err := Raise()
	if err != nil {
		t.Fatal(err)
	}
	if was != 100 || now != uint64(orig.Max) {
		t.Errorf("Raise() = %d, %d; want 100, %d", was, now, orig.Max)
	}
	var got syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &got); err != nil {
		t.Fatal(err)
	}
	if got.Cur != orig.Max {
		t.Errorf("soft limit %d after Raise, want the hard limit %d", got.Cur, orig.Max)
	}
	// Already at the hard limit: nothing to do.
	if was, now, err := Raise(); err != nil || was != now || now != uint64(orig.Max) {
		t.Errorf("second Raise() = %d, %d, %v", was, now, err)
	}
}
