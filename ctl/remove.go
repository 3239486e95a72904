package ctl

import (
	"fmt"
	"time"

	"github.com/urfave/cli/v2"
	"google.golang.org/protobuf/types/known/durationpb"

	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
)

func (e *env) removeCommand() *cli.Command {
	return &cli.Command{
		Name:      "remove",
		Aliases:   []string{"rm"},
		Usage:     "delete proxies",
		ArgsUsage: "NAME...",
		Description: "Each proxy stops accepting at once; with --drain its live connections may go\n" +
			"on for up to that long before they are closed. Every name is tried; the exit\n" +
			"code is 1 if any failed.\n\n" +
			"-o json prints a snoop.v1.ApplyResult (action APPLY_ACTION_REMOVED) per proxy removed.",
		Flags: []cli.Flag{
			&cli.DurationFlag{Name: "drain", Usage: "let live connections finish for up to `DURATION` (0: close them at once)"},
		},
		Action: e.remove,
	}
}

func (e *env) remove(cCtx *cli.Context) error {
	names, err := args(cCtx, 1, -1, "NAME... [--drain DURATION]")
	if err != nil {
		return err
	}
	drain := cCtx.Duration("drain")
	if drain < 0 {
		return usagef("--drain %v is negative", drain)
	}
	c, err := e.dial()
	if err != nil {
		return err
	}
	defer c.Close()
	var last error
	for _, name := range names {
		if last != nil {
			// Only the last failure is returned; earlier ones are
			// printed as they happen so that none is lost.
			fmt.Fprintf(e.stdio.Err, "snoopctl: %s\n", last)
		}
		last = e.removeOne(cCtx, c, name, drain)
	}
	return last
}

func (e *env) removeOne(cCtx *cli.Context, c *client, name string, drain time.Duration) error {
	req := &snoopv1.DeleteProxyRequest{Name: name}
	if drain > 0 {
		req.Drain = durationpb.New(drain)
	}
	// The daemon answers after the drain, so the call may take that long.
	ctx, cancel := e.callContext(cCtx.Context, drain)
	defer cancel()
	if _, err := c.proxies.DeleteProxy(ctx, req); err != nil {
		return e.rpcError(err, "remove "+name, noProxy(name))
	}
	if e.opts.json {
		return e.printJSON(&snoopv1.ApplyResult{Name: name, Action: snoopv1.ApplyAction_APPLY_ACTION_REMOVED})
	}
	_, err := fmt.Fprintf(e.stdio.Out, "removed %s\n", name)
	return err
}
