package ctl

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/urfave/cli/v2"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	"github.com/snoopd/snoopd/ctl/filter"
	"github.com/snoopd/snoopd/ctl/format"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
	"github.com/snoopd/snoopd/match"
)

// faultCommand is "snoopctl fault add|remove|list|clear PROXY ...": a
// read-modify-write of the proxy spec's faults through UpdateProxy with
// the mask path "faults". Each action is a subcommand with its own help,
// flags and completion; reorderArgs lets their flags go anywhere on the
// line, as elsewhere.
func (e *env) faultCommand() *cli.Command {
	sub := []*cli.Command{
		{
			Name:      "add",
			Usage:     "add a fault to a proxy's traffic",
			ArgsUsage: "PROXY NAME --type TYPE [flags]",
			Description: "Faults change the traffic they match, at once, on live connections too:\n" +
				"  latency    hold the message --delay D (± --jitter J); later ones wait behind it\n" +
				"  miss       answer a GET with a miss (the server is asked; its answer is replaced)\n" +
				"  error      answer with --status notok|disconnected (ADD only: corrupt|exists|timeout-range|id-range|data-range)\n" +
				"  drop       close the client: --when before (the request never reaches the server) or after (the answer never reaches the client)\n" +
				"  reset      as drop, with a TCP reset\n" +
				"  stall      stop both directions for --delay D\n" +
				"  bandwidth  pace matching messages at --rate BYTES per second\n" +
				"  corrupt    damage --field version|is_response|request_uid|op|complete|data_len of the answer's first frame (needs --i-mean-it)\n" +
				"Which messages: --op, --direction request|response|both, --filter CEL (the event filter's variables;\n" +
				"it runs in the proxy's event loop for every transaction, so its cost is held to " + fmt.Sprint(match.MaxFaultCost) + ", a watch filter's to " + fmt.Sprint(match.MaxWatchCost) + ");\n" +
				"how often: --probability P with --seed N (the same traffic gets the same choices), --budget N (the first N\n" +
				"matches), --for D. A message gets the first fault, in list order, that matches it and wins its draw.\n" +
				"A latency or stall fault's hold counts in the latency events and statistics show (what the client\n" +
				"waited); server_latency is what the server took.\n" +
				"Faults need snoopd's epoll engine (the default on Linux).\n\n" +
				"-o json prints the proxy's faults and counters.",
			Flags: []cli.Flag{
				&cli.StringFlag{Name: "type", Usage: "the fault's `TYPE`: latency, miss, error, drop, reset, stall, bandwidth, corrupt"},
				&cli.StringSliceFlag{Name: "op", Usage: "only these `OPS` (get,add,remove,have); default all"},
				&cli.StringFlag{Name: "direction", Usage: "decide on `DIR`: request, response or both (default: response; request for drop, reset, stall)"},
				&cli.StringFlag{Name: "when", Usage: "drop and reset: `before` the request is forwarded, or after the answer arrived"},
				&cli.StringFlag{Name: "filter", Usage: "only messages whose transaction so far satisfies the CEL `EXPR`"},
				&cli.Float64Flag{Name: "probability", Value: 1, Usage: "the chance `P` (0 to 1) that a matching message gets the fault"},
				&cli.Uint64Flag{Name: "seed", Usage: "seed `N` of the fault's random choices"},
				&cli.Uint64Flag{Name: "budget", Usage: "only the first `N` matching messages"},
				&cli.DurationFlag{Name: "for", Usage: "end the fault `D` after it is added (a fixed time, which a snoopd restart keeps)"},
				&cli.DurationFlag{Name: "delay", Usage: "latency's hold, stall's pause (`D`)"},
				&cli.DurationFlag{Name: "jitter", Usage: "latency: spread the delay over D ± `J`"},
				&cli.StringFlag{Name: "status", Usage: "error's answer: `STATUS` (notok, disconnected, exists, ...)"},
				&cli.Uint64Flag{Name: "rate", Usage: "bandwidth: `BYTES` per second"},
				&cli.StringFlag{Name: "field", Usage: "corrupt: the header `FIELD` to damage"},
				&cli.BoolFlag{Name: "i-mean-it", Usage: "corrupt: send clients frames the protocol forbids"},
			},
			Action:       e.faultAdd,
			BashComplete: e.completeFaultArgs,
		},
		{
			Name:         "remove",
			Aliases:      []string{"rm"},
			Usage:        "remove faults from a proxy by name; what they hold is released at once, in order",
			ArgsUsage:    "PROXY NAME...",
			Description:  "-o json prints the proxy's faults and counters.",
			Action:       e.faultRemove,
			BashComplete: e.completeFaultArgs,
		},
		{
			Name:         "list",
			Aliases:      []string{"ls"},
			Usage:        "list a proxy's faults with their counters",
			ArgsUsage:    "PROXY",
			Description:  "-o json prints the proxy's faults and counters.",
			Action:       e.faultList,
			BashComplete: e.completeFaultArgs,
		},
		{
			Name:         "clear",
			Usage:        "remove every fault of a proxy; what they hold is released at once, in order",
			ArgsUsage:    "PROXY",
			Description:  "-o json prints the proxy's faults and counters.",
			Action:       e.faultClear,
			BashComplete: e.completeFaultArgs,
		},
	}
	for _, c := range sub {
		quietBools(c.Flags)
		c.OnUsageError = onUsageError
		c.HideHelpCommand = true
	}
	return &cli.Command{
		Name:      "fault",
		Usage:     "inject faults into a proxy's traffic: add, remove, list, clear",
		ArgsUsage: "add|remove|list|clear PROXY ...",
		Description: "Faults change the traffic they match, at once, on live connections too: latency, miss, error,\n" +
			"drop, reset, stall, bandwidth and corrupt ('snoopctl fault add --help' says what each does).\n" +
			"When a fault ends (clear, remove, --for), what it holds is released at once, in order.",
		Subcommands: sub,
		Action: func(cCtx *cli.Context) error {
			if a := cCtx.Args().First(); a != "" {
				return usagef("fault: unknown action %q (want add, remove, list or clear; see 'snoopctl fault --help')", a)
			}
			return usagef("usage: snoopctl fault add|remove|list|clear PROXY ... (see 'snoopctl fault --help')")
		},
	}
}

func (e *env) faultList(cCtx *cli.Context) error {
	a, err := args(cCtx, 1, 1, "PROXY")
	if err != nil {
		return err
	}
	return e.editFaults(cCtx, "list", a[0], nil)
}

func (e *env) faultClear(cCtx *cli.Context) error {
	a, err := args(cCtx, 1, 1, "PROXY")
	if err != nil {
		return err
	}
	return e.editFaults(cCtx, "clear", a[0], func([]*snoopv1.Fault) ([]*snoopv1.Fault, error) { return nil, nil })
}

func (e *env) faultRemove(cCtx *cli.Context) error {
	a, err := args(cCtx, 2, -1, "PROXY NAME...")
	if err != nil {
		return err
	}
	proxyName, names := a[0], a[1:]
	return e.editFaults(cCtx, "remove", proxyName, func(cur []*snoopv1.Fault) ([]*snoopv1.Fault, error) {
		var out []*snoopv1.Fault
		for _, n := range names {
			if !slices.ContainsFunc(cur, func(f *snoopv1.Fault) bool { return f.GetName() == n }) {
				return nil, failf("fault remove: proxy %s has no fault named %q", proxyName, n)
			}
		}
		for _, f := range cur {
			if !slices.Contains(names, f.GetName()) {
				out = append(out, f)
			}
		}
		return out, nil
	})
}

func (e *env) faultAdd(cCtx *cli.Context) error {
	a, err := args(cCtx, 2, 2, "PROXY NAME --type TYPE [flags]")
	if err != nil {
		return err
	}
	proxyName := a[0]
	f, err := faultFromFlags(cCtx, a[1])
	if err != nil {
		return err
	}
	return e.editFaults(cCtx, "add", proxyName, func(cur []*snoopv1.Fault) ([]*snoopv1.Fault, error) {
		if slices.ContainsFunc(cur, func(g *snoopv1.Fault) bool { return g.GetName() == f.GetName() }) {
			return nil, failf("fault add: proxy %s already has a fault named %q (remove it first)", proxyName, f.GetName())
		}
		return append(cur, f), nil
	})
}

// editFaults reads the proxy, changes its faults with edit (nil: only
// read them) and prints them.
func (e *env) editFaults(cCtx *cli.Context, action, proxyName string, edit func([]*snoopv1.Fault) ([]*snoopv1.Fault, error)) error {
	p, err := unary(e, cCtx.Context, "fault "+action+" "+proxyName, noProxy(proxyName), func(ctx context.Context, c *client) (*snoopv1.Proxy, error) {
		got, err := c.proxies.GetProxy(ctx, &snoopv1.GetProxyRequest{Name: proxyName})
		if err != nil || edit == nil {
			return got.GetProxy(), err
		}
		// edit's errors are snoopctl's own words; unary passes them on.
		cur := got.GetProxy().GetSpec().GetFaults()
		faults, err := edit(cur)
		if err != nil {
			return nil, err
		}
		resp, err := c.proxies.UpdateProxy(ctx, &snoopv1.UpdateProxyRequest{
			Spec:       &snoopv1.ProxySpec{Name: proxyName, Faults: faults},
			UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"faults"}},
		})
		if err != nil && action == "add" {
			// The new fault is the last: its errors are the flags'.
			err = flagTerms(cCtx, err, len(faults)-1)
		}
		return resp.GetProxy(), err
	})
	if err != nil {
		return err
	}
	return e.printFaults(p, action)
}

// faultFlags maps the API's fault fields to the flags of fault add that
// set them.
var faultFlags = map[string]string{
	"type": "type", "ops": "op", "direction": "direction", "filter": "filter", "probability": "probability",
	"seed": "seed", "budget": "budget", "duration": "for", "delay": "delay", "jitter": "jitter",
	"status": "status", "rate": "rate", "field": "field", "acknowledge_corruption": "i-mean-it",
}

// flagTerms rewrites the daemon's complaint about field spec.faults[i].F
// of the fault being added as one about the flag that sets F, as typed:
// "--op add: a miss fault answers get requests only, not add".
func flagTerms(cCtx *cli.Context, err error, i int) error {
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.InvalidArgument {
		return err
	}
	prefix := fmt.Sprintf("spec.faults[%d].", i)
	for _, d := range st.Details() {
		br, ok := d.(*errdetails.BadRequest)
		if !ok {
			continue
		}
		for _, v := range br.GetFieldViolations() {
			field, ok := strings.CutPrefix(v.GetField(), prefix)
			if !ok {
				continue
			}
			field, _, _ = strings.Cut(field, "[") // ops[1]
			what := field
			if field == "name" {
				what = "NAME"
			}
			if fl, ok := faultFlags[field]; ok {
				what = "--" + fl
				switch {
				case fl == "direction" && cCtx.IsSet("when"):
					what = "--when " + cCtx.String("when")
				case fl == "op" && cCtx.IsSet(fl):
					what += " " + strings.Join(cCtx.StringSlice(fl), ",")
				case cCtx.IsSet(fl) && fl != "i-mean-it":
					what += " " + fmt.Sprint(cCtx.Value(fl))
				}
			}
			desc := v.GetDescription()
			if _, typed, ok := strings.Cut(what, " "); ok {
				desc = strings.TrimPrefix(desc, typed+": ") // said once
			}
			return failf("fault add: %s: %s", what, desc)
		}
	}
	return err
}

// faultFromFlags builds the fault that "fault add" describes.
func faultFromFlags(cCtx *cli.Context, name string) (*snoopv1.Fault, error) {
	f := &snoopv1.Fault{Name: name, Filter: cCtx.String("filter"), Seed: cCtx.Uint64("seed"), Budget: cCtx.Uint64("budget"),
		Rate: cCtx.Uint64("rate"), Status: cCtx.String("status"), Field: cCtx.String("field"), AcknowledgeCorruption: cCtx.Bool("i-mean-it")}
	t := cCtx.String("type")
	if t == "" {
		return nil, usagef("fault add: --type is required (latency, miss, error, drop, reset, stall, bandwidth, corrupt)")
	}
	v, ok := snoopv1.FaultType_value["FAULT_TYPE_"+strings.ToUpper(t)]
	if !ok || v == 0 {
		return nil, usagef("fault add: unknown --type %q (want latency, miss, error, drop, reset, stall, bandwidth or corrupt)", t)
	}
	f.Type = snoopv1.FaultType(v)
	if f.Type == snoopv1.FaultType_FAULT_TYPE_CORRUPT && !f.AcknowledgeCorruption {
		return nil, usagef("fault add: a corrupt fault sends clients frames the protocol forbids; add --i-mean-it if that is what you want")
	}
	for _, s := range filter.SplitList(cCtx.StringSlice("op")) {
		v, ok := snoopv1.Op_value["OP_"+strings.ToUpper(s)]
		if !ok || v == 0 {
			return nil, usagef("fault add: unknown --op %q (want get, add, remove or have)", s)
		}
		f.Ops = append(f.Ops, snoopv1.Op(v))
	}
	dir, when := cCtx.String("direction"), cCtx.String("when")
	switch {
	case dir != "" && when != "":
		return nil, usagef("fault add: give --direction or --when, not both")
	case when == "before":
		dir = "request"
	case when == "after":
		dir = "response"
	case when != "":
		return nil, usagef("fault add: --when %q: want before or after", when)
	}
	if dir != "" {
		v, ok := snoopv1.FaultDirection_value["FAULT_DIRECTION_"+strings.ToUpper(dir)]
		if !ok || v == 0 {
			return nil, usagef("fault add: --direction %q: want request, response or both", dir)
		}
		f.Direction = snoopv1.FaultDirection(v)
	}
	if cCtx.IsSet("probability") {
		f.Probability = proto.Float64(cCtx.Float64("probability"))
	}
	for _, d := range []struct {
		flag string
		to   **durationpb.Duration
	}{{"for", &f.Duration}, {"delay", &f.Delay}, {"jitter", &f.Jitter}} {
		if cCtx.IsSet(d.flag) {
			*d.to = durationpb.New(cCtx.Duration(d.flag))
		}
	}
	return f, nil
}

// printFaults shows a proxy's faults after any action.
func (e *env) printFaults(p *snoopv1.Proxy, action string) error {
	faults := format.EffectiveFaults(p)
	if e.opts.json {
		// faults as declared (the spec's), effective_faults as they run.
		out := struct {
			Proxy     string            `json:"proxy"`
			Faults    []json.RawMessage `json:"faults"`
			Effective []json.RawMessage `json:"effective_faults"`
			Counters  []json.RawMessage `json:"counters"`
		}{Proxy: p.GetSpec().GetName(), Faults: []json.RawMessage{}, Effective: []json.RawMessage{}, Counters: []json.RawMessage{}}
		for _, f := range p.GetSpec().GetFaults() {
			raw, err := format.RawJSON(f)
			if err != nil {
				return failf("%v", err)
			}
			out.Faults = append(out.Faults, raw)
		}
		for _, f := range faults {
			raw, err := format.RawJSON(f)
			if err != nil {
				return failf("%v", err)
			}
			out.Effective = append(out.Effective, raw)
		}
		for _, c := range p.GetCounters().GetFaults() {
			raw, err := format.RawJSON(c)
			if err != nil {
				return failf("%v", err)
			}
			out.Counters = append(out.Counters, raw)
		}
		b, err := json.Marshal(out)
		if err != nil {
			return failf("encode faults: %v", err)
		}
		_, err = fmt.Fprintf(e.stdio.Out, "%s\n", b)
		return err
	}
	if len(faults) == 0 {
		msg := "no faults"
		if action != "list" {
			msg += ": traffic is forwarded as it is"
		}
		_, err := fmt.Fprintf(e.stdio.Out, "%s: %s\n", p.GetSpec().GetName(), msg)
		return err
	}
	return format.WriteFaults(e.stdio.Out, faults, p.GetCounters().GetFaults(), "")
}
