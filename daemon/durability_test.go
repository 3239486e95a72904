package daemon

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
	"github.com/snoopd/snoopd/internal/skip"
	"github.com/snoopd/snoopd/internal/testutil"
)

// failingWrites makes the state file's writer fail with err while *on is
// true, for the rest of the test. It is the seam that lets a test run as
// root (which ignores a read-only directory) see a save fail.
func failingWrites(t *testing.T, err error) *atomic.Bool {
	t.Helper()
	var on atomic.Bool
	prev := writeStateFile
	writeStateFile = func(path string, b []byte) error {
		if on.Load() {
			return fmt.Errorf("write %s.tmp42: %w", path, err)
		}
		return prev(path, b)
	}
	t.Cleanup(func() { writeStateFile = prev })
	return &on
}

// names lists the proxies' names, sorted.
func names(t *testing.T, a *api) []string {
	t.Helper()
	r, err := a.proxy.ListProxies(context.Background(), &snoopv1.ListProxiesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, p := range r.GetProxies() {
		out = append(out, p.GetSpec().GetName()+"="+p.GetState().String())
	}
	return out
}

// savedNames lists the proxies in dir's state file.
func savedNames(t *testing.T, dir string) []string {
	t.Helper()
	specs, _, err := readProxySet(filepath.Join(dir, stateFileName))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, s := range specs {
		out = append(out, s.GetName())
	}
	return out
}

// wantNotSaved checks err is the refusal of a change that could not be
// saved: FAILED_PRECONDITION naming the state file and the system error.
func wantNotSaved(t *testing.T, err error, dir, sysErr string) {
	t.Helper()
	st, _ := status.FromError(err)
	if st.Code() != codes.FailedPrecondition {
		t.Fatalf("got %v %q, want FailedPrecondition", st.Code(), st.Message())
	}
	for _, want := range []string{filepath.Join(dir, stateFileName), sysErr, "refused"} {
		if !strings.Contains(st.Message(), want) {
			t.Errorf("message %q lacks %q", st.Message(), want)
		}
	}
}

// TestFailedSaveRefusesAndRollsBack: with the state file unwritable (the
// disk full), create, update, delete and apply each fail with a clear
// status, and memory, the proxies' sockets and the disk stay as they
// were; once the disk is back, the same calls succeed.
func TestFailedSaveRefusesAndRollsBack(t *testing.T) {
	dir := t.TempDir()
	cache := startCache(t)
	a := startAPI(t, Config{StateDir: dir}, ServerOptions{})
	ctx := context.Background()
	for _, n := range []string{"keep", "other"} {
		if _, err := a.proxy.CreateProxy(ctx, &snoopv1.CreateProxyRequest{Spec: spec(n, cache.String())}); err != nil {
			t.Fatal(err)
		}
	}
	keep, _ := a.proxy.GetProxy(ctx, &snoopv1.GetProxyRequest{Name: "keep"})
	keepAddr := keep.GetProxy().GetListenAddress()
	before := names(t, a)
	disk, _ := os.ReadFile(filepath.Join(dir, stateFileName))

	full := failingWrites(t, syscall.ENOSPC)
	full.Store(true)
	free := testutil.FreeAddr(t)

	// Create: refused, the proxy gone again and its address free.
	_, err := a.proxy.CreateProxy(ctx, &snoopv1.CreateProxyRequest{Spec: &snoopv1.ProxySpec{Name: "new", Listen: "IP:" + free, Server: cache.String()}})
	wantNotSaved(t, err, dir, "no space left on device")
	if l, err := net.Listen("tcp", free); err != nil {
		t.Errorf("the refused proxy's address is still taken: %v", err)
	} else {
		l.Close()
	}
	// Delete: refused before the proxy was touched; it still carries
	// traffic.
	_, err = a.proxy.DeleteProxy(ctx, &snoopv1.DeleteProxyRequest{Name: "keep"})
	wantNotSaved(t, err, dir, "no space left on device")
	if c, err := net.Dial("tcp", strings.TrimPrefix(keepAddr, "IP:")); err != nil {
		t.Errorf("the proxy a refused delete named stopped listening: %v", err)
	} else {
		c.Close()
	}
	// Update: refused, the proxy as it was.
	_, err = a.proxy.UpdateProxy(ctx, &snoopv1.UpdateProxyRequest{Spec: &snoopv1.ProxySpec{Name: "keep", Enabled: proto.Bool(false)},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"enabled"}}})
	wantNotSaved(t, err, dir, "no space left on device")
	// Apply: a creation, a change and a removal, none of which happens.
	_, err = a.proxy.ApplyProxies(ctx, &snoopv1.ApplyProxiesRequest{Prune: true, Proxies: []*snoopv1.ProxySpec{
		{Name: "keep", Listen: "IP:127.0.0.1:0", Server: cache.String(), MaxConnections: 3},
		{Name: "added", Listen: "IP:" + free, Server: cache.String()},
	}})
	wantNotSaved(t, err, dir, "no space left on device")
	if got := names(t, a); !slices.Equal(got, before) {
		t.Errorf("after refused changes the proxies are %v, were %v", got, before)
	}
	if after, _ := os.ReadFile(filepath.Join(dir, stateFileName)); !bytes.Equal(after, disk) {
		t.Errorf("state file changed by refused changes")
	}
	if p, _ := a.proxy.GetProxy(ctx, &snoopv1.GetProxyRequest{Name: "keep"}); p.GetProxy().GetSpec().GetMaxConnections() != 0 {
		t.Errorf("refused apply changed keep: %v", p)
	}

	// The disk is back: the same calls succeed, and disk and memory agree.
	full.Store(false)
	if _, err := a.proxy.CreateProxy(ctx, &snoopv1.CreateProxyRequest{Spec: &snoopv1.ProxySpec{Name: "new", Listen: "IP:" + free, Server: cache.String()}}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.proxy.DeleteProxy(ctx, &snoopv1.DeleteProxyRequest{Name: "other"}); err != nil {
		t.Fatal(err)
	}
	if got, want := savedNames(t, dir), []string{"keep", "new"}; !slices.Equal(got, want) {
		t.Errorf("saved %v, want %v", got, want)
	}
}

// TestReadOnlyStateDir is the failed save as a user meets it: the state
// dir made read-only. Root ignores the mode, so it is skipped there (the
// injected failure above covers the same path).
func TestReadOnlyStateDir(t *testing.T) {
	if os.Geteuid() == 0 {
		skip.ByDesign(t, "root writes into a 0500 directory; TestFailedSaveRefusesAndRollsBack covers this with an injected failure")
	}
	dir := t.TempDir()
	cache := startCache(t)
	a := startAPI(t, Config{StateDir: dir}, ServerOptions{})
	ctx := context.Background()
	if _, err := a.proxy.CreateProxy(ctx, &snoopv1.CreateProxyRequest{Spec: spec("a", cache.String())}); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o500); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Chmod(dir, 0o700) })
	_, err := a.proxy.CreateProxy(ctx, &snoopv1.CreateProxyRequest{Spec: spec("b", cache.String())})
	wantNotSaved(t, err, dir, "permission denied")
	_, err = a.proxy.DeleteProxy(ctx, &snoopv1.DeleteProxyRequest{Name: "a"})
	wantNotSaved(t, err, dir, "permission denied")
	if got := names(t, a); !slices.Equal(got, []string{"a=PROXY_STATE_LISTENING"}) {
		t.Errorf("proxies %v", got)
	}
}

// TestGroupCommit: concurrent creates share writes, and each returns only
// once a write that holds its proxy has completed.
func TestGroupCommit(t *testing.T) {
	dir := t.TempDir()
	cache := startCache(t)
	d, err := New(Config{StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close(context.Background())

	var mu sync.Mutex
	var writes int
	onDisk := map[string]bool{} // the names in the last completed write
	prev := writeStateFile
	writeStateFile = func(path string, b []byte) error {
		if err := prev(path, b); err != nil {
			return err
		}
		specs, _, err := readProxySet(path)
		if err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		writes++
		clear(onDisk)
		for _, s := range specs {
			onDisk[s.GetName()] = true
		}
		return nil
	}
	t.Cleanup(func() { writeStateFile = prev })

	const workers, each = 8, 25
	var wg sync.WaitGroup
	errs := make(chan error, workers*each)
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				name := fmt.Sprintf("p%d-%d", w, i)
				if _, err := d.CreateProxy(context.Background(), spec(name, cache.String())); err != nil {
					errs <- err
					return
				}
				mu.Lock()
				durable := onDisk[name]
				mu.Unlock()
				if !durable {
					errs <- fmt.Errorf("create %s returned before a write held it", name)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if n := len(savedNames(t, dir)); n != workers*each {
		t.Errorf("%d proxies saved, want %d", n, workers*each)
	}
	t.Logf("%d creates, %d writes", workers*each, writes)
	if writes >= workers*each {
		t.Errorf("%d writes for %d concurrent creates: no group commit", writes, workers*each)
	}
}

// TestLeftoverTempFilesRemoved: temporary files a killed daemon left are
// removed at start, with a log line each.
func TestLeftoverTempFilesRemoved(t *testing.T) {
	dir := t.TempDir()
	left := []string{filepath.Join(dir, stateFileName+".tmp123"), filepath.Join(dir, stateFileName+".tmp9876")}
	for _, f := range left {
		if err := os.WriteFile(f, []byte("{\"proxies\": ["), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	other := filepath.Join(dir, "notes.txt")
	os.WriteFile(other, nil, 0o600)
	var logs testutil.SyncBuffer
	d, err := New(Config{StateDir: dir, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close(context.Background())
	for _, f := range left {
		if _, err := os.Stat(f); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s not removed: %v", f, err)
		}
		if !strings.Contains(logs.String(), f) {
			t.Errorf("no log line names %s:\n%s", f, logs.String())
		}
	}
	if _, err := os.Stat(other); err != nil {
		t.Errorf("a file that is not a temporary state file was removed: %v", err)
	}
}

// TestOneDaemonPerStateDir: a second daemon on a state dir fails at once,
// naming the dir and the holder's pid; once the first is closed, it
// starts.
func TestOneDaemonPerStateDir(t *testing.T) {
	dir := t.TempDir()
	first, err := New(Config{StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	_, err = New(Config{StateDir: dir})
	if !errors.Is(err, ErrStateDirLocked) {
		t.Fatalf("second daemon on one state dir: %v", err)
	}
	for _, want := range []string{dir, "pid " + strconv.Itoa(os.Getpid())} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	if err := first.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	second, err := New(Config{StateDir: dir})
	if err != nil {
		t.Fatalf("after the first closed: %v", err)
	}
	second.Close(context.Background())
}
