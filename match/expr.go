package match

import (
	"errors"
	"fmt"
	"regexp/syntax"
	"slices"
	"strings"

	"cel.dev/cel-go/cel"
	celast "cel.dev/cel-go/common/ast"
	"cel.dev/cel-go/common/cost"
	"cel.dev/cel-go/common/overloads"
	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/common/types/ref"
	"cel.dev/cel-go/interpreter"

	"github.com/snoopd/snoopd/distcache"
	"github.com/snoopd/snoopd/vocab"
)

// Variable describes one name an expression can use.
type Variable struct {
	Name, Type, Help string
}

// Variables lists the names a filter expression can use, for help text.
var Variables = []Variable{
	{"proxy", "string", "the proxy's name"},
	{"daemon", "string", "the daemon's name (fleet views; empty otherwise)"},
	{"conn", "uint", "the connection id"},
	{"kind", "string", "the event's kind: " + describeValues(enumValues["kind"])},
	{"op", "string", "the operation: " + describeValues(enumValues["op"])},
	{"result", "string", "the transaction's result: " + describeValues(enumValues["result"])},
	{"session_id", "bytes", "the session id"},
	{"latency", "duration", "what the client waited, request to response, a fault's hold included (0 for an unanswered request or an orphan response)"},
	{"server_latency", "duration", "what the server took: latency without faults' holds (0 when latency is)"},
	{"req_bytes", "int", "payload bytes of the request"},
	{"resp_bytes", "int", "payload bytes of the response"},
	{"time", "timestamp", "when the event happened"},
	{"error", "bool", "whether the event is an error (as --errors)"},
	{"fault", "string", `the fault that touched the transaction ("" if none)`},
}

// Limits on an expression: its length, and its cost, estimated before it
// runs (so nobody's filter can burn the daemon's CPU) and, as a second
// guard, counted while it runs. The cost is in CEL's units, about one
// step of its interpreter each, with two corrections so that a unit stays
// about as long whatever the expression does (docs/benchmarks.md, "What a
// filter may cost"): a matches call costs one unit per regexBytesPerUnit
// input bytes times instructions of its compiled pattern, since Go's
// regexp is linear in both; a conversion that parses a string
// (timestamp(s), int(s), ...) costs parseCost and a unit per
// parseBytesPerUnit bytes, since its failure formats an error.
const (
	MaxExprLen = 4096
	// maxVariableSize bounds a string or bytes value whose length nothing
	// else bounds (the daemon's name, a concatenation's operands).
	maxVariableSize   = 256
	regexBytesPerUnit = 8
	parseCost         = 8
	parseBytesPerUnit = 8
)

// Cost limits per event, chosen by measurement (docs/benchmarks.md, "What
// a filter may cost"). A watch filter runs beside the proxies; the most
// expensive one accepted takes some 50 µs an event. A fault filter runs
// inside a proxy's event loop for every transaction, where every other
// connection of the loop waits on it; the most expensive one accepted
// takes a few µs.
const (
	MaxWatchCost = 400
	MaxFaultCost = 50
)

// limits is what a filter of one kind may cost, and how its refusal names
// the filter.
type limits struct {
	what string // "a filter", "a fault filter"
	cost uint64
}

var (
	watchLimits = limits{what: "a filter", cost: MaxWatchCost}
	faultLimits = limits{what: "a fault filter", cost: MaxFaultCost}
)

// variableSizes bounds the strings and bytes a View holds, by variable:
// names are checked to 64 bytes (proxy.ValidateName), session ids are at
// most distcache.MaxSessionIDLen, and the enumerations are their longest
// name. A View built from elsewhere (a capture file) may hold longer ones;
// the cost counted at run time then stops the expression.
var variableSizes = func() map[string]uint64 {
	longest := func(names []string) uint64 {
		n := 0
		for _, s := range names {
			n = max(n, len(s))
		}
		return uint64(n)
	}
	var kinds, ops []string
	for _, k := range vocab.Kinds() {
		kinds = append(kinds, k.String())
	}
	for op := range distcache.Op(distcache.NumOps) {
		ops = append(ops, vocab.OpName(op))
	}
	return map[string]uint64{
		"proxy":      64,
		"fault":      64,
		"daemon":     maxVariableSize,
		"session_id": distcache.MaxSessionIDLen,
		"kind":       longest(kinds),
		"op":         longest(ops),
		"result":     longest(vocab.ResultNames()),
	}
}()

var celEnv = func() *cel.Env {
	opts := []cel.EnvOption{}
	for _, v := range Variables {
		var t *cel.Type
		switch v.Type {
		case "string":
			t = cel.StringType
		case "uint":
			t = cel.UintType
		case "int":
			t = cel.IntType
		case "bytes":
			t = cel.BytesType
		case "duration":
			t = cel.DurationType
		case "timestamp":
			t = cel.TimestampType
		case "bool":
			t = cel.BoolType
		}
		opts = append(opts, cel.Variable(v.Name, t))
	}
	env, err := cel.NewEnv(opts...)
	if err != nil {
		panic(fmt.Sprintf("match: CEL environment: %v", err))
	}
	return env
}()

type program struct {
	prg cel.Program
}

// compileExpr type-checks expr (it must be a bool), checks its regular
// expressions and bounds its cost by l.
func compileExpr(expr string, l limits) (*program, error) {
	if len(expr) > MaxExprLen {
		return nil, fmt.Errorf("expression is %d bytes long; at most %d", len(expr), MaxExprLen)
	}
	ast, iss := celEnv.Compile(expr)
	if iss != nil && iss.Err() != nil {
		return nil, errors.New(oneLine(iss.Err().Error()))
	}
	if !ast.OutputType().IsExactType(cel.BoolType) {
		return nil, fmt.Errorf("expression is a %s, not a bool (for example: op == \"get\" && result == \"miss\")", ast.OutputType())
	}
	res, err := checkPatterns(ast.NativeRep())
	if err != nil {
		return nil, err
	}
	if err := checkValues(ast.NativeRep()); err != nil {
		return nil, err
	}
	est, err := celEnv.EstimateCost(ast, sizes{res})
	if err != nil {
		return nil, fmt.Errorf("estimating the cost: %w", err)
	}
	if est.Max > l.cost {
		return nil, fmt.Errorf("expression may cost up to %d per event; %s may cost at most %d; simplify it (a long or repeated pattern of matches costs most)", est.Max, l.what, l.cost)
	}
	prg, err := celEnv.Program(ast, cel.EvalOptions(cel.OptOptimize), cel.CostLimit(l.cost), cel.CostTrackerOptions(res.trackers()...))
	if err != nil {
		return nil, fmt.Errorf("planning the expression: %w", err)
	}
	return &program{prg: prg}, nil
}

// patterns maps each pattern of an expression's matches calls to the
// number of instructions of its compiled program.
type patterns map[string]uint64

// checkPatterns finds the expression's matches calls (s.matches(re) and
// matches(s, re)) and compiles their patterns. A pattern must be a string
// literal: cel-go compiles a constant pattern once, when the program is
// planned, but one built at run time on every evaluation, a cost its
// estimate does not see.
func checkPatterns(a *celast.AST) (patterns, error) {
	res := patterns{}
	for _, call := range celast.MatchDescendants(celast.NavigateAST(a), celast.FunctionMatcher(overloads.Matches)) {
		c := call.AsCall()
		i := 1
		if c.IsMemberFunction() {
			i = 0
		}
		if len(c.Args()) <= i {
			continue // the checker refused it already
		}
		at := position(a, call.ID())
		pattern, ok := literalString(c.Args()[i])
		if !ok {
			return nil, fmt.Errorf("%s: the pattern of matches must be a constant string; a pattern built at run time would be compiled for every event", at)
		}
		if _, ok := res[pattern]; ok {
			continue
		}
		n, err := programSize(pattern)
		if err != nil {
			return nil, fmt.Errorf("%s: the pattern of matches: %w", at, err)
		}
		res[pattern] = n
	}
	return res, nil
}

// literalString returns e's value if e is a string literal.
func literalString(e celast.Expr) (string, bool) {
	if e.Kind() != celast.LiteralKind {
		return "", false
	}
	v, ok := e.AsLiteral().(types.String)
	return string(v), ok
}

// position names where expression id starts, as CEL's own errors do.
func position(a *celast.AST, id int64) string {
	loc := a.SourceInfo().GetStartLocation(id)
	return fmt.Sprintf("at %d:%d", loc.Line(), loc.Column()+1)
}

// programSize compiles pattern as regexp.Compile does and returns the
// number of instructions of its program, which bounds the work per input
// byte.
func programSize(pattern string) (uint64, error) {
	re, err := syntax.Parse(pattern, syntax.Perl)
	if err != nil {
		return 0, err
	}
	prog, err := syntax.Compile(re.Simplify())
	if err != nil {
		return 0, err
	}
	return uint64(len(prog.Inst)), nil
}

// matchCost is the cost of matching an input of n bytes against a
// pattern of size instructions.
func matchCost(n, size uint64) uint64 {
	return divCeil(cost.SafeMultiply(cost.SafeAdd(n, 1), size), regexBytesPerUnit)
}

// convCost is the cost of parsing a string of n bytes into a value.
func convCost(n uint64) uint64 {
	return cost.SafeAdd(parseCost, divCeil(n, parseBytesPerUnit))
}

func divCeil(a, b uint64) uint64 { return a/b + min(a%b, 1) }

// parsers are the overloads that parse a string.
var parsers = []string{overloads.StringToInt, overloads.StringToUint, overloads.StringToDouble,
	overloads.StringToBool, overloads.StringToTimestamp, overloads.StringToDuration}

// trackers count at run time what the estimate charges: a matches call by
// its input and pattern, a parse by its input.
func (p patterns) trackers() []cost.TrackerOption {
	match := func(args []ref.Val, _ ref.Val) *uint64 {
		c := uint64(1)
		if len(args) == 2 {
			in, _ := args[0].Value().(string)
			re, _ := args[1].Value().(string)
			c = matchCost(uint64(len(in)), p[re])
		}
		return &c
	}
	parse := func(args []ref.Val, _ ref.Val) *uint64 {
		c := uint64(parseCost)
		if len(args) == 1 {
			if in, ok := args[0].Value().(string); ok {
				c = convCost(uint64(len(in)))
			}
		}
		return &c
	}
	opts := []cost.TrackerOption{cost.OverloadTracker(overloads.Matches, match), cost.OverloadTracker(overloads.MatchesString, match)}
	for _, o := range parsers {
		opts = append(opts, cost.OverloadTracker(o, parse))
	}
	return opts
}

// oneLine turns CEL's multi-line report (message, source line, caret) into
// one line that still names the position.
func oneLine(s string) string {
	s = strings.TrimPrefix(s, "ERROR: ")
	s = strings.ReplaceAll(s, "<input>:", "at ")
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return s
}

func (p *program) eval(v *View) (bool, error) {
	out, _, err := p.prg.Eval(activation{v})
	if err != nil {
		return false, err
	}
	return out == types.True, nil
}

// activation resolves the expression's variables from a View without
// building a map per event.
type activation struct{ v *View }

func (a activation) ResolveName(name string) (any, bool) {
	v := a.v
	tx := v.Kind == vocab.KindTransaction
	switch name {
	case "proxy":
		return v.Proxy, true
	case "daemon":
		return v.Daemon, true
	case "conn":
		return v.Conn, true
	case "kind":
		return v.Kind.String(), true
	case "op":
		if !tx {
			return "", true
		}
		return vocab.OpName(v.Op), true
	case "result":
		if !tx {
			return "", true
		}
		return v.Result.String(), true
	case "session_id":
		return v.SessionID, true
	case "latency":
		return v.Latency, true
	case "server_latency":
		return v.ServerLatency, true
	case "req_bytes":
		return v.ReqBytes, true
	case "resp_bytes":
		return v.RespBytes, true
	case "time":
		return v.Time, true
	case "error":
		return v.IsError(), true
	case "fault":
		return v.Fault, true
	}
	return nil, false
}

func (activation) Parent() interpreter.Activation { return nil }

// sizes tells the cost estimator how long the variables can be, and what
// a matches call and a parse cost.
type sizes struct{ patterns patterns }

func (sizes) EstimateSize(n cost.AstNode) *cost.SizeEstimate {
	if p := n.Path(); len(p) == 1 {
		if max, ok := variableSizes[p[0]]; ok {
			return &cost.SizeEstimate{Min: 0, Max: max}
		}
	}
	return &cost.SizeEstimate{Min: 0, Max: maxVariableSize}
}

// inputSize is the size of a call's string argument: exact for a
// literal, derived for a concatenation, else its variable's bound.
func (s sizes) inputSize(n cost.AstNode) cost.SizeEstimate {
	if cs := n.ComputedSize(); cs != nil {
		return *cs
	}
	return *s.EstimateSize(n)
}

func (s sizes) EstimateCallCost(_, overloadID string, target *cost.AstNode, args []cost.AstNode) *cost.CallEstimate {
	var in, re cost.AstNode
	switch {
	case overloadID == overloads.MatchesString && target != nil && len(args) == 1:
		in, re = *target, args[0]
	case overloadID == overloads.Matches && len(args) == 2:
		in, re = args[0], args[1]
	case slices.Contains(parsers, overloadID) && len(args) == 1:
		if args[0].Expr().Kind() == celast.LiteralKind {
			return nil // parsed once, when the program is planned
		}
		n := s.inputSize(args[0])
		return &cost.CallEstimate{CostEstimate: cost.CostEstimate{Min: convCost(n.Min), Max: convCost(n.Max)}}
	default:
		return nil
	}
	// checkPatterns made sure every pattern is a literal it compiled.
	p, _ := literalString(re.Expr())
	size := s.patterns[p]
	n := s.inputSize(in)
	return &cost.CallEstimate{CostEstimate: cost.CostEstimate{Min: matchCost(n.Min, size), Max: matchCost(n.Max, size)}}
}
