package proxy

import (
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/snoopd/snoopd/distcache"
)

// Fault specs as callers declare them: types, directions, fields, and
// the checks that turn a spec into the one the proxy runs, with its
// defaults filled in.

// FaultType is what a fault does to a message it applies to.
type FaultType uint8

// Fault types. The README has each one's exact effect on the bytes.
const (
	FaultLatency   FaultType = iota + 1 // hold the message for Delay ± Jitter
	FaultMiss                           // replace the answer to a GET with a miss
	FaultError                          // replace the answer with a status byte
	FaultDrop                           // close the client connection instead of forwarding
	FaultStall                          // stop forwarding both ways for Delay
	FaultReset                          // as FaultDrop, with a TCP reset
	FaultBandwidth                      // pace the message at Rate bytes/s
	FaultCorrupt                        // damage one header field of the answer
	numFaultTypes
)

var faultTypeNames = [numFaultTypes]string{"", "latency", "miss", "error", "drop", "stall", "reset", "bandwidth", "corrupt"}

func (t FaultType) String() string {
	if t > 0 && t < numFaultTypes {
		return faultTypeNames[t]
	}
	return fmt.Sprintf("fault-type(%d)", uint8(t))
}

// ParseFaultType parses a type name ("latency", "miss", ...).
func ParseFaultType(s string) (FaultType, error) {
	for i, n := range faultTypeNames {
		if i > 0 && n == s {
			return FaultType(i), nil
		}
	}
	return 0, fmt.Errorf("unknown fault type %q (want latency, miss, error, drop, stall, reset, bandwidth or corrupt)", s)
}

// FaultDirection is which messages a fault is decided on.
type FaultDirection uint8

// Fault directions; the zero value is the type's default.
const (
	FaultRequests  FaultDirection = 1
	FaultResponses FaultDirection = 2
	FaultBoth      FaultDirection = 3
)

func (d FaultDirection) String() string {
	switch d {
	case FaultRequests:
		return "request"
	case FaultResponses:
		return "response"
	case FaultBoth:
		return "both"
	}
	return "default"
}

// HeaderField names the frame header field a corrupt fault damages.
type HeaderField uint8

// Header fields and what corrupt writes into them.
const (
	FieldVersion    HeaderField = iota + 1 // proto_level 0x00100000: a version no peer speaks
	FieldIsResponse                        // is_response 0: a request travelling to the client
	FieldRequestUID                        // request_uid with every bit flipped
	FieldOp                                // the next operation (GET becomes REMOVE, HAVE becomes ADD)
	FieldComplete                          // complete 2: neither 0 nor 1
	FieldDataLen                           // data_len 0xffff: above 2048
	numHeaderFields
)

var headerFieldNames = [numHeaderFields]string{"", "version", "is_response", "request_uid", "op", "complete", "data_len"}

func (f HeaderField) String() string {
	if f > 0 && f < numHeaderFields {
		return headerFieldNames[f]
	}
	return fmt.Sprintf("field(%d)", uint8(f))
}

// ParseHeaderField parses a field name ("version", "request_uid", ...).
func ParseHeaderField(s string) (HeaderField, error) {
	for i, n := range headerFieldNames {
		if i > 0 && n == s {
			return HeaderField(i), nil
		}
	}
	return 0, fmt.Errorf("unknown header field %q (want version, is_response, request_uid, op, complete or data_len)", s)
}

// FaultSpec declares one fault.
type FaultSpec struct {
	Name      string
	Type      FaultType
	Ops       []distcache.Op // empty: all
	Direction FaultDirection // 0: the type's default
	Filter    string         // a CEL expression of package match; "" matches all
	// Probability is the chance, 0 to 1, that a matching message gets
	// the fault; Seed seeds the fault's random sequence.
	Probability float64
	Seed        uint64
	// Budget, if above 0, limits the fault to its first Budget matching
	// messages; Duration, if above 0, ends it that long after it was
	// installed, or at Ends if that is set: the caller's fixed end (the
	// daemon keeps a declared fault's end across restarts), which may
	// have passed already, leaving the fault spent from the start.
	Budget   int64
	Duration time.Duration
	Ends     time.Time
	// Delay is latency's hold and stall's pause; Jitter spreads latency's
	// delay over Delay ± Jitter.
	Delay, Jitter time.Duration
	// Status is error's answer.
	Status distcache.Status
	// Rate is bandwidth's bytes per second.
	Rate int64
	// Field is the header field corrupt damages; Acknowledged must be set
	// for a corrupt fault.
	Field        HeaderField
	Acknowledged bool
}

// FaultSpecError is a fault spec that cannot be used, by index and field.
type FaultSpecError struct {
	Index  int
	Field  string
	Reason string
}

func (e *FaultSpecError) Error() string {
	return fmt.Sprintf("faults[%d].%s: %s", e.Index, e.Field, e.Reason)
}

// Limits on fault parameters: beyond them a value is more likely a unit
// mistake than a wish.
const (
	MaxFaultDelay = time.Hour
	MaxFaults     = 64
)

// defaultDirection is the direction a type is decided on when none is
// given: a drop, reset or stall acts before the request goes on, the
// others on the answer.
func (t FaultType) defaultDirection() FaultDirection {
	switch t {
	case FaultDrop, FaultReset, FaultStall:
		return FaultRequests
	}
	return FaultResponses
}

// normalized checks s and returns it with its defaults filled in.
func (s FaultSpec) normalized(i int) (FaultSpec, error) {
	bad := func(field, format string, args ...any) (FaultSpec, error) {
		return FaultSpec{}, &FaultSpecError{Index: i, Field: field, Reason: fmt.Sprintf(format, args...)}
	}
	if err := ValidateName(s.Name); err != nil {
		return bad("name", "%q: 1 to 64 letters, digits, '-', '_' or '.', starting with a letter or digit", s.Name)
	}
	if s.Type == 0 || s.Type >= numFaultTypes {
		return bad("type", "missing or unknown (want latency, miss, error, drop, stall, reset, bandwidth or corrupt)")
	}
	for j, op := range s.Ops {
		if !op.Valid() {
			return bad(fmt.Sprintf("ops[%d]", j), "unknown operation %d", op)
		}
	}
	if s.Direction == 0 {
		s.Direction = s.Type.defaultDirection()
	}
	if s.Direction > FaultBoth {
		return bad("direction", "unknown direction %d", s.Direction)
	}
	if math.IsNaN(s.Probability) || s.Probability < 0 || s.Probability > 1 {
		return bad("probability", "%v: want 0 to 1", s.Probability)
	}
	if s.Budget < 0 {
		return bad("budget", "must not be negative")
	}
	if s.Duration < 0 {
		return bad("duration", "must not be negative")
	}
	if !s.Ends.IsZero() {
		// One form for one instant (no monotonic reading, one
		// location), so that an unchanged spec compares equal.
		s.Ends = time.Unix(0, s.Ends.UnixNano()).UTC()
	}
	if s.Delay < 0 || s.Delay > MaxFaultDelay || s.Jitter < 0 || s.Jitter > MaxFaultDelay {
		return bad("delay", "delay and jitter: want 0 to %v", MaxFaultDelay)
	}
	// onlyOps limits the fault to op; why says why, in the words the
	// fault was declared with.
	onlyOps := func(op distcache.Op, why string) (FaultSpec, error) {
		for _, o := range s.Ops {
			if o != op {
				return bad("ops", "%s answers %s requests only, not %s", why, opWord(op), opWord(o))
			}
		}
		s.Ops = []distcache.Op{op}
		return s, nil
	}
	switch s.Type {
	case FaultLatency:
		if s.Delay == 0 && s.Jitter == 0 {
			return bad("delay", "a latency fault needs a delay")
		}
	case FaultStall:
		if s.Delay == 0 {
			return bad("delay", "a stall fault needs a delay")
		}
	case FaultBandwidth:
		if s.Rate <= 0 {
			return bad("rate", "a bandwidth fault needs a rate in bytes per second")
		}
	case FaultDrop, FaultReset:
		if s.Direction == FaultBoth {
			return bad("direction", "%s closes the connection either before the request goes to the server (request) or after its answer came back (response), not both", aFault(s.Type))
		}
	case FaultMiss, FaultError, FaultCorrupt:
		if s.Direction != FaultResponses {
			return bad("direction", "%s changes the server's answers, so its direction is response, not %s", aFault(s.Type), s.Direction)
		}
	}
	switch s.Type {
	case FaultMiss:
		s.Status = distcache.StatusNotOK
		return onlyOps(distcache.OpGet, "a miss fault")
	case FaultError:
		if !s.Status.Known() || s.Status == distcache.StatusOK {
			return bad("status", "%s is not an error status (want notok, disconnected, or for add: corrupt, exists, timeout-range, id-range, data-range)", s.Status)
		}
		if s.Status >= distcache.StatusAddCorrupt {
			return onlyOps(distcache.OpAdd, fmt.Sprintf("an error fault with status %s", s.Status))
		}
	case FaultCorrupt:
		if !s.Acknowledged {
			return bad("acknowledge_corruption", "a corrupt fault sends clients frames the protocol forbids; set acknowledge_corruption (snoopctl: --i-mean-it)")
		}
		if s.Field == 0 || s.Field >= numHeaderFields {
			return bad("field", "missing or unknown (want version, is_response, request_uid, op, complete or data_len)")
		}
	}
	return s, nil
}

// aFault is "a latency fault", "an error fault": the type with its
// article, for messages.
func aFault(t FaultType) string {
	if strings.ContainsRune("aeiou", rune(t.String()[0])) {
		return "an " + t.String() + " fault"
	}
	return "a " + t.String() + " fault"
}

// opWord is an operation as snoopctl's --op and the API's filters write
// it: get, add, remove, have.
func opWord(op distcache.Op) string { return strings.ToLower(op.String()) }

// ParseStatus parses a status name as distcache.Status.String writes it,
// with an error naming the choices for a name the protocol does not
// define.
func ParseStatus(s string) (distcache.Status, error) {
	if st, ok := distcache.ParseStatus(s); ok {
		return st, nil
	}
	return 0, fmt.Errorf("unknown status %q (want notok, disconnected, corrupt, exists, timeout-range, id-range or data-range)", s)
}

// ValidateFaults checks a proxy's fault list without installing it.
func ValidateFaults(specs []FaultSpec) error {
	_, err := NormalizeFaults(specs)
	return err
}

// NormalizeFaults checks a fault list and returns it with every default
// filled in (direction, the ops a miss or ADD error implies), as the
// proxy runs it. An error is a *FaultSpecError.
func NormalizeFaults(specs []FaultSpec) ([]FaultSpec, error) {
	fs, err := compileFaults(specs, nil, time.Now())
	if err != nil || fs == nil {
		return nil, err
	}
	out := make([]FaultSpec, len(fs.faults))
	for i, f := range fs.faults {
		out[i] = f.spec
	}
	return out, nil
}
