package daemon

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
	"github.com/snoopd/snoopd/internal/testutil"
)

// fieldOf returns the field of err's one field violation, which must be
// there, with code.
func fieldOf(t *testing.T, err error, code codes.Code, contains ...string) string {
	t.Helper()
	st, _ := status.FromError(err)
	if st.Code() != code {
		t.Fatalf("got %v %q, want %v", st.Code(), st.Message(), code)
	}
	for _, c := range contains {
		if !strings.Contains(st.Message(), c) {
			t.Errorf("message %q lacks %q", st.Message(), c)
		}
	}
	for _, d := range st.Details() {
		if br, ok := d.(*errdetails.BadRequest); ok && len(br.GetFieldViolations()) == 1 {
			return br.GetFieldViolations()[0].GetField()
		}
	}
	t.Fatalf("no field violation in %v %q", st.Code(), st.Message())
	return ""
}

// TestRelativeUnixPathsRefused: relative unix paths are refused, for
// listen and server, by create, update and apply alike, with an example
// of an absolute one.
func TestRelativeUnixPathsRefused(t *testing.T) {
	cache := startCache(t)
	a := startAPI(t, Config{}, ServerOptions{})
	ctx := context.Background()
	_, err := a.proxy.CreateProxy(ctx, &snoopv1.CreateProxyRequest{Spec: &snoopv1.ProxySpec{Name: "r", Listen: "UNIX:rel.sock", Server: cache.String()}})
	if f := fieldOf(t, err, codes.InvalidArgument, "relative", "UNIX:/run/snoopd/rel.sock"); f != "spec.listen" {
		t.Errorf("field %q", f)
	}
	_, err = a.proxy.CreateProxy(ctx, &snoopv1.CreateProxyRequest{Spec: &snoopv1.ProxySpec{Name: "r", Listen: "IP:127.0.0.1:0", Server: "UNIX:sub/dc.sock"}})
	if f := fieldOf(t, err, codes.InvalidArgument, "relative", "UNIX:/run/snoopd/dc.sock"); f != "spec.server" {
		t.Errorf("field %q", f)
	}
	if _, err := a.proxy.CreateProxy(ctx, &snoopv1.CreateProxyRequest{Spec: spec("ok", cache.String())}); err != nil {
		t.Fatal(err)
	}
	_, err = a.proxy.UpdateProxy(ctx, &snoopv1.UpdateProxyRequest{Spec: &snoopv1.ProxySpec{Name: "ok", Server: "UNIX:dc.sock"},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"server"}}})
	if f := fieldOf(t, err, codes.InvalidArgument, "relative"); f != "spec.server" {
		t.Errorf("field %q", f)
	}
	_, err = a.proxy.ApplyProxies(ctx, &snoopv1.ApplyProxiesRequest{Proxies: []*snoopv1.ProxySpec{{Name: "x", Listen: "UNIX:./x.sock", Server: cache.String()}}})
	if f := fieldOf(t, err, codes.InvalidArgument, "relative"); f != "proxies[0].listen" {
		t.Errorf("field %q", f)
	}
	if _, err := os.Stat("rel.sock"); err == nil {
		t.Error("a socket landed in the working directory")
	}
}

// TestRelativeUnixPathInStateFile: a relative path saved by an older
// snoopd does not stop the start-up; that proxy comes up failed, saying
// why, and the others start.
func TestRelativeUnixPathInStateFile(t *testing.T) {
	dir := t.TempDir()
	cache := startCache(t)
	os.WriteFile(filepath.Join(dir, stateFileName), []byte(`{"proxies": [
		{"name": "old", "listen": "UNIX:old.sock", "server": "`+cache.String()+`"},
		{"name": "fine", "listen": "IP:127.0.0.1:0", "server": "`+cache.String()+`"}]}`), 0o600)
	d, err := New(Config{StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close(context.Background())
	old, _ := d.GetProxy("old")
	if old.GetState() != snoopv1.ProxyState_PROXY_STATE_FAILED || !strings.Contains(old.GetError(), "relative") {
		t.Errorf("old: %v", old)
	}
	if fine, _ := d.GetProxy("fine"); fine.GetState() != snoopv1.ProxyState_PROXY_STATE_LISTENING {
		t.Errorf("fine: %v", fine)
	}
}

// TestDisabledProxyKeepsItsAddress: another proxy on a disabled proxy's
// address is refused, ALREADY_EXISTS naming it, at create and apply;
// that includes the port a port 0 proxy got.
func TestDisabledProxyKeepsItsAddress(t *testing.T) {
	cache := startCache(t)
	a := startAPI(t, Config{}, ServerOptions{})
	ctx := context.Background()
	fixed := "IP:" + testutil.FreeAddr(t)
	if _, err := a.proxy.CreateProxy(ctx, &snoopv1.CreateProxyRequest{Spec: &snoopv1.ProxySpec{Name: "off", Listen: fixed, Server: cache.String(), Enabled: proto.Bool(false)}}); err != nil {
		t.Fatal(err)
	}
	_, err := a.proxy.CreateProxy(ctx, &snoopv1.CreateProxyRequest{Spec: &snoopv1.ProxySpec{Name: "thief", Listen: fixed, Server: cache.String()}})
	wantCode(t, err, codes.AlreadyExists, `"off"`)
	// The wildcard of the same port clashes too.
	port := fixed[strings.LastIndexByte(fixed, ':')+1:]
	_, err = a.proxy.CreateProxy(ctx, &snoopv1.CreateProxyRequest{Spec: &snoopv1.ProxySpec{Name: "thief", Listen: "IP:" + port, Server: cache.String()}})
	wantCode(t, err, codes.AlreadyExists, "disabled")
	_, err = a.proxy.ApplyProxies(ctx, &snoopv1.ApplyProxiesRequest{Proxies: []*snoopv1.ProxySpec{
		{Name: "off", Listen: fixed, Server: cache.String(), Enabled: proto.Bool(false)},
		{Name: "thief", Listen: fixed, Server: cache.String()},
	}})
	wantCode(t, err, codes.AlreadyExists, `"off"`)

	// A port 0 proxy, bound, then disabled, keeps the port it got.
	r, err := a.proxy.CreateProxy(ctx, &snoopv1.CreateProxyRequest{Spec: spec("any", cache.String())})
	if err != nil {
		t.Fatal(err)
	}
	got := r.GetProxy().GetListenAddress()
	if _, err := a.proxy.UpdateProxy(ctx, &snoopv1.UpdateProxyRequest{Spec: &snoopv1.ProxySpec{Name: "any", Enabled: proto.Bool(false)},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"enabled"}}}); err != nil {
		t.Fatal(err)
	}
	_, err = a.proxy.CreateProxy(ctx, &snoopv1.CreateProxyRequest{Spec: &snoopv1.ProxySpec{Name: "thief", Listen: got, Server: cache.String()}})
	wantCode(t, err, codes.AlreadyExists, `"any"`)
	// So enabling it works.
	p, err := a.proxy.UpdateProxy(ctx, &snoopv1.UpdateProxyRequest{Spec: &snoopv1.ProxySpec{Name: "any", Enabled: proto.Bool(true)},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"enabled"}}})
	if err != nil || p.GetProxy().GetListenAddress() != got || p.GetProxy().GetState() != snoopv1.ProxyState_PROXY_STATE_LISTENING {
		t.Fatalf("enable: %v %v", p, err)
	}
}

// TestPortZeroKeptAcrossRestarts: a proxy declared on port 0 gets its
// port back after a restart when it is free; when it is taken, it gets a
// new one and says so. The spec stays as declared.
func TestPortZeroKeptAcrossRestarts(t *testing.T) {
	dir := t.TempDir()
	cache := startCache(t)
	ctx := context.Background()
	d, err := New(Config{StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	p, err := d.CreateProxy(ctx, spec("any", cache.String()))
	if err != nil {
		t.Fatal(err)
	}
	first := p.GetListenAddress()
	d.Close(ctx)

	d, err = New(Config{StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	p, _ = d.GetProxy("any")
	if p.GetListenAddress() != first || p.GetSpec().GetListen() != "IP:127.0.0.1:0" || p.GetError() != "" {
		t.Errorf("after a restart: listens on %s (was %s), spec listen %s, error %q", p.GetListenAddress(), first, p.GetSpec().GetListen(), p.GetError())
	}
	d.Close(ctx)

	taken, err := net.Listen("tcp", strings.TrimPrefix(first, "IP:"))
	if err != nil {
		t.Fatalf("port taken by someone else meanwhile: %v", err)
	}
	defer taken.Close()
	d, err = New(Config{StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close(ctx)
	p, _ = d.GetProxy("any")
	if p.GetState() != snoopv1.ProxyState_PROXY_STATE_LISTENING || p.GetListenAddress() == first || !strings.Contains(p.GetError(), "is taken") {
		t.Errorf("port taken at restart: %v", p)
	}
}

// TestBindErrorsAreFieldViolations: an address this host does not have,
// or a directory that does not exist, is INVALID_ARGUMENT on listen, not
// INTERNAL; at start-up from the state file, such a proxy comes up failed
// and the daemon runs.
func TestBindErrorsAreFieldViolations(t *testing.T) {
	cache := startCache(t)
	a := startAPI(t, Config{}, ServerOptions{})
	ctx := context.Background()
	for _, listen := range []string{"IP:192.0.2.1:9", "UNIX:/nonexistent-dir-snoopd/x.sock"} {
		_, err := a.proxy.CreateProxy(ctx, &snoopv1.CreateProxyRequest{Spec: &snoopv1.ProxySpec{Name: "b", Listen: listen, Server: cache.String()}})
		if f := fieldOf(t, err, codes.InvalidArgument, "cannot listen"); f != "spec.listen" {
			t.Errorf("%s: field %q", listen, f)
		}
		_, err = a.proxy.ApplyProxies(ctx, &snoopv1.ApplyProxiesRequest{Proxies: []*snoopv1.ProxySpec{{Name: "b", Listen: listen, Server: cache.String()}}})
		if f := fieldOf(t, err, codes.InvalidArgument, "nothing changed"); f != "proxies[0].listen" {
			t.Errorf("%s: apply: field %q", listen, f)
		}
	}
	if os.Geteuid() != 0 {
		_, err := a.proxy.CreateProxy(ctx, &snoopv1.CreateProxyRequest{Spec: &snoopv1.ProxySpec{Name: "b", Listen: "IP:127.0.0.1:1", Server: cache.String()}})
		if f := fieldOf(t, err, codes.PermissionDenied); f != "spec.listen" {
			t.Errorf("privileged port: field %q", f)
		}
	}

	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, stateFileName), []byte(`{"proxies": [{"name": "gone", "listen": "IP:192.0.2.1:9", "server": "`+cache.String()+`"}]}`), 0o600)
	d, err := New(Config{StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close(ctx)
	p, _ := d.GetProxy("gone")
	if p.GetState() != snoopv1.ProxyState_PROXY_STATE_FAILED || !strings.Contains(p.GetError(), "assign requested address") {
		t.Errorf("restored on an address the host lacks: %v", p)
	}
}

// TestOneValidator: create, update and apply refuse the same bad spec
// (a duration whose nanos have the wrong sign) alike.
func TestOneValidator(t *testing.T) {
	cache := startCache(t)
	a := startAPI(t, Config{}, ServerOptions{})
	ctx := context.Background()
	bad := &durationpb.Duration{Seconds: 1, Nanos: -5}
	for _, field := range []string{"idle_timeout", "message_timeout", "response_timeout", "dial_timeout"} {
		s := spec("v", cache.String())
		set := func(s *snoopv1.ProxySpec) {
			switch field {
			case "idle_timeout":
				s.IdleTimeout = bad
			case "message_timeout":
				s.MessageTimeout = bad
			case "response_timeout":
				s.ResponseTimeout = bad
			case "dial_timeout":
				s.DialTimeout = bad
			}
		}
		set(s)
		_, err := a.proxy.CreateProxy(ctx, &snoopv1.CreateProxyRequest{Spec: s})
		if f := fieldOf(t, err, codes.InvalidArgument); f != "spec."+field {
			t.Errorf("create: field %q", f)
		}
		_, err = a.proxy.ApplyProxies(ctx, &snoopv1.ApplyProxiesRequest{Proxies: []*snoopv1.ProxySpec{s}})
		if f := fieldOf(t, err, codes.InvalidArgument); f != "proxies[0]."+field {
			t.Errorf("apply: field %q", f)
		}
		if _, err := a.proxy.CreateProxy(ctx, &snoopv1.CreateProxyRequest{Spec: spec("v", cache.String())}); err != nil {
			t.Fatal(err)
		}
		u := &snoopv1.ProxySpec{Name: "v"}
		set(u)
		_, err = a.proxy.UpdateProxy(ctx, &snoopv1.UpdateProxyRequest{Spec: u, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{field}}})
		if f := fieldOf(t, err, codes.InvalidArgument); f != "spec."+field {
			t.Errorf("update: field %q", f)
		}
		if _, err := a.proxy.DeleteProxy(ctx, &snoopv1.DeleteProxyRequest{Name: "v"}); err != nil {
			t.Fatal(err)
		}
	}
}

// TestHugeValuesAreClipped: a 3 MiB name or address is not echoed back.
func TestHugeValuesAreClipped(t *testing.T) {
	cache := startCache(t)
	a := startAPI(t, Config{}, ServerOptions{})
	ctx := context.Background()
	huge := strings.Repeat("n", 3<<20)
	check := func(what string, err error, code codes.Code) {
		t.Helper()
		st, _ := status.FromError(err)
		if st.Code() != code {
			t.Errorf("%s: %v, want %v", what, st.Code(), code)
		}
		if n := len(st.Message()); n > 1024 || !strings.Contains(st.Message(), "bytes") {
			t.Errorf("%s: a %d-byte message: %.200s", what, n, st.Message())
		}
		for _, d := range st.Details() {
			if br, ok := d.(*errdetails.BadRequest); ok && len(br.String()) > 1024 {
				t.Errorf("%s: a %d-byte field violation", what, len(br.String()))
			}
		}
	}
	_, err := a.proxy.GetProxy(ctx, &snoopv1.GetProxyRequest{Name: huge})
	check("get", err, codes.NotFound)
	_, err = a.proxy.DeleteProxy(ctx, &snoopv1.DeleteProxyRequest{Name: huge})
	check("delete", err, codes.NotFound)
	_, err = a.proxy.CreateProxy(ctx, &snoopv1.CreateProxyRequest{Spec: &snoopv1.ProxySpec{Name: huge, Listen: "IP:127.0.0.1:0", Server: cache.String()}})
	check("create name", err, codes.InvalidArgument)
	_, err = a.proxy.CreateProxy(ctx, &snoopv1.CreateProxyRequest{Spec: &snoopv1.ProxySpec{Name: "x", Listen: "IP:" + huge, Server: cache.String()}})
	check("create listen", err, codes.InvalidArgument)
	_, err = a.proxy.UpdateProxy(ctx, &snoopv1.UpdateProxyRequest{Spec: &snoopv1.ProxySpec{Name: huge}, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"enabled"}}})
	check("update", err, codes.NotFound)
}
