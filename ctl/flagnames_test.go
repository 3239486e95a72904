package ctl

import (
	"slices"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"
)

// flagVocabulary is every flag name (aliases included) snoopctl's
// commands show, with what it means. A name means one thing everywhere;
// a new flag joins this list, under a name already here if it means the
// same as one of them.
var flagVocabulary = map[string]string{
	// Naming proxies and events.
	"proxy": "keep events of these proxies", "op": "operations", "status": "results of a transaction",
	"session": "a session id prefix", "min-latency": "keep transactions at least this slow",
	"conn": "a connection id", "errors": "keep only errors", "events": "event kinds",
	"filter": "a CEL expression", "fault": "fault names", "data": "include captured session data",
	"daemon": "daemon names of a fleet", "verbose": "show more", "v": "show more",
	"label": "a proxy's label k=v", "selector": "select proxies by their labels", "l": "select proxies by their labels (as kubectl -l)",
	// Time and amount.
	"interval": "time between refreshes", "d": "time between refreshes (top, as in top(1))",
	"count": "stop after N of what the command shows", "n": "stop after N (top, as in top(1))",
	"iterations": "stop after N snapshots (top's old name, an alias)", "for": "how long", "since": "from a time on", "until": "before a time", "history": "recent events first",
	"wait": "wait for proxies to be created", "nice": "the scheduling niceness a stream is read at", "watch": "show again every interval", "w": "show again every interval",
	"batch": "plain snapshots", "b": "plain snapshots",
	"by": "what to count by (stats --by session)", "top": "how many of the busiest to show",
	"sessions": "the hot sessions view (top)",
	// Sources.
	"from": "a NATS URL", "subject": "a NATS subject prefix", "stream": "a JetStream stream",
	"nats-creds": "NATS credentials", "nats-token-file": "NATS token", "nats-tls-ca": "NATS CA",
	// Proxies' settings.
	"listen": "a listen address", "server": "a server address", "disabled": "created disabled",
	"on-corrupt": "what a protocol violation does", "capture-data": "keep session data",
	"capture-limit": "session data kept", "max-connections": "connection limit", "max-conns": "connection limit",
	"dial-timeout": "a timeout", "idle-timeout": "a timeout", "message-timeout": "a timeout", "response-timeout": "a timeout",
	"spare-connections": "spare server connections", "spares": "spare server connections", "socket-mode": "a unix socket's mode",
	"tap":   "a network interface a tap captures on",
	"drain": "let connections finish", "close-connections": "close live connections",
	// Files.
	"file": "an input file", "f": "an input file", "prune": "remove what is not declared", "dry-run": "only say what would change",
	"append": "add to a file", "force": "replace a file", "format": "a file's format", "rotate-size": "rotation size", "rotate-keep": "rotated files kept",
	"name":  "the proxy name a packet capture's events carry",
	"image": "the picture plot writes", "bin": "a time bin's width", "width": "page width", "height": "page height",
	// Faults.
	"type": "a fault's type", "direction": "request or response", "when": "before or after",
	"probability": "a fault's chance", "seed": "a random seed", "budget": "a fault's budget",
	"delay": "a latency fault's hold", "jitter": "a latency fault's spread", "rate": "bytes per second",
	"field": "a header field", "i-mean-it": "confirm a dangerous fault",
}

// flagConcepts are concepts several commands share, each with its one
// name and the commands that have it.
var flagConcepts = []struct {
	concept, name string
	commands      []string
}{
	{"time between refreshes", "interval", []string{"top", "stats"}},
	{"stop after N", "count", []string{"tail", "save", "stats", "read", "plot", "top"}},
	{"keep events of these proxies", "proxy", []string{"tail", "save", "stats", "read", "plot", "top"}},
	{"keep events from a time on", "since", []string{"read", "plot"}},
	{"keep events before a time", "until", []string{"read", "plot"}},
	{"the distcache server's address", "server", []string{"add", "read", "plot"}},
}

// allCommands walks the command tree: "fault add" for a subcommand.
func allCommands(prefix string, cs []*cli.Command, visit func(path string, c *cli.Command)) {
	for _, c := range cs {
		visit(prefix+c.Name, c)
		allCommands(prefix+c.Name+" ", c.Subcommands, visit)
	}
}

// visibleNames are the names a flag shows in help.
func visibleNames(f cli.Flag) []string {
	if v, ok := f.(cli.VisibleFlag); ok && !v.IsVisible() {
		return nil
	}
	return f.Names()
}

// flagKind is what a flag's value is: its type, with a list of values
// counted as one and whole numbers as one.
func flagKind(f cli.Flag) string {
	switch f.(type) {
	case *cli.BoolFlag:
		return "bool"
	case *durationFlag, *cli.DurationFlag:
		return "duration"
	case *cli.StringFlag, *cli.StringSliceFlag:
		return "string"
	case *cli.IntFlag, *cli.Int64Flag, *cli.UintFlag, *cli.Uint64Flag:
		return "whole number"
	case *cli.Float64Flag:
		return "number"
	}
	return "other"
}

func TestNoCommandFlagShadowsAGlobalFlag(t *testing.T) {
	app := (&env{}).newApp()
	global := map[string]bool{}
	for _, f := range app.Flags {
		for _, n := range f.Names() {
			global[n] = true
		}
	}
	allCommands("", app.Commands, func(path string, c *cli.Command) {
		for _, f := range c.Flags {
			for _, n := range f.Names() {
				if global[n] {
					t.Errorf("snoopctl %s %s: the command's flag hides the global %s", path, dashes(n), dashes(n))
				}
			}
		}
	})
}

func TestFlagNamesMeanOneThing(t *testing.T) {
	app := (&env{}).newApp()
	kinds := map[string]string{}
	where := map[string]string{}
	allCommands("", app.Commands, func(path string, c *cli.Command) {
		for _, f := range c.Flags {
			for _, n := range visibleNames(f) {
				if _, ok := flagVocabulary[n]; !ok {
					t.Errorf("snoopctl %s %s: a name the vocabulary does not have; use the name of the same concept, or add it to flagVocabulary", path, dashes(n))
				}
				k := flagKind(f)
				if prev, ok := kinds[n]; ok && prev != k {
					t.Errorf("%s is a %s in snoopctl %s but a %s in snoopctl %s", dashes(n), k, path, prev, where[n])
				}
				kinds[n], where[n] = k, path
			}
		}
	})
}

func TestSharedConceptsHaveOneName(t *testing.T) {
	app := (&env{}).newApp()
	cmds := map[string]*cli.Command{}
	allCommands("", app.Commands, func(path string, c *cli.Command) { cmds[path] = c })
	for _, c := range flagConcepts {
		for _, path := range c.commands {
			cmd := cmds[path]
			if cmd == nil {
				t.Errorf("no command %s", path)
				continue
			}
			found := false
			for _, f := range cmd.Flags {
				if f.Names()[0] == c.name && len(visibleNames(f)) > 0 {
					found = true
				}
			}
			if !found {
				t.Errorf("snoopctl %s: %q has no --%s", path, c.concept, c.name)
			}
		}
	}
}

// TestEventFiltersAreTheSameEverywhere: every command that filters the
// events it shows takes every filter flag, so a filter learnt on one
// works on all. top --from, which counts a fleet's events, takes those of
// topFilters.
func TestEventFiltersAreTheSameEverywhere(t *testing.T) {
	app := (&env{}).newApp()
	var want []string
	for _, f := range filterFlags() {
		want = append(want, f.Names()[0])
	}
	allCommands("", app.Commands, func(path string, c *cli.Command) {
		var have []string
		for _, f := range c.Flags {
			have = append(have, f.Names()...)
		}
		if !slices.Contains(have, "min-latency") {
			return // not a command that filters events
		}
		want := want
		if path == "top" {
			want = topFilters
		}
		for _, w := range want {
			if !slices.Contains(have, w) {
				t.Errorf("snoopctl %s filters events but has no --%s", path, w)
			}
		}
	})
}

// TestHiddenFlagsAreOldNames: a hidden flag is an old name kept for old
// command lines, and says which flag replaced it.
func TestHiddenFlagsAreOldNames(t *testing.T) {
	app := (&env{}).newApp()
	allCommands("", app.Commands, func(path string, c *cli.Command) {
		for _, f := range c.Flags {
			if len(visibleNames(f)) > 0 || f.Names()[0] == "generate-bash-completion" {
				continue
			}
			u := ""
			if d, ok := f.(cli.DocGenerationFlag); ok {
				u = d.GetUsage()
			}
			newName, ok := strings.CutPrefix(u, "old name of --")
			if !ok || !slices.ContainsFunc(c.Flags, func(g cli.Flag) bool { return g.Names()[0] == newName }) {
				t.Errorf("snoopctl %s: hidden flag --%s does not say which flag replaced it (usage %q)", path, f.Names()[0], u)
			}
		}
	})
}
