package main

import (
	"strings"
	"testing"
)

// A refused fault is explained in the words of the command line that
// declared it: the flag and value typed, never a status or direction the
// user did not give, with the right article.
func TestFaultErrorsSpeakTheFlags(t *testing.T) {
	d, _ := setup(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--type", "miss", "--op", "add"}, "fault add: --op add: a miss fault answers get requests only, not add"},
		{[]string{"--type", "error", "--status", "exists", "--op", "get"}, "fault add: --op get: an error fault with status exists answers add requests only, not get"},
		{[]string{"--type", "error", "--direction", "request"}, "fault add: --direction request: an error fault changes the server's answers, so its direction is response, not request"},
		{[]string{"--type", "miss", "--when", "before"}, "fault add: --when before: a miss fault changes"},
		{[]string{"--type", "drop", "--direction", "both"}, "fault add: --direction both: a drop fault closes the connection either before"},
		{[]string{"--type", "latency", "--delay", "1s", "--probability", "2"}, "fault add: --probability 2: want 0 to 1"},
		{[]string{"--type", "latency"}, "fault add: --delay: a latency fault needs a delay"},
		{[]string{"--type", "miss", "--status", "notok"}, "fault add: --status notok: only an error fault takes a status"},
	} {
		r := runCtl(t, d, append([]string{"fault", "add", "p", "f"}, tc.args...)...)
		if r.code != 1 || !strings.Contains(r.err, tc.want) {
			t.Errorf("fault add p f %s: %v; want exit 1 and %q", strings.Join(tc.args, " "), r, tc.want)
		}
		for _, bad := range []string{"spec.faults", "a error", "status notok applies", "GET only"} {
			if strings.Contains(r.err, bad) {
				t.Errorf("fault add p f %s: %q says %q", strings.Join(tc.args, " "), r.err, bad)
			}
		}
	}
}
