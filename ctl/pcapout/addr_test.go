package pcapout

import (
	"context"
	"net/netip"
	"testing"
	"time"

	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
)

func TestDescribeAddressesEachKindOfServer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	proxy := func(server, listenPath string) *snoopv1.Proxy {
		return &snoopv1.Proxy{Spec: &snoopv1.ProxySpec{Name: "p", Server: server}, ListenPath: listenPath}
	}
	for _, tc := range []struct {
		server, listenPath string
		want               Proxy
	}{
		{"IP:192.0.2.9:9000", "", Proxy{Server: netip.MustParseAddrPort("192.0.2.9:9000")}},
		{"UNIX:/run/dc.sock", "/run/snoop.sock", Proxy{Server: UnixServer("/run/dc.sock"), ListenPath: "/run/snoop.sock"}},
		// .invalid never resolves (RFC 6761): made up from the address,
		// with its own port.
		{"IP:cache.invalid:9100", "", Proxy{Server: netip.AddrPortFrom(UnixServer("IP:cache.invalid:9100").Addr(), 9100)}},
	} {
		if got := Describe(ctx, proxy(tc.server, tc.listenPath)); got != tc.want {
			t.Errorf("Describe(%s) = %+v, want %+v", tc.server, got, tc.want)
		}
	}
	// A host name is resolved: localhost from /etc/hosts, without a name
	// server, to 127.0.0.1 or ::1.
	if got := Describe(ctx, proxy("IP:localhost:9000", "")).Server; !got.Addr().IsLoopback() || got.Port() != 9000 {
		t.Errorf("Describe(IP:localhost:9000) = %v, want a loopback address on port 9000", got)
	}
}
