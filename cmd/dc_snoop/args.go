package main

import (
	"errors"
	"fmt"
	"strings"

	"github.com/snoopd/snoopd/distcache"
)

// usage is the help that -h, -help and -? print.
const usage = `Usage: dc_snoop -listen ADDR -server ADDR [-o text|json]

A snoop proxy for the distcache session-cache protocol: it accepts clients
on the -listen address, gives each a connection of its own to the -server
address, forwards both directions unchanged, and prints each transaction
as one line on standard output.

  -listen ADDR    accept incoming connections on ADDR
  -server ADDR    proxy each of them to the server at ADDR
  -connect ADDR   the same as -server
  -o FORMAT       text (the default): one line per transaction, as
                  snoopctl tail prints it; json: one JSON object per
                  line, as snoopctl tail -o json prints it
  -h, -help, -?   print this help and exit; any other flags are ignored

ADDR is IP:port (listen on every interface), IP:host:port, IPv4:...,
UNIX:/path/to/socket, or host:port, [::1]:port, unix:///path.

Standard output has the transactions and the connections opening and
closing; standard error has the errors (protocol errors, failed connects
to the server, refused clients). SIGINT or SIGTERM stops dc_snoop with a
summary on standard error.

Exit status: 0 after a signal or a help flag, 1 when the listen address
cannot be listened on, 2 on a bad flag or address.
`

// usageHint follows every error in the command line.
const usageHint = "run 'dc_snoop -h' for the usage\n"

// errHelp is what parseArgs returns when a help flag was given.
var errHelp = errors.New("help requested")

// options are what the command line asks for.
type options struct {
	listen distcache.Addr
	server distcache.Addr
	json   bool
}

// valueFlags are the flags that take a value, by name without dashes.
var valueFlags = map[string]bool{"listen": true, "server": true, "connect": true, "o": true}

// isHelp reports whether arg is one of the help flags.
func isHelp(arg string) bool {
	switch arg {
	case "-h", "-help", "-?", "--h", "--help":
		return true
	}
	return false
}

// flagName splits "-name", "--name" or "-name=value" into the name and,
// when written with '=', the value. ok is false when arg is no flag.
func flagName(arg string) (name, value string, hasValue, ok bool) {
	if len(arg) < 2 || arg[0] != '-' {
		return "", "", false, false
	}
	name = strings.TrimPrefix(arg[1:], "-")
	name, value, hasValue = strings.Cut(name, "=")
	return name, value, hasValue, name != ""
}

// parseArgs reads the command line as dc_snoop does: a help flag anywhere
// a flag may stand wins over everything else, as the man page says ("any
// other flags are ignored"); otherwise -listen and -server (or -connect)
// are required and their addresses must parse. Flags may be written with
// one dash or two, and with their value after '=' or as the next
// argument. It returns errHelp for a help flag.
func parseArgs(args []string) (options, error) {
	for i := 0; i < len(args); i++ {
		if isHelp(args[i]) {
			return options{}, errHelp
		}
		if name, _, hasValue, ok := flagName(args[i]); ok && valueFlags[name] && !hasValue {
			i++ // the value, which may look like a flag (-listen -h is an address)
		}
	}

	var o options
	var listen, server, serverFlag, format string
	for i := 0; i < len(args); i++ {
		arg := args[i]
		name, value, hasValue, ok := flagName(arg)
		if !ok {
			return o, fmt.Errorf("unexpected argument %q (dc_snoop takes flags only)", arg)
		}
		if !valueFlags[name] {
			return o, fmt.Errorf("flag %q not recognised", arg)
		}
		if !hasValue {
			if i+1 == len(args) {
				return o, fmt.Errorf("-%s needs a value", name)
			}
			i++
			value = args[i]
		}
		if value == "" {
			return o, fmt.Errorf("-%s has an empty value", name)
		}
		switch name {
		case "listen":
			if listen != "" {
				return o, fmt.Errorf("-listen given twice (%q and %q)", listen, value)
			}
			listen = value
		case "server", "connect":
			if server != "" {
				return o, fmt.Errorf("-%s given after -%s: they are the same flag, give the server address once", name, serverFlag)
			}
			server, serverFlag = value, name
		case "o":
			if format != "" {
				return o, fmt.Errorf("-o given twice (%q and %q)", format, value)
			}
			format = value
		}
	}

	switch {
	case listen == "":
		return o, errors.New("-listen is required: the address to accept clients on")
	case server == "":
		return o, errors.New("-server (or -connect) is required: the address of the server to proxy to")
	}
	var err error
	if o.listen, err = distcache.ParseListenAddr(listen); err != nil {
		return o, fmt.Errorf("-listen: %w", err)
	}
	if o.server, err = distcache.ParseConnectAddr(server); err != nil {
		return o, fmt.Errorf("-%s: %w", serverFlag, err)
	}
	switch format {
	case "", "text":
	case "json":
		o.json = true
	default:
		return o, fmt.Errorf("-o %q: want text or json", format)
	}
	return o, nil
}
