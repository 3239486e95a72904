package daemon

import (
	"context"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
	"github.com/snoopd/snoopd/internal/testutil"
)

// TestDryRunRefusesWhatApplyRefuses: a dry run checks the listeners the
// apply would bind, so an address another process holds is refused by
// both, with the same code and the holder named, and nothing changes;
// a move onto a proxy's own old address is not refused.
func TestDryRunRefusesWhatApplyRefuses(t *testing.T) {
	a := startAPI(t, Config{}, ServerOptions{})
	ctx := context.Background()
	cache := startCache(t)
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	unixHeld := filepath.Join(testutil.SocketDir(t), "held.sock")
	ul, err := net.Listen("unix", unixHeld)
	if err != nil {
		t.Fatal(err)
	}
	defer ul.Close()
	for _, listen := range []string{"IP:" + held.Addr().String(), "UNIX:" + unixHeld} {
		s := spec("p", cache.String())
		s.Listen = listen
		for _, dry := range []bool{true, false} {
			_, err := a.proxy.ApplyProxies(ctx, &snoopv1.ApplyProxiesRequest{Proxies: []*snoopv1.ProxySpec{s}, DryRun: dry})
			if status.Code(err) != codes.AlreadyExists || !strings.Contains(err.Error(), "another process listens there") {
				t.Errorf("apply on %s (dry run %v): %v, want ALREADY_EXISTS naming another process", listen, dry, err)
			}
		}
	}
	if list, _ := a.proxy.ListProxies(ctx, &snoopv1.ListProxiesRequest{}); len(list.GetProxies()) != 0 {
		t.Fatalf("a refused apply left proxies: %v", list.GetProxies())
	}

	// A proxy on a wildcard address, moved to a loopback one on the same
	// port, clashes only with itself: the dry run lets it through.
	free, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := free.Addr().(*net.TCPAddr).Port
	free.Close()
	s := spec("m", cache.String())
	s.Listen = "IP:0.0.0.0:" + strconv.Itoa(port)
	if _, err := a.proxy.ApplyProxies(ctx, &snoopv1.ApplyProxiesRequest{Proxies: []*snoopv1.ProxySpec{s}}); err != nil {
		t.Fatal(err)
	}
	s.Listen = "IP:127.0.0.1:" + strconv.Itoa(port)
	if _, err := a.proxy.ApplyProxies(ctx, &snoopv1.ApplyProxiesRequest{Proxies: []*snoopv1.ProxySpec{s}, DryRun: true}); err != nil {
		t.Errorf("a dry run moving a proxy onto its own old port: %v", err)
	}
}
