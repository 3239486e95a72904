package daemon

import (
	"context"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
	"github.com/snoopd/snoopd/proxy"
)

func TestFaultsNeedEpollEngine(t *testing.T) {
	a := startAPI(t, Config{}, ServerOptions{}) // the goroutine engine
	s := spec("g", startCache(t).String())
	s.Faults = []*snoopv1.Fault{{Name: "m", Type: snoopv1.FaultType_FAULT_TYPE_MISS}}
	_, err := a.proxy.CreateProxy(context.Background(), &snoopv1.CreateProxyRequest{Spec: s})
	wantCode(t, err, codes.FailedPrecondition, "faults need the epoll engine")
}

func TestFaultsInSpec(t *testing.T) {
	eng, err := proxy.NewEngine(proxy.EngineEpoll, 1)
	if err != nil {
		t.Skip(err)
	}
	defer eng.Close()
	dir := t.TempDir()
	a := startAPI(t, Config{Engine: eng, StateDir: dir}, ServerOptions{})
	ctx := context.Background()
	s := spec("f", startCache(t).String())
	if _, err := a.proxy.CreateProxy(ctx, &snoopv1.CreateProxyRequest{Spec: s}); err != nil {
		t.Fatal(err)
	}
	update := func(faults ...*snoopv1.Fault) (*snoopv1.UpdateProxyResponse, error) {
		return a.proxy.UpdateProxy(ctx, &snoopv1.UpdateProxyRequest{Spec: &snoopv1.ProxySpec{Name: "f", Faults: faults},
			UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"faults"}}})
	}
	// Bad input names the field.
	_, err = update(&snoopv1.Fault{Name: "slow", Type: snoopv1.FaultType_FAULT_TYPE_LATENCY})
	wantCode(t, err, codes.InvalidArgument, "spec.faults[0].delay")
	_, err = update(&snoopv1.Fault{Name: "c", Type: snoopv1.FaultType_FAULT_TYPE_CORRUPT, Field: "op"})
	wantCode(t, err, codes.InvalidArgument, "acknowledge_corruption")

	resp, err := update(&snoopv1.Fault{Name: "m", Type: snoopv1.FaultType_FAULT_TYPE_MISS},
		&snoopv1.Fault{Name: "slow", Type: snoopv1.FaultType_FAULT_TYPE_LATENCY, Delay: durationpb.New(5e6)})
	if err != nil {
		t.Fatal(err)
	}
	// Stored normalised: defaults explicit.
	want := []*snoopv1.Fault{
		{Name: "m", Type: snoopv1.FaultType_FAULT_TYPE_MISS, Ops: []snoopv1.Op{snoopv1.Op_OP_GET},
			Direction: snoopv1.FaultDirection_FAULT_DIRECTION_RESPONSE, Probability: proto.Float64(1)},
		{Name: "slow", Type: snoopv1.FaultType_FAULT_TYPE_LATENCY, Delay: durationpb.New(5e6),
			Direction: snoopv1.FaultDirection_FAULT_DIRECTION_RESPONSE, Probability: proto.Float64(1)},
	}
	got := resp.GetProxy().GetSpec().GetFaults()
	if len(got) != 2 || !proto.Equal(got[0], want[0]) || !proto.Equal(got[1], want[1]) {
		t.Fatalf("stored faults %v, want %v", got, want)
	}
	if c := resp.GetProxy().GetCounters().GetFaults(); len(c) != 2 || c[0].GetName() != "m" {
		t.Fatalf("fault counters %v", c)
	}
	// Applying the spec as shown changes nothing.
	cur := resp.GetProxy().GetSpec()
	ar, err := a.proxy.ApplyProxies(ctx, &snoopv1.ApplyProxiesRequest{Proxies: []*snoopv1.ProxySpec{cur}})
	if err != nil || ar.GetResults()[0].GetAction() != snoopv1.ApplyAction_APPLY_ACTION_UNCHANGED {
		t.Fatalf("apply of the shown spec: %v %v", ar, err)
	}
	// A restart brings the faults back.
	a.d.Close(ctx)
	d2, err := New(Config{Engine: eng, StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer d2.Close(ctx)
	p, err := d2.GetProxy("f")
	if err != nil || len(p.GetSpec().GetFaults()) != 2 || !proto.Equal(p.GetSpec().GetFaults()[1], want[1]) {
		t.Fatalf("after restart: %v %v", p.GetSpec().GetFaults(), err)
	}
}
