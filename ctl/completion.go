package ctl

import (
	"context"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/snoopd/snoopd/distcache"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
	"github.com/snoopd/snoopd/vocab"
)

// Completion scripts for bash and zsh. They ask snoopctl itself for the
// candidates (urfave/cli's --generate-bash-completion), so they never go
// out of date.
const (
	bashCompletion = `# snoopctl completion for bash: source <(snoopctl completion bash)
_snoopctl_complete() {
  local cur="${COMP_WORDS[COMP_CWORD]}"
  local req=("${COMP_WORDS[@]:0:COMP_CWORD}")
  if [[ "$cur" == -* ]]; then req+=("$cur"); fi
  local opts
  opts=$("${req[@]}" --generate-bash-completion 2>/dev/null)
  COMPREPLY=($(compgen -W "${opts}" -- "${cur}"))
}
complete -o bashdefault -o default -F _snoopctl_complete snoopctl
`
	zshCompletion = `#compdef snoopctl
# snoopctl completion for zsh: source <(snoopctl completion zsh)
_snoopctl() {
  local -a opts
  local cur=${words[-1]}
  if [[ "$cur" == -* ]]; then
    opts=("${(@f)$(${words[@]:0:#words[@]-1} ${cur} --generate-bash-completion 2>/dev/null)}")
  else
    opts=("${(@f)$(${words[@]:0:#words[@]-1} --generate-bash-completion 2>/dev/null)}")
  fi
  if [[ "${opts[1]}" != "" ]]; then
    _describe 'values' opts
  else
    _files
  fi
}
compdef _snoopctl snoopctl
`
)

func (e *env) completionCommand() *cli.Command {
	return &cli.Command{
		Name:      "completion",
		Usage:     "print a shell completion script: bash, zsh or fish",
		ArgsUsage: "bash|zsh|fish",
		Description: "Load it in the current shell with\n\n" +
			"  source <(snoopctl completion bash)        # or zsh\n" +
			"  snoopctl completion fish | source",
		Action: e.completion,
	}
}

func (e *env) completion(cCtx *cli.Context) error {
	a, err := args(cCtx, 1, 1, "bash|zsh|fish")
	if err != nil {
		return err
	}
	var script string
	switch a[0] {
	case "bash":
		script = bashCompletion
	case "zsh":
		script = zshCompletion
	case "fish":
		// From a fresh command tree: urfave/cli v2 recurses forever through
		// the help subcommands that running a command adds to the tree.
		if script, err = e.newApp().ToFishCompletion(); err != nil {
			return failf("completion fish: %v", err)
		}
	default:
		return usagef("completion %q: want bash, zsh or fish", a[0])
	}
	_, err = fmt.Fprint(e.stdio.Out, script)
	return err
}

// takesProxyNames are the commands whose arguments are proxy names (save's
// after its FILE).
var takesProxyNames = map[string]bool{
	"remove": true, "enable": true, "disable": true, "show": true, "conns": true,
	"tail": true, "save": true, "stats": true,
}

// completeProxies offers the daemon's proxy names as a command's
// arguments, or its flags after a dash. The daemon is asked briefly; when
// it cannot be reached there is nothing to offer.
func (e *env) completeProxies(cCtx *cli.Context) {
	e.offer(cCtx, func(ctx context.Context, c *client) ([]string, error) { return proxyNames(ctx, c) })
}

// completeKillConn offers proxy names for kill-conn's first argument and
// the proxy's live connection ids for its second.
func (e *env) completeKillConn(cCtx *cli.Context) {
	e.offer(cCtx, func(ctx context.Context, c *client) ([]string, error) {
		switch cCtx.NArg() {
		case 0:
			return proxyNames(ctx, c)
		case 1:
			resp, err := c.proxies.ListConnections(ctx, &snoopv1.ListConnectionsRequest{Proxy: cCtx.Args().First()})
			var ids []string
			for _, conn := range resp.GetConnections() {
				ids = append(ids, strconv.FormatUint(conn.GetId(), 10))
			}
			return ids, err
		}
		return nil, nil
	})
}

// completeFaultArgs offers proxy names for the PROXY of fault's actions,
// and for remove the proxy's fault names after it.
func (e *env) completeFaultArgs(cCtx *cli.Context) {
	e.offer(cCtx, func(ctx context.Context, c *client) ([]string, error) {
		switch {
		case cCtx.NArg() == 0:
			return proxyNames(ctx, c)
		case cCtx.Command.Name == "remove":
			got, err := c.proxies.GetProxy(ctx, &snoopv1.GetProxyRequest{Name: cCtx.Args().First()})
			var names []string
			for _, f := range got.GetProxy().GetSpec().GetFaults() {
				if !slices.Contains(cCtx.Args().Slice()[1:], f.GetName()) {
					names = append(names, f.GetName())
				}
			}
			return names, err
		}
		return nil, nil
	})
}

// offer prints what ask finds as completion candidates: the values of
// the flag being completed when it has a fixed set, the command's flags
// after a dash, else ask's answer from the daemon.
func (e *env) offer(cCtx *cli.Context, ask func(context.Context, *client) ([]string, error)) {
	last := lastTyped()
	if vals := flagValues(cCtx.Command, last); vals != nil {
		for _, v := range vals {
			fmt.Fprintln(e.stdio.Out, v)
		}
		return
	}
	if strings.HasPrefix(last, "-") {
		cli.DefaultCompleteWithFlags(cCtx.Command)(cCtx)
		return
	}
	if ask == nil {
		return
	}
	// Before does not run while completing; the global flags are read
	// here, so that -a and --token-file on the line are honoured.
	if err := e.before(cCtx); err != nil {
		return
	}
	e.opts.timeout = 2 * time.Second
	words, err := unary(e, cCtx.Context, "complete", "", ask)
	if err != nil {
		return // nothing to offer; a message would garble the shell's line
	}
	for _, w := range words {
		fmt.Fprintln(e.stdio.Out, w)
	}
}

// completeValues is the completion of commands whose arguments are not
// the daemon's names: flag values, then flags.
func (e *env) completeValues(cCtx *cli.Context) {
	if len(cCtx.Command.Subcommands) > 0 && !strings.HasPrefix(lastTyped(), "-") {
		// The actions, as urfave/cli offers them.
		cli.DefaultCompleteWithFlags(cCtx.Command)(cCtx)
		return
	}
	e.offer(cCtx, nil)
}

func proxyNames(ctx context.Context, c *client) ([]string, error) {
	list, err := c.proxies.ListProxies(ctx, &snoopv1.ListProxiesRequest{})
	var names []string
	for _, p := range list.GetProxies() {
		names = append(names, p.GetSpec().GetName())
	}
	return names, err
}

// flagValues are the values of the flag typed last (--op, -o, ...) when
// they are a fixed set; nil otherwise.
func flagValues(cmd *cli.Command, typed string) []string {
	if !strings.HasPrefix(typed, "-") || strings.Contains(typed, "=") {
		return nil
	}
	name := strings.TrimLeft(typed, "-")
	if cmd == nil || !slices.ContainsFunc(cmd.Flags, func(f cli.Flag) bool { return slices.Contains(f.Names(), name) }) {
		// A global flag (unless the command has its own of the name,
		// as plot's -o FILE).
		switch name {
		case "o", "output":
			return []string{"text", "json"}
		case "color":
			return []string{"auto", "always", "never"}
		}
		return nil
	}
	// fault add's flags: its --status is an answer's, not a result.
	fault := slices.ContainsFunc(cmd.Flags, func(f cli.Flag) bool { return f.Names()[0] == "i-mean-it" })
	switch {
	case name == "op":
		return vocab.OpNames()
	case fault && name == "type":
		return []string{"latency", "miss", "error", "drop", "reset", "stall", "bandwidth", "corrupt"}
	case fault && name == "direction":
		return []string{"request", "response", "both"}
	case fault && name == "when":
		return []string{"before", "after"}
	case fault && name == "status":
		var names []string // the statuses an error fault may answer: all but ok
		for _, s := range distcache.Statuses() {
			if s != distcache.StatusOK {
				names = append(names, s.String())
			}
		}
		return names
	case fault && name == "field":
		return []string{"version", "is_response", "request_uid", "op", "complete", "data_len"}
	case name == "status":
		return vocab.ResultNames()
	case name == "events":
		return vocab.KindGroupNames()
	case name == "by":
		return []string{bySession}
	case name == "tap":
		return interfaceNames()
	case name == "format":
		return []string{formatJSONL, formatPcapng}
	}
	return nil
}

// interfaceNames are this machine's network interfaces, for add --tap:
// the daemon captures on its own machine's, which is most often this
// one.
func interfaceNames() []string {
	ifs, err := net.Interfaces()
	if err != nil {
		return nil
	}
	names := make([]string, 0, len(ifs))
	for _, i := range ifs {
		names = append(names, i.Name)
	}
	return names
}

// lastTyped is the word being completed, as urfave/cli's own completion
// finds it: the argument before --generate-bash-completion.
func lastTyped() string {
	if len(os.Args) > 2 {
		return os.Args[len(os.Args)-2]
	}
	return ""
}
