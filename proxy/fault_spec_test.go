package proxy

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/snoopd/snoopd/distcache"
)

// Every fault type, header field and status reads back from its name,
// and an unknown name is refused with the choices.
func TestFaultNamesParse(t *testing.T) {
	for ft := FaultType(1); ft < numFaultTypes; ft++ {
		if got, err := ParseFaultType(ft.String()); err != nil || got != ft {
			t.Errorf("ParseFaultType(%q) = %v, %v", ft, got, err)
		}
	}
	for f := HeaderField(1); f < numHeaderFields; f++ {
		if got, err := ParseHeaderField(f.String()); err != nil || got != f {
			t.Errorf("ParseHeaderField(%q) = %v, %v", f, got, err)
		}
	}
	for _, st := range distcache.Statuses() {
		if got, err := ParseStatus(st.String()); err != nil || got != st {
			t.Errorf("ParseStatus(%q) = %v, %v", st, got, err)
		}
	}
	for _, c := range []struct {
		err  error
		want string
	}{
		{second(ParseFaultType("slow")), `unknown fault type "slow" (want latency,`},
		{second(ParseHeaderField("uid")), `unknown header field "uid" (want version,`},
		{second(ParseStatus("hit")), `unknown status "hit" (want notok,`},
	} {
		if c.err == nil || !strings.HasPrefix(c.err.Error(), c.want) {
			t.Errorf("%v, want %s...", c.err, c.want)
		}
	}
}

func second[T any](_ T, err error) error { return err }

// Normalizing fills in what a spec leaves to its type: the direction, the
// one operation a miss or an ADD-only error answers, one form of the end.
func TestFaultSpecDefaults(t *testing.T) {
	ends := time.Date(2030, 1, 2, 3, 4, 5, 0, time.FixedZone("x", 3600))
	got, err := NormalizeFaults([]FaultSpec{
		{Name: "m", Type: FaultMiss},
		{Name: "d", Type: FaultDrop},
		{Name: "e", Type: FaultError, Status: distcache.StatusAddExists, Ends: ends},
	})
	if err != nil {
		t.Fatal(err)
	}
	if got[0].Direction != FaultResponses || len(got[0].Ops) != 1 || got[0].Ops[0] != distcache.OpGet || got[0].Status != distcache.StatusNotOK {
		t.Errorf("miss: %+v, want responses to GET answered notok", got[0])
	}
	if got[1].Direction != FaultRequests {
		t.Errorf("drop: direction %s, want request", got[1].Direction)
	}
	if len(got[2].Ops) != 1 || got[2].Ops[0] != distcache.OpAdd || !got[2].Ends.Equal(ends) || got[2].Ends.Location() != time.UTC {
		t.Errorf("ADD error: ops %v, ends %v; want ADD only, the same instant in UTC", got[2].Ops, got[2].Ends)
	}
	var se *FaultSpecError
	if _, err := NormalizeFaults([]FaultSpec{{Name: "m", Type: FaultMiss}, {Name: "x"}}); !errors.As(err, &se) || se.Index != 1 || se.Field != "type" {
		t.Errorf("%v, want a *FaultSpecError at faults[1].type", err)
	}
}

func TestFaultValidation(t *testing.T) {
	for _, c := range []struct {
		f    FaultSpec
		want string
	}{
		{FaultSpec{Name: "x", Type: FaultLatency, Probability: 1}, "faults[0].delay"},
		{FaultSpec{Name: "x", Type: FaultMiss, Ops: []distcache.Op{distcache.OpAdd}, Probability: 1}, "faults[0].ops"},
		{FaultSpec{Name: "x", Type: FaultError, Status: distcache.StatusAddExists, Ops: []distcache.Op{distcache.OpGet}, Probability: 1}, "faults[0].ops"},
		{FaultSpec{Name: "x", Type: FaultError, Status: distcache.StatusOK, Probability: 1}, "faults[0].status"},
		{FaultSpec{Name: "x", Type: FaultCorrupt, Field: FieldOp, Probability: 1}, "acknowledge_corruption"},
		{FaultSpec{Name: "x", Type: FaultDrop, Direction: FaultBoth, Probability: 1}, "faults[0].direction"},
		{FaultSpec{Name: "x", Type: FaultMiss, Direction: FaultRequests, Probability: 1}, "faults[0].direction"},
		{FaultSpec{Name: "x", Type: FaultBandwidth, Probability: 1}, "faults[0].rate"},
		{FaultSpec{Name: "x", Type: FaultMiss, Probability: 2}, "faults[0].probability"},
		{FaultSpec{Name: "x", Type: FaultMiss, Filter: "op ==", Probability: 1}, "faults[0].filter"},
		{FaultSpec{Name: "", Type: FaultMiss, Probability: 1}, "faults[0].name"},
	} {
		err := ValidateFaults([]FaultSpec{c.f})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want an error about %s", c.f, err, c.want)
		}
	}
	if err := ValidateFaults([]FaultSpec{{Name: "a", Type: FaultMiss}, {Name: "a", Type: FaultMiss}}); err == nil {
		t.Error("two faults of one name accepted")
	}
}
