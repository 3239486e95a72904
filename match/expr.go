package match

import (
	"errors"
	"fmt"
	"strings"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/common/cost"
	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/interpreter"

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
	{"kind", "string", "the event's kind: " + vocab.List(kindNames())},
	{"op", "string", `the operation: "add", "get", "remove", "have" ("" for other kinds)`},
	{"result", "string", `the transaction's result: "ok", "miss", "exists", ... ("" for other kinds)`},
	{"session_id", "bytes", "the session id"},
	{"latency", "duration", "request to response (0 if unanswered)"},
	{"req_bytes", "int", "payload bytes of the request"},
	{"resp_bytes", "int", "payload bytes of the response"},
	{"time", "timestamp", "when the event happened"},
	{"error", "bool", "whether the event is an error (as --errors)"},
	{"fault", "string", `the fault that touched the transaction ("" if none)`},
}

func kindNames() []string {
	var out []string
	for _, k := range vocab.Kinds() {
		out = append(out, fmt.Sprintf("%q", k.String()))
	}
	return out
}

// Limits on an expression: its length, its estimated cost before it runs
// (so nobody's watch can burn the daemon's CPU) and, as a second guard,
// the cost one evaluation may actually spend.
const (
	MaxExprLen      = 4096
	maxStaticCost   = 100_000
	maxRuntimeCost  = 100_000
	maxVariableSize = 256 // the longest string or bytes value a View holds
)

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

// compileExpr type-checks expr (it must be a bool) and bounds its cost.
func compileExpr(expr string) (*program, error) {
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
	est, err := celEnv.EstimateCost(ast, sizes{})
	if err != nil {
		return nil, fmt.Errorf("cost: %v", err)
	}
	if est.Max > maxStaticCost {
		return nil, fmt.Errorf("expression may cost up to %d per event, more than the limit of %d; simplify it", est.Max, maxStaticCost)
	}
	prg, err := celEnv.Program(ast, cel.EvalOptions(cel.OptOptimize), cel.CostLimit(maxRuntimeCost))
	if err != nil {
		return nil, err
	}
	return &program{prg: prg}, nil
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

// sizes tells the cost estimator how long the variables can be.
type sizes struct{}

func (sizes) EstimateSize(cost.AstNode) *cost.SizeEstimate {
	return &cost.SizeEstimate{Min: 0, Max: maxVariableSize}
}

func (sizes) EstimateCallCost(string, string, *cost.AstNode, []cost.AstNode) *cost.CallEstimate {
	return nil
}
