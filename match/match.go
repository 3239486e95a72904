// Package match is snoopd's one event filter. A Spec (the flag filters,
// and optionally a CEL expression) is compiled once into a Matcher, which
// is evaluated on a View: the neutral picture of one event that the daemon
// builds from the proxy's events and snoopctl builds from the API's. The
// daemon's watchers, a proxy's fault filters (CompileFault, with a lower
// cost limit), snoopctl read, and any other consumer use it, so a filter
// keeps the same events wherever it runs, by construction.
package match

import (
	"bytes"
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	"github.com/snoopd/snoopd/distcache"
	"github.com/snoopd/snoopd/vocab"
)

// Spec is a filter as asked for. Fields combine with AND, the values of
// one field with OR; any of Ops, Results, SessionPrefix or MinLatency
// passes only transactions.
type Spec struct {
	Proxies       []string
	Daemons       []string
	Kinds         []vocab.Kind
	Ops           []distcache.Op
	Results       []vocab.Result
	SessionPrefix []byte
	MinLatency    time.Duration
	// Conn keeps events of one connection; 0 keeps all.
	Conn uint64
	// ErrorsOnly keeps errors: failed connects, refused clients, protocol
	// errors, and transactions whose result is an error.
	ErrorsOnly bool
	// Expr is a CEL expression over the View's variables (see Variables).
	Expr string
	// Faults keeps transactions touched by these faults, by name; "*"
	// keeps those touched by any.
	Faults []string
}

// View is one event as the matcher sees it.
type View struct {
	Daemon string
	Proxy  string
	Conn   uint64
	Kind   vocab.Kind
	// The transaction's fields; zero for other kinds.
	Op        distcache.Op
	Result    vocab.Result
	SessionID []byte
	// Latency of an answered transaction, what its client waited; an
	// unanswered one counts as 0. ServerLatency is what the server took
	// (Latency without faults' holds).
	Latency       time.Duration
	ServerLatency time.Duration
	ReqBytes      int64
	RespBytes     int64
	Time          time.Time
	// Fault names the fault that touched the transaction ("" if none).
	Fault string
}

// IsError reports whether the event is an error in the sense of
// Spec.ErrorsOnly.
func (v *View) IsError() bool {
	if v.Kind == vocab.KindTransaction {
		return v.Result.IsError()
	}
	return v.Kind.IsError()
}

// FieldError is a Spec value that cannot be used, named by field.
type FieldError struct {
	Field  string
	Reason string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Reason }

// Matcher is a compiled Spec. It is safe for concurrent use.
type Matcher struct {
	spec    Spec
	proxies map[string]bool
	daemons map[string]bool
	kinds   [vocab.NumKinds]bool
	anyKind bool
	ops     [distcache.NumOps]bool
	anyOp   bool
	results [vocab.NumResults]bool
	anyRes  bool
	txOnly  bool
	expr    *program
	faults  map[string]bool // nil: any or none

	// evalErrors counts events an expression failed on (cost limit,
	// overflow); they do not match.
	evalErrors atomic.Int64
}

// Compile checks s and compiles it for a watch: its expression may cost
// up to MaxWatchCost per event.
func Compile(s Spec) (*Matcher, error) { return compile(s, watchLimits) }

// CompileFault checks s and compiles it for a fault, whose filter runs in
// the proxy's event loop for every transaction: its expression may cost
// up to MaxFaultCost.
func CompileFault(s Spec) (*Matcher, error) { return compile(s, faultLimits) }

func compile(s Spec, l limits) (*Matcher, error) {
	m := &Matcher{spec: s, anyKind: len(s.Kinds) == 0, anyOp: len(s.Ops) == 0, anyRes: len(s.Results) == 0}
	if len(s.Proxies) > 0 {
		m.proxies = map[string]bool{}
		for _, p := range s.Proxies {
			m.proxies[p] = true
		}
	}
	if len(s.Daemons) > 0 {
		m.daemons = map[string]bool{}
		for _, d := range s.Daemons {
			m.daemons[d] = true
		}
	}
	for i, k := range s.Kinds {
		if !k.Valid() {
			return nil, &FieldError{Field: fmt.Sprintf("kinds[%d]", i), Reason: fmt.Sprintf("unknown event kind %d", k)}
		}
		m.kinds[k] = true
	}
	for i, op := range s.Ops {
		if !op.Valid() {
			return nil, &FieldError{Field: fmt.Sprintf("ops[%d]", i), Reason: fmt.Sprintf("unknown operation %d", op)}
		}
		m.ops[op] = true
	}
	for i, r := range s.Results {
		if r >= vocab.NumResults {
			return nil, &FieldError{Field: fmt.Sprintf("results[%d]", i), Reason: fmt.Sprintf("unknown result %d", r)}
		}
		m.results[r] = true
	}
	if len(s.SessionPrefix) > distcache.MaxSessionIDLen {
		return nil, &FieldError{Field: "session_id_prefix", Reason: fmt.Sprintf("%d bytes; a session id has at most %d", len(s.SessionPrefix), distcache.MaxSessionIDLen)}
	}
	if s.MinLatency < 0 {
		return nil, &FieldError{Field: "min_latency", Reason: "must not be negative"}
	}
	for i, f := range s.Faults {
		if f == "" {
			return nil, &FieldError{Field: fmt.Sprintf("faults[%d]", i), Reason: `empty: name a fault, or "*" for any`}
		}
		if m.faults == nil {
			m.faults = map[string]bool{}
		}
		m.faults[f] = true
	}
	m.txOnly = !m.anyOp || !m.anyRes || len(s.SessionPrefix) > 0 || s.MinLatency > 0 || m.faults != nil
	if s.Expr != "" {
		p, err := compileExpr(s.Expr, l)
		if err != nil {
			return nil, &FieldError{Field: "filter", Reason: err.Error()}
		}
		m.expr = p
	}
	return m, nil
}

// Spec returns the spec m was compiled from.
func (m *Matcher) Spec() Spec { return m.spec }

// MatchesAll reports whether m keeps every event.
func (m *Matcher) MatchesAll() bool {
	return m.proxies == nil && m.daemons == nil && m.anyKind && !m.txOnly && m.spec.Conn == 0 && !m.spec.ErrorsOnly && m.expr == nil
}

// Match reports whether m keeps the event v describes.
func (m *Matcher) Match(v *View) bool {
	if m.proxies != nil && !m.proxies[v.Proxy] {
		return false
	}
	if m.daemons != nil && !m.daemons[v.Daemon] {
		return false
	}
	if !m.anyKind && (!v.Kind.Valid() || !m.kinds[v.Kind]) {
		return false
	}
	if m.spec.Conn != 0 && v.Conn != m.spec.Conn {
		return false
	}
	if m.txOnly {
		if v.Kind != vocab.KindTransaction {
			return false
		}
		if !m.anyOp && (!v.Op.Valid() || !m.ops[v.Op]) {
			return false
		}
		if !m.anyRes && (v.Result >= vocab.NumResults || !m.results[v.Result]) {
			return false
		}
		if len(m.spec.SessionPrefix) > 0 && !bytes.HasPrefix(v.SessionID, m.spec.SessionPrefix) {
			return false
		}
		if v.Latency < m.spec.MinLatency {
			return false
		}
		if m.faults != nil && (v.Fault == "" || !m.faults["*"] && !m.faults[v.Fault]) {
			return false
		}
	}
	if m.spec.ErrorsOnly && !v.IsError() {
		return false
	}
	if m.expr != nil {
		ok, err := m.expr.eval(v)
		if err != nil {
			m.evalErrors.Add(1)
			return false
		}
		return ok
	}
	return true
}

// EvalErrors returns how many events the expression failed on.
func (m *Matcher) EvalErrors() int64 { return m.evalErrors.Load() }

// TransactionsOnly reports whether only transactions can match, so a
// consumer may skip other events early.
func (m *Matcher) TransactionsOnly() bool {
	return m.txOnly || (!m.anyKind && slices.Equal(kindList(m.kinds[:]), []vocab.Kind{vocab.KindTransaction}))
}

func kindList(set []bool) []vocab.Kind {
	var out []vocab.Kind
	for k, on := range set {
		if on {
			out = append(out, vocab.Kind(k))
		}
	}
	return out
}
