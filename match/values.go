package match

import (
	"fmt"
	"strconv"
	"strings"

	celast "cel.dev/cel-go/common/ast"
	"cel.dev/cel-go/common/operators"

	"github.com/snoopd/snoopd/vocab"
)

// A variable whose values are a closed set of names (kind, op, result)
// compared with a constant that is none of them would match nothing, and
// say nothing: op == "GET" reads right and finds no event, since names are
// lower case. So such a comparison is refused when the expression is
// checked, naming the values the variable takes, as --op refuses a name it
// does not know. Names stay case-sensitive, as everywhere else in CEL, so
// that an expression means the same in snoopd and in any other CEL tool
// run over the exported JSON.

// enumValue is one value an enumerated variable takes, and when.
type enumValue struct{ name, when string }

// enumValues lists, for each enumerated variable, every value it takes.
var enumValues = func() map[string][]enumValue {
	var kinds, ops, results []enumValue
	for _, k := range vocab.Kinds() {
		kinds = append(kinds, enumValue{name: k.String()})
	}
	for _, op := range vocab.OpNames() {
		ops = append(ops, enumValue{name: op})
	}
	ops = append(ops,
		enumValue{"-", "a transaction whose operation the protocol does not define"},
		enumValue{"", "events that are not transactions"})
	for _, r := range vocab.ResultNames() {
		results = append(results, enumValue{name: r})
	}
	results = append(results, enumValue{"", "events that are not transactions"})
	return map[string][]enumValue{"kind": kinds, "op": ops, "result": results}
}()

// describeValues names a variable's values for an error or help text.
func describeValues(vals []enumValue) string {
	var out []string
	for _, v := range vals {
		s := strconv.Quote(v.name)
		if v.when != "" {
			s += " (" + v.when + ")"
		}
		out = append(out, s)
	}
	return vocab.List(out)
}

// checkValues refuses a comparison of an enumerated variable with a
// constant it never takes: v == "c", "c" == v, v != "c" and v in ["c",
// ...].
func checkValues(a *celast.AST) error {
	root := celast.NavigateAST(a)
	for _, fn := range []string{operators.Equals, operators.NotEquals, operators.In} {
		for _, call := range celast.MatchDescendants(root, celast.FunctionMatcher(fn)) {
			args := call.AsCall().Args()
			if len(args) != 2 {
				continue
			}
			pairs := [][2]celast.Expr{{args[0], args[1]}}
			if fn != operators.In {
				pairs = append(pairs, [2]celast.Expr{args[1], args[0]})
			}
			for _, p := range pairs {
				if err := checkComparison(a, fn, p[0], p[1]); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// checkComparison checks variable v against the constant (or, for in,
// the list of constants) c.
func checkComparison(a *celast.AST, fn string, v, c celast.Expr) error {
	if v.Kind() != celast.IdentKind {
		return nil
	}
	name := v.AsIdent()
	vals, ok := enumValues[name]
	if !ok {
		return nil
	}
	consts := []celast.Expr{c}
	if fn == operators.In {
		if c.Kind() != celast.ListKind {
			return nil
		}
		consts = c.AsList().Elements()
	}
	for _, e := range consts {
		s, ok := literalString(e)
		if !ok || isValue(vals, s) {
			continue
		}
		hint := ""
		if near := nearValue(name, vals, s); near != "" {
			hint = fmt.Sprintf(" (did you mean %q?)", near)
		}
		return fmt.Errorf("%s: %s is never %q%s, so the comparison is %s for every event; %s takes %s",
			position(a, e.ID()), name, s, hint, never(fn), name, describeValues(vals))
	}
	return nil
}

func isValue(vals []enumValue, s string) bool {
	for _, v := range vals {
		if v.name == s {
			return true
		}
	}
	return false
}

// nearValue returns the value s names in another spelling: another case,
// the API's enum names (OP_GET, EVENT_KIND_CONN_OPENED) or, for kind,
// the short names --events takes (tx, opened).
func nearValue(name string, vals []enumValue, s string) string {
	if name == "kind" {
		for _, k := range vocab.Kinds() {
			if strings.EqualFold(k.Short(), s) {
				return k.String()
			}
		}
	}
	t := strings.ReplaceAll(strings.ToLower(s), "_", "-")
	for _, prefix := range []string{"op-", "event-kind-", "kind-", "result-"} {
		t = strings.TrimPrefix(t, prefix)
	}
	for _, v := range vals {
		if v.name != "" && (strings.EqualFold(v.name, s) || v.name == t) {
			return v.name
		}
	}
	return ""
}

func never(fn string) string {
	if fn == operators.NotEquals {
		return "true"
	}
	return "false"
}
