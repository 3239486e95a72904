package main

// snoopctl top and plot driven as a user would: top inside a
// pseudo-terminal (keys in, screen out, a resize, every way out restoring
// the terminal), its batch mode as a script reads it, and plots checked
// for their elements.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/charmbracelet/x/vt"
	"github.com/creack/pty"
	"golang.org/x/sys/unix"

	"github.com/snoopd/snoopd/distcache/loadgen"
	"github.com/snoopd/snoopd/internal/testutil"
)

// ptyCtl is snoopctl running on a pseudo-terminal.
type ptyCtl struct {
	cmd  *exec.Cmd
	ptmx *os.File
	tty  *os.File
	out  syncBuffer // everything written to the terminal
	// emu is a terminal emulator fed with the output, which turns
	// bubbletea's cursor moves and partial redraws back into a screen.
	mu     sync.Mutex
	emu    *vt.Emulator
	done   chan error
	copied chan struct{}
	// termios is the terminal's state before snoopctl started.
	termios *unix.Termios
}

// startPty starts snoopctl with args on a new pseudo-terminal of rows x
// cols, as the controlling terminal of its own session.
func startPty(t *testing.T, d *daemon, rows, cols uint16, env []string, args ...string) *ptyCtl {
	t.Helper()
	ptmx, tty, err := pty.Open()
	if err != nil {
		t.Fatal(err)
	}
	if err := pty.Setsize(ptmx, &pty.Winsize{Rows: rows, Cols: cols}); err != nil {
		t.Fatal(err)
	}
	before, err := unix.IoctlGetTermios(int(tty.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	p := &ptyCtl{ptmx: ptmx, tty: tty, done: make(chan error, 1), copied: make(chan struct{}), termios: before,
		emu: vt.NewEmulator(int(cols), int(rows))}
	p.cmd = command(context.Background(), d, args...)
	p.cmd.Env = append(p.cmd.Env, "TERM=xterm-256color")
	p.cmd.Env = append(p.cmd.Env, env...)
	p.cmd.Stdin, p.cmd.Stdout, p.cmd.Stderr = tty, tty, tty
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(p.copied)
		b := make([]byte, 32<<10)
		for {
			n, err := ptmx.Read(b) // ends with EIO once the tty is closed and the child gone
			p.out.Write(b[:n])
			p.mu.Lock()
			p.emu.Write(b[:n])
			p.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	// The emulator's answers to the program's queries (terminal
	// capabilities) go back as a terminal's would.
	// The emulator is closed by this goroutine, once told to stop with a
	// byte through its input: closing it from another would race with
	// its Read.
	answered := make(chan struct{})
	var stopping atomic.Bool
	go func() {
		defer close(answered)
		b := make([]byte, 4096)
		for {
			n, err := p.emu.Read(b)
			if err != nil || stopping.Load() {
				p.emu.Close()
				return
			}
			ptmx.Write(b[:n])
		}
	}()
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		err := <-p.done
		p.done <- err
		tty.Close()
		ptmx.Close()
		<-p.copied
		stopping.Store(true)
		p.emu.SendText("\x00")
		<-answered
	})
	return p
}

// screen is the terminal's screen now, as text.
func (p *ptyCtl) screen() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.emu.String()
}

// waitFor waits until the screen shows every one of want, and none of
// unwanted ones (given with a leading "!").
func (p *ptyCtl) waitFor(t *testing.T, want ...string) string {
	t.Helper()
	var s string
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		s = p.screen()
		ok := true
		for _, w := range want {
			if no, isNot := strings.CutPrefix(w, "!"); isNot {
				ok = ok && !strings.Contains(s, no)
			} else {
				ok = ok && strings.Contains(s, w)
			}
		}
		if ok {
			return s
		}
	}
	t.Fatalf("the screen never showed %q; it shows:\n%s", want, s)
	return ""
}

// keys types s on the terminal.
func (p *ptyCtl) keys(t *testing.T, s string) {
	t.Helper()
	if _, err := p.ptmx.WriteString(s); err != nil {
		t.Fatal(err)
	}
}

// resize changes the terminal's size, as a window manager does.
func (p *ptyCtl) resize(t *testing.T, rows, cols uint16) {
	t.Helper()
	p.mu.Lock()
	p.emu.Resize(int(cols), int(rows))
	p.mu.Unlock()
	if err := pty.Setsize(p.ptmx, &pty.Winsize{Rows: rows, Cols: cols}); err != nil {
		t.Fatal(err)
	}
}

// wait waits for snoopctl to end and returns its exit code.
func (p *ptyCtl) wait(t *testing.T) int {
	t.Helper()
	select {
	case err := <-p.done:
		p.done <- err
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode()
		}
		if err != nil {
			t.Fatal(err)
		}
		return 0
	case <-time.After(20 * time.Second):
		t.Fatalf("snoopctl did not end; the terminal shows:\n%s", p.screen())
	}
	return -1
}

// restored checks that the terminal is as it was before snoopctl ran:
// the same modes (no raw mode left behind), the main screen back and the
// cursor shown.
func (p *ptyCtl) restored(t *testing.T) {
	t.Helper()
	after, err := unix.IoctlGetTermios(int(p.tty.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	b, a := p.termios, after
	if b.Iflag != a.Iflag || b.Oflag != a.Oflag || b.Lflag != a.Lflag || b.Cflag != a.Cflag || b.Cc != a.Cc {
		t.Errorf("terminal modes not restored: before %+v, after %+v", b, a)
	}
	// With the last holder of the terminal closed, the reader gets all
	// that is left, then EIO.
	p.tty.Close()
	<-p.copied
	out := p.out.String()
	enter, leave := strings.LastIndex(out, "\x1b[?1049h"), strings.LastIndex(out, "\x1b[?1049l")
	if enter < 0 || leave < enter {
		t.Errorf("the alternate screen was not left (entered at %d, left at %d); the output ends %q", enter, leave, out[max(len(out)-400, 0):])
	}
	if strings.LastIndex(out, "\x1b[?25h") < strings.LastIndex(out, "\x1b[?25l") {
		t.Errorf("the cursor was left hidden")
	}
}

func TestTopInTerminal(t *testing.T) {
	d, addr := setup(t)
	mustCtl(t, d, "add", "quiet", "--listen", "IP:127.0.0.1:0", "--server", "IP:127.0.0.1:1")
	load(t, addr, loadgen.Config{Conns: 2, Ops: 400})

	p := startPty(t, d, 30, 120, nil, "top", "-d", "200ms")
	scr := p.waitFor(t, "NAME", "OPS/S", "HIT%", "ERR/S", "P50", "P99", "UP/S", "DOWN/S", "2 proxies (2 listening)", "quiet")
	// The first screen covers each proxy's life: p's load is there.
	if !regexp.MustCompile(`(?m)^p +listening +0 +[0-9.]+ +[0-9.]+ +0\.0 +[0-9.]+[µm]?s`).MatchString(scr) {
		t.Errorf("no row for p with its load:\n%s", scr)
	}

	p.keys(t, "?")
	p.waitFor(t, "snoopctl top: keys", "filter by name")
	p.keys(t, "x") // any key closes the help
	p.waitFor(t, "NAME", "!snoopctl top: keys")
	p.keys(t, "/qui")
	p.waitFor(t, "filter: qui")
	p.keys(t, "\r")
	scr = p.waitFor(t, `filter "qui"`, "quiet")
	if regexp.MustCompile(`(?m)^p +listening`).MatchString(scr) {
		t.Errorf("the filter kept p:\n%s", scr)
	}
	p.keys(t, "\x1b") // esc clears the filter
	p.waitFor(t, `!filter "`)
	p.keys(t, "n") // sort by name: p, then quiet
	scr = p.waitFor(t, "NAME▲")
	if i, j := strings.Index(scr, "\np "), strings.Index(scr, "\nquiet "); i < 0 || j < i {
		t.Errorf("sorted by name, p is not above quiet:\n%s", scr)
	}
	p.keys(t, "n") // again: reversed
	p.waitFor(t, "NAME▼")
	p.keys(t, ">") // the next column, STATE
	p.waitFor(t, "STATE▲")
	p.keys(t, "n")
	p.waitFor(t, "NAME▲")
	p.keys(t, "g\r") // select the first row, p, and open it
	// No load now: the interval is empty, the histogram since the start
	// is shown instead.
	scr = p.waitFor(t, "P999", "RESULTS", "GET", "ADD", "no transactions over the last", "latency since the proxy started, 400 samples")
	if !regexp.MustCompile(`(?m)^  [0-9]+[µm]s–[0-9]+[µm]s +█+`).MatchString(scr) {
		t.Errorf("no histogram bars in the detail view:\n%s", scr)
	}
	p.keys(t, "p")
	p.waitFor(t, "[paused]")
	p.keys(t, "p")
	p.waitFor(t, "!paused")

	// A resize redraws for the new size.
	p.resize(t, 20, 50)
	scr = p.waitFor(t, "esc back")
	for _, l := range strings.Split(scr, "\n") {
		if n := utf8.RuneCountInString(l); n > 50 {
			t.Errorf("a line of %d characters on a 50-column screen: %q", n, l)
		}
	}
	p.keys(t, "\x1b")
	p.waitFor(t, "NAME", "!esc back")

	p.keys(t, "q")
	if code := p.wait(t); code != 0 {
		t.Fatalf("top exited %d after q; the terminal shows:\n%s", code, p.screen())
	}
	p.restored(t)
}

// TestTopEnds checks the other ways out: SIGTERM and Ctrl-C end top
// cleanly, and a daemon that goes away ends it with the error printed
// after the terminal is restored.
func TestTopEnds(t *testing.T) {
	d, _ := setup(t)
	for _, how := range []string{"sigterm", "ctrl-c"} {
		t.Run(how, func(t *testing.T) {
			p := startPty(t, d, 24, 100, []string{"NO_COLOR=1"}, "top", "-d", "100ms")
			p.waitFor(t, "NAME", "listening")
			if how == "sigterm" {
				p.cmd.Process.Signal(syscall.SIGTERM)
			} else {
				p.keys(t, "\x03")
			}
			if code := p.wait(t); code != 0 {
				t.Fatalf("top exited %d; the terminal shows:\n%s", code, p.screen())
			}
			p.restored(t)
			// NO_COLOR: no foreground or background colour was set.
			if out := p.out.String(); strings.Contains(out, "\x1b[3") || strings.Contains(out, "\x1b[4") || strings.Contains(out, ";38;") {
				t.Errorf("colour despite NO_COLOR: %q", out)
			}
		})
	}
	t.Run("daemon-gone", func(t *testing.T) {
		d, stop := startOwnDaemon(t)
		p := startPty(t, d, 24, 100, nil, "top", "-d", "100ms")
		p.waitFor(t, "NAME", "0 proxies")
		stop()
		if code := p.wait(t); code != 1 {
			t.Fatalf("top exited %d when the daemon went away, want 1; the terminal shows:\n%s", code, p.screen())
		}
		p.restored(t)
		out := p.out.String()
		leave, msg := strings.LastIndex(out, "\x1b[?1049l"), strings.Index(out, "snoopctl: ")
		if msg < 0 || msg < leave {
			t.Errorf("the error was not printed after the terminal was restored: %q", out[max(leave-200, 0):])
		}
	})
}

func TestTopBatch(t *testing.T) {
	d, addr := setup(t)
	mustCtl(t, d, "add", "quiet", "--listen", "IP:127.0.0.1:0", "--server", "IP:127.0.0.1:1")
	rep := load(t, addr, loadgen.Config{Conns: 2, Ops: 300})

	// Not a terminal: batch mode without -b.
	r := mustCtl(t, d, "top", "-n", "2", "-d", "100ms")
	if len(regexp.MustCompile(`(?m)^NAME +STATE +CONNS +OPS/S +HIT% +ERR/S +P50 +P99 +UP/S +DOWN/S$`).FindAllString(r.out, -1)) != 2 {
		t.Fatalf("want two tables:\n%s", r.out)
	}
	first := r.out[:strings.Index(r.out[1:], "snoopd ")+1]
	for _, want := range []string{"2 proxies (2 listening)", "since each proxy started"} {
		if !strings.Contains(first, want) {
			t.Errorf("first table lacks %q:\n%s", want, first)
		}
	}
	// Busiest first: p, with all the load, then the idle quiet.
	if !regexp.MustCompile(`(?m)^p +listening +0 +[0-9.]+ +[0-9.]+ +0\.0 +[0-9.]+[µm]?s +[0-9.]+[µm]?s +[0-9.]+ [KM]?i?B +[0-9.]+ [KM]?i?B\nquiet +listening +0 +0\.0 +- +0\.0 +- +- +0 B +0 B$`).MatchString(first) {
		t.Errorf("first table's rows:\n%s", first)
	}

	if !strings.Contains(r.out, "over 1") && !strings.Contains(r.out, "over 9") {
		t.Errorf("the second table is not over the interval:\n%s", r.out)
	}

	r = mustCtl(t, d, "top", "-b", "-n", "2", "-d", "100ms", "-o", "json")
	lines := strings.Split(strings.TrimSpace(r.out), "\n")
	if len(lines) != 2 {
		t.Fatalf("want 2 JSON lines, got %d:\n%s", len(lines), r.out)
	}
	type opJSON struct {
		Op      string           `json:"op"`
		Count   int64            `json:"count"`
		Results map[string]int64 `json:"results"`
		Samples uint64           `json:"samples"`
		P50     *string          `json:"p50"`
	}
	type frame struct {
		Interval string `json:"interval"`
		Totals   struct {
			Proxies      int   `json:"proxies"`
			Transactions int64 `json:"transactions"`
		} `json:"totals"`
		Proxies []struct {
			Name     string   `json:"name"`
			Ops      int64    `json:"ops"`
			HitRatio *float64 `json:"hit_ratio"`
			P99      *string  `json:"p99"`
			ByOp     []opJSON `json:"ops_detail"`
		} `json:"proxies"`
	}
	var f0, f1 frame
	if err := json.Unmarshal([]byte(lines[0]), &f0); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(lines[1]), &f1); err != nil {
		t.Fatal(err)
	}
	if apiDuration(t, f0.Interval) != 0 || apiDuration(t, f1.Interval) <= 0 || f0.Totals.Proxies != 2 || len(f0.Proxies) != 2 {
		t.Fatalf("frames: %s", r.out)
	}
	p := f0.Proxies[0] // sorted by name: p, quiet
	if p.Name != "p" || p.Ops != int64(rep.Ops) || p.P99 == nil {
		t.Errorf("proxy p in the first frame: %+v, want %d ops since it started", p, rep.Ops)
	}
	byOp := map[string]opJSON{}
	for _, o := range p.ByOp {
		byOp[o.Op] = o
	}
	for _, o := range rep.ByOp {
		if got := byOp[o.Op]; got.Count != o.Count || got.Samples != uint64(o.Count) || got.P50 == nil {
			t.Errorf("%s: %+v, want %d transactions", o.Op, got, o.Count)
		}
	}
	if f1.Proxies[0].Ops != 0 {
		t.Errorf("no load between the polls, yet %d ops in the interval", f1.Proxies[0].Ops)
	}
	if q := f0.Proxies[1]; q.Name != "quiet" || q.Ops != 0 || q.HitRatio != nil || q.P99 != nil {
		t.Errorf("idle proxy: %+v", q)
	}

	// Bad flags are usage errors.
	for _, args := range [][]string{{"top", "-d", "0s"}, {"top", "-n", "-1"}, {"top", "extra"}} {
		if r := runCtl(t, d, args...); r.code != 2 || !strings.HasPrefix(r.err, "snoopctl: ") {
			t.Errorf("snoopctl %v: %v, want a usage error", args, r)
		}
	}
}

// startOwnDaemon starts a snoopd the test stops itself, with the
// function that stops it (SIGTERM, and waits).
func startOwnDaemon(t *testing.T) (*daemon, func()) {
	t.Helper()
	dir := testutil.SocketDir(t)
	sock := filepath.Join(dir, "s.sock")
	var logs syncBuffer
	cmd := exec.Command(bins.snoopd, "--control", "UNIX:"+sock, "--log-level", "warn")
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			cmd.Process.Kill()
			<-done
			t.Errorf("snoopd did not stop on SIGTERM; log:\n%s", logs.String())
		}
	}
	t.Cleanup(stop)
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("snoopd did not create %s; log:\n%s", sock, logs.String())
		}
	}
	return &daemon{dir: dir, addr: "unix://" + sock}, stop
}

// TestShowHistogram checks that show draws the real daemon's histograms:
// a sparkline per operation and the proxy's bars, whose counts add up to
// the load.
func TestShowHistogram(t *testing.T) {
	d, addr := setup(t)
	rep := load(t, addr, loadgen.Config{Conns: 1, Ops: 250})
	r := mustCtl(t, d, "show", "p")
	i := strings.Index(r.out, "latency histogram:\n")
	if i < 0 {
		t.Fatalf("no histogram:\n%s", r.out)
	}
	if !regexp.MustCompile(`(?m)^  GET +[0-9]+ +[0-9.]+% +[0-9.]+[µm]?s +[0-9.]+[µm]?s +[0-9]+[nµm]?s \[[ ▁▂▃▄▅▆▇█]+\] [0-9]+[nµm]?s `).MatchString(r.out) {
		t.Errorf("no sparkline for GET:\n%s", r.out)
	}
	var total int64
	for _, l := range strings.Split(r.out[i:], "\n")[1:] {
		if l == "" {
			break
		}
		f := strings.Fields(l)
		var n int64
		fmt.Sscan(f[len(f)-2], &n)
		total += n
	}
	if total != rep.Ops {
		t.Errorf("the bars count %d transactions, the load ran %d:\n%s", total, rep.Ops, r.out)
	}
}
