package proxy

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/snoopd/snoopd/distcache"
)

// Compiling a set again keeps the state of the faults whose spec did not
// change (so adding one fault changes nothing for the others) and makes
// the changed ones anew.
func TestCompileKeepsUnchangedFaults(t *testing.T) {
	now := time.Unix(1000, 0)
	a := FaultSpec{Name: "a", Type: FaultMiss, Probability: 1}
	b := FaultSpec{Name: "b", Type: FaultLatency, Delay: time.Millisecond, Probability: 1}
	old, err := compileFaults([]FaultSpec{a, b}, nil, now)
	if err != nil {
		t.Fatal(err)
	}
	b2 := b
	b2.Delay = 2 * time.Millisecond
	c := FaultSpec{Name: "c", Type: FaultDrop, Probability: 1}
	fs, err := compileFaults([]FaultSpec{a, b2, c}, old, now)
	if err != nil {
		t.Fatal(err)
	}
	if fs.faults[0] != old.faults[0] {
		t.Error("the unchanged fault was compiled anew")
	}
	if fs.faults[1] == old.faults[1] || fs.faults[1].spec.Delay != 2*time.Millisecond {
		t.Error("the changed fault kept its old compilation")
	}
	if want := uint8(FaultResponses | FaultRequests); fs.dirs != want {
		t.Errorf("set directions %b, want %b", fs.dirs, want)
	}
}

// A compiled fault applies with its probability's share of draws, ends
// at its end or its duration after installation, and a list longer than
// MaxFaults or with a name twice is refused.
func TestCompileProbabilityEndsAndLimits(t *testing.T) {
	now := time.Unix(1000, 0)
	fs, err := compileFaults([]FaultSpec{
		{Name: "never", Type: FaultMiss},
		{Name: "half", Type: FaultMiss, Probability: 0.5, Duration: time.Minute},
		{Name: "always", Type: FaultMiss, Probability: 1, Ends: time.Unix(1, 0)},
	}, nil, now)
	if err != nil {
		t.Fatal(err)
	}
	never, half, always := fs.faults[0], fs.faults[1], fs.faults[2]
	if never.cut != 0 || half.cut != 1<<63 || always.cut != math.MaxUint64 {
		t.Errorf("cuts %d %d %d", never.cut, half.cut, always.cut)
	}
	if half.until != now.Add(time.Minute).UnixNano() || always.until != time.Unix(1, 0).UnixNano() || never.until != 0 {
		t.Errorf("ends %d %d %d", never.until, half.until, always.until)
	}
	if !always.over(now.UnixNano()) || half.over(now.UnixNano()) {
		t.Error("a fault past its end is not over, or one before it is")
	}
	if got := half.releaseBy(now.Add(time.Hour).UnixNano()); got != half.until {
		t.Errorf("release by %d, want the fault's end %d", got, half.until)
	}
	many := make([]FaultSpec, MaxFaults+1)
	for i := range many {
		many[i] = FaultSpec{Name: "f" + strings.Repeat("x", i), Type: FaultMiss}
	}
	if _, err := compileFaults(many, nil, now); err == nil || !strings.Contains(err.Error(), "at most 64 faults") {
		t.Errorf("%d faults: %v, want refused", len(many), err)
	}
	if _, err := compileFaults([]FaultSpec{{Name: "a", Type: FaultMiss}, {Name: "a", Type: FaultError, Status: distcache.StatusNotOK}}, nil, now); err == nil || !strings.Contains(err.Error(), `"a" is used twice`) {
		t.Errorf("a name twice: %v, want refused", err)
	}
}
