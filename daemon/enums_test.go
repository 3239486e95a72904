package daemon

import (
	"context"
	"io"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
)

// A client that ignores unknown input (protojson with DiscardUnknown;
// protobufjs, which grpc-js's proto-loader uses, does the same) sends a
// misspelt enum name as 0. Where the request means to set the field, 0 is
// refused with the names the API takes, rather than taken as the default.
func TestMisspeltPolicyInAnUpdateIsRefused(t *testing.T) {
	a := startAPI(t, Config{}, ServerOptions{})
	ctx := context.Background()
	cache := startCache(t).String()
	if _, err := a.proxy.CreateProxy(ctx, &snoopv1.CreateProxyRequest{Spec: &snoopv1.ProxySpec{Name: "p", Listen: "IP:127.0.0.1:0", Server: cache,
		OnCorrupt: snoopv1.CorruptPolicy_CORRUPT_POLICY_PASSTHROUGH}}); err != nil {
		t.Fatal(err)
	}
	var req snoopv1.UpdateProxyRequest
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal([]byte(`{"spec": {"name": "p", "on_corrupt": "CLOSE"}, "update_mask": "onCorrupt"}`), &req); err != nil {
		t.Fatal(err)
	}
	if req.GetSpec().GetOnCorrupt() != 0 {
		t.Fatalf("the lenient decoder kept %v; this test needs it to drop the name", req.GetSpec().GetOnCorrupt())
	}
	_, err := a.proxy.UpdateProxy(ctx, &req)
	wantCode(t, err, codes.InvalidArgument, "CORRUPT_POLICY_CLOSE (1), or CORRUPT_POLICY_PASSTHROUGH (2)")
	if v := decodeDetails(t, err).bad.GetFieldViolations(); len(v) != 1 || v[0].GetField() != "spec.on_corrupt" {
		t.Errorf("violations %v, want one on spec.on_corrupt", v)
	}
	p, _ := a.d.GetProxy("p")
	if p.GetSpec().GetOnCorrupt() != snoopv1.CorruptPolicy_CORRUPT_POLICY_PASSTHROUGH {
		t.Errorf("the refused update changed the policy to %v", p.GetSpec().GetOnCorrupt())
	}
	// Named correctly, it changes.
	if _, err := a.proxy.UpdateProxy(ctx, &snoopv1.UpdateProxyRequest{Spec: &snoopv1.ProxySpec{Name: "p", OnCorrupt: snoopv1.CorruptPolicy_CORRUPT_POLICY_CLOSE},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"on_corrupt"}}}); err != nil {
		t.Fatal(err)
	}
	// A number the API does not define (a binary client can send one)
	// is refused naming the policies.
	_, err = a.proxy.CreateProxy(ctx, &snoopv1.CreateProxyRequest{Spec: &snoopv1.ProxySpec{Name: "q", Listen: "IP:127.0.0.1:0", Server: cache, OnCorrupt: 7}})
	wantCode(t, err, codes.InvalidArgument, "unknown policy 7: want CORRUPT_POLICY_CLOSE (1), or CORRUPT_POLICY_PASSTHROUGH (2)")
	// A capture's policy, which events carry, is no proxy's.
	_, err = a.proxy.CreateProxy(ctx, &snoopv1.CreateProxyRequest{Spec: &snoopv1.ProxySpec{Name: "q", Listen: "IP:127.0.0.1:0", Server: cache,
		OnCorrupt: snoopv1.CorruptPolicy_CORRUPT_POLICY_RESYNC}})
	wantCode(t, err, codes.InvalidArgument, "CORRUPT_POLICY_RESYNC is what a capture does")
}

// A fault's type and direction are numbers on the wire; one the API does
// not define is refused, never narrowed into another (257 is not 1), and
// the errors name what the API takes.
func TestFaultEnumsOutOfRangeAreRefusedByName(t *testing.T) {
	eng := epollEngine(t)
	a := startAPI(t, Config{Engine: eng}, ServerOptions{})
	ctx := context.Background()
	cache := startCache(t).String()
	create := func(name string, f *snoopv1.Fault) error {
		_, err := a.proxy.CreateProxy(ctx, &snoopv1.CreateProxyRequest{Spec: &snoopv1.ProxySpec{Name: name, Listen: "IP:127.0.0.1:0", Server: cache,
			Faults: []*snoopv1.Fault{f}}})
		return err
	}
	cases := []struct {
		f          *snoopv1.Fault
		field, msg string
	}{
		{&snoopv1.Fault{Name: "f", Type: 257, Delay: nil}, "spec.faults[0].type", "unknown type 257: want FAULT_TYPE_LATENCY (1),"},
		{&snoopv1.Fault{Name: "f", Type: -1}, "spec.faults[0].type", "unknown type -1"},
		{&snoopv1.Fault{Name: "f"}, "spec.faults[0].type", "FAULT_TYPE_UNSPECIFIED; a client library sends 0 for an enum name it does not know): want FAULT_TYPE_LATENCY (1)"},
		{&snoopv1.Fault{Name: "f", Type: snoopv1.FaultType_FAULT_TYPE_DROP, Direction: 257}, "spec.faults[0].direction", "unknown direction 257: want FAULT_DIRECTION_REQUEST (1)"},
		{&snoopv1.Fault{Name: "f", Type: snoopv1.FaultType_FAULT_TYPE_MISS, Ops: []snoopv1.Op{0}}, "spec.faults[0].ops[0]", "0 (OP_UNSPECIFIED) is not an operation"},
		{&snoopv1.Fault{Name: "f", Type: snoopv1.FaultType_FAULT_TYPE_MISS, Ops: []snoopv1.Op{9}}, "spec.faults[0].ops[0]", "9 is not an operation: want OP_ADD (1)"},
	}
	for _, c := range cases {
		err := create("p", c.f)
		wantCode(t, err, codes.InvalidArgument, c.msg)
		if v := decodeDetails(t, err).bad.GetFieldViolations(); len(v) != 1 || v[0].GetField() != c.field {
			t.Errorf("%v: violations %v, want one on %s", c.f, v, c.field)
		}
	}
	if n := len(a.d.ListProxies()); n != 0 {
		t.Errorf("%d proxies after refused creates", n)
	}
	// The direction a fault got is in the answer's effective_spec, filled
	// in (spec keeps what was declared): how a client sees that a
	// misspelt direction (sent as 0) became the default.
	r, err := a.proxy.CreateProxy(ctx, &snoopv1.CreateProxyRequest{Spec: &snoopv1.ProxySpec{Name: "ok", Listen: "IP:127.0.0.1:0", Server: cache,
		Faults: []*snoopv1.Fault{{Name: "f", Type: snoopv1.FaultType_FAULT_TYPE_DROP}}}})
	if err != nil {
		t.Fatal(err)
	}
	if d := r.GetProxy().GetEffectiveSpec().GetFaults()[0].GetDirection(); d != snoopv1.FaultDirection_FAULT_DIRECTION_REQUEST {
		t.Errorf("drop's direction in the answer: %v, want the default filled in", d)
	}
}

func TestWatchKindZeroIsRefusedByName(t *testing.T) {
	a := startAPI(t, Config{}, ServerOptions{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s, err := a.events.WatchEvents(ctx, &snoopv1.WatchEventsRequest{Kinds: []snoopv1.EventKind{0}})
	if err == nil {
		_, err = s.Recv()
	}
	if err == io.EOF {
		t.Fatal("the watch ended without an error")
	}
	wantCode(t, err, codes.InvalidArgument, "EVENT_KIND_TRANSACTION, EVENT_KIND_CONNECTION_OPENED")
	if !strings.Contains(err.Error(), "sends 0 for an enum name") {
		t.Errorf("the error does not say where a 0 comes from: %v", err)
	}
}
