package daemon

import (
	"context"
	"maps"
	"slices"
	"testing"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/snoopd/snoopd/distcache"
	"github.com/snoopd/snoopd/distcache/loadgen"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
)

// The health service names docs/clients.md lists are the ones List
// returns, without a token even where the API needs one.
func TestHealthListsTheDaemonAndEachService(t *testing.T) {
	a := startAPI(t, Config{}, ServerOptions{Token: "secret"})
	r, err := a.health.List(context.Background(), &healthpb.HealthListRequest{})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"", "snoop.v1.DaemonService", "snoop.v1.EventService", "snoop.v1.ProxyService"}
	if got := slices.Sorted(maps.Keys(r.GetStatuses())); !slices.Equal(got, want) {
		t.Errorf("List: %v, want %q", got, want)
	}
	for name, st := range r.GetStatuses() {
		if st.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("%q: %v", name, st.GetStatus())
		}
	}
}

// A watch is registered once its headers arrive: an event published
// right after them reaches it, without asking for history.
func TestWatchHeadersMeanTheWatchIsRegistered(t *testing.T) {
	a := startUnixAPI(t, Config{}, ServerOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	created, err := a.proxy.CreateProxy(ctx, &snoopv1.CreateProxyRequest{Spec: spec("p", startCache(t).String())})
	if err != nil {
		t.Fatal(err)
	}
	s, err := a.events.WatchEvents(ctx, &snoopv1.WatchEventsRequest{Kinds: []snoopv1.EventKind{snoopv1.EventKind_EVENT_KIND_TRANSACTION}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Header(); err != nil {
		t.Fatal(err)
	}
	c, err := loadgen.Dial(ctx, distcache.MustParseAddr(created.GetProxy().GetListenAddress()), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.Have([]byte("after-the-headers"))
	c.Close()
	r, err := s.Recv()
	if err != nil {
		t.Fatalf("no event after the headers: %v", err)
	}
	if tx := r.GetEvent().GetTransaction(); string(tx.GetSessionId()) != "after-the-headers" {
		t.Errorf("first response: %v", r)
	}
}
