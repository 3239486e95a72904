package ctl

import (
	"slices"
	"testing"

	"github.com/snoopd/snoopd/distcache"
)

// snoopctl lowers its priority for a daemon on its own machine only, once,
// and not at all with --nice 0.
func TestYieldOnlyForALocalDaemon(t *testing.T) {
	var calls []int
	y := yielder{lower: func(n int) error { calls = append(calls, n); return nil }}
	y.yield(19, false) // a daemon on another machine
	y.yield(0, true)   // --nice 0
	if len(calls) != 0 {
		t.Fatalf("lowered to %v, want not at all", calls)
	}
	y.yield(19, true)
	y.yield(7, true) // a second stream (several daemons)
	if !slices.Equal(calls, []int{19}) {
		t.Fatalf("lowered to %v, want once to 19", calls)
	}
	for addr, local := range map[string]bool{
		"UNIX:/run/snoopd.sock": true, "IP:127.0.0.1:7443": true, "[::1]:7443": true, "localhost:7443": true,
		"IP:192.0.2.7:7443": false, "[2001:db8::1]:7443": false,
	} {
		a, err := distcache.ParseConnectAddr(addr)
		if err != nil {
			t.Fatal(err)
		}
		if a.IsLoopback() != local {
			t.Errorf("%s: on this machine %v, want %v", addr, a.IsLoopback(), local)
		}
	}
}
