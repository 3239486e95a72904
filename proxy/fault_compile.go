package proxy

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"github.com/snoopd/snoopd/distcache"
	"github.com/snoopd/snoopd/match"
)

// fault is a compiled FaultSpec with its state. The proxy's loops share
// it: mu orders their draws from its random sequence and their counts
// against its budget (which is exact, however many loops draw); its
// counters are read by Stats.
type fault struct {
	mu    sync.Mutex
	spec  FaultSpec
	dirs  uint8 // bit d-1 set: decided on messages of distcache.Direction d
	ops   [distcache.NumOps]bool
	anyOp bool
	m     *match.Matcher // nil: no filter
	rng   *rand.Rand
	cut   uint64 // applies when a draw is below cut (probability in 2^-64)
	until int64  // UnixNano after which the fault is spent; 0: never
	// gone is set when the fault leaves its proxy's set (removed, changed
	// or cleared): the messages it holds are released at once.
	gone atomic.Bool

	matched, applied atomic.Int64
}

// faultSet is a proxy's compiled faults, replaced whole on every change.
type faultSet struct {
	faults []*fault
	dirs   uint8 // the union of the faults' dirs
}

// compileFaults checks specs and compiles them into the set a proxy runs,
// nil for none. A fault of old whose spec is unchanged is kept as it is
// (its random sequence, budget, counters and holds); a new one's --for
// starts at now. An error is a *FaultSpecError.
func compileFaults(specs []FaultSpec, old *faultSet, now time.Time) (*faultSet, error) {
	if len(specs) == 0 {
		return nil, nil
	}
	if len(specs) > MaxFaults {
		return nil, &FaultSpecError{Index: MaxFaults, Field: "name", Reason: fmt.Sprintf("at most %d faults per proxy", MaxFaults)}
	}
	fs := &faultSet{}
	seen := map[string]bool{}
	for i, in := range specs {
		s, err := in.normalized(i)
		if err != nil {
			return nil, err
		}
		if seen[s.Name] {
			return nil, &FaultSpecError{Index: i, Field: "name", Reason: fmt.Sprintf("%q is used twice", s.Name)}
		}
		seen[s.Name] = true
		if f := old.find(s); f != nil {
			// Unchanged: it keeps its random sequence, budget and
			// counters, so adding another fault changes nothing for it.
			fs.faults = append(fs.faults, f)
			fs.dirs |= f.dirs
			continue
		}
		f := &fault{spec: s, dirs: uint8(s.Direction), anyOp: len(s.Ops) == 0}
		for _, op := range s.Ops {
			f.ops[op] = true
		}
		if s.Filter != "" {
			m, err := match.CompileFault(match.Spec{Expr: s.Filter})
			if err != nil {
				var fe *match.FieldError
				if errors.As(err, &fe) {
					err = errors.New(fe.Reason)
				}
				return nil, &FaultSpecError{Index: i, Field: "filter", Reason: err.Error()}
			}
			f.m = m
		}
		f.rng = rand.New(rand.NewPCG(s.Seed, s.Seed^0x9e3779b97f4a7c15))
		switch {
		case s.Probability >= 1:
			f.cut = math.MaxUint64
		case s.Probability > 0:
			f.cut = uint64(s.Probability * (1 << 64))
		}
		switch {
		case !s.Ends.IsZero():
			f.until = max(s.Ends.UnixNano(), 1)
		case s.Duration > 0:
			f.until = now.Add(s.Duration).UnixNano()
		}
		fs.faults = append(fs.faults, f)
		fs.dirs |= f.dirs
	}
	return fs, nil
}

// over reports whether f holds nothing any more at now: it left its
// proxy's set or its time is up. What it holds is then released.
func (f *fault) over(now int64) bool {
	return f.gone.Load() || f.until != 0 && now >= f.until
}

// releaseBy returns when what f holds must go at the latest: at, or f's
// end if that comes first.
func (f *fault) releaseBy(at int64) int64 {
	if f.until != 0 && f.until < at {
		return f.until
	}
	return at
}

// find returns the compiled fault of old with exactly spec s.
func (fs *faultSet) find(s FaultSpec) *fault {
	if fs == nil {
		return nil
	}
	for _, f := range fs.faults {
		if f.spec.Name == s.Name && reflect.DeepEqual(f.spec, s) {
			return f
		}
	}
	return nil
}

// list is the set's faults; none for a nil set.
func (fs *faultSet) list() []*fault {
	if fs == nil {
		return nil
	}
	return fs.faults
}
