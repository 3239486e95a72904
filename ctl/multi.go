package ctl

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"github.com/snoopd/snoopd/ctl/filter"
	"github.com/snoopd/snoopd/ctl/format"
	"github.com/snoopd/snoopd/distcache"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
	"github.com/snoopd/snoopd/internal/endpoint"
)

// Several daemons: -a takes a comma-separated list and may be repeated.
// list merges the daemons' proxies into one table with a DAEMON column;
// tail, save and stats with a filter merge their event streams, each
// event naming its daemon; top polls each and shows one row per daemon
// and proxy with a DAEMON column (top.FleetSource), as top --from does
// for a fleet on NATS; add, apply, remove, enable, disable, show, conns,
// fault, version and stats (totals) run on each daemon in turn, each line
// of output prefixed with the daemon, and fail if any daemon failed. A
// command that cannot serve several daemons (kill-conn, stats --watch)
// refuses them in one line rather than use the first one alone.

// perDaemon are the commands that run once per daemon.
var perDaemon = map[string]bool{"add": true, "apply": true, "remove": true, "enable": true, "disable": true, "show": true,
	"conns": true, "fault": true, "version": true}

// oneDaemon are the commands that act on one daemon only, with the reason
// given when several are named.
var oneDaemon = map[string]string{
	"kill-conn": "connection ids belong to one daemon; name it alone with -a",
}

// mergeAddresses folds repeated global -a/--address flags (which
// reorderArgs has put before the command) into one comma-separated value.
func mergeAddresses(app *cli.App, argv []string) []string {
	global := arity(app.Flags)
	var addrs []string
	var out []string
	i := 0
	for ; i < len(argv) && isFlagArg(argv[i]) && argv[i] != "--"; i++ {
		n := flagName(argv[i])
		if n == "a" || n == "address" {
			if _, v, ok := strings.Cut(argv[i], "="); ok {
				addrs = append(addrs, v)
				continue
			}
			if i+1 < len(argv) {
				i++
				addrs = append(addrs, argv[i])
			}
			continue
		}
		out = append(out, argv[i])
		if takesValue(global, argv[i]) && i+1 < len(argv) {
			i++
			out = append(out, argv[i])
		}
	}
	if len(addrs) > 0 {
		out = append(out, "--address="+strings.Join(addrs, ","))
	}
	return append(out, argv[i:]...)
}

// setAddresses splits --address into the daemons to talk to; the first is
// the one single-daemon code uses.
func (e *env) setAddresses() error {
	e.opts.addrs = filter.SplitList([]string{e.opts.rawAddr})
	if len(e.opts.addrs) > 0 {
		e.opts.rawAddr = e.opts.addrs[0]
	} // an empty one is reported by address() when a command needs it
	return nil
}

// multi reports whether more than one daemon was named.
func (e *env) multi() bool { return len(e.opts.addrs) > 1 }

// useDaemon points the single-daemon code at addr.
func (e *env) useDaemon(addr string) {
	e.opts.rawAddr, e.opts.addr = addr, distcache.Addr{}
}

// fanOut wraps a command's action to run it on every daemon named by -a.
func (e *env) fanOut(c *cli.Command) {
	action := c.Action
	switch {
	case c.Name == "list":
		c.Action = func(cCtx *cli.Context) error {
			if !e.multi() {
				return action(cCtx)
			}
			return e.listMany(cCtx)
		}
	case perDaemon[c.Name] && len(c.Subcommands) > 0:
		// fault's actions each run per daemon.
		for _, sub := range c.Subcommands {
			action, name := sub.Action, c.Name+" "+sub.Name
			sub.Action = func(cCtx *cli.Context) error {
				if !e.multi() {
					return action(cCtx)
				}
				return e.eachDaemon(cCtx, name, action)
			}
		}
	case perDaemon[c.Name]:
		c.Action = func(cCtx *cli.Context) error {
			if !e.multi() {
				return action(cCtx)
			}
			return e.eachDaemon(cCtx, c.Name, action)
		}
	case oneDaemon[c.Name] != "":
		c.Action = func(cCtx *cli.Context) error {
			if !e.multi() {
				return action(cCtx)
			}
			return usagef("%s works on one daemon, not the %d named by -a: %s", c.Name, len(e.opts.addrs), oneDaemon[c.Name])
		}
	}
}

// eachDaemon runs action once per daemon, in order, with the daemon's
// output and errors on lines of their own prefixed by its address.
func (e *env) eachDaemon(cCtx *cli.Context, name string, action cli.ActionFunc) error {
	addrs, stdio, first := e.opts.addrs, e.stdio, e.opts.rawAddr
	defer func() { e.stdio = stdio; e.useDaemon(first) }()
	failed := 0
	for i, addr := range addrs {
		var out, errb bytes.Buffer
		e.stdio = Stdio{In: stdio.In, Out: &out, Err: &errb}
		e.useDaemon(addr)
		err := action(cCtx)
		if i == 0 && exitCode(err) == ExitUsage {
			return err // the command line is wrong for every daemon alike
		}
		label := endpoint.Display(e.opts.addr)
		if e.opts.addr.IsZero() {
			label = addr
		}
		prefixLines(stdio.Out, label, out.Bytes())
		prefixLines(stdio.Err, label, errb.Bytes())
		if err != nil {
			failed++
			fmt.Fprintf(stdio.Err, "snoopctl: %s: %v\n", label, err)
		}
	}
	if failed > 0 {
		return failf("%s failed on %d of %d daemons", name, failed, len(addrs))
	}
	return nil
}

// prefixLines writes each line of b to w after "label: ".
func prefixLines(w io.Writer, label string, b []byte) {
	for len(b) > 0 {
		line, rest, _ := bytes.Cut(b, []byte("\n"))
		fmt.Fprintf(w, "%s: %s\n", label, line)
		b = rest
	}
}

// daemonLabel names a daemon in merged views: its --daemon-name when it
// reports one, else the address it was reached at.
func daemonLabel(ctx context.Context, c *client, addr string) string {
	info, err := c.daemon.GetDaemonInfo(ctx, &snoopv1.GetDaemonInfoRequest{})
	if err == nil && info.GetName() != "" {
		return info.GetName()
	}
	return addr
}

// listMany is list over several daemons: one table with a DAEMON column,
// or with -o json one {"daemon", "address", "proxies"} object per daemon.
func (e *env) listMany(cCtx *cli.Context) error {
	if _, err := args(cCtx, 0, 0, ""); err != nil {
		return err
	}
	first := e.opts.rawAddr
	defer e.useDaemon(first)
	var rows []daemonProxy
	failed := 0
	for _, addr := range e.opts.addrs {
		e.useDaemon(addr)
		got, err := e.listDaemon(cCtx)
		rows = append(rows, got...)
		if err != nil {
			if exitCode(err) == ExitUsage {
				return err
			}
			failed++
			fmt.Fprintf(e.stdio.Err, "snoopctl: %v\n", err)
		}
	}
	if !e.opts.json {
		tw := tabwriter.NewWriter(e.stdio.Out, 0, 8, 3, ' ', 0)
		fmt.Fprintln(tw, "DAEMON\tNAME\tLISTEN\tSERVER\tSTATE\tCONNS\tTRANSACTIONS\tERRORS")
		for _, r := range rows {
			p, c := r.p, r.p.GetCounters()
			listen := p.GetListenAddress()
			if listen == "" {
				listen = p.GetSpec().GetListen()
			}
			if format.IsTap(p) {
				listen = "tap " + p.GetSpec().GetTapInterface()
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\n", r.daemon, p.GetSpec().GetName(), listen, p.GetSpec().GetServer(),
				format.ProxyState(p), c.GetConnectionsActive(), c.GetTransactions(), format.ProxyErrors(c))
		}
		if err := tw.Flush(); err != nil {
			return failf("write output: %v", err)
		}
	}
	if failed > 0 {
		return failf("list failed on %d of %d daemons", failed, len(e.opts.addrs))
	}
	return nil
}

// multiSource merges the watch streams of several daemons, stamping each
// event with its daemon, for tail, save and stats.
type multiSource struct {
	e      *env
	srcs   []*daemonSource
	labels []string
}

// openMany connects to every daemon named by -a.
func (e *env) openMany(ctx context.Context, req *snoopv1.WatchEventsRequest) (eventSource, error) {
	first := e.opts.rawAddr
	defer e.useDaemon(first)
	m := &multiSource{e: e}
	for _, addr := range e.opts.addrs {
		e.useDaemon(addr)
		c, err := e.dial()
		if err != nil {
			m.Close()
			return nil, err
		}
		cctx, cancel := e.callContext(ctx, 0)
		label := daemonLabel(cctx, c, e.display())
		cancel()
		m.srcs = append(m.srcs, &daemonSource{e: e, c: c, req: req})
		m.labels = append(m.labels, label)
	}
	return m, nil
}

func (m *multiSource) Close() {
	for _, s := range m.srcs {
		s.Close()
	}
}

// stream runs every daemon's stream at once; handle, flush and onTick are
// called one at a time. --count counts over all daemons; the first stream
// to fail ends them all.
func (m *multiSource) stream(ctx context.Context, o streamOptions, handle func(*snoopv1.WatchEventsResponse) error) (streamResult, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var mu sync.Mutex
	var total streamResult
	var firstErr error
	var wg sync.WaitGroup
	for i, s := range m.srcs {
		so := o
		so.count = 0
		// Each event gets its daemon's name and is counted here: none
		// goes by o.wire as it came.
		so.wire = nil
		if i > 0 {
			so.tick, so.onTick = 0, nil
		} else if o.onTick != nil {
			so.onTick = func() { mu.Lock(); defer mu.Unlock(); o.onTick() }
		}
		if o.flush != nil {
			so.flush = func() error { mu.Lock(); defer mu.Unlock(); return o.flush() }
		}
		label := m.labels[i]
		wg.Go(func() {
			res, err := s.e.stream(ctx, s.c, s.req, so, func(r *snoopv1.WatchEventsResponse) error {
				mu.Lock()
				defer mu.Unlock()
				if o.count > 0 && total.events >= o.count {
					cancel()
					return nil
				}
				if ev := r.GetEvent(); ev != nil {
					ev.Daemon = label
					total.events++
				} else {
					total.dropped += r.GetDropped()
				}
				err := handle(r)
				if o.count > 0 && total.events >= o.count {
					cancel()
				}
				return err
			})
			mu.Lock()
			defer mu.Unlock()
			if res.elapsed > total.elapsed {
				total.elapsed = res.elapsed
			}
			if err != nil && firstErr == nil {
				firstErr = fmt.Errorf("%s: %w", label, err)
				cancel()
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		return total, failf("%v", firstErr)
	}
	return total, nil
}

// daemonProxy is a proxy of one of several daemons.
type daemonProxy struct {
	daemon string
	p      *snoopv1.Proxy
}

// listDaemon lists the current daemon's proxies for listMany; with -o
// json it prints them itself, as one object, and returns none.
func (e *env) listDaemon(cCtx *cli.Context) ([]daemonProxy, error) {
	var label string
	resp, err := unary(e, cCtx.Context, "list", "", func(ctx context.Context, c *client) (*snoopv1.ListProxiesResponse, error) {
		resp, err := c.proxies.ListProxies(ctx, &snoopv1.ListProxiesRequest{})
		if err == nil {
			label = daemonLabel(ctx, c, e.display())
		}
		return resp, err
	})
	if err != nil {
		return nil, err
	}
	if e.opts.json {
		raw, err := format.RawJSON(resp)
		if err != nil {
			return nil, failf("%v", err)
		}
		_, err = fmt.Fprintf(e.stdio.Out, "{\"daemon\":%q,\"address\":%q,\"response\":%s}\n", label, e.display(), raw)
		return nil, err
	}
	rows := make([]daemonProxy, 0, len(resp.GetProxies()))
	for _, p := range resp.GetProxies() {
		rows = append(rows, daemonProxy{label, p})
	}
	return rows, nil
}
