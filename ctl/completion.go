package ctl

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
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
	"kill-conn": true, "tail": true, "save": true, "stats": true,
}

// completeProxies offers the daemon's proxy names as a command's
// arguments, or its flags after a dash. The daemon is asked briefly; when
// it cannot be reached there is nothing to offer.
func (e *env) completeProxies(cCtx *cli.Context) {
	if last := lastTyped(); strings.HasPrefix(last, "-") {
		cli.DefaultCompleteWithFlags(cCtx.Command)(cCtx)
		return
	}
	// Before does not run while completing; the global flags are read
	// here, so that -a and --token-file on the line are honoured.
	if err := e.before(cCtx); err != nil {
		return
	}
	e.opts.timeout = 2 * time.Second
	list, err := unary(e, cCtx.Context, "complete", "", func(ctx context.Context, c *client) (*snoopv1.ListProxiesResponse, error) {
		return c.proxies.ListProxies(ctx, &snoopv1.ListProxiesRequest{})
	})
	if err != nil {
		return // nothing to offer; a message would garble the shell's line
	}
	for _, p := range list.GetProxies() {
		fmt.Fprintln(e.stdio.Out, p.GetSpec().GetName())
	}
}

// lastTyped is the word being completed, as urfave/cli's own completion
// finds it: the argument before --generate-bash-completion.
func lastTyped() string {
	if len(os.Args) > 2 {
		return os.Args[len(os.Args)-2]
	}
	return ""
}
