package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/snoopd/snoopd/distcache"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
)

// The real-binary paths run snoopd and snoopctl as users run them: built
// from this tree once per benchmark run, the daemon started with a control
// socket of its own, the proxy created with `snoopctl add`, and the event
// stream read by a `snoopctl tail -o json` process. The in-process "snoop"
// child measures the library; these measure the product, including what
// a real watcher costs over gRPC.

// Bounds on the steps around a measurement, so that a daemon that hangs
// ends the benchmark with an error instead of holding it.
const (
	buildTimeout = 5 * time.Minute
	startTimeout = 10 * time.Second
	toolTimeout  = 10 * time.Second
	settleLimit  = 3 * time.Second
)

// binaries are the snoopd and snoopctl the real paths run.
type binaries struct {
	snoopd, snoopctl string
	// engineFlag and loopsFlag report whether this snoopd takes
	// --engine and --loops.
	engineFlag, loopsFlag bool
}

// buildBinaries builds snoopd and snoopctl from the module in src into
// dir, unless prebuilt ones are given.
func buildBinaries(src, dir, snoopd, snoopctl string) (binaries, error) {
	b := binaries{snoopd: snoopd, snoopctl: snoopctl}
	for _, t := range []struct {
		bin *string
		pkg string
	}{{&b.snoopd, "./daemon/snoopd"}, {&b.snoopctl, "./ctl/snoopctl"}} {
		if *t.bin != "" {
			continue
		}
		out := filepath.Join(dir, filepath.Base(t.pkg))
		cmd := exec.Command("go", "build", "-o", out, t.pkg)
		cmd.Dir = src
		var stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stderr, &stderr
		if err := runBounded(cmd, buildTimeout); err != nil {
			return b, fmt.Errorf("go build %s in %s: %w: %s", t.pkg, src, err, strings.TrimSpace(stderr.String()))
		}
		*t.bin = out
	}
	help := exec.Command(b.snoopd, "--help")
	var out bytes.Buffer
	help.Stdout, help.Stderr = &out, &out
	if err := runBounded(help, toolTimeout); err != nil {
		return b, fmt.Errorf("%s --help: %w", b.snoopd, err)
	}
	b.engineFlag = hasFlag(out.String(), "engine")
	b.loopsFlag = hasFlag(out.String(), "loops")
	return b, nil
}

// hasFlag reports whether a help text lists --name.
func hasFlag(help, name string) bool {
	for _, f := range strings.Fields(help) {
		if f == "--"+name || strings.HasPrefix(f, "--"+name+"=") {
			return true
		}
	}
	return false
}

// runBounded runs cmd in a process group of its own and kills the group
// if it has not finished within limit.
func runBounded(cmd *exec.Cmd, limit time.Duration) error {
	if err := startGroup(cmd); err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(limit):
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
		err = fmt.Errorf("still running after %v, killed", limit)
	}
	releaseGroup(cmd.Process.Pid)
	return err
}

// daemonProc is a running snoopd.
type daemonProc struct {
	cmd     *exec.Cmd
	bins    binaries
	control string // the control socket's path
	conn    *grpc.ClientConn
	info    snoopv1.DaemonServiceClient
	exited  chan struct{}
	waitErr error
	stopped sync.Once
}

// startSnoopd starts snoopd serving its control API on a unix socket at
// control and waits until it answers.
func startSnoopd(bins binaries, control, engine string, extra ...string) (*daemonProc, error) {
	args := []string{"--control", "UNIX:" + control, "--log-level", "warn"}
	if engine != "" {
		args = append(args, "--engine", engine)
	}
	args = append(args, extra...)
	d := &daemonProc{cmd: exec.Command(bins.snoopd, args...), bins: bins, control: control, exited: make(chan struct{})}
	d.cmd.Stdout, d.cmd.Stderr = os.Stderr, os.Stderr
	if err := startGroup(d.cmd); err != nil {
		return nil, fmt.Errorf("start snoopd: %w", err)
	}
	go func() {
		d.waitErr = d.cmd.Wait()
		close(d.exited)
	}()
	conn, err := grpc.NewClient("unix://"+control, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		d.stop()
		return nil, fmt.Errorf("control client: %w", err)
	}
	d.conn, d.info = conn, snoopv1.NewDaemonServiceClient(conn)
	if _, err := d.waitInfo(func(*snoopv1.GetDaemonInfoResponse) bool { return true }); err != nil {
		d.stop()
		return nil, fmt.Errorf("snoopd %s: %w", strings.Join(args, " "), err)
	}
	return d, nil
}

// exported waits until the daemon's exporter has settled (every event it
// matched published or dropped, acknowledgements included) and returns
// the two counts over the daemon's life, warm-up included.
func (d *daemonProc) exported() (published, dropped int64, err error) {
	info, err := d.waitInfo(func(i *snoopv1.GetDaemonInfoResponse) bool {
		x := i.GetExport()
		return x != nil && x.GetPublished()+x.GetDropped() == x.GetMatched()
	})
	if err != nil {
		return 0, 0, fmt.Errorf("export did not settle: %w", err)
	}
	return int64(info.GetExport().GetPublished()), int64(info.GetExport().GetDropped()), nil
}

// waitInfo polls the daemon's info until ok accepts it, the daemon exits
// or startTimeout passes.
func (d *daemonProc) waitInfo(ok func(*snoopv1.GetDaemonInfoResponse) bool) (*snoopv1.GetDaemonInfoResponse, error) {
	deadline := time.Now().Add(startTimeout)
	var last error
	for time.Now().Before(deadline) {
		select {
		case <-d.exited:
			return nil, fmt.Errorf("exited: %v", d.waitErr)
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		info, err := d.info.GetDaemonInfo(ctx, &snoopv1.GetDaemonInfoRequest{})
		cancel()
		if err == nil && ok(info) {
			return info, nil
		}
		last = err
		time.Sleep(20 * time.Millisecond)
	}
	if last == nil {
		last = errors.New("the condition was not met")
	}
	return nil, fmt.Errorf("not ready after %v: %w", startTimeout, last)
}

func (d *daemonProc) pid() int { return d.cmd.Process.Pid }

// snoopctl runs one snoopctl command against this daemon and returns its
// standard output.
func (d *daemonProc) snoopctl(args ...string) (string, error) {
	cmd := exec.Command(d.bins.snoopctl, append([]string{"-a", "UNIX:" + d.control}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := runBounded(cmd, toolTimeout); err != nil {
		return "", fmt.Errorf("snoopctl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// addProxy creates the benchmark's proxy with `snoopctl add` and returns
// the address it listens on.
func (d *daemonProc) addProxy(listen, server string) (distcache.Addr, error) {
	out, err := d.snoopctl("add", "bench", "--listen", listen, "--server", server)
	if err != nil {
		return distcache.Addr{}, err
	}
	a, err := distcache.ParseAddr(strings.TrimSpace(out))
	if err != nil {
		return distcache.Addr{}, fmt.Errorf("snoopctl add printed %q: %w", out, err)
	}
	return a, nil
}

// reported returns the engine the daemon says it runs and its number of
// event loops ("" and 0 when it does not say).
func (d *daemonProc) reported() (engine string, loops uint32) {
	ctx, cancel := context.WithTimeout(context.Background(), toolTimeout)
	defer cancel()
	info, err := d.info.GetDaemonInfo(ctx, &snoopv1.GetDaemonInfoRequest{})
	if err != nil {
		return "", 0
	}
	return info.GetEngine(), info.GetLoops()
}

// stop ends snoopd with SIGTERM (a graceful shutdown) and kills its group
// if that takes longer than its shutdown timeout plus a margin.
func (d *daemonProc) stop() {
	d.stopped.Do(func() {
		if d.conn != nil {
			d.conn.Close()
		}
		stopGroup(d.cmd, syscall.SIGTERM, 20*time.Second, func() error {
			<-d.exited
			return d.waitErr
		})
	})
}

// tailProc is a running `snoopctl tail -o json` whose output goes to
// /dev/null, as a watcher that keeps up would.
type tailProc struct {
	cmd     *exec.Cmd
	devnull *os.File
	stderr  bytes.Buffer
	exited  chan struct{}
	waitErr error
	stopped sync.Once
	shown   int64
	dropped int64
	err     error
}

// startTail attaches a tail to the daemon and waits until the daemon
// counts its stream: until it counts at least watchers streams.
func (d *daemonProc) startTail(watchers int) (*tailProc, error) {
	devnull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		return nil, err
	}
	t := &tailProc{cmd: exec.Command(d.bins.snoopctl, "-a", "UNIX:"+d.control, "-o", "json", "tail"), devnull: devnull, exited: make(chan struct{})}
	t.cmd.Stdout, t.cmd.Stderr = devnull, &t.stderr
	if err := startGroup(t.cmd); err != nil {
		devnull.Close()
		return nil, fmt.Errorf("start snoopctl tail: %w", err)
	}
	go func() {
		t.waitErr = t.cmd.Wait()
		close(t.exited)
	}()
	_, err = d.waitInfo(func(info *snoopv1.GetDaemonInfoResponse) bool {
		select {
		case <-t.exited:
			return true // reported below
		default:
		}
		return info.GetWatchers() >= int32(watchers)
	})
	select {
	case <-t.exited:
		err = fmt.Errorf("exited: %v: %s", t.waitErr, strings.TrimSpace(t.stderr.String()))
	default:
	}
	if err != nil {
		t.stop()
		return nil, fmt.Errorf("snoopctl tail: %w", err)
	}
	return t, nil
}

func (t *tailProc) pid() int { return t.cmd.Process.Pid }

// stop ends the tail with SIGINT, as Ctrl-C would, and reads the events
// it showed and the daemon dropped for it off its summary line.
func (t *tailProc) stop() (shown, dropped int64, err error) {
	t.stopped.Do(func() {
		stopGroup(t.cmd, syscall.SIGINT, 5*time.Second, func() error {
			<-t.exited
			return t.waitErr
		})
		t.devnull.Close()
		var ok bool
		t.shown, t.dropped, ok = parseTailSummary(t.stderr.String())
		if !ok {
			t.err = fmt.Errorf("snoopctl tail printed no summary: %q", strings.TrimSpace(t.stderr.String()))
		}
	})
	return t.shown, t.dropped, t.err
}

var tailSummary = regexp.MustCompile(`(?m)^(\d+) events shown, (\d+) dropped(?:,|$)`)

// parseTailSummary finds the last "N events shown, M dropped" line that
// snoopctl tail writes to stderr when it ends.
func parseTailSummary(stderr string) (shown, dropped int64, ok bool) {
	m := tailSummary.FindAllStringSubmatch(stderr, -1)
	if len(m) == 0 {
		return 0, 0, false
	}
	last := m[len(m)-1]
	shown, err1 := strconv.ParseInt(last[1], 10, 64)
	dropped, err2 := strconv.ParseInt(last[2], 10, 64)
	return shown, dropped, err1 == nil && err2 == nil
}
