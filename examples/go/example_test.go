package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/snoopd/snoopd/internal/skip"
	"github.com/snoopd/snoopd/internal/testutil"
)

// testTimeout bounds every wait in this test.
const testTimeout = 60 * time.Second

// TestExampleAgainstRealDaemon builds snoopd, dccache and the example,
// starts the two servers as processes, as an operator would, and runs the
// example over the unix socket and over loopback TCP, both with the
// daemon's token, and once without it.
func TestExampleAgainstRealDaemon(t *testing.T) {
	if testing.Short() {
		skip.ByDesign(t, "-short: builds and runs three binaries")
	}
	dir := testutil.SocketDir(t)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	example := filepath.Join(dir, "example")
	for _, b := range [][]string{
		{"-o", dir + string(filepath.Separator), "./daemon/snoopd", "./cmd/dccache"},
		{"-o", example, "./examples/go"},
	} {
		build := exec.CommandContext(ctx, "go", append([]string{"build"}, b...)...)
		build.Dir = filepath.Join("..", "..")
		if out, err := build.CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", b, err, out)
		}
	}
	token := filepath.Join(dir, "token")
	if err := os.WriteFile(token, []byte("example-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cacheSock, ctlSock := filepath.Join(dir, "cache.sock"), filepath.Join(dir, "snoopd.sock")
	start(ctx, t, nil, filepath.Join(dir, "dccache"), "-listen", "UNIX:"+cacheSock)
	var logs testutil.SyncBuffer
	start(ctx, t, &logs, filepath.Join(dir, "snoopd"), "--log-format", "json", "--token-file", token,
		"--control", "unix://"+ctlSock, "--control", "127.0.0.1:0", "--insecure")
	tcp := waitTCPEndpoint(t, &logs)
	waitFile(t, cacheSock)

	for _, tc := range []struct{ name, address, prefix string }{
		{"unix", "unix://" + ctlSock, "ex-unix"},
		{"tcp", tcp, "ex-tcp"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.CommandContext(ctx, example, "-address", tc.address, "-token-file", token,
				"-server", "UNIX:"+cacheSock, "-prefix", tc.prefix, "-load", "150")
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			if err := cmd.Run(); err != nil {
				t.Fatalf("example: %v\n%s%s", err, stdout.String(), stderr.String())
			}
			out := stdout.String()
			for _, want := range []string{
				`^connected: snoopd \S+, engine \w+, \d+ proxies$`,
				`^created ` + tc.prefix + `-one: listening on 127\.0\.0\.1 port [1-9]\d* \(IP:127\.0\.0\.1:[1-9]\d*\), spares 2, dial timeout 5s$`,
				`^create again: AlreadyExists reason=PROXY_EXISTS domain=snoopd resource=snoop\.v1\.Proxy/` + tc.prefix + `-one: `,
				`^get missing: NotFound reason=PROXY_NOT_FOUND domain=snoopd resource=snoop\.v1\.Proxy/` + tc.prefix + `-missing: `,
				`^create bad: InvalidArgument field=spec\.listen: `,
				`^apply: ` + tc.prefix + `-one APPLY_ACTION_UNCHANGED at IP:127\.0\.0\.1:[1-9]`,
				`^apply: ` + tc.prefix + `-two APPLY_ACTION_CREATED at IP:127\.0\.0\.1:[1-9]`,
				`^watch: 150 GET hits seen, 150 sent$`,
				`^counters: OP_GET 300 map\[hit:150 miss:150\]$`,
				`^deleted ` + tc.prefix + `-one$`,
				`^deleted ` + tc.prefix + `-two$`,
			} {
				if !regexp.MustCompile("(?m)" + want).MatchString(out) {
					t.Errorf("no line matching %s in:\n%s", want, out)
				}
			}
		})
	}

	// Without the token every call is refused, and the example says so.
	cmd := exec.CommandContext(ctx, example, "-address", "unix://"+ctlSock, "-server", "UNIX:"+cacheSock)
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || !strings.Contains(string(out), "Unauthenticated") {
		t.Errorf("without the token: %v\n%s", err, out)
	}
}

// start runs a server process until the test ends; its stderr goes to
// logs, if given.
func start(ctx context.Context, t *testing.T, logs *testutil.SyncBuffer, name string, args ...string) {
	t.Helper()
	cmd := exec.CommandContext(ctx, name, args...)
	var stderr testutil.SyncBuffer
	cmd.Stderr = &stderr
	if logs != nil {
		cmd.Stderr = logs
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		select {
		case <-done:
		case <-time.After(testTimeout):
			cmd.Process.Kill()
			<-done
		}
	})
}

// waitTCPEndpoint reads snoopd's JSON log until it names its TCP control
// endpoint (port 0 resolved).
func waitTCPEndpoint(t *testing.T, logs *testutil.SyncBuffer) string {
	t.Helper()
	for deadline := time.Now().Add(testTimeout); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		sc := bufio.NewScanner(strings.NewReader(logs.String()))
		for sc.Scan() {
			var rec struct{ Msg, Endpoint string }
			if json.Unmarshal(sc.Bytes(), &rec) == nil && rec.Msg == "control API listening" && !strings.HasPrefix(rec.Endpoint, "unix:") {
				return rec.Endpoint
			}
		}
	}
	t.Fatalf("snoopd named no TCP control endpoint:\n%s", logs.String())
	return ""
}

// waitFile waits for a socket file to appear.
func waitFile(t *testing.T, path string) {
	t.Helper()
	for deadline := time.Now().Add(testTimeout); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(path); err == nil {
			return
		}
	}
	t.Fatalf("%s did not appear", path)
}
