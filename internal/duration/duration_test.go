package duration

import (
	"errors"
	"flag"
	"io"
	"testing"
	"time"
)

func TestParseWantsAUnit(t *testing.T) {
	for in, want := range map[string]time.Duration{"500ms": 500 * time.Millisecond, "2s": 2 * time.Second, "1m30s": 90 * time.Second, "0": 0, " 5m ": 5 * time.Minute} {
		if got, err := Parse(in); err != nil || got != want {
			t.Errorf("Parse(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"5", "2.5", "soon", "", "5 s"} {
		if _, err := Parse(in); err == nil || err.Error() != Want {
			t.Errorf("Parse(%q) error = %v; want %q", in, err, Want)
		}
	}
}

func TestParseSecondsTakesBareNumbersAsSeconds(t *testing.T) {
	for in, want := range map[string]time.Duration{"2": 2 * time.Second, "0.5": 500 * time.Millisecond, "250ms": 250 * time.Millisecond, "0": 0} {
		if got, err := ParseSeconds(in); err != nil || got != want {
			t.Errorf("ParseSeconds(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"soon", "1e400", "NaN", "Inf", "0x10", "1e30"} {
		if _, err := ParseSeconds(in); err == nil || err.Error() != WantSeconds {
			t.Errorf("ParseSeconds(%q) error = %v; want %q", in, err, WantSeconds)
		}
	}
}

func TestVarAndExplainGiveSnoopctlsMessage(t *testing.T) {
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var d time.Duration
	Var(fs, &d, "shutdown-timeout", 5*time.Second, "")
	if d != 5*time.Second {
		t.Fatalf("default = %v", d)
	}
	err := Explain(fs.Parse([]string{"--shutdown-timeout", "5"}))
	want := `--shutdown-timeout "5": ` + Want
	if err == nil || err.Error() != want {
		t.Fatalf("error = %v; want %s", err, want)
	}
	if err := fs.Parse([]string{"--shutdown-timeout", "1m"}); err != nil || d != time.Minute {
		t.Fatalf("1m: %v, %v", d, err)
	}
	other := errors.New("flag provided but not defined: -x")
	if Explain(other) != other {
		t.Fatal("Explain changed an error that is not about a value")
	}
}
