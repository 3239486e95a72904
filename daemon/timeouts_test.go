package daemon

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	"github.com/snoopd/snoopd/distcache"
	"github.com/snoopd/snoopd/distcache/loadgen"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
	"github.com/snoopd/snoopd/proxy"
)

// TestTimeoutConversion: unset is the proxy's default (0), an explicit
// zero turns the timeout off (negative), anything else is itself; bad
// durations are field errors naming the field.
func TestTimeoutConversion(t *testing.T) {
	for _, tc := range []struct {
		name string
		d    *durationpb.Duration
		want time.Duration
		err  string
	}{
		{"unset", nil, 0, ""},
		{"zero", durationpb.New(0), -1, ""},
		{"set", durationpb.New(90 * time.Second), 90 * time.Second, ""},
		{"tiny", durationpb.New(time.Nanosecond), time.Nanosecond, ""},
		{"a day", durationpb.New(24 * time.Hour), 24 * time.Hour, ""},
		{"over a day", durationpb.New(24*time.Hour + 1), 0, "want 0 (off) to 24h0m0s"},
		{"negative", durationpb.New(-time.Second), 0, "-1s: want 0 (off)"},
		{"mixed signs", &durationpb.Duration{Seconds: 1, Nanos: -5}, 0, "not a valid duration"},
		{"nanos out of range", &durationpb.Duration{Nanos: 1e9}, 0, "not a valid duration"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, field := range []string{"idle_timeout", "message_timeout", "response_timeout"} {
				s := &snoopv1.ProxySpec{Name: "t", Listen: "IP:127.0.0.1:0", Server: "IP:127.0.0.1:1"}
				var got func(o proxy.Options) time.Duration
				switch field {
				case "idle_timeout":
					s.IdleTimeout, got = tc.d, func(o proxy.Options) time.Duration { return o.IdleTimeout }
				case "message_timeout":
					s.MessageTimeout, got = tc.d, func(o proxy.Options) time.Duration { return o.MessageTimeout }
				case "response_timeout":
					s.ResponseTimeout, got = tc.d, func(o proxy.Options) time.Duration { return o.ResponseTimeout }
				}
				norm, cfg, err := normalize(s)
				if tc.err != "" {
					fe, ok := err.(*FieldError)
					if !ok || fe.Field != field || !strings.Contains(fe.Reason, tc.err) {
						t.Errorf("%s: error %v, want a field error on %s containing %q", field, err, field, tc.err)
					}
					continue
				}
				if err != nil {
					t.Fatalf("%s: %v", field, err)
				}
				if got(cfg.Options) != tc.want {
					t.Errorf("%s: proxy option %v, want %v", field, got(cfg.Options), tc.want)
				}
				// The spec keeps what was given: unset stays unset, zero stays zero.
				if !proto.Equal(norm.GetIdleTimeout(), s.GetIdleTimeout()) || !proto.Equal(norm.GetMessageTimeout(), s.GetMessageTimeout()) ||
					!proto.Equal(norm.GetResponseTimeout(), s.GetResponseTimeout()) {
					t.Errorf("%s: normalised spec %v, given %v", field, norm, s)
				}
			}
		})
	}
}

// TestTimeoutsThroughTheAPI: create echoes the timeouts as given and
// refuses bad ones with a field violation; update changes them by field
// mask, including back to unset; the state file keeps an explicit zero.
func TestTimeoutsThroughTheAPI(t *testing.T) {
	dir := t.TempDir()
	a := startAPI(t, Config{StateDir: dir}, ServerOptions{})
	ctx := context.Background()
	s := spec("t", "IP:192.0.2.1:9000")
	s.IdleTimeout, s.MessageTimeout = durationpb.New(0), durationpb.New(2*time.Second)
	res, err := a.proxy.CreateProxy(ctx, &snoopv1.CreateProxyRequest{Spec: s})
	if err != nil {
		t.Fatal(err)
	}
	got := res.GetProxy().GetSpec()
	if got.IdleTimeout == nil || got.GetIdleTimeout().AsDuration() != 0 || got.GetMessageTimeout().AsDuration() != 2*time.Second || got.ResponseTimeout != nil {
		t.Errorf("created spec %v", got)
	}
	if o := a.d.entry(t, "t").p.(*proxy.Proxy).Config().Options; o.IdleTimeout >= 0 || o.MessageTimeout != 2*time.Second || o.ResponseTimeout != proxy.DefaultResponseTimeout {
		t.Errorf("proxy options: idle %v, message %v, response %v", o.IdleTimeout, o.MessageTimeout, o.ResponseTimeout)
	}

	bad := spec("bad", "IP:192.0.2.1:9000")
	bad.ResponseTimeout = &durationpb.Duration{Seconds: 1, Nanos: -5}
	_, err = a.proxy.CreateProxy(ctx, &snoopv1.CreateProxyRequest{Spec: bad})
	if f := violation(t, err, "response_timeout", "not a valid duration"); f != "spec.response_timeout" {
		t.Errorf("field %q", f)
	}

	upd, err := a.proxy.UpdateProxy(ctx, &snoopv1.UpdateProxyRequest{
		Spec:       &snoopv1.ProxySpec{Name: "t", ResponseTimeout: durationpb.New(0), IdleTimeout: durationpb.New(time.Hour)},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"response_timeout", "idle_timeout", "message_timeout"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	got = upd.GetProxy().GetSpec()
	if got.GetIdleTimeout().AsDuration() != time.Hour || got.MessageTimeout != nil || got.ResponseTimeout == nil || got.GetResponseTimeout().AsDuration() != 0 {
		t.Errorf("updated spec %v", got)
	}
	if o := a.d.entry(t, "t").p.(*proxy.Proxy).Config().Options; o.IdleTimeout != time.Hour || o.MessageTimeout != proxy.DefaultMessageTimeout || o.ResponseTimeout >= 0 {
		t.Errorf("updated options: idle %v, message %v, response %v", o.IdleTimeout, o.MessageTimeout, o.ResponseTimeout)
	}
	_, err = a.proxy.UpdateProxy(ctx, &snoopv1.UpdateProxyRequest{
		Spec:       &snoopv1.ProxySpec{Name: "t", MessageTimeout: durationpb.New(-time.Second)},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"message_timeout"}},
	})
	if f := violation(t, err, "message_timeout"); f != "spec.message_timeout" {
		t.Errorf("field %q", f)
	}

	// Apply: the same spec is unchanged; unset and zero are different.
	same := proto.Clone(got).(*snoopv1.ProxySpec)
	res2, err := a.proxy.ApplyProxies(ctx, &snoopv1.ApplyProxiesRequest{Proxies: []*snoopv1.ProxySpec{same}})
	if err != nil || res2.GetResults()[0].GetAction() != snoopv1.ApplyAction_APPLY_ACTION_UNCHANGED {
		t.Errorf("apply the same: %v %v", res2, err)
	}
	same.ResponseTimeout = nil
	res2, err = a.proxy.ApplyProxies(ctx, &snoopv1.ApplyProxiesRequest{Proxies: []*snoopv1.ProxySpec{same}})
	if err != nil || res2.GetResults()[0].GetAction() != snoopv1.ApplyAction_APPLY_ACTION_CHANGED {
		t.Errorf("apply without the zero: %v %v", res2, err)
	}
	if o := a.d.entry(t, "t").p.(*proxy.Proxy).Config().Options; o.ResponseTimeout != proxy.DefaultResponseTimeout {
		t.Errorf("applied response timeout %v", o.ResponseTimeout)
	}
	same.ResponseTimeout = durationpb.New(0)
	same.IdleTimeout = &durationpb.Duration{Seconds: -1, Nanos: 5}
	_, err = a.proxy.ApplyProxies(ctx, &snoopv1.ApplyProxiesRequest{Proxies: []*snoopv1.ProxySpec{same}})
	if f := violation(t, err, "idle_timeout"); f != "proxies[0].idle_timeout" {
		t.Errorf("field %q", f)
	}
	same.IdleTimeout = durationpb.New(0)
	if _, err := a.proxy.ApplyProxies(ctx, &snoopv1.ApplyProxiesRequest{Proxies: []*snoopv1.ProxySpec{same}}); err != nil {
		t.Fatal(err)
	}

	// The state file keeps the explicit zeros, and a restart restores them.
	b, err := os.ReadFile(filepath.Join(dir, stateFileName))
	if err != nil {
		t.Fatal(err)
	}
	// protojson varies its spacing on purpose; compare without it.
	if flat := strings.Join(strings.Fields(string(b)), ""); !strings.Contains(flat, `"idle_timeout":"0s"`) || !strings.Contains(flat, `"response_timeout":"0s"`) {
		t.Errorf("state file:\n%s", b)
	}
	a.d.Close(ctx)
	d2, err := New(Config{StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer d2.Close(ctx)
	p, err := d2.GetProxy("t")
	if err != nil || !proto.Equal(p.GetSpec(), same) {
		t.Errorf("restored %v, want %v (%v)", p.GetSpec(), same, err)
	}
	if o := d2.entry(t, "t").p.(*proxy.Proxy).Config().Options; o.IdleTimeout >= 0 || o.ResponseTimeout >= 0 || o.MessageTimeout != proxy.DefaultMessageTimeout {
		t.Errorf("restored options: idle %v, message %v, response %v", o.IdleTimeout, o.MessageTimeout, o.ResponseTimeout)
	}
}

// TestCountersCarryTimeoutsAndLoopRefusals: the proxy's counters reach
// the API.
func TestCountersCarryTimeoutsAndLoopRefusals(t *testing.T) {
	c := counters(proxy.Stats{Timeouts: 7, LoopRefusals: 3, ConnsRefused: 2})
	if c.GetTimeouts() != 7 || c.GetLoopRefusals() != 3 || c.GetConnectionsRefused() != 2 {
		t.Errorf("counters %v", c)
	}
}

func TestEngineAndInfo(t *testing.T) {
	ctx := context.Background()
	// Nil: an engine of the daemon's own, of the kind snoopd runs.
	a := startAPI(t, Config{FDLimit: 4096}, ServerOptions{})
	info, err := a.info.GetDaemonInfo(ctx, &snoopv1.GetDaemonInfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	wantLoops := info.GetLoops() > 0
	if newEngineName == proxy.EngineGoroutines {
		wantLoops = info.GetLoops() == 0
	}
	if info.GetEngine() != newEngineName || !wantLoops || info.GetFdLimit() != 4096 {
		t.Errorf("info: engine %q, loops %d, fd limit %d", info.GetEngine(), info.GetLoops(), info.GetFdLimit())
	}
	// Given: reported, and left open when the daemon closes, so a second
	// daemon can still serve traffic with it.
	eng, err := proxy.NewEngine(proxy.DefaultEngine, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	cache := startCache(t)
	for round := range 2 {
		d, err := New(Config{Engine: eng})
		if err != nil {
			t.Fatal(err)
		}
		if i := d.Info(); i.GetEngine() != eng.Name() || int(i.GetLoops()) != eng.Loops() {
			t.Errorf("info: engine %q, loops %d; the engine is %q with %d", i.GetEngine(), i.GetLoops(), eng.Name(), eng.Loops())
		}
		p, err := d.CreateProxy(ctx, spec("e", cache.String()))
		if err != nil {
			t.Fatal(err)
		}
		rep, err := loadgen.Run(ctx, loadgen.Config{Addr: distcache.MustParseAddr(p.GetListenAddress()), Ops: 20, Verify: true, MaxData: 64})
		if err != nil || rep.Errors != 0 || rep.Ops != 20 {
			t.Errorf("round %d: %d ops, %d errors, %v", round, rep.Ops, rep.Errors, err)
		}
		if err := d.Close(ctx); err != nil {
			t.Fatal(err)
		}
	}
}

// entry is the registered proxy name, or the test fails.
func (d *Daemon) entry(t *testing.T, name string) *entry {
	t.Helper()
	e, err := d.lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	return e
}
