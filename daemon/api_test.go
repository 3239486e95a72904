package daemon

import (
	"context"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	"github.com/snoopd/snoopd/distcache"
	"github.com/snoopd/snoopd/distcache/loadgen"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
	"github.com/snoopd/snoopd/internal/testutil"
)

// details are the error details a client decodes from a status.
type details struct {
	bad  *errdetails.BadRequest
	res  *errdetails.ResourceInfo
	info *errdetails.ErrorInfo
}

// decodeDetails decodes the details the way a client does: from the
// status's Any messages, by type.
func decodeDetails(t *testing.T, err error) details {
	t.Helper()
	st, ok := status.FromError(err)
	if !ok {
		t.Fatalf("not a status: %v", err)
	}
	var d details
	for _, x := range st.Details() {
		switch v := x.(type) {
		case *errdetails.BadRequest:
			d.bad = v
		case *errdetails.ResourceInfo:
			d.res = v
		case *errdetails.ErrorInfo:
			d.info = v
		case error:
			t.Fatalf("detail does not decode: %v", v)
		}
	}
	return d
}

// wantResource checks a NOT_FOUND or ALREADY_EXISTS answer's details.
func wantResource(t *testing.T, err error, code codes.Code, reason, typ, name string) details {
	t.Helper()
	wantCode(t, err, code, "")
	d := decodeDetails(t, err)
	if d.info.GetReason() != reason || d.info.GetDomain() != "snoopd" {
		t.Errorf("ErrorInfo: %v, want reason %s in domain snoopd", d.info, reason)
	}
	if name == "" {
		if d.res != nil {
			t.Errorf("ResourceInfo %v without a name", d.res)
		}
		return d
	}
	if d.res.GetResourceType() != typ || d.res.GetResourceName() != name || d.res.GetDescription() == "" {
		t.Errorf("ResourceInfo: %v, want %s %q with a description", d.res, typ, name)
	}
	return d
}

// TestProxyAnswers checks the fields beside the spec in every answer that
// carries a proxy: host and port (or path) of the listen address and the
// spec with the defaults filled in.
func TestProxyAnswers(t *testing.T) {
	a := startAPI(t, Config{}, ServerOptions{})
	ctx := context.Background()
	cache := startCache(t)
	res, err := a.proxy.CreateProxy(ctx, &snoopv1.CreateProxyRequest{Spec: spec("tcp", cache.String())})
	if err != nil {
		t.Fatal(err)
	}
	p := res.GetProxy()
	bound := distcache.MustParseAddr(p.GetListenAddress())
	if p.GetListenHost() != "127.0.0.1" || p.GetListenPort() == 0 || int(p.GetListenPort()) != bound.Port() || p.GetListenPath() != "" {
		t.Errorf("host %q port %d path %q for %s", p.GetListenHost(), p.GetListenPort(), p.GetListenPath(), p.GetListenAddress())
	}
	want := &snoopv1.ProxySpec{
		Name: "tcp", Listen: "IP:127.0.0.1:0", Server: cache.String(), Enabled: proto.Bool(true),
		OnCorrupt:        snoopv1.CorruptPolicy_CORRUPT_POLICY_CLOSE,
		CaptureLimit:     32768,
		DialTimeout:      durationpb.New(5 * time.Second),
		SocketMode:       0o660,
		SpareConnections: proto.Uint32(2),
		IdleTimeout:      durationpb.New(5 * time.Minute),
		MessageTimeout:   durationpb.New(30 * time.Second),
		ResponseTimeout:  durationpb.New(30 * time.Second),
	}
	if !proto.Equal(p.GetEffectiveSpec(), want) {
		t.Errorf("effective spec\n got %v\nwant %v", p.GetEffectiveSpec(), want)
	}
	if p.GetSpec().GetSpareConnections() != 0 || p.GetSpec().GetDialTimeout() != nil || p.GetSpec().GetCaptureLimit() != 0 {
		t.Errorf("spec is the declared one, without defaults: %v", p.GetSpec())
	}

	// Explicit values, and zeros that mean "off", are kept as given.
	sock := testutil.UnixAddr(t)
	off := &snoopv1.ProxySpec{Name: "unix", Listen: sock.String(), Server: cache.String(), Enabled: proto.Bool(false),
		SpareConnections: proto.Uint32(0), IdleTimeout: durationpb.New(0), ResponseTimeout: durationpb.New(time.Second),
		CaptureLimit: 100, SocketMode: 0o600, OnCorrupt: snoopv1.CorruptPolicy_CORRUPT_POLICY_PASSTHROUGH}
	if _, err := a.proxy.CreateProxy(ctx, &snoopv1.CreateProxyRequest{Spec: off}); err != nil {
		t.Fatal(err)
	}
	got, err := a.proxy.GetProxy(ctx, &snoopv1.GetProxyRequest{Name: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	u := got.GetProxy()
	eff := u.GetEffectiveSpec()
	if u.GetListenPath() != sock.Path() || u.GetListenHost() != "" || u.GetListenPort() != 0 {
		t.Errorf("unix: host %q port %d path %q", u.GetListenHost(), u.GetListenPort(), u.GetListenPath())
	}
	if eff.GetEnabled() || eff.SpareConnections == nil || eff.GetSpareConnections() != 0 || eff.GetIdleTimeout().AsDuration() != 0 ||
		eff.GetResponseTimeout().AsDuration() != time.Second || eff.GetMessageTimeout().AsDuration() != 30*time.Second ||
		eff.GetCaptureLimit() != 100 || eff.GetSocketMode() != 0o600 || eff.GetOnCorrupt() != snoopv1.CorruptPolicy_CORRUPT_POLICY_PASSTHROUGH {
		t.Errorf("effective spec of explicit values: %v", eff)
	}

	// List and update answers carry them too.
	list, err := a.proxy.ListProxies(ctx, &snoopv1.ListProxiesRequest{})
	if err != nil || len(list.GetProxies()) != 2 {
		t.Fatalf("list: %v %v", list, err)
	}
	for _, p := range list.GetProxies() {
		if p.GetEffectiveSpec().GetDialTimeout() == nil || (p.GetListenPort() == 0 && p.GetListenPath() == "") {
			t.Errorf("listed without the answer's fields: %v", p)
		}
	}
	up, err := a.proxy.UpdateProxy(ctx, &snoopv1.UpdateProxyRequest{Spec: &snoopv1.ProxySpec{Name: "tcp", DialTimeout: durationpb.New(2 * time.Second)},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"dial_timeout"}}})
	if err != nil {
		t.Fatal(err)
	}
	if up.GetProxy().GetEffectiveSpec().GetDialTimeout().AsDuration() != 2*time.Second || up.GetProxy().GetListenPort() != p.GetListenPort() {
		t.Errorf("updated: %v", up.GetProxy())
	}
}

// TestErrorDetails decodes the details of each kind of error a script
// tells apart without reading the message.
func TestErrorDetails(t *testing.T) {
	a := startAPI(t, Config{}, ServerOptions{})
	ctx := context.Background()
	cache := startCache(t)

	_, err := a.proxy.GetProxy(ctx, &snoopv1.GetProxyRequest{Name: "ghost"})
	d := wantResource(t, err, codes.NotFound, "PROXY_NOT_FOUND", "snoop.v1.Proxy", "ghost")
	if d.info.GetMetadata()["proxy"] != "ghost" {
		t.Errorf("ErrorInfo metadata: %v", d.info.GetMetadata())
	}
	_, err = a.proxy.DeleteProxy(ctx, &snoopv1.DeleteProxyRequest{Name: "ghost"})
	wantResource(t, err, codes.NotFound, "PROXY_NOT_FOUND", "snoop.v1.Proxy", "ghost")
	_, err = a.proxy.UpdateProxy(ctx, &snoopv1.UpdateProxyRequest{Spec: &snoopv1.ProxySpec{Name: "ghost"}, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"server"}}})
	wantResource(t, err, codes.NotFound, "PROXY_NOT_FOUND", "snoop.v1.Proxy", "ghost")
	_, err = a.proxy.ListConnections(ctx, &snoopv1.ListConnectionsRequest{Proxy: "ghost"})
	wantResource(t, err, codes.NotFound, "PROXY_NOT_FOUND", "snoop.v1.Proxy", "ghost")

	if _, err := a.proxy.CreateProxy(ctx, &snoopv1.CreateProxyRequest{Spec: spec("x", cache.String())}); err != nil {
		t.Fatal(err)
	}
	_, err = a.proxy.CreateProxy(ctx, &snoopv1.CreateProxyRequest{Spec: spec("x", cache.String())})
	wantResource(t, err, codes.AlreadyExists, "PROXY_EXISTS", "snoop.v1.Proxy", "x")
	_, err = a.proxy.CloseConnection(ctx, &snoopv1.CloseConnectionRequest{Proxy: "x", Id: 77})
	wantResource(t, err, codes.NotFound, "CONNECTION_NOT_FOUND", "snoop.v1.Connection", "x/77")

	// An address in use names the proxy that could not listen and the
	// address, in create and in apply.
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	addr := "IP:" + taken.Addr().String()
	_, err = a.proxy.CreateProxy(ctx, &snoopv1.CreateProxyRequest{Spec: &snoopv1.ProxySpec{Name: "y", Listen: addr, Server: cache.String()}})
	d = wantResource(t, err, codes.AlreadyExists, "ADDRESS_IN_USE", "snoop.v1.Proxy", "y")
	if d.info.GetMetadata()["address"] != addr || d.info.GetMetadata()["proxy"] != "y" || !strings.Contains(d.res.GetDescription(), "address in use") {
		t.Errorf("address in use: %v %v", d.info, d.res)
	}
	_, err = a.proxy.ApplyProxies(ctx, &snoopv1.ApplyProxiesRequest{Proxies: []*snoopv1.ProxySpec{
		spec("x", cache.String()), {Name: "z", Listen: addr, Server: cache.String()}}})
	d = wantResource(t, err, codes.AlreadyExists, "ADDRESS_IN_USE", "snoop.v1.Proxy", "z")
	if d.info.GetMetadata()["address"] != addr {
		t.Errorf("apply, address in use: %v", d.info)
	}

	// Bad input keeps its BadRequest, and a missing spec is named "spec".
	_, err = a.proxy.CreateProxy(ctx, &snoopv1.CreateProxyRequest{})
	wantCode(t, err, codes.InvalidArgument, "spec: missing")
	d = decodeDetails(t, err)
	if fv := d.bad.GetFieldViolations(); len(fv) != 1 || fv[0].GetField() != "spec" {
		t.Errorf("CreateProxy without a spec: %v", d.bad)
	}
	if strings.Contains(status.Convert(err).Message(), "spec.spec") {
		t.Errorf("message: %q", status.Convert(err).Message())
	}
}

// TestApplyResultsCarryProxies checks ApplyResult.proxy: the proxy as it
// runs after the apply (real port included), as it would in a dry run
// (without counters), and unset for a removal.
func TestApplyResultsCarryProxies(t *testing.T) {
	a := startAPI(t, Config{}, ServerOptions{})
	ctx := context.Background()
	cache := startCache(t)
	apply := func(prune, dry bool, specs ...*snoopv1.ProxySpec) map[string]*snoopv1.ApplyResult {
		t.Helper()
		res, err := a.proxy.ApplyProxies(ctx, &snoopv1.ApplyProxiesRequest{Proxies: specs, Prune: prune, DryRun: dry})
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]*snoopv1.ApplyResult{}
		for _, r := range res.GetResults() {
			out[r.GetName()] = r
		}
		return out
	}
	dry := apply(false, true, spec("a", cache.String()))["a"].GetProxy()
	if dry.GetListenAddress() != "IP:127.0.0.1:0" || dry.GetListenPort() != 0 || dry.GetCounters() != nil ||
		dry.GetState() != snoopv1.ProxyState_PROXY_STATE_LISTENING || dry.GetEffectiveSpec().GetSpareConnections() != 2 {
		t.Errorf("dry-run creation: %v", dry)
	}
	if len(a.d.ListProxies()) != 0 {
		t.Fatal("a dry run created a proxy")
	}

	res := apply(false, false, spec("a", cache.String()), spec("b", cache.String()))
	pa := res["a"].GetProxy()
	if pa.GetListenPort() == 0 || pa.GetListenAddress() != "IP:127.0.0.1:"+strconv.Itoa(int(pa.GetListenPort())) ||
		pa.GetCounters() == nil || pa.GetEffectiveSpec().GetDialTimeout().AsDuration() != 5*time.Second {
		t.Errorf("created: %v", pa)
	}
	now, _ := a.d.GetProxy("a")
	if now.GetListenAddress() != pa.GetListenAddress() {
		t.Errorf("result %s, proxy %s", pa.GetListenAddress(), now.GetListenAddress())
	}

	// Traffic, then a dry run of an in-place change and a prune.
	c, err := loadgen.Dial(ctx, distcache.MustParseAddr(pa.GetListenAddress()), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.Have([]byte("k"))
	c.Close()
	changed := &snoopv1.ProxySpec{Name: "a", Listen: "IP:127.0.0.1:0", Server: cache.String(), Enabled: proto.Bool(false)}
	res = apply(true, true, changed)
	pa = res["a"].GetProxy()
	if res["a"].GetAction() != snoopv1.ApplyAction_APPLY_ACTION_CHANGED || pa.GetListenAddress() != now.GetListenAddress() ||
		pa.GetCounters() != nil || pa.GetState() != snoopv1.ProxyState_PROXY_STATE_DISABLED || pa.GetSpec().GetEnabled() ||
		pa.GetEffectiveSpec().GetEnabled() || pa.GetCreateTime() == nil {
		t.Errorf("dry-run change: %v", pa)
	}
	if res["b"].GetAction() != snoopv1.ApplyAction_APPLY_ACTION_REMOVED || res["b"].GetProxy() != nil {
		t.Errorf("dry-run removal: %v", res["b"])
	}
	if p, _ := a.d.GetProxy("a"); !p.GetEffectiveSpec().GetEnabled() {
		t.Fatal("a dry run changed a proxy")
	}

	res = apply(true, false, changed)
	if p := res["a"].GetProxy(); p.GetState() != snoopv1.ProxyState_PROXY_STATE_DISABLED || p.GetCounters().GetTransactions() != 1 {
		t.Errorf("changed: %v", p)
	}
	if res["b"].GetProxy() != nil {
		t.Errorf("removed: %v", res["b"])
	}
	// Unchanged: as it is.
	res = apply(false, false, changed)
	if res["a"].GetAction() != snoopv1.ApplyAction_APPLY_ACTION_UNCHANGED || res["a"].GetProxy().GetListenAddress() != now.GetListenAddress() {
		t.Errorf("unchanged: %v", res["a"])
	}
}

// TestWatchOperationsByName checks WatchEventsRequest.operations: names in
// any case, OP_ names too, added to ops; and errors that quote what the
// caller sent.
func TestWatchOperationsByName(t *testing.T) {
	a := startAPI(t, Config{}, ServerOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := a.proxy.CreateProxy(ctx, &snoopv1.CreateProxyRequest{Spec: spec("w", startCache(t).String())})
	if err != nil {
		t.Fatal(err)
	}
	c, err := loadgen.Dial(ctx, distcache.MustParseAddr(res.GetProxy().GetListenAddress()), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.Add([]byte("s1"), []byte("data"), time.Minute)
	c.Get([]byte("s1"))
	c.Have([]byte("s1"))
	c.Remove([]byte("s1"))
	c.Close()
	for deadline := time.Now().Add(5 * time.Second); a.d.hub.Published() < 6 && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	ops := func(req *snoopv1.WatchEventsRequest) []string {
		t.Helper()
		req.History = 100
		s, err := a.events.WatchEvents(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for {
			r, err := s.Recv()
			if err != nil {
				t.Fatal(err)
			}
			if r.GetHistoryDone() {
				return got
			}
			got = append(got, r.GetEvent().GetTransaction().GetOp().String())
		}
	}
	if got := strings.Join(ops(&snoopv1.WatchEventsRequest{Operations: []string{"GET", "op_remove"}}), " "); got != "OP_GET OP_REMOVE" {
		t.Errorf("operations GET, op_remove: %s", got)
	}
	if got := strings.Join(ops(&snoopv1.WatchEventsRequest{Ops: []snoopv1.Op{snoopv1.Op_OP_ADD}, Operations: []string{"have", "add"}}), " "); got != "OP_ADD OP_HAVE" {
		t.Errorf("ops OP_ADD with operations have, add: %s", got)
	}

	recvErr := func(req *snoopv1.WatchEventsRequest) error {
		s, err := a.events.WatchEvents(ctx, req)
		if err != nil {
			return err
		}
		_, err = s.Recv()
		return err
	}
	err = recvErr(&snoopv1.WatchEventsRequest{Operations: []string{"get", "Fetch"}})
	wantCode(t, err, codes.InvalidArgument, `operations[1]: unknown operation "Fetch"`)
	if fv := decodeDetails(t, err).bad.GetFieldViolations(); len(fv) != 1 || fv[0].GetField() != "operations[1]" {
		t.Errorf("field violations: %v", fv)
	}
	// A name a client library did not know arrives as 0; the error says
	// what arrived, not a name the caller never wrote.
	err = recvErr(&snoopv1.WatchEventsRequest{Ops: []snoopv1.Op{0}})
	wantCode(t, err, codes.InvalidArgument, "ops[0]: 0 is not an operation")
	if msg := status.Convert(err).Message(); strings.Contains(msg, "OP_UNSPECIFIED") || !strings.Contains(msg, "operations") {
		t.Errorf("ops [0]: %q", msg)
	}
	wantCode(t, recvErr(&snoopv1.WatchEventsRequest{Ops: []snoopv1.Op{9}}), codes.InvalidArgument, "ops[0]: 9 is not an operation number")
}
