package ctl

import (
	"slices"
	"strings"

	"github.com/urfave/cli/v2"
)

// completionFlag is the hidden flag urfave/cli's shell completion appends.
const completionFlag = "--generate-bash-completion"

// reorderArgs lets flags go anywhere on the command line, as in
// "snoopctl add demo --listen :0 --server ..." or "snoopctl list -o json".
//
// urfave/cli v2 parses flags with package flag, which stops at the first
// argument that is not a flag, so flags after a positional argument would
// silently become arguments; and a global flag after the command name is
// not known to the command. reorderArgs rebuilds the arguments as
//
//	GLOBAL-FLAGS COMMAND COMMAND-FLAGS -- POSITIONAL...
//
// using the flag definitions themselves to know which flags take a value.
// An unknown command is a usage error here, with a suggestion; unknown
// flags are left for urfave/cli to report.
func reorderArgs(app *cli.App, args []string) ([]string, error) {
	if len(args) > 0 && args[len(args)-1] == completionFlag {
		return args, nil
	}
	global := arity(app.Flags)
	var globals []string
	i := 0
	for ; i < len(args) && isFlagArg(args[i]) && args[i] != "--"; i++ {
		globals = append(globals, args[i])
		if takesValue(global, args[i]) && i+1 < len(args) {
			i++
			globals = append(globals, args[i])
		}
	}
	if i >= len(args) || args[i] == "--" {
		return args, nil
	}
	name := args[i]
	var cmd *cli.Command
	for _, c := range app.Commands {
		if c.HasName(name) {
			cmd = c
		}
	}
	if cmd == nil {
		if name == "help" || name == "h" {
			return args, nil
		}
		if s := suggest(app.Commands, name); s != "" {
			return nil, usagef("unknown command %q: did you mean %q? (see 'snoopctl --help')", name, s)
		}
		return nil, usagef("unknown command %q (see 'snoopctl --help')", name)
	}
	names := []string{name}
	if sub := subcommand(cmd, args[i+1:], global); sub != nil {
		// "fault add PROXY NAME --type ..." is "fault add --type ... --
		// PROXY NAME": the action's name goes before its flags.
		cmd, names = sub, append(names, sub.Name)
	}
	local := arity(cmd.Flags)
	var flags, positional []string
	skipped := false
	for i++; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			positional = append(positional, args[i+1:]...)
			break
		}
		if !isFlagArg(a) {
			if len(names) > 1 && !skipped && cmd.HasName(a) {
				skipped = true // the subcommand's name, already placed
				continue
			}
			positional = append(positional, a)
			continue
		}
		if cmd.Name == "plot" {
			if v, skip, ok := oldPlotImage(args, i); ok {
				flags = append(flags, "--image", v)
				i += skip
				continue
			}
		}
		table, dst := local, &flags
		if _, ok := local[flagName(a)]; !ok {
			if _, ok := global[flagName(a)]; ok {
				table, dst = global, &globals
			}
		}
		*dst = append(*dst, a)
		if takesValue(table, a) && i+1 < len(args) {
			i++
			*dst = append(*dst, args[i])
		}
	}
	out := append(globals, names...)
	out = append(out, flags...)
	asksHelp := slices.ContainsFunc(flags, func(f string) bool { return f == "-h" || f == "--help" })
	if len(positional) > 0 && !asksHelp {
		// With --help the arguments would be taken for a help topic.
		out = append(out, "--")
		out = append(out, positional...)
	}
	return out, nil
}

// oldPlotImage reads plot's old "-o FILE" at args[i]: plot's picture
// took -o before --image, and old command lines still work. It is the
// picture, not the global output format, when the value is neither text
// nor json. skip is how many more arguments it used.
func oldPlotImage(args []string, i int) (value string, skip int, ok bool) {
	a := args[i]
	if n := flagName(a); n != "o" && n != "output" {
		return "", 0, false
	}
	if _, v, eq := strings.Cut(a, "="); eq {
		value = v
	} else if i+1 < len(args) {
		value, skip = args[i+1], 1
	} else {
		return "", 0, false
	}
	if value == "text" || value == "json" {
		return "", 0, false
	}
	return value, skip, true
}

// subcommand returns the subcommand of cmd that rest names: its first
// argument that is not a flag (or a flag's value), when that is one of
// cmd's subcommands; nil otherwise.
func subcommand(cmd *cli.Command, rest []string, global map[string]bool) *cli.Command {
	if len(cmd.Subcommands) == 0 {
		return nil
	}
	// Any flag of cmd, its subcommands or the globals may come first.
	table := arity(cmd.Flags)
	for _, s := range cmd.Subcommands {
		for n, v := range arity(s.Flags) {
			table[n] = table[n] || v
		}
	}
	for n, v := range global {
		table[n] = table[n] || v
	}
	for i := 0; i < len(rest); i++ {
		a := rest[i]
		if a == "--" {
			return nil
		}
		if isFlagArg(a) {
			if takesValue(table, a) {
				i++
			}
			continue
		}
		return cmd.Command(a)
	}
	return nil
}

// arity maps each flag name (and alias) to whether the flag takes a value.
// Only boolean flags do not; help is one of them everywhere.
func arity(flags []cli.Flag) map[string]bool {
	m := map[string]bool{"help": false, "h": false}
	for _, f := range flags {
		_, isBool := f.(*cli.BoolFlag)
		for _, n := range f.Names() {
			m[n] = !isBool
		}
	}
	return m
}

// isFlagArg reports whether a looks like a flag; "-" alone is an argument
// (standard input).
func isFlagArg(a string) bool { return len(a) > 1 && a[0] == '-' }

// flagName is the name in "--name=value", "-name" or "--name".
func flagName(a string) string {
	n := strings.TrimLeft(a, "-")
	n, _, _ = strings.Cut(n, "=")
	return n
}

// takesValue reports whether the flag a takes the next argument as its
// value: a known non-boolean flag written without "=".
func takesValue(table map[string]bool, a string) bool {
	return table[flagName(a)] && !strings.Contains(a, "=")
}

// suggest returns the command name closest to a mistyped one (at most
// two edits away), or "" when none is close. A command's own name wins a
// tie with an alias.
func suggest(cmds []*cli.Command, typed string) string {
	best, bestDist := "", 3
	for _, c := range cmds {
		for i, n := range c.Names() {
			d := editDistance(typed, n)
			if d < bestDist || (d == bestDist && i == 0 && best != "") {
				best, bestDist = n, d
			}
		}
	}
	return best
}

// editDistance is the Levenshtein distance between two short words.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
