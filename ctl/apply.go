package ctl

import (
	"bytes"
	"encoding/json"
	"io"
	"os"

	"github.com/urfave/cli/v2"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/snoopd/snoopd/ctl/format"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
)

func (e *env) applyCommand() *cli.Command {
	return &cli.Command{
		Name:  "apply",
		Usage: "make the set of proxies match a file",
		Description: "FILE is JSON: a list of proxy specs, or an object {\"proxies\": [...]}, with\n" +
			"the fields of snoop.v1.ProxySpec, for example:\n\n" +
			"  [{\"name\": \"web\", \"listen\": \"IP:127.0.0.1:9101\", \"server\": \"UNIX:/run/dc.sock\"}]\n\n" +
			"The whole set is checked before anything changes. Proxies whose spec is\n" +
			"unchanged keep their connections; with --prune, proxies not in the file are\n" +
			"removed. apply prints what was created, changed, kept and removed; running it\n" +
			"twice changes nothing the second time.\n\n" +
			"-o json prints the snoop.v1.ApplyProxiesResponse.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "file", Aliases: []string{"f"}, Usage: "the declaration `FILE` (- for stdin)"},
			&cli.BoolFlag{Name: "prune", Usage: "remove proxies that the file does not declare"},
			&cli.BoolFlag{Name: "dry-run", Usage: "only report what would change"},
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
	return e.withClient(func(c *client) error {
		ctx, cancel := e.callContext(cCtx.Context, 0)
		defer cancel()
		resp, err := c.proxies.ApplyProxies(ctx, req)
		if err != nil {
			return e.rpcError(err, "apply "+path, "")
		}
		if e.opts.json {
			return e.printJSON(resp)
		}
		return format.WriteApply(e.stdio.Out, resp, req.DryRun)
	})
}

// readDeclaration reads apply's file: an ApplyProxiesRequest in JSON, or
// just the list of its proxies.
func (e *env) readDeclaration(path string) (*snoopv1.ApplyProxiesRequest, error) {
	var data []byte
	var err error
	if path == "-" {
		data, err = io.ReadAll(e.stdio.In)
	} else {
		data, err = os.ReadFile(path)
	}
	if err != nil {
		return nil, failf("apply: read %v", err)
	}
	trimmed := bytes.TrimSpace(data)
	if bytes.HasPrefix(trimmed, []byte("[")) {
		trimmed = append(append([]byte(`{"proxies":`), trimmed...), '}')
	}
	trimmed = dropBoundPorts(trimmed)
	req := &snoopv1.ApplyProxiesRequest{}
	if err := protojson.Unmarshal(trimmed, req); err != nil {
		return nil, failf("apply: %s is not a proxy declaration: %v (see 'snoopctl apply --help')", path, err)
	}
	// Removing proxies must always be asked for on the command line, where
	// the operator sees it, never slipped in by a file.
	if req.Prune || req.DryRun {
		return nil, failf("apply: %s sets prune or dry_run; use --prune or --dry-run on the command line instead", path)
	}
	return req, nil
}

// dropBoundPorts removes the "bound_ports" key a snoopd state file has
// beside "proxies" (the ports its port-0 proxies had, which only the
// daemon that wrote it uses), so a state file can be applied as it is.
// Anything else is left for protojson to judge.
func dropBoundPorts(b []byte) []byte {
	var top map[string]json.RawMessage
	if !bytes.Contains(b, []byte(`"bound_ports"`)) || json.Unmarshal(b, &top) != nil {
		return b
	}
	if _, ok := top["bound_ports"]; !ok {
		return b
	}
	delete(top, "bound_ports")
	out, err := json.Marshal(top)
	if err != nil {
		return b
	}
	return out
}
