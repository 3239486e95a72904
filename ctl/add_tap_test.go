package ctl

import (
	"net"
	"strings"
	"testing"
)

// TestCompletionOffersInterfacesForTap: add --tap completes this
// machine's network interfaces, lo among them.
func TestCompletionOffersInterfacesForTap(t *testing.T) {
	_, addr := startFake(t)
	ifs, err := net.Interfaces()
	if err != nil || len(ifs) == 0 {
		t.Fatalf("no interfaces to offer: %v", err)
	}
	got := strings.Fields(complete(t, "-a", addr, "add", "x", "--tap"))
	for _, i := range ifs {
		if !strings.Contains(" "+strings.Join(got, " ")+" ", " "+i.Name+" ") {
			t.Errorf("completion of add --tap: %q, want %s among them", got, i.Name)
		}
	}
}

// TestAddTapSendsATapSpec: add --tap sends a spec with the interface,
// the server as given and the flags a tap has, and none of a proxy's
// defaults; it prints where the tap captures.
func TestAddTapSendsATapSpec(t *testing.T) {
	f, addr := startFake(t)
	r := run(t, "-a", addr, "add", "lo-tap", "--tap", "lo", "--server", "9000", "--capture-data", "--capture-limit", "4K", "--label", "team=cache")
	wantOK(t, r)
	if r.out != "tap on lo\n" {
		t.Errorf("add --tap printed %q", r.out)
	}
	f.mu.Lock()
	s := f.proxies["lo-tap"].GetSpec()
	f.mu.Unlock()
	if s.GetTapInterface() != "lo" || s.GetServer() != "9000" || s.GetListen() != "" || !s.GetCaptureData() || s.GetCaptureLimit() != 4096 ||
		s.GetLabels()["team"] != "cache" || !s.GetEnabled() || s.GetOnCorrupt() != 0 || s.SpareConnections != nil || s.GetDialTimeout() != nil {
		t.Errorf("spec sent: %v", s)
	}
}

// TestAddTapRefusesWhatATapCannotHave: --tap with --listen, or with a
// proxy's settings, and a server a capture cannot follow are usage
// errors that say why, before any call.
func TestAddTapRefusesWhatATapCannotHave(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--listen", ":0", "--server", "9000"}, "--tap with --listen: a tap listens nowhere and forwards nothing, so it has no --listen"},
		{[]string{"--server", "9000", "--max-conns", "3"}, "--tap with --max-connections"},
		{[]string{"--server", "9000", "--response-timeout", "1s"}, "--tap with --response-timeout"},
		{nil, "add --tap needs a network interface and --server ADDR (example: snoopctl add t --tap lo --server 127.0.0.1:9000)"},
		{[]string{"--server", "UNIX:/run/dc.sock"}, `--server: "UNIX:/run/dc.sock": a tap captures TCP only`},
		{[]string{"--server", "0"}, `--server: "0": port 0 is no server's port`},
		{[]string{"--server", "nonsense"}, "--server: invalid address"},
	} {
		t.Run(strings.Join(c.args, " "), func(t *testing.T) {
			r := run(t, append([]string{"-a", "127.0.0.1:1", "add", "t", "--tap", "lo"}, c.args...)...)
			wantFail(t, r, ExitUsage, c.want)
		})
	}
}
