package ctl

import (
	"context"
	"fmt"
	"strconv"

	"github.com/urfave/cli/v2"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/snoopd/snoopd/ctl/format"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
)

func (e *env) connsCommand() *cli.Command {
	return &cli.Command{
		Name:        "conns",
		Usage:       "list a proxy's live connections, oldest first",
		ArgsUsage:   "NAME",
		Description: "-o json prints the snoop.v1.ListConnectionsResponse.",
		Action:      e.conns,
	}
}

func (e *env) conns(cCtx *cli.Context) error {
	a, err := args(cCtx, 1, 1, "NAME")
	if err != nil {
		return err
	}
	name := a[0]
	resp, err := unary(e, cCtx.Context, "conns "+name, noProxy(name), func(ctx context.Context, c *client) (*snoopv1.ListConnectionsResponse, error) {
		return c.proxies.ListConnections(ctx, &snoopv1.ListConnectionsRequest{Proxy: name})
	})
	if err != nil {
		return err
	}
	if e.opts.json {
		return e.printJSON(resp)
	}
	if len(resp.GetConnections()) == 0 {
		_, err := fmt.Fprintf(e.stdio.Out, "%s has no live connections\n", name)
		return err
	}
	return format.WriteConns(e.stdio.Out, resp.GetConnections(), e.now(), e.location())
}

func (e *env) killConnCommand() *cli.Command {
	return &cli.Command{
		Name:        "kill-conn",
		Usage:       "close one live connection of a proxy",
		ArgsUsage:   "NAME ID",
		Description: "ID is the connection id that 'snoopctl conns NAME' and tail show (conn=ID).\n\n-o json prints the snoop.v1.CloseConnectionResponse.",
		Action:      e.killConn,
	}
}

func (e *env) killConn(cCtx *cli.Context) error {
	a, err := args(cCtx, 2, 2, "NAME ID")
	if err != nil {
		return err
	}
	name := a[0]
	id, err := strconv.ParseUint(a[1], 10, 64)
	if err != nil || id == 0 {
		return usagef("connection id %q: want a positive number, as 'snoopctl conns %s' shows", a[1], name)
	}
	action := fmt.Sprintf("kill-conn %s %d", name, id)
	resp, err := unary(e, cCtx.Context, action, "", func(ctx context.Context, c *client) (*snoopv1.CloseConnectionResponse, error) {
		resp, err := c.proxies.CloseConnection(ctx, &snoopv1.CloseConnectionRequest{Proxy: name, Id: id})
		if status.Code(err) == codes.NotFound {
			// The proxy or the connection: the daemon's message says
			// which.
			return nil, failf("%s: %s (see 'snoopctl conns %s')", action, oneLine(status.Convert(err).Message()), name)
		}
		return resp, err
	})
	if err != nil {
		return err
	}
	if e.opts.json {
		return e.printJSON(resp)
	}
	_, err = fmt.Fprintf(e.stdio.Out, "closed connection %d of %s\n", id, name)
	return err
}
