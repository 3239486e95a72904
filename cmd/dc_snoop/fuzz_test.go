package main

import (
	"errors"
	"strings"
	"testing"
)

// FuzzParseArgs feeds the command-line parser arbitrary arguments (the
// input split at NUL bytes): it never panics, a command line it accepts
// has a listen address that can be listened on and a server address that
// can be connected to, and every refusal says something.
func FuzzParseArgs(f *testing.F) {
	for _, seed := range []string{
		"-listen\x00UNIX:/tmp/cachesnoop\x00-server\x00UNIX:/tmp/cacheserver",
		"-connect=IP:cache1:9000\x00--listen\x00IP:9001\x00-o\x00json",
		"-bogus\x00-?",
		"-listen\x00-h",
		"-o\x00",
		"--\x00-=\x00-listen=",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, in string) {
		args := strings.Split(in, "\x00")
		o, err := parseArgs(args)
		switch {
		case errors.Is(err, errHelp):
		case err != nil:
			if err.Error() == "" {
				t.Fatalf("%q: an empty error", args)
			}
		default:
			if !o.listen.CanListen() || !o.server.CanConnect() {
				t.Fatalf("%q: accepted %+v", args, o)
			}
		}
	})
}
