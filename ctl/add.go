package ctl

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/urfave/cli/v2"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/snoopd/snoopd/ctl/format"
	"github.com/snoopd/snoopd/distcache"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
	"github.com/snoopd/snoopd/internal/labels"
	"github.com/snoopd/snoopd/internal/size"
	"github.com/snoopd/snoopd/proxy"
)

func (e *env) addCommand() *cli.Command {
	return &cli.Command{
		Name:      "add",
		Usage:     "create a proxy and print the address it listens on (or a tap, with --tap)",
		ArgsUsage: "NAME --listen ADDR --server ADDR | NAME --tap IFACE --server ADDR",
		Description: "The proxy binds before add returns; with port 0 (--listen 127.0.0.1:0) the\n" +
			"printed address has the port the system chose. Addresses are written\n" +
			"IP:host:port, host:port, UNIX:/path or unix:///path.\n\n" +
			"With --tap IFACE instead of --listen, add makes a tap: snoopd captures the\n" +
			"server's TCP traffic on the network interface IFACE (lo, eth0) and reports\n" +
			"it as a proxy would, without being in its path. Its --server is\n" +
			"IP:host:port, host:port, or a bare port (that port on any address). A tap\n" +
			"needs CAP_NET_RAW in snoopd, forwards nothing, and so takes no faults and\n" +
			"none of a proxy's connection settings; --capture-data, --capture-limit,\n" +
			"--disabled and --label apply. add prints \"tap on IFACE\".\n\n" +
			"-o json prints the snoop.v1.CreateProxyResponse.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "listen", Usage: "`ADDR` clients connect to (required, but for a tap)"},
			&cli.StringFlag{Name: "server", Usage: "distcache server `ADDR` to forward to, or a tap's to watch (required)"},
			&cli.StringFlag{Name: "tap", Usage: "make a tap on network interface `IFACE` instead of a proxy: capture the server's traffic there (needs CAP_NET_RAW in snoopd)"},
			&cli.BoolFlag{Name: "disabled", Usage: "create the proxy disabled: it refuses clients until 'snoopctl enable'", DisableDefaultText: true},
			&cli.StringFlag{Name: "on-corrupt", Value: "close", Usage: "on a protocol violation: close both sides, or passthrough (keep forwarding, stop decoding)"},
			&cli.BoolFlag{Name: "capture-data", Usage: "keep session data in events (it holds TLS master secrets; watchers see it only with --data)", DisableDefaultText: true},
			&cli.StringFlag{Name: "capture-limit", Value: size.Format(proxy.DefaultCaptureLimit), Usage: "`SIZE` of session data kept per transaction (4K, 32K, ...)"},
			&cli.UintFlag{Name: "max-connections", Aliases: []string{"max-conns"}, Usage: "refuse clients beyond `N` concurrent connections (0: no limit)"},
			&cli.DurationFlag{Name: "dial-timeout", Value: proxy.DefaultDialTimeout, Usage: "bound on connecting to the server"},
			&cli.UintFlag{Name: "spare-connections", Aliases: []string{"spares"}, Value: proxy.DefaultSpares, Usage: "keep `N` server connections dialled ahead of clients (0: none, at most 64; split over the daemon's event loops, at least one on each)"},
			&cli.StringFlag{Name: "socket-mode", Value: fmt.Sprintf("%#o", proxy.DefaultSocketMode), Usage: "permission `MODE` (octal) of a unix listen socket"},
			&cli.DurationFlag{Name: "idle-timeout", Value: proxy.DefaultIdleTimeout, Usage: "close a connection that moved nothing either way, with nothing owed, for this long (0: never)"},
			&cli.DurationFlag{Name: "message-timeout", Value: proxy.DefaultMessageTimeout, Usage: "close a connection whose started message has not arrived whole within this (0: never)"},
			&cli.StringSliceFlag{Name: "label", Usage: "tag the proxy with `KEY=VALUE` (repeatable; Kubernetes' label syntax), for list -l and apply --prune -l"},
			&cli.DurationFlag{Name: "response-timeout", Value: proxy.DefaultResponseTimeout, Usage: "a request waits at most this for its answer; then it is reported unanswered and the connection closed (0: never)"},
		},
		Action: e.add,
	}
}

func (e *env) add(cCtx *cli.Context) error {
	a, err := args(cCtx, 1, 1, "NAME --listen ADDR --server ADDR")
	if err != nil {
		return err
	}
	spec, err := specFromFlags(cCtx, a[0])
	if err != nil {
		return err
	}
	unresolved := ""
	if spec.GetTapInterface() == "" {
		unresolved = resolveServer(cCtx.Context, spec.GetServer())
	}
	resp, err := unary(e, cCtx.Context, "add "+spec.GetName(), "", func(ctx context.Context, c *client) (*snoopv1.CreateProxyResponse, error) {
		return c.proxies.CreateProxy(ctx, &snoopv1.CreateProxyRequest{Spec: spec})
	})
	if err != nil {
		return err
	}
	if unresolved != "" {
		e.warnf("%s; proxy %s was created and dials the server when clients come", unresolved, spec.GetName())
	}
	if e.opts.json {
		return e.printJSON(resp)
	}
	if spec.GetTapInterface() != "" {
		_, err = fmt.Fprintf(e.stdio.Out, "tap on %s\n", spec.GetTapInterface())
		return err
	}
	addr := resp.GetProxy().GetListenAddress()
	if addr == "" {
		addr = spec.GetListen()
	}
	_, err = fmt.Fprintln(e.stdio.Out, addr)
	return err
}

// specFromFlags builds a ProxySpec from add's flags. Addresses are checked
// here too, so a typo is a usage error with an example, before any call.
func specFromFlags(cCtx *cli.Context, name string) (*snoopv1.ProxySpec, error) {
	if cCtx.IsSet("tap") {
		return tapSpecFromFlags(cCtx, name)
	}
	listen, server := cCtx.String("listen"), cCtx.String("server")
	if listen == "" || server == "" {
		return nil, usagef("add needs --listen ADDR and --server ADDR (example: snoopctl add %s --listen 127.0.0.1:0 --server UNIX:/run/dc.sock)", name)
	}
	if _, err := distcache.ParseListenAddr(listen); err != nil {
		return nil, usagef("--listen: %v", err)
	}
	if _, err := distcache.ParseConnectAddr(server); err != nil {
		return nil, usagef("--server: %v", err)
	}
	spec := &snoopv1.ProxySpec{
		Name:           name,
		Listen:         listen,
		Server:         server,
		Enabled:        proto.Bool(!cCtx.Bool("disabled")),
		CaptureData:    cCtx.Bool("capture-data"),
		MaxConnections: uint32(cCtx.Uint("max-connections")),
	}
	// Flags left unset leave the spec's fields unset, so the daemon's
	// defaults apply (the help shows them as the flags' defaults).
	if err := setCaptureLimit(cCtx, spec); err != nil {
		return nil, err
	}
	if cCtx.IsSet("socket-mode") {
		m, err := parseSocketMode(cCtx.String("socket-mode"))
		if err != nil {
			return nil, err
		}
		spec.SocketMode = m
	}
	var err error
	if spec.Labels, err = labelsFromFlags(cCtx); err != nil {
		return nil, err
	}
	switch p := cCtx.String("on-corrupt"); p {
	case "close":
		spec.OnCorrupt = snoopv1.CorruptPolicy_CORRUPT_POLICY_CLOSE
	case "passthrough":
		spec.OnCorrupt = snoopv1.CorruptPolicy_CORRUPT_POLICY_PASSTHROUGH
	default:
		return nil, usagef("--on-corrupt %q: want close or passthrough", p)
	}
	if cCtx.Uint("max-connections") > 1<<31 {
		return nil, usagef("--max-connections must be below 2^31")
	}
	if cCtx.IsSet("spare-connections") {
		n := cCtx.Uint("spare-connections")
		if n > 64 {
			return nil, usagef("--spare-connections %d: at most 64", n)
		}
		spec.SpareConnections = proto.Uint32(uint32(n))
	}
	if cCtx.IsSet("dial-timeout") {
		d := cCtx.Duration("dial-timeout")
		if d <= 0 {
			return nil, usagef("--dial-timeout %v: must be positive", d)
		}
		spec.DialTimeout = durationpb.New(d)
	}
	// Unset flags leave the spec's timeouts unset, so the daemon's
	// defaults apply; 0 is sent as 0, which turns the timeout off.
	for _, t := range []struct {
		flag string
		to   **durationpb.Duration
	}{
		{"idle-timeout", &spec.IdleTimeout},
		{"message-timeout", &spec.MessageTimeout},
		{"response-timeout", &spec.ResponseTimeout},
	} {
		if !cCtx.IsSet(t.flag) {
			continue
		}
		d := cCtx.Duration(t.flag)
		if d < 0 {
			return nil, usagef("--%s %v: must not be negative (0 turns it off)", t.flag, d)
		}
		*t.to = durationpb.New(d)
	}
	return spec, nil
}

// printJSON writes m as one line of protojson.
func (e *env) printJSON(m proto.Message) error {
	b, err := format.JSON(m)
	if err != nil {
		return failf("%v", err)
	}
	b = append(b, '\n')
	_, err = e.stdio.Out.Write(b)
	return err
}

// parseSocketMode reads --socket-mode: octal permission bits, with or
// without a leading 0 or 0o (660, 0660, 0o660).
func parseSocketMode(s string) (uint32, error) {
	t := strings.TrimPrefix(strings.TrimPrefix(s, "0o"), "0O")
	m, err := strconv.ParseUint(t, 8, 32)
	if err != nil || m == 0 || m > 0o777 {
		return 0, usagef("--socket-mode %q: want octal permission bits such as 0660 or 0600", s)
	}
	return uint32(m), nil
}

// resolveTimeout bounds add's look-up of the server's host name.
const resolveTimeout = 2 * time.Second

// resolveServer looks up the host name of a TCP server address, so that a
// typo is noticed when the proxy is added rather than when the first
// client fails. It returns what went wrong, or "" when the name resolves
// (or is an IP address or a unix socket). The look-up is made here; the
// daemon may be on another machine, so this is a warning only.
func resolveServer(ctx context.Context, server string) string {
	a, err := distcache.ParseConnectAddr(server)
	if err != nil || a.Network() != distcache.NetworkTCP || a.Host() == "" || net.ParseIP(a.Host()) != nil {
		return ""
	}
	ctx, cancel := context.WithTimeout(ctx, resolveTimeout)
	defer cancel()
	if _, err := net.DefaultResolver.LookupHost(ctx, a.Host()); err != nil {
		reason := "it does not resolve"
		var de *net.DNSError
		if errors.As(err, &de) && de.IsTimeout {
			reason = "looking it up timed out"
		}
		return fmt.Sprintf("server host %q: %s from here", a.Host(), reason)
	}
	return ""
}

// proxyOnlyFlags are add's flags that set what only a proxy in the
// traffic's path has: with --tap they are refused, not ignored.
var proxyOnlyFlags = []string{"listen", "on-corrupt", "max-connections", "dial-timeout", "spare-connections",
	"socket-mode", "idle-timeout", "message-timeout", "response-timeout"}

// tapSpecFromFlags builds a tap's ProxySpec from add's flags: --tap and
// --server, and the flags a tap has.
func tapSpecFromFlags(cCtx *cli.Context, name string) (*snoopv1.ProxySpec, error) {
	iface, server := cCtx.String("tap"), cCtx.String("server")
	for _, f := range proxyOnlyFlags {
		if cCtx.IsSet(f) {
			return nil, usagef("--tap with --%s: a tap listens nowhere and forwards nothing, so it has no --%s (a proxy does: add %s --listen ADDR --server ADDR)", f, f, name)
		}
	}
	if iface == "" || server == "" {
		return nil, usagef("add --tap needs a network interface and --server ADDR (example: snoopctl add %s --tap lo --server 127.0.0.1:9000)", name)
	}
	if err := checkTapServer(server); err != nil {
		return nil, usagef("--server: %v", err)
	}
	spec := &snoopv1.ProxySpec{
		Name:         name,
		TapInterface: iface,
		Server:       server,
		Enabled:      proto.Bool(!cCtx.Bool("disabled")),
		CaptureData:  cCtx.Bool("capture-data"),
	}
	if err := setCaptureLimit(cCtx, spec); err != nil {
		return nil, err
	}
	var err error
	if spec.Labels, err = labelsFromFlags(cCtx); err != nil {
		return nil, err
	}
	return spec, nil
}

// checkTapServer checks a tap's --server as the daemon reads it, without
// looking a host name up (the daemon does, where it captures): a bare
// port, or a TCP address with a port.
func checkTapServer(s string) error {
	if n, err := strconv.ParseUint(s, 10, 16); err == nil {
		if n == 0 {
			return fmt.Errorf("%q: port 0 is no server's port (example: 9000, 127.0.0.1:9000)", s)
		}
		return nil
	}
	a, err := distcache.ParseAddr(s)
	switch {
	case err != nil:
		return err
	case a.Network() != distcache.NetworkTCP:
		return fmt.Errorf("%q: a tap captures TCP only, not a unix socket (example: 127.0.0.1:9000)", s)
	case a.Port() == 0:
		return fmt.Errorf("%q: port 0 is no server's port (example: 127.0.0.1:9000)", s)
	}
	return nil
}

// labelsFromFlags reads add's --label flags; nil for none.
func labelsFromFlags(cCtx *cli.Context) (map[string]string, error) {
	var out map[string]string
	for _, l := range cCtx.StringSlice("label") {
		k, v, err := labels.ParseLabel(l)
		if err != nil {
			return nil, usagef("--label %v", err)
		}
		if _, dup := out[k]; dup {
			return nil, usagef("--label %s: the key %s is given twice", l, k)
		}
		if out == nil {
			out = map[string]string{}
		}
		out[k] = v
	}
	return out, nil
}

// setCaptureLimit sets the spec's capture limit from --capture-limit, if
// given; unset, the daemon's default applies.
func setCaptureLimit(cCtx *cli.Context, spec *snoopv1.ProxySpec) error {
	if !cCtx.IsSet("capture-limit") {
		return nil
	}
	n, err := size.Parse(cCtx.String("capture-limit"))
	if err != nil {
		return usagef("--capture-limit: %v", err)
	}
	if n >= 1<<31 {
		return usagef("--capture-limit %s: must be below 2G", cCtx.String("capture-limit"))
	}
	spec.CaptureLimit = uint32(n)
	return nil
}
