package ctl

import (
	"context"
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/snoopd/snoopd/ctl/format"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
)

func (e *env) listCommand() *cli.Command {
	return &cli.Command{
		Name:    "list",
		Aliases: []string{"ls"},
		Usage:   "list the proxies: name, listen, server, state, active connections, transactions, errors",
		Description: "ERRORS counts protocol errors, failed connects to the server, refused clients\n" +
			"and transactions whose result is not ok, hit, miss or notok.\n\n" +
			"-o json prints the snoop.v1.ListProxiesResponse.",
		Action: e.list,
	}
}

func (e *env) list(cCtx *cli.Context) error {
	if _, err := args(cCtx, 0, 0, ""); err != nil {
		return err
	}
	resp, err := unary(e, cCtx.Context, "list", "", func(ctx context.Context, c *client) (*snoopv1.ListProxiesResponse, error) {
		return c.proxies.ListProxies(ctx, &snoopv1.ListProxiesRequest{})
	})
	if err != nil {
		return err
	}
	if e.opts.json {
		return e.printJSON(resp)
	}
	if len(resp.GetProxies()) == 0 {
		_, err := fmt.Fprintln(e.stdio.Out, "no proxies (create one with 'snoopctl add NAME --listen ADDR --server ADDR')")
		return err
	}
	return format.WriteProxyList(e.stdio.Out, resp.GetProxies())
}
