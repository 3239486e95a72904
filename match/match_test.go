package match

import (
	"strings"
	"testing"
	"time"

	"github.com/snoopd/snoopd/distcache"
	"github.com/snoopd/snoopd/vocab"
)

func tx(proxy string, op distcache.Op, r vocab.Result, lat time.Duration, id string) *View {
	return &View{Proxy: proxy, Conn: 7, Kind: vocab.KindTransaction, Op: op, Result: r, Latency: lat, SessionID: []byte(id),
		ReqBytes: 10, RespBytes: 20, Time: time.Unix(1700000000, 0)}
}

func TestFlagFilters(t *testing.T) {
	get := tx("a", distcache.OpGet, vocab.ResultMiss, 3*time.Millisecond, "abc")
	add := tx("b", distcache.OpAdd, vocab.ResultIDRange, time.Millisecond, "xyz")
	opened := &View{Proxy: "a", Conn: 7, Kind: vocab.KindConnOpened}
	refused := &View{Proxy: "a", Kind: vocab.KindConnRefused}
	cases := []struct {
		name string
		spec Spec
		want []bool // get, add, opened, refused
	}{
		{"everything", Spec{}, []bool{true, true, true, true}},
		{"proxy", Spec{Proxies: []string{"a"}}, []bool{true, false, true, true}},
		{"kind", Spec{Kinds: []vocab.Kind{vocab.KindConnOpened, vocab.KindConnRefused}}, []bool{false, false, true, true}},
		{"op passes only transactions", Spec{Ops: []distcache.Op{distcache.OpGet}}, []bool{true, false, false, false}},
		{"result", Spec{Results: []vocab.Result{vocab.ResultIDRange, vocab.ResultHit}}, []bool{false, true, false, false}},
		{"session prefix", Spec{SessionPrefix: []byte("ab")}, []bool{true, false, false, false}},
		{"min latency", Spec{MinLatency: 2 * time.Millisecond}, []bool{true, false, false, false}},
		{"conn", Spec{Conn: 7}, []bool{true, true, true, false}},
		{"errors only", Spec{ErrorsOnly: true}, []bool{false, true, false, true}},
		{"and of fields", Spec{Proxies: []string{"a"}, Ops: []distcache.Op{distcache.OpAdd}}, []bool{false, false, false, false}},
		{"expression", Spec{Expr: `op == "get" && result == "miss" && latency > duration("2ms")`}, []bool{true, false, false, false}},
		{"expression on kinds", Spec{Expr: `kind == "conn-opened" || error`}, []bool{false, true, true, true}},
		{"expression with flags", Spec{Proxies: []string{"b"}, Expr: `req_bytes < resp_bytes && conn == 7u`}, []bool{false, true, false, false}},
		{"expression on bytes and time", Spec{Expr: `size(session_id) == 3 && session_id == b"abc" && time > timestamp("2023-01-01T00:00:00Z")`}, []bool{true, false, false, false}},
	}
	for _, c := range cases {
		m, err := Compile(c.spec)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		for i, v := range []*View{get, add, opened, refused} {
			if got := m.Match(v); got != c.want[i] {
				t.Errorf("%s: event %d: match %v, want %v", c.name, i, got, c.want[i])
			}
		}
	}
}

func TestBadExpressions(t *testing.T) {
	cases := []struct{ expr, want string }{
		{`op == `, "at 1:"},
		{`op == 1`, "no matching overload"},
		{`latency`, "not a bool"},
		{`nosuch == "x"`, "undeclared reference to 'nosuch'"},
		{strings.Repeat("true && ", 600) + "true", "at most 4096"},
	}
	for _, c := range cases {
		_, err := Compile(Spec{Expr: c.expr})
		var fe *FieldError
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%.30q: error %v, want it to mention %q", c.expr, err, c.want)
			continue
		}
		if fe, _ = err.(*FieldError); fe == nil || fe.Field != "filter" || strings.Contains(fe.Reason, "\n") {
			t.Errorf("%.30q: %#v, want a one-line FieldError on filter", c.expr, err)
		}
	}
}

func TestSpecChecks(t *testing.T) {
	for _, s := range []Spec{
		{Kinds: []vocab.Kind{0}},
		{Ops: []distcache.Op{distcache.NumOps}},
		{Results: []vocab.Result{vocab.NumResults}},
		{SessionPrefix: make([]byte, 65)},
		{MinLatency: -1},
	} {
		if _, err := Compile(s); err == nil {
			t.Errorf("%+v accepted", s)
		}
	}
}

func BenchmarkMatchFlags(b *testing.B) {
	m, _ := Compile(Spec{Ops: []distcache.Op{distcache.OpGet}, Results: []vocab.Result{vocab.ResultMiss}, MinLatency: time.Millisecond})
	v := tx("a", distcache.OpGet, vocab.ResultMiss, 3*time.Millisecond, "abc")
	b.ReportAllocs()
	for b.Loop() {
		m.Match(v)
	}
}

func BenchmarkMatchCEL(b *testing.B) {
	m, _ := Compile(Spec{Expr: `op == "get" && result == "miss" && latency > duration("2ms")`})
	v := tx("a", distcache.OpGet, vocab.ResultMiss, 3*time.Millisecond, "abc")
	b.ReportAllocs()
	for b.Loop() {
		m.Match(v)
	}
}
