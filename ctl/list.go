package ctl

import (
	"context"
	"fmt"
	"slices"

	"github.com/urfave/cli/v2"

	"github.com/snoopd/snoopd/ctl/format"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
	"github.com/snoopd/snoopd/internal/labels"
)

func (e *env) listCommand() *cli.Command {
	return &cli.Command{
		Name:    "list",
		Aliases: []string{"ls"},
		Usage:   "list the proxies: name, listen, server, state, active connections, transactions, errors",
		Description: "ERRORS counts protocol errors, failed connects to the server, refused clients\n" +
			"and transactions whose result is not ok, hit, miss or notok.\n\n" +
			"-l SELECTOR keeps the proxies whose labels it selects (owner=ci, tier!=test,\n" +
			"canary, !canary; comma-separated, all must hold). A LABELS column appears when\n" +
			"a listed proxy has labels.\n\n" +
			"-o json prints the snoop.v1.ListProxiesResponse.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "selector", Aliases: []string{"l"}, Usage: "keep proxies whose labels match `SELECTOR` (k=v,k2!=v2,k3,!k4)"},
		},
		Action: e.list,
	}
}

func (e *env) list(cCtx *cli.Context) error {
	if _, err := args(cCtx, 0, 0, ""); err != nil {
		return err
	}
	sel, err := labels.ParseSelector(cCtx.String("selector"))
	if err != nil {
		return usagef("-l: %v", err)
	}
	resp, err := unary(e, cCtx.Context, "list", "", func(ctx context.Context, c *client) (*snoopv1.ListProxiesResponse, error) {
		return c.proxies.ListProxies(ctx, &snoopv1.ListProxiesRequest{})
	})
	if err != nil {
		return err
	}
	if !sel.Empty() {
		// Filtered here, not by the daemon: the answer is small, and
		// every daemon that reports labels can be asked.
		resp.Proxies = slices.DeleteFunc(resp.Proxies, func(p *snoopv1.Proxy) bool { return !sel.Matches(p.GetSpec().GetLabels()) })
	}
	if e.opts.json {
		return e.printJSON(resp)
	}
	if len(resp.GetProxies()) == 0 {
		if !sel.Empty() {
			_, err := fmt.Fprintf(e.stdio.Out, "no proxies match %s\n", sel)
			return err
		}
		_, err := fmt.Fprintln(e.stdio.Out, "no proxies (create one with 'snoopctl add NAME --listen ADDR --server ADDR')")
		return err
	}
	return format.WriteProxyList(e.stdio.Out, resp.GetProxies())
}
