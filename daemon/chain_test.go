package daemon

import (
	"bytes"
	"context"
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/fieldmaskpb"

	"github.com/snoopd/snoopd/distcache"
	"github.com/snoopd/snoopd/distcache/loadgen"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
	"github.com/snoopd/snoopd/internal/skip"
	"github.com/snoopd/snoopd/proxy"
)

// TestChainOfProxiesOnOneDaemon: three proxies of one daemon in a row,
// the last in front of a real cache (a fault proxy in front of a
// recording one, say), are accepted, carry a GET end to end on either
// engine, and each names the chain from itself on. Closing the chain
// into a loop is still refused.
func TestChainOfProxiesOnOneDaemon(t *testing.T) {
	for _, engine := range []string{proxy.EngineEpoll, proxy.EngineGoroutines} {
		t.Run(engine, func(t *testing.T) {
			eng, err := proxy.NewEngine(engine, 1)
			if err != nil {
				skip.Missing(t, "the %s engine: %v", engine, err)
			}
			t.Cleanup(func() { eng.Close() })
			a := startUnixAPI(t, Config{Engine: eng}, ServerOptions{})
			ctx := context.Background()
			cache := startCache(t)
			listen := map[string]string{}
			create := func(name, server string) {
				t.Helper()
				r, err := a.proxy.CreateProxy(ctx, &snoopv1.CreateProxyRequest{Spec: spec(name, server)})
				if err != nil {
					t.Fatalf("create %s (server %s): %v", name, server, err)
				}
				listen[name] = r.GetProxy().GetListenAddress()
			}
			create("inner", cache.String())
			create("outer", listen["inner"])
			create("front", listen["outer"])

			c, err := loadgen.Dial(ctx, distcache.MustParseAddr(listen["front"]), 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			data := bytes.Repeat([]byte("s"), 2000)
			if st, err := c.Add([]byte("id"), data, time.Minute); err != nil || st != distcache.StatusOK {
				t.Fatalf("ADD through the chain: %v %v", st, err)
			}
			if got, hit, err := c.Get([]byte("id")); err != nil || !hit || !bytes.Equal(got, data) {
				t.Fatalf("GET through the chain: hit %v, %d bytes, %v", hit, len(got), err)
			}
			for _, name := range []string{"front", "outer", "inner"} {
				p, err := a.d.GetProxy(name)
				if err != nil {
					t.Fatal(err)
				}
				if n := p.GetCounters().GetTransactions(); n < 2 {
					t.Errorf("%s carried %d transactions, want the ADD and the GET", name, n)
				}
				if p.GetCounters().GetLoopRefusals() != 0 {
					t.Errorf("%s refused %d dials as loops", name, p.GetCounters().GetLoopRefusals())
				}
			}
			for name, want := range map[string][]string{
				"front": {"front", "outer", "inner"},
				"outer": {"outer", "inner"},
				"inner": nil,
			} {
				p, _ := a.d.GetProxy(name)
				wantEnd := cache.String()
				if want == nil {
					wantEnd = ""
				}
				if !slices.Equal(p.GetChain(), want) || p.GetChainServer() != wantEnd {
					t.Errorf("%s: chain %q ending at %q, want %q ending at %q", name, p.GetChain(), p.GetChainServer(), want, wantEnd)
				}
			}

			// A dry run does not know the chain the apply would leave,
			// and says none.
			var specs []*snoopv1.ProxySpec
			for _, name := range []string{"front", "outer", "inner"} {
				p, _ := a.d.GetProxy(name)
				specs = append(specs, p.GetSpec())
			}
			dry, err := a.proxy.ApplyProxies(ctx, &snoopv1.ApplyProxiesRequest{Proxies: specs, DryRun: true})
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range dry.GetResults() {
				if len(r.GetProxy().GetChain()) != 0 || r.GetProxy().GetChainServer() != "" {
					t.Errorf("dry run: %s has chain %q ending at %q", r.GetName(), r.GetProxy().GetChain(), r.GetProxy().GetChainServer())
				}
			}

			// inner → front would close the chain into a loop.
			_, err = a.proxy.UpdateProxy(ctx, &snoopv1.UpdateProxyRequest{
				Spec:       &snoopv1.ProxySpec{Name: "inner", Server: listen["front"]},
				UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"server"}},
			})
			violation(t, err, "a proxy loop inner → front → outer → inner")
		})
	}
}
