package ctl

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"

	"github.com/urfave/cli/v2"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/snoopd/snoopd/ctl/format"
	"github.com/snoopd/snoopd/distcache"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
	"github.com/snoopd/snoopd/internal/labels"
)

func (e *env) applyCommand() *cli.Command {
	return &cli.Command{
		Name:  "apply",
		Usage: "make the set of proxies match a file",
		Description: "FILE is JSON: a list of proxy specs, or an object {\"proxies\": [...]}, with\n" +
			"the fields of snoop.v1.ProxySpec (camelCase or snake_case), for example:\n\n" +
			"  [{\"name\": \"web\", \"listen\": \"IP:127.0.0.1:9101\", \"server\": \"UNIX:/run/dc.sock\"}]\n\n" +
			"The whole set is checked before anything changes. Proxies whose spec is\n" +
			"unchanged keep their connections; with --prune, proxies not in the file are\n" +
			"removed. apply prints what was created, changed, kept and removed; running it\n" +
			"twice changes nothing the second time. A changed listen address needs a new\n" +
			"listener: such a proxy is reported recreated, and its counters start again.\n\n" +
			"What 'snoopctl list -o json' and 'show -o json' print is a declaration too:\n" +
			"each proxy's spec is applied, its state and counters are ignored.\n\n" +
			"--prune -l SELECTOR removes only the undeclared proxies whose labels the\n" +
			"selector selects (owner=ci; k=v, k!=v, k, !k, comma-separated), as kubectl\n" +
			"apply --prune -l does, so that two scripts sharing a daemon do not remove\n" +
			"each other's proxies; every proxy in the file must match it. --prune without\n" +
			"-l removes every undeclared proxy, and warns when one of them carries a label\n" +
			"that no proxy in the file carries (most likely another owner's).\n\n" +
			"-o json prints the snoop.v1.ApplyProxiesResponse.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "file", Aliases: []string{"f"}, Usage: "the declaration `FILE` (- for stdin)"},
			&cli.BoolFlag{Name: "prune", Usage: "remove proxies that the file does not declare"},
			&cli.BoolFlag{Name: "dry-run", Usage: "only report what would change"},
			&cli.StringFlag{Name: "selector", Aliases: []string{"l"}, Usage: "with --prune, remove only undeclared proxies whose labels match `SELECTOR` (owner=ci)"},
		},
		Action: e.apply,
	}
}

func (e *env) apply(cCtx *cli.Context) error {
	if _, err := args(cCtx, 0, 0, "-f FILE [--prune] [--dry-run]"); err != nil {
		return err
	}
	path := cCtx.String("file")
	if path == "" {
		return usagef("apply needs -f FILE (see 'snoopctl apply --help')")
	}
	req, err := e.readDeclaration(path)
	if err != nil {
		return err
	}
	req.Prune, req.DryRun = cCtx.Bool("prune"), cCtx.Bool("dry-run")
	if cCtx.IsSet("selector") {
		sel, err := labels.ParseSelector(cCtx.String("selector"))
		if err != nil {
			return usagef("-l: %v", err)
		}
		if !req.Prune {
			return usagef("-l %s selects what --prune removes; add --prune", cCtx.String("selector"))
		}
		req.PruneSelector = sel.String()
	}
	// A prune of everything undeclared lists the proxies first, to warn
	// about labelled ones it takes (see strayLabels).
	warnStray := req.Prune && req.PruneSelector == ""
	// The listen addresses before the apply tell which changes need a
	// new listener (and so start the counters again).
	before := map[string]*snoopv1.Proxy{}
	resp, err := unary(e, cCtx.Context, "apply "+path, "", func(ctx context.Context, c *client) (*snoopv1.ApplyProxiesResponse, error) {
		if !e.opts.json || warnStray {
			list, err := c.proxies.ListProxies(ctx, &snoopv1.ListProxiesRequest{})
			if err != nil {
				return nil, err
			}
			for _, p := range list.GetProxies() {
				before[p.GetSpec().GetName()] = p
			}
		}
		return c.proxies.ApplyProxies(ctx, req)
	})
	if err != nil {
		return err
	}
	if warnStray {
		verb := "removed"
		if req.DryRun {
			verb = "would remove"
		}
		for _, r := range resp.GetResults() {
			if r.GetAction() != snoopv1.ApplyAction_APPLY_ACTION_REMOVED {
				continue
			}
			if stray := strayLabels(before[r.GetName()].GetSpec().GetLabels(), req.GetProxies()); stray != "" {
				e.warnf("--prune %s proxy %s, labelled %s, which no proxy in %s is; to prune only your own proxies, label them (\"labels\": {\"owner\": \"me\"}) and prune with -l owner=me",
					verb, r.GetName(), stray, path)
			}
		}
	}
	if e.opts.json {
		return e.printJSON(resp)
	}
	return format.WriteApply(e.stdio.Out, resp, req.DryRun, recreated(before, req, resp), func(name string) *snoopv1.ProxySpec {
		return before[name].GetSpec()
	})
}

// strayLabels returns the labels of a pruned proxy (as k=v,...) that no
// declared proxy carries, "" if none: a sign that the proxy belongs to
// someone else, whom a selector would have left alone.
func strayLabels(l map[string]string, declared []*snoopv1.ProxySpec) string {
	stray := map[string]string{}
	for k, v := range l {
		if !slices.ContainsFunc(declared, func(s *snoopv1.ProxySpec) bool {
			w, ok := s.GetLabels()[k]
			return ok && w == v
		}) {
			stray[k] = v
		}
	}
	return labels.String(stray)
}

// recreated tells which changed proxies got a new listener: another
// instance (when the daemon reports instance ids) or another listen
// address than before.
func recreated(before map[string]*snoopv1.Proxy, req *snoopv1.ApplyProxiesRequest, resp *snoopv1.ApplyProxiesResponse) func(string) bool {
	declared := map[string]*snoopv1.ProxySpec{}
	for _, s := range req.GetProxies() {
		declared[s.GetName()] = s
	}
	after := map[string]*snoopv1.Proxy{}
	for _, r := range resp.GetResults() {
		after[r.GetName()] = r.GetProxy()
	}
	return func(name string) bool {
		old, now := before[name], after[name]
		if old == nil {
			return false
		}
		if a, b := old.GetInstanceId(), now.GetInstanceId(); a != "" && b != "" {
			return a != b
		}
		listen := now.GetSpec().GetListen()
		if listen == "" {
			listen = declared[name].GetListen()
		}
		return !sameListen(old.GetSpec().GetListen(), listen)
	}
}

// sameListen compares two listen addresses as the daemon would: written
// differently ("127.0.0.1:0", "IP:127.0.0.1:0") they may be the same.
func sameListen(a, b string) bool {
	pa, err1 := distcache.ParseListenAddr(a)
	pb, err2 := distcache.ParseListenAddr(b)
	if err1 != nil || err2 != nil {
		return a == b
	}
	return pa.String() == pb.String()
}

// readDeclaration reads apply's file. It takes what snoopctl and the API
// print, so that a set can be saved and applied again:
//
//   - a list of specs, or {"proxies": [...]} (an ApplyProxiesRequest);
//   - 'snoopctl list -o json' ({"proxies": [Proxy...]}) and 'show -o json'
//     ({"proxy": Proxy}): each proxy's spec is taken, its state, counters
//     and addresses are ignored.
//
// Keys may be written as protojson prints them (camelCase) or as the
// proto names them (snake_case). A key that is neither is an error, so a
// typo in a spec is not silently dropped.
func (e *env) readDeclaration(path string) (*snoopv1.ApplyProxiesRequest, error) {
	var data []byte
	var err error
	if path == "-" {
		data, err = io.ReadAll(e.stdio.In)
	} else {
		data, err = os.ReadFile(path)
	}
	if err != nil {
		return nil, failf("apply: %s", fileError(path, err))
	}
	bad := func(format string, args ...any) error {
		return failf("apply: %s is not a proxy declaration: %s (see 'snoopctl apply --help')", path, fmt.Sprintf(format, args...))
	}
	var entries []json.RawMessage
	trimmed := bytes.TrimSpace(data)
	if bytes.HasPrefix(trimmed, []byte("[")) {
		if err := json.Unmarshal(trimmed, &entries); err != nil {
			return nil, bad("%v", err)
		}
	} else {
		var top map[string]json.RawMessage
		if err := json.Unmarshal(trimmed, &top); err != nil {
			return nil, bad("%v", err)
		}
		for k := range top {
			switch k {
			case "prune", "dryRun", "dry_run", "pruneSelector", "prune_selector":
				// Removing proxies must always be asked for on the command
				// line, where the operator sees it, never slipped in by a
				// file.
				return nil, failf("apply: %s sets prune or dry_run; use --prune or --dry-run on the command line instead", path)
			case "proxies":
				if err := json.Unmarshal(top[k], &entries); err != nil {
					return nil, bad("proxies: %v", err)
				}
			case "bound_ports":
				// A snoopd state file: the ports its port-0 proxies had,
				// which only the daemon that wrote it uses.
			case "proxy", "connections": // show -o json
				if k == "proxy" {
					entries = append(entries, top[k])
				}
			default:
				return nil, bad("unknown field %q (want proxies)", k)
			}
		}
	}
	req := &snoopv1.ApplyProxiesRequest{}
	for i, raw := range entries {
		spec, err := specOf(raw)
		if err != nil {
			return nil, bad("proxies[%d]: %v", i, err)
		}
		req.Proxies = append(req.Proxies, spec)
	}
	return req, nil
}

// specOf reads one entry of a declaration: a ProxySpec, or a Proxy (from
// list or show) whose spec is taken.
func specOf(raw json.RawMessage) (*snoopv1.ProxySpec, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil {
		return nil, fmt.Errorf("want an object: %v", err)
	}
	if s, ok := fields["spec"]; ok {
		raw = s
	}
	spec := &snoopv1.ProxySpec{}
	if err := protojson.Unmarshal(raw, spec); err != nil {
		// The position is within the entry, not the file: leave it out.
		return nil, errors.New(protoErrorPrefix.ReplaceAllString(err.Error(), ""))
	}
	return spec, nil
}

// protoErrorPrefix is protojson's "proto: (line 1:13): " (with a
// non-breaking space it puts there on purpose, so that no one parses it).
var protoErrorPrefix = regexp.MustCompile(`^proto:[\s\x{00a0}]*(\(line \d+:\d+\):[\s\x{00a0}]*)?`)
