package main

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
)

// checkServes dials the socket, makes one call and checks its mode.
func checkServes(t *testing.T, sock string) {
	t.Helper()
	fi, err := os.Lstat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != fs.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Errorf("control socket %s: mode %v, want a socket with 0600", sock, fi.Mode())
	}
	if _, err := snoopv1.NewProxyServiceClient(dial(t, unixTarget(sock))).ListProxies(withTimeout(t), &snoopv1.ListProxiesRequest{}); err != nil {
		t.Fatalf("call over %s: %v", sock, err)
	}
}

func TestDefaultSocketXDG(t *testing.T) {
	dir := tempDir(t)
	t.Setenv("XDG_RUNTIME_DIR", dir)
	sock := filepath.Join(dir, "snoopd.sock")
	sd := startSnoopd(t)
	if eps := sd.endpoints(); len(eps) != 1 || eps[0] != "unix://"+sock {
		t.Fatalf("endpoints %q, want unix://%s", eps, sock)
	}
	checkServes(t, sock)
	if code := sd.stop(); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	if _, err := os.Lstat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket still there after shutdown (%v)", err)
	}
}

func TestDefaultSocketXDGMissingDir(t *testing.T) {
	dir := tempDir(t)
	runtime := filepath.Join(dir, "run", "user")
	t.Setenv("XDG_RUNTIME_DIR", runtime)
	sd := startSnoopd(t)
	checkServes(t, filepath.Join(runtime, "snoopd.sock"))
	if fi, err := os.Stat(runtime); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("created %s: %v, %v; want mode 0700", runtime, fi.Mode(), err)
	}
	sd.stop()
}

// TestDefaultSocketTmp: without XDG_RUNTIME_DIR the socket goes in
// snoopd-<uid> under the temporary directory, created 0700.
func TestDefaultSocketTmp(t *testing.T) {
	tmp := tempDir(t)
	t.Setenv("XDG_RUNTIME_DIR", "")
	t.Setenv("TMPDIR", tmp)
	sockDir := filepath.Join(tmp, fmt.Sprintf("snoopd-%d", os.Getuid()))
	sock := filepath.Join(sockDir, "snoopd.sock")

	sd := startSnoopd(t)
	fi, err := os.Lstat(sockDir)
	if err != nil {
		t.Fatal(err)
	}
	if !fi.IsDir() || fi.Mode().Perm() != 0o700 {
		t.Errorf("socket directory %s: mode %v, want a directory with 0700", sockDir, fi.Mode())
	}
	checkServes(t, sock)
	if code := sd.stop(); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	if _, err := os.Lstat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket still there after shutdown (%v)", err)
	}

	// The directory now exists; a second start reuses it.
	sd = startSnoopd(t)
	checkServes(t, sock)
	sd.stop()
}

// TestDefaultSocketTmpUnsafeDir: the directory under /tmp could have been
// made by someone else first; a mode that lets others in, or a symlink,
// stops the start-up.
func TestDefaultSocketTmpUnsafeDir(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, path string)
		want  string
	}{
		{"world-writable", func(t *testing.T, path string) {
			if err := os.Mkdir(path, 0o777); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(path, 0o777); err != nil {
				t.Fatal(err)
			}
		}, "chmod 700"},
		{"group-writable", func(t *testing.T, path string) {
			if err := os.Mkdir(path, 0o770); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(path, 0o770); err != nil {
				t.Fatal(err)
			}
		}, "chmod 700"},
		{"symlink", func(t *testing.T, path string) {
			target := path + "-elsewhere"
			if err := os.Mkdir(target, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(target, path); err != nil {
				t.Fatal(err)
			}
		}, "not a directory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tmp := tempDir(t)
			t.Setenv("XDG_RUNTIME_DIR", "")
			t.Setenv("TMPDIR", tmp)
			sockDir := filepath.Join(tmp, fmt.Sprintf("snoopd-%d", os.Getuid()))
			tc.setup(t, sockDir)
			code, _, stderr := runToExit(t)
			msg := failureLine(t, stderr)
			if code != 1 || !strings.Contains(msg, sockDir) || !strings.Contains(msg, tc.want) {
				t.Fatalf("exit code %d, message %q; want 1 naming %s and %q", code, msg, sockDir, tc.want)
			}
			if _, err := os.Lstat(filepath.Join(sockDir, "snoopd.sock")); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("a socket was created in the unsafe directory (%v)", err)
			}
		})
	}
}

func TestControlSocketPathTaken(t *testing.T) {
	dir := tempDir(t)
	t.Run("regular-file", func(t *testing.T) {
		path := filepath.Join(dir, "file.sock")
		writeFile(t, path, "keep me", 0o600)
		code, _, stderr := runToExit(t, "--control", "unix://"+path)
		msg := failureLine(t, stderr)
		if code != 1 || !strings.Contains(msg, path) || !strings.Contains(msg, "not a socket") {
			t.Fatalf("exit code %d: %s", code, msg)
		}
		if b, err := os.ReadFile(path); err != nil || string(b) != "keep me" {
			t.Fatalf("the file was touched: %q, %v", b, err)
		}
	})
	t.Run("second-daemon", func(t *testing.T) {
		sock := filepath.Join(dir, "ctl.sock")
		first := startSnoopd(t, "--control", "unix://"+sock)
		code, _, stderr := runToExit(t, "--control", "unix://"+sock)
		msg := failureLine(t, stderr)
		if code != 1 || !strings.Contains(msg, sock) || !strings.Contains(msg, "another process") {
			t.Fatalf("exit code %d: %s", code, msg)
		}
		// The first daemon keeps its socket and serves on.
		checkServes(t, sock)
		if code := first.stop(); code != 0 {
			t.Fatalf("exit code %d", code)
		}
	})
	t.Run("stale-socket", func(t *testing.T) {
		// A daemon that died leaves its socket; the next start replaces it.
		sock := filepath.Join(dir, "stale.sock")
		first := startSnoopd(t, "--control", "unix://"+sock)
		first.stop()
		makeStaleSocket(t, sock)
		sd := startSnoopd(t, "--control", "unix://"+sock)
		checkServes(t, sock)
		sd.stop()
	})
}

// makeStaleSocket leaves a socket file at path that nobody accepts on, as
// a process that died would.
func makeStaleSocket(t *testing.T, path string) {
	t.Helper()
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close()
	if fi, err := os.Lstat(path); err != nil || fi.Mode().Type() != fs.ModeSocket {
		t.Fatalf("no stale socket at %s: %v", path, err)
	}
}
