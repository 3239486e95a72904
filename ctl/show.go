package ctl

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/snoopd/snoopd/ctl/format"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
)

func (e *env) showCommand() *cli.Command {
	return &cli.Command{
		Name:      "show",
		Usage:     "show a proxy: spec, counters, latency percentiles and histogram, live connections",
		ArgsUsage: "NAME",
		Description: "-o json prints {\"proxy\": snoop.v1.Proxy, \"connections\": [snoop.v1.Connection]}\n" +
			"on one line.",
		Action: e.show,
	}
}

func (e *env) show(cCtx *cli.Context) error {
	a, err := args(cCtx, 1, 1, "NAME")
	if err != nil {
		return err
	}
	name := a[0]
	var conns *snoopv1.ListConnectionsResponse
	p, err := unary(e, cCtx.Context, "show "+name, noProxy(name), func(ctx context.Context, c *client) (*snoopv1.GetProxyResponse, error) {
		p, err := c.proxies.GetProxy(ctx, &snoopv1.GetProxyRequest{Name: name, IncludeHistograms: true})
		if err != nil {
			return nil, err
		}
		conns, err = c.proxies.ListConnections(ctx, &snoopv1.ListConnectionsRequest{Proxy: name})
		return p, err
	})
	if err != nil {
		return err
	}
	if e.opts.json {
		return e.printShowJSON(p.GetProxy(), conns.GetConnections())
	}
	return format.WriteProxy(e.stdio.Out, p.GetProxy(), conns.GetConnections(), e.now(), e.location())
}

// printShowJSON writes a proxy and its connections as one JSON object
// made of the API's messages.
func (e *env) printShowJSON(p *snoopv1.Proxy, conns []*snoopv1.Connection) error {
	out := struct {
		Proxy       json.RawMessage   `json:"proxy"`
		Connections []json.RawMessage `json:"connections"`
	}{Connections: []json.RawMessage{}}
	var err error
	if out.Proxy, err = format.RawJSON(p); err != nil {
		return failf("%v", err)
	}
	for _, c := range conns {
		raw, err := format.RawJSON(c)
		if err != nil {
			return failf("%v", err)
		}
		out.Connections = append(out.Connections, raw)
	}
	b, err := json.Marshal(out)
	if err != nil {
		return failf("encode show: %v", err)
	}
	_, err = fmt.Fprintf(e.stdio.Out, "%s\n", b)
	return err
}
