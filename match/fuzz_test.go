package match

import (
	"testing"
	"time"

	"github.com/snoopd/snoopd/distcache"
	"github.com/snoopd/snoopd/vocab"
)

// Any expression either fails to compile with a one-line field error or
// compiles into a matcher that evaluates any event without panicking and
// within its cost limit.
func FuzzCompile(f *testing.F) {
	for _, s := range []string{`op == "get"`, `latency > duration("2ms") && result == "miss"`, `error`,
		`session_id == b"ab" || size(proxy) > 3`, `time > timestamp("2024-01-01T00:00:00Z")`, `[1,2,3].all(x, x > 0)`, `op ==`,
		`proxy.matches("^p[0-9]+")`, `proxy.matches(op)`, `timestamp(proxy) > time`} {
		f.Add(s, uint8(1), uint8(2), int64(1000))
	}
	f.Fuzz(func(t *testing.T, expr string, kind, op uint8, lat int64) {
		m, err := Compile(Spec{Expr: expr})
		if err != nil {
			fe, ok := err.(*FieldError)
			if !ok || fe.Field != "filter" {
				t.Fatalf("%q: error %v is not a filter field error", expr, err)
			}
			for _, c := range fe.Reason {
				if c == '\n' {
					t.Fatalf("%q: multi-line error %q", expr, fe.Reason)
				}
			}
			return
		}
		v := &View{Proxy: "p", Kind: vocab.Kind(kind % uint8(vocab.NumKinds)), Op: distcache.Op(op % uint8(distcache.NumOps)),
			Latency: time.Duration(lat), SessionID: []byte(expr), Time: time.Unix(0, lat)}
		m.Match(v)
	})
}
