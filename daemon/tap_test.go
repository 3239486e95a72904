package daemon

import (
	"context"
	"errors"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"

	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
)

func tapSpec(name, server string) *snoopv1.ProxySpec {
	return &snoopv1.ProxySpec{Name: name, TapInterface: "lo", Server: server}
}

// TestTapSpecRefusesWhatATapCannotHave: a tap's spec is refused by
// field when it declares a listen address, faults, a proxy's settings,
// or a server a capture cannot follow, before anything is captured.
func TestTapSpecRefusesWhatATapCannotHave(t *testing.T) {
	a := startAPI(t, Config{}, ServerOptions{})
	ctx := context.Background()
	for _, c := range []struct {
		name string
		edit func(s *snoopv1.ProxySpec)
		want string
	}{
		{"listen", func(s *snoopv1.ProxySpec) { s.Listen = "IP:127.0.0.1:0" }, "spec.listen: set to \"IP:127.0.0.1:0\", but a tap listens nowhere"},
		{"faults", func(s *snoopv1.ProxySpec) {
			s.Faults = []*snoopv1.Fault{{Name: "slow", Type: snoopv1.FaultType_FAULT_TYPE_LATENCY, Delay: durationpb.New(1)}}
		}, "spec.faults: a tap forwards nothing"},
		{"max_connections", func(s *snoopv1.ProxySpec) { s.MaxConnections = 3 }, "spec.max_connections: a proxy's setting, which a tap does not have"},
		{"idle_timeout", func(s *snoopv1.ProxySpec) { s.IdleTimeout = durationpb.New(0) }, "spec.idle_timeout: a proxy's setting"},
		{"unix server", func(s *snoopv1.ProxySpec) { s.Server = "UNIX:/run/dc.sock" }, "spec.server: \"UNIX:/run/dc.sock\": a tap captures TCP only"},
		{"port 0", func(s *snoopv1.ProxySpec) { s.Server = "IP:127.0.0.1:0" }, "spec.server: \"IP:127.0.0.1:0\": port 0 is no server's port"},
		{"no server", func(s *snoopv1.ProxySpec) { s.Server = "" }, "spec.server: missing"},
		{"interface", func(s *snoopv1.ProxySpec) { s.TapInterface = "eth0/x" }, "spec.tap_interface: \"eth0/x\" is no network interface name"},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := tapSpec("t", "IP:127.0.0.1:9000")
			c.edit(s)
			_, err := a.proxy.CreateProxy(ctx, &snoopv1.CreateProxyRequest{Spec: s})
			wantCode(t, err, codes.InvalidArgument, c.want)
		})
	}
	if ps := a.d.ListProxies(); len(ps) != 0 {
		t.Errorf("refused taps were registered: %v", ps)
	}
}

// TestTapServerIsWrittenAsACaptureReadsIt: a bare port is the port on
// any address, written back in libnal syntax so that apply compares it;
// an address keeps its host.
func TestTapServerIsWrittenAsACaptureReadsIt(t *testing.T) {
	for in, want := range map[string]string{"9000": "IP:9000", "127.0.0.1:9000": "IP:127.0.0.1:9000", "IP:[::1]:9000": "IP:[::1]:9000"} {
		norm, cfg, err := normalize(tapSpec("t", in))
		if err != nil || norm.GetServer() != want || cfg.Server.String() != want || !cfg.Listen.IsZero() {
			t.Errorf("server %q: %q, cfg server %v listen %v, %v; want %q and no listen address", in, norm.GetServer(), cfg.Server, cfg.Listen, err, want)
		}
	}
}

// TestTapEffectiveSpecHasNoProxySettings: a tap's effective spec fills
// in what it runs with (enabled, the capture limit) and none of a
// proxy's defaults, so that what show prints applies again.
func TestTapEffectiveSpecHasNoProxySettings(t *testing.T) {
	norm, _, err := normalize(tapSpec("t", "9000"))
	if err != nil {
		t.Fatal(err)
	}
	eff := effectiveSpec(norm)
	if !eff.GetEnabled() || eff.GetCaptureLimit() == 0 || eff.SpareConnections != nil || eff.GetDialTimeout() != nil ||
		eff.GetOnCorrupt() != snoopv1.CorruptPolicy_CORRUPT_POLICY_UNSPECIFIED || eff.GetSocketMode() != 0 {
		t.Errorf("effective spec of a tap: %v", eff)
	}
	if _, _, err := normalize(eff); err != nil {
		t.Errorf("a tap's effective spec does not validate again: %v", err)
	}
}

// TestTapUpdateRefusals: adding a fault to a tap is a failed
// precondition (the request is well formed; the proxy is the wrong
// kind), and its capture options cannot change in place.
func TestTapUpdateRefusals(t *testing.T) {
	cur, _, err := normalize(tapSpec("t", "9000"))
	if err != nil {
		t.Fatal(err)
	}
	in := &snoopv1.ProxySpec{Name: "t", Faults: []*snoopv1.Fault{{Name: "m", Type: snoopv1.FaultType_FAULT_TYPE_MISS}}}
	err = tapUpdate(cur, in, []string{"faults"})
	if !errors.Is(err, ErrTapForwardsNothing) {
		t.Fatalf("fault on a tap: %v", err)
	}
	wantCode(t, Status(err), codes.FailedPrecondition, "proxy \"t\" is a tap on lo: a tap forwards nothing")
	if err := tapUpdate(cur, &snoopv1.ProxySpec{Name: "t"}, []string{"faults"}); err != nil {
		t.Errorf("clearing a tap's (no) faults: %v", err)
	}
	if err := tapUpdate(cur, &snoopv1.ProxySpec{Name: "t", CaptureData: true}, []string{"capture_data"}); err == nil || !strings.Contains(err.Error(), "cannot be changed in place") {
		t.Errorf("capture_data of a tap: %v", err)
	}
	proxySpec, _, _ := normalize(spec("p", "IP:127.0.0.1:9000"))
	if err := tapUpdate(proxySpec, in, []string{"faults"}); err != nil {
		t.Errorf("a proxy's faults: %v", err)
	}
}

// FuzzTapSpec: a tap's spec, whatever its interface and server, is
// refused with a field error or normalised to a spec that is a tap,
// has a TCP server with a port, no listen address, and normalises to
// itself again (apply compares normalised specs).
func FuzzTapSpec(f *testing.F) {
	for _, s := range [][2]string{{"lo", "9000"}, {"eth0", "IP:10.0.0.5:9000"}, {"lo", "[::1]:9000"}, {"lo", "UNIX:/x"}, {"a/b", "1"}, {"lo", "0"}, {"lo", "65536"}, {"lo", "host:1"}} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, iface, server string) {
		if iface == "" {
			return // not a tap
		}
		norm, cfg, err := normalize(&snoopv1.ProxySpec{Name: "t", TapInterface: iface, Server: server})
		if err != nil {
			var fe *FieldError
			if !errors.As(err, &fe) || (fe.Field != "tap_interface" && fe.Field != "server") {
				t.Fatalf("%q %q: %v, want a field error on tap_interface or server", iface, server, err)
			}
			return
		}
		if !isTap(norm) || norm.GetListen() != "" || !cfg.Listen.IsZero() || cfg.Server.Port() == 0 || cfg.Server.String() != norm.GetServer() {
			t.Fatalf("%q %q: normalised to %v, server %v", iface, server, norm, cfg.Server)
		}
		again, _, err := normalize(norm)
		if err != nil || again.GetServer() != norm.GetServer() {
			t.Fatalf("%q %q: normalised again: %v %v", iface, server, again, err)
		}
	})
}
