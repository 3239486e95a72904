package match

import (
	"strconv"
	"strings"
	"testing"

	"github.com/snoopd/snoopd/distcache"
	"github.com/snoopd/snoopd/vocab"
)

// TestImpossibleValuesAreRefused holds the enumerated variables to what
// they take: a comparison with a constant none of their events can carry
// is an error naming the values, with a hint when it is a known name in
// another spelling.
func TestImpossibleValuesAreRefused(t *testing.T) {
	cases := []struct{ expr, want string }{
		{`op == "GET"`, `at 1:7: op is never "GET" (did you mean "get"?), so the comparison is false for every event; op takes "add", "get", "remove", "have"`},
		{`op == "OP_GET"`, `(did you mean "get"?)`},
		{`"GET" == op`, `at 1:1: op is never "GET"`},
		{`op != "gett"`, `op is never "gett", so the comparison is true for every event`},
		{`result == "mis"`, `result is never "mis", so`},
		{`result == "MISS"`, `(did you mean "miss"?)`},
		{`kind == "conn-open"`, `kind is never "conn-open"`},
		{`kind == "tx"`, `(did you mean "transaction"?)`},
		{`kind == "EVENT_KIND_CONN_OPENED"`, `(did you mean "conn-opened"?)`},
		{`op in ["get", "Add"]`, `at 1:15: op is never "Add" (did you mean "add"?)`},
		{`latency > duration("1ms") || (proxy == "p" && result == "HIT")`, `result is never "HIT"`},
	}
	for _, c := range cases {
		_, err := Compile(Spec{Expr: c.expr})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want it to contain %q", c.expr, err, c.want)
		}
	}
	if _, err := Compile(Spec{Expr: `op == "GET"`}); err != nil && !strings.Contains(err.Error(), `"" (events that are not transactions)`) {
		t.Errorf("the error does not name the empty value: %v", err)
	}
}

// TestEveryValueIsAccepted compares each enumerated variable with every
// value it takes, and checks that each such expression matches an event
// that carries the value: the list an error names is the truth.
func TestEveryValueIsAccepted(t *testing.T) {
	views := map[string]func(string) View{
		"kind": func(s string) View {
			for _, k := range vocab.Kinds() {
				if k.String() == s {
					return View{Kind: k}
				}
			}
			t.Fatalf("no kind %q", s)
			return View{}
		},
		"op": func(s string) View {
			switch s {
			case "":
				return View{Kind: vocab.KindConnOpened}
			case "-":
				return View{Kind: vocab.KindTransaction, Op: distcache.NumOps}
			}
			op, ok := vocab.ParseOp(s)
			if !ok {
				t.Fatalf("no op %q", s)
			}
			return View{Kind: vocab.KindTransaction, Op: op}
		},
		"result": func(s string) View {
			if s == "" {
				return View{Kind: vocab.KindConnClosed}
			}
			r, ok := vocab.ParseResult(s)
			if !ok {
				t.Fatalf("no result %q", s)
			}
			return View{Kind: vocab.KindTransaction, Result: r}
		},
	}
	if len(views) != len(enumValues) {
		t.Fatalf("enumerated variables %d, tested %d", len(enumValues), len(views))
	}
	for name, vals := range enumValues {
		for _, v := range vals {
			expr := name + " == " + strconv.Quote(v.name)
			m, err := Compile(Spec{Expr: expr})
			if err != nil {
				t.Errorf("%s: %v", expr, err)
				continue
			}
			view := views[name](v.name)
			if !m.Match(&view) {
				t.Errorf("%s does not match an event that carries it (%+v)", expr, view)
			}
		}
	}
}
