package daemon

import (
	"context"
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
	"github.com/snoopd/snoopd/match"
)

// A watch filter whose pattern is built at run time, or whose constant
// pattern costs more than a filter may, is bad input naming the filter
// and the position; an ordinary pattern is accepted.
func TestWatchFilterPatternsAndCost(t *testing.T) {
	a := startAPI(t, Config{}, ServerOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	watch := func(filter string) error {
		s, err := a.events.WatchEvents(ctx, &snoopv1.WatchEventsRequest{Filter: filter})
		if err != nil {
			return err
		}
		// Bad input fails the first receive; a good filter sends headers
		// and then waits for events that never come.
		rctx, rcancel := context.WithTimeout(ctx, 300*time.Millisecond)
		defer rcancel()
		done := make(chan error, 1)
		go func() { _, err := s.Recv(); done <- err }()
		select {
		case err := <-done:
			return err
		case <-rctx.Done():
			return nil
		}
	}
	wantCode(t, watch(`proxy.matches(op + "p{1,1000}x1")`), codes.InvalidArgument,
		"filter: at 1:14: the pattern of matches must be a constant string")
	wantCode(t, watch(`proxy.matches("p{1,1000}x1")`), codes.InvalidArgument,
		fmt.Sprintf("a filter may cost at most %d", match.MaxWatchCost))
	wantCode(t, watch(`proxy.matches("(")`), codes.InvalidArgument, "filter: at 1:14: the pattern of matches: error parsing regexp")
	if err := watch(`proxy.matches("^cache-[0-9]+$") && op == "get"`); err != nil {
		t.Fatalf("an ordinary pattern: %v", err)
	}
}

// A fault filter is held to the tighter limit of the event loop it runs
// in; its refusal says so and names the fault's field.
func TestFaultFilterPatternsAndCost(t *testing.T) {
	eng := epollEngine(t)
	a := startAPI(t, Config{Engine: eng}, ServerOptions{})
	ctx := context.Background()
	if _, err := a.proxy.CreateProxy(ctx, &snoopv1.CreateProxyRequest{Spec: spec("f", startCache(t).String())}); err != nil {
		t.Fatal(err)
	}
	update := func(filter string) error {
		_, err := a.proxy.UpdateProxy(ctx, &snoopv1.UpdateProxyRequest{
			Spec: &snoopv1.ProxySpec{Name: "f", Faults: []*snoopv1.Fault{{Name: "slow", Type: snoopv1.FaultType_FAULT_TYPE_LATENCY,
				Delay: durationpb.New(time.Millisecond), Filter: filter}}},
			UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"faults"}}})
		return err
	}
	wantCode(t, update(`proxy.matches(op + "p{1,1000}x1")`), codes.InvalidArgument,
		"spec.faults[0].filter: at 1:14: the pattern of matches must be a constant string")
	// Accepted as a watch filter, too expensive for a fault.
	expensive := `string(session_id).matches("^[a-z]+[0-9]")`
	if _, err := match.Compile(match.Spec{Expr: expensive}); err != nil {
		t.Fatalf("as a watch filter: %v", err)
	}
	wantCode(t, update(expensive), codes.InvalidArgument, "spec.faults[0].filter: expression may cost up to")
	wantCode(t, update(expensive), codes.InvalidArgument, fmt.Sprintf("a fault filter may cost at most %d", match.MaxFaultCost))
	if err := update(`op == "get" && string(session_id).startsWith("ab")`); err != nil {
		t.Fatalf("an ordinary fault filter: %v", err)
	}
}
