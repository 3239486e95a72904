package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/snoopd/snoopd/distcache"
	"github.com/snoopd/snoopd/distcache/cacheserver"
)

// TestApplyPruneSelectorKeepsOtherScriptsProxies runs two "scripts"
// against one daemon: each labels its proxies, and the one that applies
// with --prune -l removes only its own undeclared proxy. list and show
// show the labels; a plain --prune still removes everything undeclared
// and warns about the labelled proxy it takes.
func TestApplyPruneSelectorKeepsOtherScriptsProxies(t *testing.T) {
	d := startDaemon(t)
	cache, err := cacheserver.Start(distcache.MustParseAddr("IP:127.0.0.1:0"), cacheserver.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cache.Close() })
	server := cache.Addr().String()
	mustCtl(t, d, "add", "dev-web", "--listen", "IP:127.0.0.1:0", "--server", server, "--label", "owner=dev", "--label", "tier=web")
	mustCtl(t, d, "add", "ci-old", "--listen", "IP:127.0.0.1:0", "--server", server, "--label", "owner=ci")
	if r := runCtl(t, d, "add", "bad", "--listen", "IP:127.0.0.1:0", "--server", server, "--label", "owner"); r.code != 2 || !strings.Contains(r.err, "key=value") {
		t.Errorf("add --label without '=': %v", r)
	}

	decl := filepath.Join(d.dir, "ci.json")
	os.WriteFile(decl, fmt.Appendf(nil, `[{"name": "ci-new", "listen": "IP:127.0.0.1:0", "server": "%s", "labels": {"owner": "ci"}}]`, server), 0o600)
	r := mustCtl(t, d, "apply", "-f", decl, "--prune", "-l", "owner=ci")
	if r.out != "created ci-new\nremoved ci-old\n1 created, 0 changed, 0 kept, 1 removed\n" || r.err != "" {
		t.Errorf("apply --prune -l owner=ci: %v", r)
	}

	// A change of labels alone is a change in place, named.
	relabel := filepath.Join(d.dir, "relabel.json")
	os.WriteFile(relabel, fmt.Appendf(nil, `[{"name": "ci-new", "listen": "IP:127.0.0.1:0", "server": "%s", "labels": {"owner": "ci", "tier": "cache"}}]`, server), 0o600)
	if r := mustCtl(t, d, "apply", "-f", relabel, "--prune", "-l", "owner=ci"); r.out != "changed ci-new: labels owner=ci → owner=ci,tier=cache\n0 created, 1 changed, 0 kept, 0 removed\n" {
		t.Errorf("apply of new labels: %v", r)
	}
	mustCtl(t, d, "apply", "-f", decl, "--prune", "-l", "owner=ci")

	list := mustCtl(t, d, "list").out
	if !strings.Contains(list, "LABELS") || !strings.Contains(list, "owner=dev,tier=web") || !strings.Contains(list, "owner=ci") {
		t.Errorf("list does not show the labels:\n%s", list)
	}
	dev := mustCtl(t, d, "list", "-l", "owner=dev").out
	if !strings.Contains(dev, "\ndev-web ") || strings.Contains(dev, "ci-new") {
		t.Errorf("list -l owner=dev:\n%s", dev)
	}
	if r := mustCtl(t, d, "list", "-l", "owner=nobody"); r.out != "no proxies match owner=nobody\n" {
		t.Errorf("list -l owner=nobody: %v", r)
	}
	if show := mustCtl(t, d, "show", "dev-web").out; !strings.Contains(show, "labels:") || !strings.Contains(show, "owner=dev,tier=web") {
		t.Errorf("show does not show the labels:\n%s", show)
	}

	// A proxy in the file that the selector would not select is refused:
	// a later prune with the same selector could never remove it.
	unlabelled := filepath.Join(d.dir, "unlabelled.json")
	os.WriteFile(unlabelled, fmt.Appendf(nil, `[{"name": "ci-new", "listen": "IP:127.0.0.1:0", "server": "%s"}]`, server), 0o600)
	if r := runCtl(t, d, "apply", "-f", unlabelled, "--prune", "-l", "owner=ci"); r.code == 0 || !strings.Contains(r.err, "does not match prune_selector") {
		t.Errorf("apply of an unselected proxy with -l: %v", r)
	}
	if r := runCtl(t, d, "apply", "-f", decl, "-l", "owner=ci"); r.code != 2 || !strings.Contains(r.err, "--prune") {
		t.Errorf("apply -l without --prune: %v", r)
	}

	// Without a selector, prune keeps its old meaning and says whose
	// proxy it took.
	r = mustCtl(t, d, "apply", "-f", decl, "--prune")
	if !strings.Contains(r.out, "removed dev-web") || !strings.Contains(r.err, "warning: --prune removed proxy dev-web, labelled owner=dev,tier=web") {
		t.Errorf("apply --prune without -l: %v", r)
	}
}
