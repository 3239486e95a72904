package ctl

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc/connectivity"

	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
	"github.com/snoopd/snoopd/internal/testutil"
)

// TestUnary checks what unary adds to the calls it makes: the --timeout
// bound (released when it returns), the closed connection, rpcError's
// words for the daemon's errors, snoopctl's own errors passed on as they
// are, and a failed dial that makes no call.
func TestUnary(t *testing.T) {
	f, addr := startFake(t)
	f.mu.Lock()
	f.proxies["web"] = &snoopv1.Proxy{Spec: &snoopv1.ProxySpec{Name: "web"}}
	f.mu.Unlock()
	const timeout = time.Hour

	t.Run("bound and close", func(t *testing.T) {
		for _, tc := range []struct {
			timeout     time.Duration
			hasDeadline bool
		}{{timeout, true}, {0, false}} {
			e := &env{opts: globalOptions{rawAddr: addr, timeout: tc.timeout}}
			var callCtx context.Context
			var used *client
			p, err := unary(e, context.Background(), "x", "", func(ctx context.Context, c *client) (*snoopv1.GetProxyResponse, error) {
				callCtx, used = ctx, c
				return c.proxies.GetProxy(ctx, &snoopv1.GetProxyRequest{Name: "web"})
			})
			if err != nil || p.GetProxy().GetSpec().GetName() != "web" {
				t.Fatalf("timeout %v: got %v, %v; want proxy web", tc.timeout, p, err)
			}
			dl, ok := callCtx.Deadline()
			if ok != tc.hasDeadline || (ok && time.Until(dl) > timeout) {
				t.Errorf("timeout %v: call's deadline %v (set: %v), want set: %v and at most --timeout away", tc.timeout, dl, ok, tc.hasDeadline)
			}
			if callCtx.Err() == nil {
				t.Errorf("timeout %v: the call's context is still live after unary returned", tc.timeout)
			}
			if s := used.conn.GetState(); s != connectivity.Shutdown {
				t.Errorf("timeout %v: connection is %v after unary returned, want closed", tc.timeout, s)
			}
		}
	})

	e := &env{opts: globalOptions{rawAddr: addr, timeout: timeout}}
	getProxy := func(name string) func(context.Context, *client) (*snoopv1.GetProxyResponse, error) {
		return func(ctx context.Context, c *client) (*snoopv1.GetProxyResponse, error) {
			return c.proxies.GetProxy(ctx, &snoopv1.GetProxyRequest{Name: name})
		}
	}

	t.Run("daemon error", func(t *testing.T) {
		_, err := unary(e, context.Background(), "show nosuch", "NF", getProxy("nosuch"))
		const want = "show nosuch: NF (see 'snoopctl list')"
		if err == nil || err.Error() != want || exitCode(err) != ExitFailure {
			t.Errorf("got %v (exit %d), want %q (exit %d)", err, exitCode(err), want, ExitFailure)
		}
	})

	t.Run("own error passed on", func(t *testing.T) {
		own := usagef("fault add: bad")
		_, err := unary(e, context.Background(), "x", "NF", func(ctx context.Context, c *client) (*snoopv1.GetProxyResponse, error) {
			if _, err := c.proxies.GetProxy(ctx, &snoopv1.GetProxyRequest{Name: "web"}); err != nil {
				return nil, err
			}
			return nil, own
		})
		if err != own || exitCode(err) != ExitUsage {
			t.Errorf("got %v (exit %d), want %v unchanged (exit %d)", err, exitCode(err), own, ExitUsage)
		}
		// An error of another kind is not snoopctl's yet: it gets the
		// action in front.
		_, err = unary(e, context.Background(), "x", "", func(context.Context, *client) (int, error) {
			return 0, errors.New("odd")
		})
		if err == nil || err.Error() != "x: odd" {
			t.Errorf("got %v, want %q", err, "x: odd")
		}
	})

	t.Run("dial fails", func(t *testing.T) {
		missing := "unix://" + filepath.Join(testutil.SocketDir(t), "none.sock")
		e := &env{opts: globalOptions{rawAddr: missing, timeout: timeout}}
		called := false
		_, err := unary(e, context.Background(), "list", "", func(context.Context, *client) (int, error) {
			called = true
			return 0, nil
		})
		if called {
			t.Error("unary made the call without a connection")
		}
		if err == nil || exitCode(err) != ExitFailure || err.Error() != e.unreachable("no such file", "").Error() {
			t.Errorf("got %v, want the unreachable message for a missing socket", err)
		}
	})
}
