package daemon

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
	"github.com/snoopd/snoopd/internal/testutil"
)

// together runs f and g at the same moment, as two concurrent requests,
// and returns their errors.
func together(f, g func() error) (error, error) {
	var wg sync.WaitGroup
	var ef, eg error
	start := make(chan struct{})
	wg.Add(2)
	go func() { defer wg.Done(); <-start; ef = f() }()
	go func() { defer wg.Done(); <-start; eg = g() }()
	close(start)
	wg.Wait()
	return ef, eg
}

// oneLoopRefusal fails the test unless exactly one of two errors is nil
// and the other refuses a proxy loop; it returns the index of the one
// that succeeded.
func oneLoopRefusal(t *testing.T, round int, errs ...error) int {
	t.Helper()
	won := -1
	for i, err := range errs {
		if err == nil {
			if won >= 0 {
				t.Fatalf("round %d: both halves of a loop were accepted", round)
			}
			won = i
			continue
		}
		if st, _ := status.FromError(err); st.Code() != codes.InvalidArgument {
			t.Fatalf("round %d: %v, want a proxy loop refused", round, err)
		}
	}
	if won < 0 {
		t.Fatalf("round %d: both refused (%v; %v), want one accepted", round, errs[0], errs[1])
	}
	return won
}

// Rounds of the concurrent loop tests, bounded in time too: each is a
// few requests over a unix socket. Before the check and the commit were
// one step, both halves of the loop got through within a few hundred
// rounds, often in the first.
const (
	loopRaceRounds = 1000
	loopRaceTime   = 20 * time.Second
)

// TestConcurrentCreatesOfALoopOneWins: a (listening on A, server B) and
// b (listening on B, server A) created at the same moment by two
// requests form a loop together; whatever the interleaving, exactly one
// create succeeds.
func TestConcurrentCreatesOfALoopOneWins(t *testing.T) {
	a := startUnixAPI(t, Config{}, ServerOptions{})
	ctx := context.Background()
	dir := testutil.SocketDir(t)
	create := func(name, listen, server string) func() error {
		return func() error {
			_, err := a.proxy.CreateProxy(ctx, &snoopv1.CreateProxyRequest{Spec: &snoopv1.ProxySpec{Name: name, Listen: listen, Server: server}})
			return err
		}
	}
	deadline := time.Now().Add(loopRaceTime)
	for r := 0; r < loopRaceRounds && time.Now().Before(deadline); r++ {
		la := "UNIX:" + filepath.Join(dir, fmt.Sprintf("a%d.sock", r))
		lb := "UNIX:" + filepath.Join(dir, fmt.Sprintf("b%d.sock", r))
		ea, eb := together(create("a", la, lb), create("b", lb, la))
		won := []string{"a", "b"}[oneLoopRefusal(t, r, ea, eb)]
		if _, err := a.proxy.DeleteProxy(ctx, &snoopv1.DeleteProxyRequest{Name: won}); err != nil {
			t.Fatal(err)
		}
	}
}

// TestConcurrentUpdatesOfALoopOneWins: two proxies pointed at each other
// at the same moment by two updates form a loop together; whatever the
// interleaving, exactly one update succeeds.
func TestConcurrentUpdatesOfALoopOneWins(t *testing.T) {
	a := startUnixAPI(t, Config{}, ServerOptions{})
	ctx := context.Background()
	away := "IP:192.0.2.1:9000" // TEST-NET-1: nobody answers, nobody dials it here
	listens := map[string]string{}
	for _, name := range []string{"a", "b"} {
		l := testutil.UnixAddr(t).String()
		if _, err := a.proxy.CreateProxy(ctx, &snoopv1.CreateProxyRequest{Spec: &snoopv1.ProxySpec{Name: name, Listen: l, Server: away}}); err != nil {
			t.Fatal(err)
		}
		listens[name] = l
	}
	update := func(name, server string) func() error {
		return func() error {
			_, err := a.proxy.UpdateProxy(ctx, &snoopv1.UpdateProxyRequest{
				Spec: &snoopv1.ProxySpec{Name: name, Server: server}, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"server"}},
			})
			return err
		}
	}
	deadline := time.Now().Add(loopRaceTime)
	for r := 0; r < loopRaceRounds && time.Now().Before(deadline); r++ {
		ea, eb := together(update("a", listens["b"]), update("b", listens["a"]))
		won := []string{"a", "b"}[oneLoopRefusal(t, r, ea, eb)]
		if err := update(won, away)(); err != nil {
			t.Fatal(err)
		}
	}
}
