package daemon

import (
	"context"
	"slices"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
)

// labelled is spec with labels.
func labelled(name, server string, kv ...string) *snoopv1.ProxySpec {
	s := spec(name, server)
	s.Labels = map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		s.Labels[kv[i]] = kv[i+1]
	}
	return s
}

// proxyNames lists the proxies the daemon has, sorted.
func proxyNames(a *api) []string {
	var out []string
	for _, p := range a.d.ListProxies() {
		out = append(out, p.GetSpec().GetName())
	}
	slices.Sort(out)
	return out
}

func TestLabelsAreKeptCheckedAndUpdated(t *testing.T) {
	a := startAPI(t, Config{}, ServerOptions{})
	ctx := context.Background()
	cache := startCache(t).String()
	created, err := a.proxy.CreateProxy(ctx, &snoopv1.CreateProxyRequest{Spec: labelled("web", cache, "owner", "ci", "example.com/tier", "")})
	if err != nil {
		t.Fatal(err)
	}
	if got := created.GetProxy().GetSpec().GetLabels(); len(got) != 2 || got["owner"] != "ci" {
		t.Errorf("labels after create: %v", got)
	}
	got, err := a.proxy.GetProxy(ctx, &snoopv1.GetProxyRequest{Name: "web"})
	if err != nil || got.GetProxy().GetEffectiveSpec().GetLabels()["owner"] != "ci" {
		t.Fatalf("GetProxy: %v %v", got, err)
	}
	for _, bad := range []map[string]string{{"-owner": "ci"}, {"owner": "c i"}, {"Example.com/x": "1"}} {
		s := spec("bad", cache)
		s.Labels = bad
		_, err := a.proxy.CreateProxy(ctx, &snoopv1.CreateProxyRequest{Spec: s})
		wantCode(t, err, codes.InvalidArgument, "labels")
		if v := decodeDetails(t, err).bad.GetFieldViolations(); len(v) != 1 || v[0].GetField() != "spec.labels" {
			t.Errorf("labels %v: violations %v, want one on spec.labels", bad, v)
		}
	}
	up, err := a.proxy.UpdateProxy(ctx, &snoopv1.UpdateProxyRequest{Spec: labelled("web", cache, "owner", "dev"), UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"labels"}}})
	if err != nil {
		t.Fatal(err)
	}
	if l := up.GetProxy().GetSpec().GetLabels(); len(l) != 1 || l["owner"] != "dev" {
		t.Errorf("labels after an update of labels: %v", l)
	}
}

func TestPruneSelectorRemovesOnlySelectedProxies(t *testing.T) {
	a := startAPI(t, Config{}, ServerOptions{})
	ctx := context.Background()
	cache := startCache(t).String()
	for _, s := range []*snoopv1.ProxySpec{
		labelled("ci-old", cache, "owner", "ci"),
		labelled("dev-1", cache, "owner", "dev"),
		spec("bare", cache),
	} {
		if _, err := a.proxy.CreateProxy(ctx, &snoopv1.CreateProxyRequest{Spec: s}); err != nil {
			t.Fatal(err)
		}
	}
	mine := []*snoopv1.ProxySpec{labelled("ci-new", cache, "owner", "ci")}

	// A dry run reports the same removals as the apply.
	for _, dry := range []bool{true, false} {
		res, err := a.proxy.ApplyProxies(ctx, &snoopv1.ApplyProxiesRequest{Proxies: mine, Prune: true, PruneSelector: "owner=ci", DryRun: dry})
		if err != nil {
			t.Fatal(err)
		}
		var removed []string
		for _, r := range res.GetResults() {
			if r.GetAction() == snoopv1.ApplyAction_APPLY_ACTION_REMOVED {
				removed = append(removed, r.GetName())
			}
		}
		if !slices.Equal(removed, []string{"ci-old"}) {
			t.Errorf("dry run %v: removed %v, want only ci-old", dry, removed)
		}
	}
	if got := proxyNames(a); !slices.Equal(got, []string{"bare", "ci-new", "dev-1"}) {
		t.Errorf("after apply --prune -l owner=ci: %v", got)
	}

	// A declared proxy the selector does not select is refused, and so
	// are a selector without prune and a bad selector; nothing changes.
	_, err := a.proxy.ApplyProxies(ctx, &snoopv1.ApplyProxiesRequest{Proxies: []*snoopv1.ProxySpec{spec("unlabelled", cache)}, Prune: true, PruneSelector: "owner=ci"})
	wantCode(t, err, codes.InvalidArgument, "does not match prune_selector")
	_, err = a.proxy.ApplyProxies(ctx, &snoopv1.ApplyProxiesRequest{Proxies: mine, PruneSelector: "owner=ci"})
	wantCode(t, err, codes.InvalidArgument, "prune_selector")
	_, err = a.proxy.ApplyProxies(ctx, &snoopv1.ApplyProxiesRequest{Proxies: mine, Prune: true, PruneSelector: "owner in (ci)"})
	wantCode(t, err, codes.InvalidArgument, "prune_selector")
	if got := proxyNames(a); !slices.Equal(got, []string{"bare", "ci-new", "dev-1"}) {
		t.Errorf("after refused applies: %v", got)
	}

	// != keeps the unlabelled: prune everything not owned by dev.
	if _, err := a.proxy.ApplyProxies(ctx, &snoopv1.ApplyProxiesRequest{Proxies: mine, Prune: true, PruneSelector: "owner!=dev"}); err != nil {
		t.Fatal(err)
	}
	if got := proxyNames(a); !slices.Equal(got, []string{"ci-new", "dev-1"}) {
		t.Errorf("after apply --prune -l owner!=dev: %v", got)
	}
}
