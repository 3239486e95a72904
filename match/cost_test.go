package match

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/snoopd/snoopd/distcache"
	"github.com/snoopd/snoopd/vocab"
)

func TestPatternsAreConstants(t *testing.T) {
	const runtime = "the pattern of matches must be a constant string"
	cases := []struct{ expr, want string }{
		{`proxy.matches(op + "x")`, "at 1:14: " + runtime},
		{`matches(proxy, op)`, "at 1:8: " + runtime},
		{`op == "get" &&` + "\n" + `proxy.matches("a" + "b")`, "at 2:14: " + runtime},
		{`[proxy].exists(p, p.matches(p))`, "at 1:28: " + runtime},
		{`proxy.matches("(")`, "at 1:14: the pattern of matches: error parsing regexp: missing closing ): `(`"},
		{`proxy.matches("a{1,2000}")`, "at 1:14: the pattern of matches: error parsing regexp: invalid repeat count"},
	}
	for _, c := range cases {
		for _, compile := range []func(Spec) (*Matcher, error){Compile, CompileFault} {
			_, err := compile(Spec{Expr: c.expr})
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field != "filter" || !strings.HasPrefix(fe.Reason, c.want) || strings.Contains(fe.Reason, "\n") {
				t.Errorf("%q: error %v, want a one-line filter error starting %q", c.expr, err, c.want)
			}
		}
	}
}

// The regular expression that froze the daemon as a watch filter, and
// cut a second proxy's throughput to a quarter as a fault filter, costs
// far beyond either limit now that a pattern is charged by its program.
func TestExpensivePatternsAreRefused(t *testing.T) {
	attack := strings.TrimSuffix(strings.Repeat(`proxy.matches("p{1,1000}x1") || `, 16), " || ")
	for _, c := range []struct {
		expr  string
		fault bool
		want  string
	}{
		{`proxy.matches("p{1,1000}x1")`, false, "a filter may cost at most 400"},
		{attack, false, "a filter may cost at most 400"},
		{`daemon.matches("p{1,20}x1")`, false, "a filter may cost at most 400"},
		{`string(session_id).matches("p{1,20}x1")`, true, "a fault filter may cost at most 50"},
		{`session_id == b"x" || op.matches("^(add|get|have|remove)$") || result.matches("^(ok|miss)$") || string(session_id).matches("^a")`, true, "a fault filter may cost at most 50"},
	} {
		compile := Compile
		if c.fault {
			compile = CompileFault
		}
		_, err := compile(Spec{Expr: c.expr})
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "may cost up to") {
			t.Errorf("%.60q: error %v, want it to mention %q", c.expr, err, c.want)
		}
	}
}

// Ordinary filters, those of the documentation and help texts among
// them, stay well within the limits.
func TestOrdinaryFiltersAccepted(t *testing.T) {
	for _, c := range []struct {
		expr  string
		fault bool
	}{
		{`op == "get" && result == "miss" && latency > duration("2ms")`, true},
		{`kind == "transaction" || error`, true},
		{`daemon == "NAME"`, true},
		{`daemon == "web-1" && op == "get"`, true},
		{`error || latency > duration("5ms") || result == "miss" || conn % 100u == 0u`, true},
		{`size(session_id) == 32 && session_id != b"x"`, true},
		{`string(session_id).startsWith("abc")`, true},
		{`string(session_id).matches("^ab[0-9]+")`, false},
		{`string(session_id).matches("^ab")`, true},
		{`proxy.matches("^cache-[0-9]+$")`, false},
		{`matches(proxy, "^edge-(eu|us)-[a-z0-9]+$") && op.matches("^(get|have)$")`, false},
		{`daemon.matches("^host[0-9]+")`, false},
		{`fault.matches("^lat") || result.matches("^(miss|exists)$")`, false},
		{`timestamp(daemon) > time`, false},
		{`[1,2,3].all(x, x > 0)`, false},
	} {
		if _, err := Compile(Spec{Expr: c.expr}); err != nil {
			t.Errorf("%q refused as a watch filter: %v", c.expr, err)
		}
		if _, err := CompileFault(Spec{Expr: c.expr}); c.fault && err != nil {
			t.Errorf("%q refused as a fault filter: %v", c.expr, err)
		}
	}
}

// The limit is what refuses an expression that is merely long: without
// it, this one would be accepted.
func TestCostLimitRefuses(t *testing.T) {
	fits := fill(`conn + 1u == 2u`, MaxWatchCost)
	if _, err := Compile(Spec{Expr: fits}); err != nil {
		t.Fatalf("%d bytes at the limit: %v", len(fits), err)
	}
	over := fits + ` || conn + 1u == 2u`
	_, err := Compile(Spec{Expr: over})
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("a filter may cost at most %d", MaxWatchCost)) {
		t.Fatalf("one term over the limit: %v", err)
	}
	if _, err := compileExpr(over, limits{what: "a filter", cost: 1 << 62}); err != nil {
		t.Fatalf("refused for something else than its cost: %v", err)
	}
}

// The cost counted at run time is the estimate's measure: on inputs as
// long as the estimate assumes, evaluation spends at most the estimate,
// and on a longer one (a View from a capture file) the limit stops it.
func TestRuntimeCostFollowsTheEstimate(t *testing.T) {
	expr := fill(`proxy.matches("p{1,4}x1")`, MaxWatchCost)
	m, err := Compile(Spec{Expr: expr})
	if err != nil {
		t.Fatal(err)
	}
	v := worstView()
	if m.Match(v); m.EvalErrors() != 0 {
		t.Fatalf("an input within the bounds stopped the expression")
	}
	v.Proxy = strings.Repeat("p", 1024)
	if m.Match(v); m.EvalErrors() != 1 {
		t.Fatalf("a 1024-byte proxy name: %d evaluation errors, want the cost limit to stop it", m.EvalErrors())
	}
}

// fill joins as many copies of term with || as the cost limit and the
// length limit allow.
func fill(term string, limit uint64) string {
	best := ""
	for n := 1; ; n++ {
		e := strings.TrimSuffix(strings.Repeat(term+" || ", n), " || ")
		if len(e) > MaxExprLen {
			return best
		}
		if _, err := compileExpr(e, limits{what: "a filter", cost: limit}); err != nil {
			return best
		}
		best = e
	}
}

// worstView is an event whose strings are as long as the estimate
// assumes, and made to keep every pattern below working.
func worstView() *View {
	p := strings.Repeat("p", maxVariableSize)
	return &View{Proxy: p[:64], Daemon: p, Fault: p[:64], Kind: vocab.KindTransaction, Op: distcache.OpGet, Result: vocab.ResultMiss,
		SessionID: []byte(p[:distcache.MaxSessionIDLen]), Time: time.Unix(1, 0)}
}

// expensiveTerms are the most expensive kinds of term found per unit of
// estimated cost: regular expressions that make Go's regexp do its worst
// on the View of worstView, conversions that fail, arithmetic that
// overflows, comprehensions, string building.
var expensiveTerms = []struct{ name, term string }{
	{"regexp-repeat", `proxy.matches("p{1,20}x1")`},
	{"regexp-short-repeat", `proxy.matches("p{1,4}x1")`},
	{"regexp-class", `proxy.matches("[a-z]{1,10}z9")`},
	{"regexp-plus", `proxy.matches("p+x")`},
	{"regexp-dotstar", `proxy.matches("(.*p){3}x")`},
	{"regexp-alternation", `proxy.matches("(a|b|c|d|e|f|g|h|i|j|k|l|m|n|o|p)*x")`},
	{"regexp-long-input", `daemon.matches("p+x")`},
	{"arithmetic", `conn + 1u == 2u`},
	{"overflow", `conn - 1u > 0u`},
	{"concatenation", `proxy + daemon + proxy == op`},
	{"size", `size(daemon + daemon) == 3`},
	{"contains", `(daemon + daemon).contains(daemon + "x")`},
	{"startsWith", `daemon.startsWith(daemon + "x")`},
	{"string-of-uint", `string(conn) == proxy`},
	{"string-of-bytes", `string(session_id) == daemon`},
	{"failed-timestamp", `timestamp(daemon) > time`},
	{"failed-duration", `duration(daemon) > latency`},
	{"failed-int", `int(daemon) > 1`},
	{"failed-bool", `bool(daemon)`},
	{"nested-comprehension", `[0,1,2,3,4,5].exists(x, [0,1,2,3,4,5].exists(y, x * y == 99))`},
	{"in-list", `conn in [1u,2u,3u,4u,5u,6u,7u,8u,9u,10u,11u,12u,13u,14u,15u,16u,17u,18u,19u,20u,21u,22u,23u,24u,25u,26u,27u,28u,29u,30u]`},
}

// benchmarkWorst evaluates, for each expensive term, the longest
// expression of it that the limit accepts, on the View that costs it
// most: the slowest of these is the most a filter of that kind costs an
// event.
func benchmarkWorst(b *testing.B, compile func(Spec) (*Matcher, error), limit uint64) {
	for _, c := range expensiveTerms {
		expr := fill(c.term, limit)
		if expr == "" {
			if _, err := compile(Spec{Expr: c.term}); err == nil || !strings.Contains(err.Error(), "may cost up to") {
				b.Fatalf("%s: refused for something else than its cost: %v", c.name, err)
			}
			continue // a single term is over the limit
		}
		m, err := compile(Spec{Expr: expr})
		if err != nil {
			b.Fatalf("%s: %v", c.name, err)
		}
		b.Run(c.name, func(b *testing.B) {
			v := worstView()
			for b.Loop() {
				m.Match(v)
			}
			b.ReportMetric(float64(strings.Count(expr, " || ")+1), "terms")
		})
	}
}

func BenchmarkWorstWatchFilter(b *testing.B) { benchmarkWorst(b, Compile, MaxWatchCost) }
func BenchmarkWorstFaultFilter(b *testing.B) { benchmarkWorst(b, CompileFault, MaxFaultCost) }
