package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestExportUsageErrors: bad --export flags exit 2 with one line naming
// the flag, before anything is opened.
func TestExportUsageErrors(t *testing.T) {
	dir := tempDir(t)
	sock := "unix://" + dir + "/ctl.sock"
	nats := "nats://127.0.0.1:4222"
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--export-filter", `op == "get"`}, "--export-filter needs --export"},
		{[]string{"--export-data"}, "--export-data needs --export"},
		{[]string{"--export", "127.0.0.1:4222"}, "want a NATS URL"},
		{[]string{"--export", "http://127.0.0.1:4222"}, `scheme "http"`},
		{[]string{"--export", nats, "--export-subject", "snoop.>"}, "--export-subject"},
		{[]string{"--export", nats, "--export-format", "xml"}, "--export-format"},
		{[]string{"--export", nats, "--export-filter", "op =="}, "--export-filter"},
		{[]string{"--export", nats, "--export-tls-cert", "c.pem"}, "--export-tls-cert and --export-tls-key"},
		{[]string{"--export", nats, "--export-creds", "a", "--export-token-file", "b"}, "one way to authenticate"},
		{[]string{"--export", nats, "--export-max-bytes", "lots"}, "--export-max-bytes"},
		{[]string{"--export", nats, "--export-stream", "", "--export-max-age", "1h"}, "need --export-stream"},
		{[]string{"--export", nats, "--export-stream", "A.B"}, "--export-stream"},
		{[]string{"--export", nats, "--export-queue", "-1"}, "--export-queue"},
		{[]string{"--export", nats, "--export-batch", "0"}, "--export-batch 0"},
		{[]string{"--export", nats, "--export-batch", "9000"}, "--export-batch 9000"},
		{[]string{"--export-batch", "8"}, "--export-batch needs --export"},
		{[]string{"--export", nats, "--export-interval", "0s"}, "--export-interval 0s"},
		{[]string{"--export", nats, "--export-interval", "2h"}, "--export-interval 2h"},
		{[]string{"--export-interval", "1s"}, "--export-interval needs --export"},
		{[]string{"--export", nats, "--daemon-name", "web\xff"}, "--daemon-name"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			code, _, stderr := runToExit(t, append([]string{"--control", sock}, tc.args...)...)
			lines := strings.Split(strings.TrimSuffix(stderr, "\n"), "\n")
			if code != 2 || len(lines) != 1 || !strings.HasPrefix(lines[0], "snoopd: ") || !strings.Contains(lines[0], tc.want) {
				t.Fatalf("exit %d, want 2 and one line containing %q:\n%s", code, tc.want, stderr)
			}
		})
	}
}

// TestExportStartErrors: a token file others can read stops start-up
// with one line (exit 1), and nothing is left listening.
func TestExportStartErrors(t *testing.T) {
	dir := tempDir(t)
	tok := filepath.Join(dir, "tok")
	if err := os.WriteFile(tok, []byte("secret\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, _, stderr := runToExit(t, "--control", "unix://"+dir+"/ctl.sock", "--export", "nats://127.0.0.1:4222", "--export-token-file", tok)
	if code != 1 || !strings.Contains(stderr, "--export-token-file") || !strings.Contains(stderr, "chmod 600") {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if _, err := os.Stat(dir + "/ctl.sock"); err == nil {
		t.Error("the control socket was left behind")
	}
}
