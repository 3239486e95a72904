package endpoint

import (
	"strings"
	"testing"
)

func TestDefaultSocket(t *testing.T) {
	t.Setenv("XDG_RUNTIME_DIR", "/run/user/42")
	if got := DefaultSocket(); got != "/run/user/42/snoopd.sock" {
		t.Errorf("with XDG_RUNTIME_DIR: %s", got)
	}
	t.Setenv("XDG_RUNTIME_DIR", "")
	if got := DefaultSocket(); !strings.HasPrefix(got, "/tmp/snoopd-") || !strings.HasSuffix(got, "/snoopd.sock") {
		t.Errorf("without XDG_RUNTIME_DIR: %s", got)
	}
}

func TestParseAndTargets(t *testing.T) {
	for in, want := range map[string][2]string{
		"unix:///run/s.sock": {"unix:///run/s.sock", "unix:///run/s.sock"},
		"UNIX:/run/s.sock":   {"unix:///run/s.sock", "unix:///run/s.sock"},
		"IP:127.0.0.1:7000":  {"passthrough:///127.0.0.1:7000", "127.0.0.1:7000"},
		"localhost:7000":     {"passthrough:///localhost:7000", "localhost:7000"},
	} {
		a, err := Parse(in)
		if err != nil {
			t.Fatalf("%s: %v", in, err)
		}
		if DialTarget(a) != want[0] || Display(a) != want[1] {
			t.Errorf("%s: target %s display %s", in, DialTarget(a), Display(a))
		}
	}
	if _, err := Parse("nonsense"); err == nil || !strings.Contains(err.Error(), "control address") {
		t.Errorf("bad address: %v", err)
	}
}
