package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
	"github.com/snoopd/snoopd/internal/skip"
	"github.com/snoopd/snoopd/internal/testutil"
)

// proc is a snoopd binary running in a process of its own.
type proc struct {
	cmd  *exec.Cmd
	logs *testutil.SyncBuffer
	done chan error
}

// startProc runs the snoopd binary with a control socket sock, and waits
// until the socket is there. It is stopped (SIGTERM) when the test ends.
func startProc(t *testing.T, bin, sock string, args ...string) *proc {
	t.Helper()
	p := &proc{logs: &testutil.SyncBuffer{}, done: make(chan error, 1)}
	p.cmd = exec.Command(bin, append([]string{"--control", "UNIX:" + sock, "--log-format", "json"}, args...)...)
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(testTimeout):
			p.cmd.Process.Kill()
			<-p.done
			t.Errorf("snoopd did not stop on SIGTERM; log:\n%s", p.logs.String())
		}
	})
	for deadline := time.Now().Add(testTimeout); ; time.Sleep(10 * time.Millisecond) {
		if _, err := os.Stat(sock); err == nil {
			return p
		}
		select {
		case err := <-p.done:
			p.done <- err
			t.Fatalf("snoopd exited: %v\n%s", err, p.logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("snoopd did not create %s; log:\n%s", sock, p.logs.String())
		}
	}
}

// TestTwoDaemonsOneStateDir runs two real snoopd processes on one state
// dir: the second fails at once with one line naming the dir and the
// first one's pid, and the first goes on serving.
func TestTwoDaemonsOneStateDir(t *testing.T) {
	if testing.Short() {
		skip.ByDesign(t, "-short: builds and runs the binaries")
	}
	bin, _ := buildBinaries(t)
	dir := tempDir(t)
	stateDir := filepath.Join(dir, "state")
	first := startProc(t, bin, filepath.Join(dir, "one.sock"), "--state-dir", stateDir)

	ctx := withTimeout(t)
	second := exec.CommandContext(ctx, bin, "--control", "UNIX:"+filepath.Join(dir, "two.sock"), "--state-dir", stateDir, "--log-level", "error")
	out, err := second.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Fatalf("second snoopd: %v, want exit status 1:\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != 1 {
		t.Errorf("want one line, got %d:\n%s", len(lines), out)
	}
	for _, want := range []string{"snoopd: ", stateDir, "pid " + strconv.Itoa(first.cmd.Process.Pid), "in use by another snoopd"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("output lacks %q: %s", want, out)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "two.sock")); err == nil {
		t.Error("the second snoopd left its control socket behind")
	}
	pc := snoopv1.NewProxyServiceClient(dial(t, unixTarget(filepath.Join(dir, "one.sock"))))
	if _, err := pc.ListProxies(ctx, &snoopv1.ListProxiesRequest{}); err != nil {
		t.Errorf("the first snoopd stopped answering: %v", err)
	}
}

// TestFullDisk runs the real snoopd with its state dir on a 64 KiB tmpfs
// and fills it: a create and a delete are refused, FAILED_PRECONDITION
// naming the state file and "no space left on device", and change
// nothing; with space again they succeed. It needs root (to mount).
func TestFullDisk(t *testing.T) {
	if testing.Short() {
		skip.ByDesign(t, "-short: builds and runs the binaries")
	}
	if os.Geteuid() != 0 {
		skip.Missing(t, "root: mounting a small tmpfs needs it")
	}
	dir := tempDir(t)
	stateDir := filepath.Join(dir, "state")
	if err := os.Mkdir(stateDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", stateDir, "tmpfs", 0, "size=64k,mode=0700"); err != nil {
		skip.Missing(t, "a tmpfs: cannot mount one here: %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(stateDir, syscall.MNT_DETACH) })
	bin, _ := buildBinaries(t)
	cache := startCache(t, dir)
	sock := filepath.Join(dir, "ctl.sock")
	startProc(t, bin, sock, "--state-dir", stateDir)
	ctx := withTimeout(t)
	pc := snoopv1.NewProxyServiceClient(dial(t, unixTarget(sock)))
	create := func(name string) error {
		_, err := pc.CreateProxy(ctx, &snoopv1.CreateProxyRequest{Spec: &snoopv1.ProxySpec{Name: name, Listen: "IP:127.0.0.1:0", Server: cache.Addr().String()}})
		return err
	}
	if err := create("before"); err != nil {
		t.Fatal(err)
	}
	// Fill the disk.
	filler := filepath.Join(stateDir, "filler")
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := f.Write(make([]byte, 4096)); err != nil {
			break
		}
	}
	f.Close()
	saved, _ := os.ReadFile(filepath.Join(stateDir, "proxies.json"))

	wantFull := func(what string, err error) {
		t.Helper()
		st, _ := status.FromError(err)
		if st.Code() != codes.FailedPrecondition || !strings.Contains(st.Message(), filepath.Join(stateDir, "proxies.json")) || !strings.Contains(st.Message(), "no space left on device") {
			t.Errorf("%s on a full disk: %v %q", what, st.Code(), st.Message())
		}
	}
	wantFull("create", create("during"))
	_, err = pc.DeleteProxy(ctx, &snoopv1.DeleteProxyRequest{Name: "before"})
	wantFull("delete", err)
	list, err := pc.ListProxies(ctx, &snoopv1.ListProxiesRequest{})
	if err != nil || len(list.GetProxies()) != 1 || list.GetProxies()[0].GetState() != snoopv1.ProxyState_PROXY_STATE_LISTENING {
		t.Errorf("after refused changes: %v %v", list, err)
	}
	if now, _ := os.ReadFile(filepath.Join(stateDir, "proxies.json")); string(now) != string(saved) {
		t.Errorf("the state file changed on a full disk")
	}

	os.Remove(filler)
	if err := create("after"); err != nil {
		t.Errorf("create with space again: %v", err)
	}
	if _, err := pc.DeleteProxy(ctx, &snoopv1.DeleteProxyRequest{Name: "before"}); err != nil {
		t.Errorf("delete with space again: %v", err)
	}
}
