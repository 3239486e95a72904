package main

import (
	"bufio"
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/snoopd/snoopd/distcache"
	"github.com/snoopd/snoopd/distcache/cacheserver"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
	"github.com/snoopd/snoopd/internal/testutil"
)

// Every goroutine snoopd, the proxies, the servers and the clients start
// must be gone when the tests end.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testTimeout bounds every wait in these tests.
const testTimeout = 30 * time.Second

// syncBuffer is an io.Writer the daemon's logger writes to while the test
// reads it.
type syncBuffer = testutil.SyncBuffer

// snoopd is a run of the daemon in this process.
type snoopd struct {
	t      *testing.T
	cancel context.CancelFunc
	done   chan int
	stdout *syncBuffer
	stderr *syncBuffer

	mu     sync.Mutex
	code   int
	exited bool
}

// startSnoopd runs snoopd with args (plus JSON debug logs, so the test can
// read them) and waits until it has started. The run is stopped when the
// test ends, if the test did not stop it.
func startSnoopd(t *testing.T, args ...string) *snoopd {
	t.Helper()
	s := launch(t, args...)
	deadline := time.Now().Add(testTimeout)
	for {
		if s.findLog("snoopd started") != nil {
			return s
		}
		select {
		case code := <-s.done:
			s.setExit(code)
			t.Fatalf("snoopd %q exited with %d at start-up:\n%s", args, code, s.stderr)
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("snoopd %q did not start within %v:\n%s", args, testTimeout, s.stderr)
		}
	}
}

func launch(t *testing.T, args ...string) *snoopd {
	ctx, cancel := context.WithCancel(context.Background())
	s := &snoopd{t: t, cancel: cancel, done: make(chan int, 1), stdout: &syncBuffer{}, stderr: &syncBuffer{}}
	full := append([]string{"--log-format", "json", "--log-level", "debug"}, args...)
	go func() { s.done <- run(ctx, full, s.stdout, s.stderr) }()
	t.Cleanup(func() { s.stop() })
	return s
}

func (s *snoopd) setExit(code int) {
	s.mu.Lock()
	s.code, s.exited = code, true
	s.mu.Unlock()
}

// stop cancels the run's context, as a signal would, and returns its exit
// code. It may be called more than once.
func (s *snoopd) stop() int {
	s.t.Helper()
	s.cancel()
	s.mu.Lock()
	exited, code := s.exited, s.code
	s.mu.Unlock()
	if exited {
		return code
	}
	select {
	case code = <-s.done:
		s.setExit(code)
		return code
	case <-time.After(testTimeout):
		s.t.Fatalf("snoopd did not stop within %v:\n%s", testTimeout, s.stderr)
		return -1
	}
}

// runToExit runs snoopd with args that should make it exit by itself (a
// usage error or a failed start-up) and returns its exit code and output.
func runToExit(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	s := launch(t, args...)
	select {
	case code = <-s.done:
		s.setExit(code)
	case <-time.After(testTimeout):
		t.Fatalf("snoopd %q was expected to exit but still runs:\n%s", args, s.stderr)
	}
	return code, s.stdout.String(), s.stderr.String()
}

// logs returns the JSON log records written so far.
func (s *snoopd) logs() []map[string]any {
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(s.stderr.String()))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		var rec map[string]any
		if json.Unmarshal(sc.Bytes(), &rec) == nil {
			out = append(out, rec)
		}
	}
	return out
}

// findLog returns the first record with message msg, or nil.
func (s *snoopd) findLog(msg string) map[string]any {
	for _, rec := range s.logs() {
		if rec["msg"] == msg {
			return rec
		}
	}
	return nil
}

// waitLog waits for a record with message msg.
func (s *snoopd) waitLog(msg string) map[string]any {
	s.t.Helper()
	deadline := time.Now().Add(testTimeout)
	for time.Now().Before(deadline) {
		if rec := s.findLog(msg); rec != nil {
			return rec
		}
		time.Sleep(10 * time.Millisecond)
	}
	s.t.Fatalf("no log %q within %v:\n%s", msg, testTimeout, s.stderr)
	return nil
}

// endpoints returns the control endpoints snoopd logged, in order.
func (s *snoopd) endpoints() []string {
	var out []string
	for _, rec := range s.logs() {
		if rec["msg"] == "control API listening" {
			out = append(out, rec["endpoint"].(string))
		}
	}
	return out
}

// tempDir returns a directory with a short path, since unix socket paths
// must stay under about 100 bytes and t.TempDir's are long.
func tempDir(t *testing.T) string {
	t.Helper()
	return testutil.SocketDir(t)
}

// dial connects a gRPC client to target ("unix:///path" or
// "passthrough:///host:port"); it is closed when the test ends.
func dial(t *testing.T, target string, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	if len(opts) == 0 {
		opts = []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	}
	conn, err := grpc.NewClient(target, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// unixTarget is the gRPC target of a unix socket.
func unixTarget(path string) string { return "unix://" + path }

// startCache starts an in-memory cache server on a unix socket in dir.
func startCache(t *testing.T, dir string) *cacheserver.Server {
	t.Helper()
	c, err := cacheserver.Start(distcache.MustParseAddr("UNIX:"+filepath.Join(dir, "cache.sock")), cacheserver.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// withTimeout is a context for one step of a test.
func withTimeout(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

// withToken adds a bearer token to ctx's outgoing metadata.
func withToken(ctx context.Context, tok string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tok)
}

// waitWatchers waits until the daemon reports n open event streams, so a
// load started next is seen from its first operation.
func waitWatchers(t *testing.T, ctx context.Context, conn *grpc.ClientConn, n int32) {
	t.Helper()
	dc := snoopv1.NewDaemonServiceClient(conn)
	deadline := time.Now().Add(testTimeout)
	for time.Now().Before(deadline) {
		info, err := dc.GetDaemonInfo(ctx, &snoopv1.GetDaemonInfoRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if info.GetWatchers() == n {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("the daemon did not report %d watchers within %v", n, testTimeout)
}

// writeFile writes a file with the given mode, exactly (no umask).
func writeFile(t *testing.T, path, content string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

// tcpTarget turns a logged TCP endpoint (host:port) into a gRPC target.
func tcpTarget(t *testing.T, ep string) string {
	t.Helper()
	if _, port, err := net.SplitHostPort(ep); err != nil || port == "0" {
		t.Fatalf("endpoint %q is not host:port with a real port", ep)
	} else if _, err := strconv.Atoi(port); err != nil {
		t.Fatalf("endpoint %q: %v", ep, err)
	}
	return "passthrough:///" + ep
}
