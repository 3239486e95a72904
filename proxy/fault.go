package proxy

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/snoopd/snoopd/distcache"
	"github.com/snoopd/snoopd/match"
)

// Fault injection: a proxy may carry faults that change the traffic they
// match (hold it, replace an answer, close the connection, pace it, damage
// a header). The proxy keeps its compiled faults in an atomic pointer that
// is nil when it has none; the epoll engine loads it once per read, and
// with nil the data path is what it is without faults. Decisions are made
// on the loop that serves the message's connection, at each message's
// end, in message order, from each fault's own seeded random sequence,
// which all the proxy's loops draw from in the order they reach it: the
// same traffic in the same order gets the same choices again (clients
// that take turns fix that order; concurrent clients on several loops
// may interleave their draws differently from run to run).

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

// ErrFaultsNeedEpoll is returned when faults are given to a proxy served
// by an engine other than epoll.
var ErrFaultsNeedEpoll = errors.New("faults need the epoll engine (snoopd --engine epoll)")

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

// ParseStatus parses a status name as distcache.Status.String writes it.
func ParseStatus(s string) (distcache.Status, error) {
	for _, st := range []distcache.Status{distcache.StatusOK, distcache.StatusNotOK, distcache.StatusDisconnected,
		distcache.StatusAddCorrupt, distcache.StatusAddExists, distcache.StatusAddTimeoutRange, distcache.StatusAddIDRange, distcache.StatusAddDataRange} {
		if st.String() == s {
			return st, nil
		}
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

// SetFaults replaces the proxy's faults. It takes effect at once, on live
// connections too: each reads the set anew at its next read, and what a
// fault that left the set (removed, changed, cleared) holds is released
// at once, in order. A fault whose spec is unchanged keeps its state
// (random sequence, budget, counters, held messages). Faults need the
// epoll engine.
func (p *Proxy) SetFaults(specs []FaultSpec) error {
	if len(specs) > 0 && p.engine.Name() != EngineEpoll {
		return fmt.Errorf("proxy %q: %w", p.name, ErrFaultsNeedEpoll)
	}
	p.faultMu.Lock()
	defer p.faultMu.Unlock()
	old := p.faults.Load()
	fs, err := compileFaults(specs, old, time.Now())
	if err != nil {
		return fmt.Errorf("%w: proxy %q: %w", ErrInvalidConfig, p.name, err)
	}
	p.faults.Store(fs)
	left := false
	for _, f := range old.list() {
		if !slices.Contains(fs.list(), f) {
			f.gone.Store(true)
			left = true
		}
	}
	if left {
		// Held messages wait on their connection's timer, which may be
		// an hour away: every connection looks at its holds now.
		p.mu.Lock()
		list := p.connListLocked()
		p.mu.Unlock()
		for _, c := range list {
			if c.recheckFaults != nil {
				c.recheckFaults()
			}
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

// Faults returns the proxy's fault specs, with defaults filled in.
func (p *Proxy) Faults() []FaultSpec {
	fs := p.faults.Load()
	if fs == nil {
		return nil
	}
	out := make([]FaultSpec, len(fs.faults))
	for i, f := range fs.faults {
		out[i] = f.spec
		out[i].Ops = slices.Clone(f.spec.Ops)
	}
	return out
}

// FaultStats are one fault's counters.
type FaultStats struct {
	Name string
	// Matched counts messages its ops, direction and filter selected;
	// Applied those it was applied to.
	Matched, Applied int64
}

func (fs *faultSet) stats() []FaultStats {
	if fs == nil {
		return nil
	}
	return fs.appendStats(make([]FaultStats, 0, len(fs.faults)))
}

// appendStats appends the faults' counters to dst.
func (fs *faultSet) appendStats(dst []FaultStats) []FaultStats {
	if fs == nil {
		return dst
	}
	for _, f := range fs.faults {
		dst = append(dst, FaultStats{Name: f.spec.Name, Matched: f.matched.Load(), Applied: f.applied.Load()})
	}
	return dst
}

// decide returns the fault that applies to a message of direction dir
// whose transaction, as far as it is known, v describes; nil if none.
// Faults are tried in order; the first that matches and wins its draw
// applies. Called on any of the proxy's loops.
func (fs *faultSet) decide(dir distcache.Direction, v *match.View, now int64) *fault {
	bit := uint8(1) << (dir - 1)
	for _, f := range fs.faults {
		if f.dirs&bit == 0 || (!f.anyOp && (!v.Op.Valid() || !f.ops[v.Op])) {
			continue
		}
		if f.until != 0 && now >= f.until {
			continue
		}
		if f.spec.Budget > 0 && f.matched.Load() >= f.spec.Budget {
			continue
		}
		if f.m != nil && !f.m.Match(v) {
			continue
		}
		if f.draw() {
			return f
		}
	}
	return nil
}

// draw counts a message f matched and reports whether f applies to it:
// none once the budget is spent (checked again here, in order with the
// other loops' draws), else as its draw says.
func (f *fault) draw() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.spec.Budget > 0 && f.matched.Load() >= f.spec.Budget {
		return false
	}
	f.matched.Add(1)
	if f.cut != math.MaxUint64 && (f.cut == 0 || f.rng.Uint64() >= f.cut) {
		return false
	}
	f.applied.Add(1)
	return true
}

// delay returns how long a latency fault holds a message: Delay ± Jitter,
// uniformly, drawn from the fault's sequence; never negative.
func (f *fault) delay() time.Duration {
	d := f.spec.Delay
	if j := f.spec.Jitter; j > 0 {
		f.mu.Lock()
		d += time.Duration(f.rng.Int64N(int64(2*j)+1)) - j
		f.mu.Unlock()
	}
	return max(d, 0)
}

// answer returns the frame that replaces the server's answer for a miss
// or error fault: one complete frame whose payload is the status byte.
func (f *fault) answer(uid uint32, op distcache.Op) []byte {
	return distcache.AppendMessage(nil, true, uid, op, []byte{byte(f.spec.Status)})
}

// damage changes the first frame header of msg as a corrupt fault does.
func (f *fault) damage(msg []byte) {
	if len(msg) < distcache.HeaderSize {
		return
	}
	switch f.spec.Field {
	case FieldVersion:
		copy(msg[0:4], []byte{0x00, 0x10, 0x00, 0x00})
	case FieldIsResponse:
		msg[4] = 0
	case FieldRequestUID:
		for i := 5; i < 9; i++ {
			msg[i] = ^msg[i]
		}
	case FieldOp:
		msg[10] = (msg[10] + 1) % distcache.NumOps
	case FieldComplete:
		msg[11] = 2
	case FieldDataLen:
		msg[12], msg[13] = 0xff, 0xff
	}
}

// replaced rewrites t to what the client got from fault f: its answer's
// status, result and sizes.
func (t *Transaction) replaced(f *fault) {
	t.Status, t.Hit, t.ResponseSize, t.ResponseFrames, t.ResponseMalformed = f.spec.Status, false, 1, 1, false
	if t.Op == distcache.OpGet {
		t.DataLen, t.HasDigest, t.Digest, t.Data, t.DataTruncated = 0, false, [distcache.DigestSize]byte{}, nil, false
	}
}

// closes reports whether f closes the connection instead of forwarding
// the message it applies to.
func (f *fault) closes() bool {
	return f.spec.Type == FaultDrop || f.spec.Type == FaultReset
}

// inspectFaulty is inspect with the fault step: the verdicts on the
// chunk's messages are left in fx.ends.
func (c *conn) inspectFaulty(h *half, chunk []byte, now time.Time, fx *faultStep) forwarded {
	f := forwarded{n: len(chunk)}
	var valid int
	valid, f.err = c.decode(h, chunk, now, fx)
	if f.err != nil && c.set.opts.OnCorrupt == CloseOnCorrupt {
		f.n = valid
	}
	if isLoopEcho(f.err) {
		f.n = 0
	}
	if n := len(fx.ends); n > 0 && fx.ends[n-1].close {
		f.n = fx.ends[n-1].off
	}
	c.count(h, f, now)
	return f
}
