package ctl

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"
	"time"

	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
)

// fault's actions are subcommands: each has its own help and flags.
func TestFaultActionsHaveTheirOwnHelp(t *testing.T) {
	for _, tc := range []struct {
		args      []string
		want, not string
	}{
		{[]string{"fault", "add", "--help"}, "snoopctl fault add [command options] PROXY NAME --type TYPE", "--listen"},
		{[]string{"fault", "add", "p", "n", "-h"}, "--i-mean-it", "--server"},
		{[]string{"fault", "remove", "-h"}, "snoopctl fault remove [command options] PROXY NAME...", "--drain"},
		{[]string{"fault", "list", "--help"}, "snoopctl fault list", "DAEMON"},
		{[]string{"fault", "clear", "-h"}, "snoopctl fault clear", "No help topic"},
		{[]string{"fault", "--help"}, "COMMANDS:\n   add ", "No help topic"},
	} {
		r := run(t, tc.args...)
		wantOK(t, r)
		if !strings.Contains(r.out, tc.want) || strings.Contains(r.out+r.err, tc.not) {
			t.Errorf("%v: want %q and not %q in:\n%s%s", tc.args, tc.want, tc.not, r.out, r.err)
		}
	}
	// add's flags are add's alone.
	wantFail(t, run(t, "fault", "list", "p", "--type", "miss"), ExitUsage, "unknown flag --type (see 'snoopctl fault list --help')")
	wantFail(t, run(t, "fault", "add", "p"), ExitUsage, "usage: snoopctl fault add PROXY NAME --type TYPE [flags] (see 'snoopctl fault add --help')")
	wantFail(t, run(t, "fault", "bogus", "p"), ExitUsage, `fault: unknown action "bogus"`)
	wantFail(t, run(t, "fault"), ExitUsage, "usage: snoopctl fault add|remove|list|clear")
}

// Flags go anywhere on a fault action's line, as on any other command.
func TestReorderArgsOfSubcommands(t *testing.T) {
	app := (&env{}).newApp()
	for _, tc := range []struct{ in, want string }{
		{"fault add p n --type miss --op get", "fault add --type miss --op get -- p n"},
		{"fault --type latency add p n --delay 5ms", "fault add --type latency --delay 5ms -- p n"},
		{"fault add p add --type miss -o json", "-o json fault add --type miss -- p add"},
		{"-a x fault rm p a b", "-a x fault remove -- p a b"},
		{"fault list p", "fault list -- p"},
		{"fault p list", "fault -- p list"},
	} {
		got, err := reorderArgs(app, strings.Fields(tc.in))
		if err != nil || strings.Join(got, " ") != tc.want {
			t.Errorf("reorderArgs(%q) = %q, %v; want %q", tc.in, strings.Join(got, " "), err, tc.want)
		}
	}
}

// The fault actions act on the proxy's faults; with several daemons each
// runs on every one.
func TestFaultActionsOnSeveralDaemons(t *testing.T) {
	a, addrA := startFake(t)
	b, addrB := startFake(t)
	for _, f := range []*fakeDaemon{a, b} {
		f.proxies["web"] = &snoopv1.Proxy{Spec: &snoopv1.ProxySpec{Name: "web", Faults: []*snoopv1.Fault{{Name: "slow", Type: snoopv1.FaultType_FAULT_TYPE_LATENCY}}}}
	}
	r := run(t, "-a", addrA+","+addrB, "fault", "list", "web")
	wantOK(t, r)
	if strings.Count(r.out, "slow") != 2 {
		t.Errorf("fault list on two daemons:\n%s", r.out)
	}
	wantOK(t, run(t, "-a", addrA, "-a", addrB, "fault", "clear", "web"))
	if len(a.updates) != 1 || len(b.updates) != 1 {
		t.Errorf("fault clear updated %d and %d daemons' proxies, want 1 each", len(a.updates), len(b.updates))
	}
}

// complete runs snoopctl's completion as the shell scripts do: the words
// so far, then the hidden flag (urfave/cli reads os.Args for the word
// before it).
func complete(t *testing.T, words ...string) string {
	t.Helper()
	defer func(args []string) { os.Args = args }(os.Args)
	args := append(words, completionFlag)
	os.Args = append([]string{"snoopctl"}, args...)
	var out bytes.Buffer
	e := &env{stdio: Stdio{In: strings.NewReader(""), Out: &out, Err: &out}, now: time.Now}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if code := e.run(ctx, args); code != 0 {
		t.Fatalf("%v: exit %d: %s", words, code, out.String())
	}
	return out.String()
}

func TestCompletionOffersWhatEachArgumentTakes(t *testing.T) {
	f, addr := startFake(t)
	f.proxies["web"] = &snoopv1.Proxy{Spec: &snoopv1.ProxySpec{Name: "web", Faults: []*snoopv1.Fault{{Name: "slow"}, {Name: "lossy"}}}}
	f.conns["web"] = []*snoopv1.Connection{{Id: 7}, {Id: 12}}
	for _, tc := range []struct {
		words []string
		want  string
	}{
		{[]string{"-a", addr, "fault"}, "add\nremove\nrm\nlist\nls\nclear\n"},
		{[]string{"-a", addr, "fault", "add"}, "web\n"},
		{[]string{"-a", addr, "fault", "list"}, "web\n"},
		{[]string{"-a", addr, "fault", "remove", "web"}, "slow\nlossy\n"},
		{[]string{"-a", addr, "fault", "remove", "web", "slow"}, "lossy\n"},
		{[]string{"-a", addr, "fault", "add", "web", "n", "--type"}, "latency\nmiss\nerror\ndrop\nreset\nstall\nbandwidth\ncorrupt\n"},
		{[]string{"-a", addr, "fault", "add", "web", "n", "--status"}, "notok\ndisconnected\ncorrupt\nexists\ntimeout-range\nid-range\ndata-range\n"},
		{[]string{"-a", addr, "kill-conn"}, "web\n"},
		{[]string{"-a", addr, "kill-conn", "web"}, "7\n12\n"},
		{[]string{"-a", addr, "tail", "--op"}, "add\nget\nremove\nhave\n"},
		{[]string{"-a", addr, "tail", "web", "--events"}, "tx\nconn\n"},
		{[]string{"-a", addr, "read", "--status"}, "ok\n"},
		{[]string{"-a", addr, "list", "-o"}, "text\njson\n"},
	} {
		if got := complete(t, tc.words...); !strings.HasPrefix(got, tc.want) {
			t.Errorf("completion of %q: %q, want it to start with %q", tc.words, got, tc.want)
		}
	}
	// plot's picture is --image FILE: no formats offered for it, while
	// its -o is the global output format, as everywhere.
	if got := complete(t, "-a", addr, "plot", "--image"); strings.Contains(got, "json") {
		t.Errorf("completion of plot --image: %q", got)
	}
}
