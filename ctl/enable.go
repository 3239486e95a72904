package ctl

import (
	"context"
	"fmt"

	"github.com/urfave/cli/v2"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	"github.com/snoopd/snoopd/ctl/format"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
)

// enableCommand is "enable" (on) or "disable" (!on): both set the proxy's
// enabled field and nothing else.
func (e *env) enableCommand(on bool) *cli.Command {
	if on {
		return &cli.Command{
			Name:        "enable",
			Usage:       "let a proxy accept clients again",
			ArgsUsage:   "NAME",
			Description: "-o json prints the snoop.v1.UpdateProxyResponse.",
			Action:      func(cCtx *cli.Context) error { return e.setEnabled(cCtx, true) },
		}
	}
	return &cli.Command{
		Name:      "disable",
		Usage:     "make a proxy refuse new clients",
		ArgsUsage: "NAME [--close-connections]",
		Description: "Live connections go on unless --close-connections is given.\n\n" +
			"-o json prints the snoop.v1.UpdateProxyResponse.",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "close-connections", Usage: "also close the proxy's live connections"},
		},
		Action: func(cCtx *cli.Context) error { return e.setEnabled(cCtx, false) },
	}
}

func (e *env) setEnabled(cCtx *cli.Context, on bool) error {
	a, err := args(cCtx, 1, 1, cCtx.Command.ArgsUsage)
	if err != nil {
		return err
	}
	name := a[0]
	closeConns := !on && cCtx.Bool("close-connections")
	resp, err := unary(e, cCtx.Context, cCtx.Command.Name+" "+name, noProxy(name), func(ctx context.Context, c *client) (*snoopv1.UpdateProxyResponse, error) {
		return c.proxies.UpdateProxy(ctx, &snoopv1.UpdateProxyRequest{
			Spec:             &snoopv1.ProxySpec{Name: name, Enabled: proto.Bool(on)},
			UpdateMask:       &fieldmaskpb.FieldMask{Paths: []string{"enabled"}},
			CloseConnections: closeConns,
		})
	})
	if err != nil {
		return err
	}
	if e.opts.json {
		return e.printJSON(resp)
	}
	p := resp.GetProxy()
	switch {
	case on && p.GetState() == snoopv1.ProxyState_PROXY_STATE_FAILED:
		return failf("enable %s: it is enabled but cannot listen: %s", name, oneLine(p.GetError()))
	case on && format.IsTap(p):
		_, err = fmt.Fprintf(e.stdio.Out, "%s: %s on %s\n", name, format.ProxyState(p), p.GetSpec().GetTapInterface())
	case on:
		_, err = fmt.Fprintf(e.stdio.Out, "%s: %s on %s\n", name, format.State(p.GetState()), p.GetListenAddress())
	case format.IsTap(p):
		_, err = fmt.Fprintf(e.stdio.Out, "%s: disabled, capture stopped\n", name)
	case closeConns:
		_, err = fmt.Fprintf(e.stdio.Out, "%s: disabled, live connections closed\n", name)
	default:
		_, err = fmt.Fprintf(e.stdio.Out, "%s: disabled, %d live connections go on (--close-connections closes them)\n",
			name, p.GetCounters().GetConnectionsActive())
	}
	return err
}
