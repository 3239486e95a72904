package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/snoopd/snoopd/distcache"
	"github.com/snoopd/snoopd/distcache/cacheserver"
)

// A fault reads back in spec as it was declared, in every answer and in
// the state file; its defaults are the effective spec's.
func TestFaultSpecIsWhatWasDeclared(t *testing.T) {
	state := t.TempDir()
	d := startDaemon(t, "--state-dir", state)
	cache, err := cacheserver.Start(distcache.MustParseAddr("IP:127.0.0.1:0"), cacheserver.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cache.Close() })
	mustCtl(t, d, "add", "p", "--listen", "IP:127.0.0.1:0", "--server", cache.Addr().String())
	mustCtl(t, d, "fault", "add", "p", "slow", "--type", "latency", "--delay", "50ms")
	const declared = `"faults":[{"name":"slow","type":"FAULT_TYPE_LATENCY","delay":"0.050s"}]`
	const effective = `"faults":[{"name":"slow","type":"FAULT_TYPE_LATENCY","direction":"FAULT_DIRECTION_RESPONSE","probability":1,"delay":"0.050s"}]`
	for _, args := range [][]string{{"show", "p", "-o", "json"}, {"list", "-o", "json"}} {
		out := mustCtl(t, d, args...).out
		spec, eff, ok := strings.Cut(out, `"effective_spec"`)
		if !ok || !strings.Contains(spec, declared) || !strings.Contains(eff, effective) {
			t.Errorf("%v: want spec %s and effective_spec %s in\n%s", args, declared, effective, out)
		}
	}
	b, err := os.ReadFile(filepath.Join(state, "proxies.json"))
	if err != nil || !strings.Contains(strings.ReplaceAll(string(b), " ", ""), declared) {
		t.Errorf("state file: %v, want the fault as declared, %s:\n%s", err, declared, b)
	}
	// The table shows what runs.
	if out := mustCtl(t, d, "fault", "list", "p").out; !strings.Contains(out, "latency   response") {
		t.Errorf("fault list:\n%s", out)
	}
}
