package vocab

import (
	"slices"
	"testing"

	"github.com/snoopd/snoopd/distcache"
)

func TestResultNamesRoundTrip(t *testing.T) {
	seen := map[string]bool{}
	for _, r := range Results() {
		n := r.String()
		if n == "" || seen[n] {
			t.Fatalf("result %d: name %q empty or repeated", r, n)
		}
		seen[n] = true
		if got, ok := ParseResult(n); !ok || got != r {
			t.Fatalf("ParseResult(%q) = %v, %v", n, got, ok)
		}
		if r.Help() == "" {
			t.Fatalf("result %s has no help", n)
		}
	}
	if _, ok := ParseResult("nope"); ok {
		t.Fatal("unknown result parsed")
	}
}

// Every transaction distcache can describe gets one result: the
// proxy's own outcomes first, then a malformed response, a GET's hit or
// miss, and otherwise the status, named as the protocol names it
// (distcache.Status.String), with one name for every undefined byte.
func TestResultOfEveryTransaction(t *testing.T) {
	for op := distcache.Op(0); op < distcache.NumOps; op++ {
		for s := 0; s < 256; s++ {
			for _, hit := range []bool{false, true} {
				for _, bad := range []bool{false, true} {
					tx := distcache.Transaction{Op: op, Status: distcache.Status(s), Hit: hit, ResponseMalformed: bad}
					var want string
					switch st := distcache.Status(s); {
					case bad:
						want = "malformed"
					case hit:
						want = "hit"
					case op == distcache.OpGet && st == distcache.StatusNotOK:
						want = "miss"
					case !st.Known():
						want = "unknown-status"
					default:
						want = st.String()
					}
					if got := ResultOf(&tx, false, false).String(); got != want {
						t.Fatalf("%+v: %q, want %q", tx, got, want)
					}
					if ResultOf(&tx, true, false) != ResultUnanswered || ResultOf(&tx, false, true) != ResultOrphan {
						t.Fatalf("%+v: the proxy's own outcomes come first", tx)
					}
				}
			}
		}
	}
}

func TestErrorClasses(t *testing.T) {
	normal := map[Result]bool{ResultOK: true, ResultHit: true, ResultMiss: true, ResultNotOK: true, ResultExists: true}
	for _, r := range Results() {
		if r.IsError() == normal[r] {
			t.Errorf("%s: IsError %v", r, r.IsError())
		}
	}
	for _, k := range Kinds() {
		want := k == KindConnectFailed || k == KindConnRefused || k == KindProtocolError
		if k.IsError() != want {
			t.Errorf("%s: IsError %v", k, k.IsError())
		}
	}
}

func TestParseOp(t *testing.T) {
	for _, s := range []string{"get", "GET", "Get", "OP_GET", "op_get"} {
		if op, ok := ParseOp(s); !ok || op != distcache.OpGet {
			t.Errorf("ParseOp(%q) = %v, %v", s, op, ok)
		}
	}
	for _, s := range []string{"", "OP_", "OP_UNSPECIFIED", "fetch"} {
		if _, ok := ParseOp(s); ok {
			t.Errorf("ParseOp(%q) accepted", s)
		}
	}
	for i, n := range OpNames() {
		if OpName(distcache.Op(i)) != n {
			t.Errorf("OpName(%d) = %q", i, OpName(distcache.Op(i)))
		}
	}
}

func TestKindGroups(t *testing.T) {
	want := []string{"tx", "conn", "opened", "closed", "connect-failed", "refused", "protocol", "gap", "all"}
	got := KindGroupNames()
	if len(got) != len(want) {
		t.Fatalf("groups %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("groups %v, want %v", got, want)
		}
	}
	if ks, ok := ParseKinds("CONN"); !ok || len(ks) != 2 {
		t.Fatalf("conn: %v %v", ks, ok)
	}
	if ks, ok := ParseKinds("all"); !ok || !slices.Equal(ks, Kinds()) {
		t.Fatalf("all: %v %v", ks, ok)
	}
	if ks, ok := ParseKinds("protocol-error"); !ok || ks[0] != KindProtocolError {
		t.Fatalf("protocol-error: %v %v", ks, ok)
	}
	if List([]string{"a", "b", "c"}) != "a, b or c" {
		t.Fatal(List([]string{"a", "b", "c"}))
	}
}
