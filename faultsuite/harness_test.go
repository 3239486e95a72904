package faultsuite

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/snoopd/snoopd/distcache/loadgen"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
	"github.com/snoopd/snoopd/internal/testutil"
)

var longFlag = flag.Bool("long", false, "run every scenario longer and rewrite docs/reliability.md (as SNOOPD_FAULTS_LONG=1)")

// long reports whether the suite runs in its long mode.
func long() bool { return *longFlag || os.Getenv("SNOOPD_FAULTS_LONG") == "1" }

// pick is short in the short mode and lng in the long one.
func pick[T any](short, lng T) T {
	if long() {
		return lng
	}
	return short
}

// waitLimit bounds every wait for something to happen.
const waitLimit = 30 * time.Second

// bins are the binaries TestMain builds.
var bins struct{ snoopd, snoopctl, dccache, dcload, dcSnoop string }

func TestMain(m *testing.M) {
	burnerMain() // the test binary started again as a competing load
	flag.Parse()
	os.Exit(func() int {
		dir, err := os.MkdirTemp("", "faults")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		bins.snoopd, bins.snoopctl = filepath.Join(dir, "snoopd"), filepath.Join(dir, "snoopctl")
		bins.dccache, bins.dcload = filepath.Join(dir, "dccache"), filepath.Join(dir, "dcload")
		bins.dcSnoop = filepath.Join(dir, "dc_snoop")
		// One go build for the five: the packages share most of their
		// dependencies.
		build := exec.Command("go", "build", "-o", dir+"/",
			"github.com/snoopd/snoopd/daemon/snoopd", "github.com/snoopd/snoopd/ctl/snoopctl",
			"github.com/snoopd/snoopd/cmd/dccache", "github.com/snoopd/snoopd/cmd/dcload",
			"github.com/snoopd/snoopd/cmd/dc_snoop")
		if out, err := build.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "building the binaries: %v\n%s", err, out)
			return 1
		}
		started := time.Now()
		code := m.Run()
		if code != 0 {
			return code
		}
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goroutine leak:", err)
			return 1
		}
		if long() {
			if err := writeReport(time.Since(started)); err != nil {
				fmt.Fprintln(os.Stderr, "writing docs/reliability.md:", err)
				return 1
			}
		}
		return 0
	}())
}

// proc is a process the suite started, in a process group of its own so
// that a kill reaches whatever it started too.
type proc struct {
	name string
	cmd  *exec.Cmd
	out  testutil.SyncBuffer // stdout and stderr
	done chan struct{}
	err  error // valid once done is closed
}

// startProc starts argv; it is stopped (SIGTERM to its group, then
// SIGKILL) when the test ends unless it has exited.
func startProc(t *testing.T, name string, argv ...string) *proc {
	t.Helper()
	return startProcEnv(t, name, nil, argv...)
}

// startProcEnv is startProc with env added to the environment.
func startProcEnv(t *testing.T, name string, env []string, argv ...string) *proc {
	t.Helper()
	return startProcTo(t, name, nil, env, argv...)
}

// startProcTo is startProcEnv with stdout written to a file of the
// test's (stderr alone goes to the process's out); nil keeps both in out.
func startProcTo(t *testing.T, name string, stdout *os.File, env []string, argv ...string) *proc {
	t.Helper()
	p := &proc{name: name, done: make(chan struct{})}
	p.cmd = exec.Command(argv[0], argv[1:]...)
	p.cmd.Stdout, p.cmd.Stderr = &p.out, &p.out
	if stdout != nil {
		p.cmd.Stdout = stdout
	}
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	p.cmd.Env = append(os.Environ(), "SNOOPD_ADDRESS=", "SNOOPD_TOKEN_FILE=", "NOTIFY_SOCKET=")
	p.cmd.Env = append(p.cmd.Env, env...)
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() { p.stop(t) })
	return p
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// signal sends sig to the process's group.
func (p *proc) signal(sig syscall.Signal) { syscall.Kill(-p.pid(), sig) }

// kill SIGKILLs the group and waits for the process.
func (p *proc) kill(t *testing.T) {
	t.Helper()
	p.signal(syscall.SIGKILL)
	select {
	case <-p.done:
	case <-time.After(waitLimit):
		t.Fatalf("%s did not die of SIGKILL", p.name)
	}
}

// stop ends the process gracefully if it can, by force if it must.
func (p *proc) stop(t *testing.T) {
	if p.exited() {
		return
	}
	p.signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		p.signal(syscall.SIGKILL)
		<-p.done
		t.Errorf("%s did not stop on SIGTERM; output:\n%s", p.name, tail(p.out.String()))
	}
}

// tail is the end of a long output, for error messages.
func tail(s string) string {
	if len(s) > 4000 {
		return "..." + s[len(s)-4000:]
	}
	return s
}

// snoopd is a running snoopd with a gRPC client on its control socket
// and its metrics on a unix socket beside it.
type snoopd struct {
	*proc
	dir      string // the socket directory, kept across restarts
	sock     string
	metrics  string
	proxies  snoopv1.ProxyServiceClient
	daemon   snoopv1.DaemonServiceClient
	events   snoopv1.EventServiceClient
	conn     *grpc.ClientConn
	httpc    *http.Client
	stateDir string
}

// daemonOpts are how a snoopd is started.
type daemonOpts struct {
	dir      string // socket directory; a new one when empty
	stateDir string // --state-dir, if set
	fdLimit  int    // soft and hard RLIMIT_NOFILE through sh's ulimit, if set
	args     []string
	env      []string // added to the environment
}

// startSnoopd starts snoopd and waits until its API answers.
func startSnoopd(t *testing.T, o daemonOpts) *snoopd {
	t.Helper()
	if o.dir == "" {
		o.dir = testutil.SocketDir(t)
	}
	d := &snoopd{dir: o.dir, sock: filepath.Join(o.dir, "ctl.sock"), metrics: filepath.Join(o.dir, "metrics.sock"), stateDir: o.stateDir}
	argv := []string{bins.snoopd, "--control", "UNIX:" + d.sock, "--metrics-listen", "UNIX:" + d.metrics, "--log-level", "warn"}
	if o.stateDir != "" {
		argv = append(argv, "--state-dir", o.stateDir)
	}
	argv = append(argv, o.args...)
	if o.fdLimit > 0 {
		argv = append([]string{"sh", "-c", fmt.Sprintf("ulimit -Sn %d && ulimit -Hn %d && exec \"$@\"", o.fdLimit, o.fdLimit), "sh"}, argv...)
	}
	d.proc = startProcEnv(t, "snoopd", o.env, argv...)
	// A short reconnect backoff: the client is made before the daemon
	// listens (after a SIGKILL the old socket file is still there), and
	// the default backoff would put a second into every restart's figure.
	conn, err := grpc.NewClient("unix://"+d.sock, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: backoff.Config{BaseDelay: 10 * time.Millisecond, Multiplier: 1.2, MaxDelay: 50 * time.Millisecond}, MinConnectTimeout: time.Second}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	d.conn = conn
	d.proxies, d.daemon, d.events = snoopv1.NewProxyServiceClient(conn), snoopv1.NewDaemonServiceClient(conn), snoopv1.NewEventServiceClient(conn)
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var dl net.Dialer
		return dl.DialContext(ctx, "unix", d.metrics)
	}}
	t.Cleanup(tr.CloseIdleConnections)
	d.httpc = &http.Client{Transport: tr, Timeout: 10 * time.Second}
	for deadline := time.Now().Add(waitLimit); ; time.Sleep(10 * time.Millisecond) {
		if d.exited() {
			t.Fatalf("snoopd exited at start-up: %v\n%s", d.err, tail(d.out.String()))
		}
		if _, err := os.Stat(d.sock); err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_, err := d.daemon.GetDaemonInfo(ctx, &snoopv1.GetDaemonInfoRequest{})
			cancel()
			if err == nil {
				return d
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("snoopd's API did not answer within %v:\n%s", waitLimit, tail(d.out.String()))
		}
	}
}

// ctx is a context for one call.
func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), waitLimit)
	t.Cleanup(cancel)
	return c
}

// proxy returns a proxy's state, failing the test if the API does not
// answer.
func (d *snoopd) proxy(t *testing.T, name string) *snoopv1.Proxy {
	t.Helper()
	r, err := d.proxies.GetProxy(ctx(t), &snoopv1.GetProxyRequest{Name: name})
	if err != nil {
		t.Fatalf("GetProxy %s: %v", name, err)
	}
	return r.GetProxy()
}

// waitProxy polls a proxy until cond holds.
func (d *snoopd) waitProxy(t *testing.T, name, what string, cond func(*snoopv1.Proxy) bool) *snoopv1.Proxy {
	t.Helper()
	var p *snoopv1.Proxy
	for deadline := time.Now().Add(waitLimit); ; time.Sleep(20 * time.Millisecond) {
		if p = d.proxy(t, name); cond(p) {
			return p
		}
		if time.Now().After(deadline) {
			t.Fatalf("proxy %s: not %s within %v; counters %v", name, what, waitLimit, p.GetCounters())
		}
	}
}

// result is the count of one result over a proxy's operations.
func result(p *snoopv1.Proxy, name string) int64 {
	var n int64
	for _, op := range p.GetCounters().GetOps() {
		n += op.GetResults()[name]
	}
	return n
}

// sample is snoopd's resources at one moment.
type sample struct {
	at         time.Duration // since the sampler started
	rss        int64         // bytes
	fds        int
	goroutines int // -1 if /metrics did not answer
	note       string
}

// sample reads snoopd's resources now. ok is false when the process is
// gone.
func (d *snoopd) sample() (s sample, ok bool) {
	pid := strconv.Itoa(d.pid())
	status, err := os.ReadFile("/proc/" + pid + "/status")
	if err != nil {
		return s, false
	}
	for _, line := range strings.Split(string(status), "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			s.rss = kb << 10
		}
	}
	ents, err := os.ReadDir("/proc/" + pid + "/fd")
	if err != nil {
		return s, false
	}
	s.fds = len(ents)
	s.goroutines = d.goroutines()
	return s, true
}

// goroutines reads go_goroutines from snoopd's /metrics.
func (d *snoopd) goroutines() int {
	resp, err := d.httpc.Get("http://snoopd/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	n := -1
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "go_goroutines "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			n = int(f)
		}
	}
	io.Copy(io.Discard, resp.Body)
	return n
}

// fds is snoopd's count of open descriptors.
func (d *snoopd) fds(t *testing.T) int {
	t.Helper()
	s, ok := d.sample()
	if !ok {
		t.Fatalf("snoopd is gone:\n%s", tail(d.out.String()))
	}
	return s.fds
}

// sampler samples a snoopd over time, and takes notes.
type sampler struct {
	d     *snoopd
	start time.Time
	stop  chan struct{}
	done  chan struct{}

	mu   sync.Mutex
	rows []sample
}

// startSampler samples d every interval (and at every mark) until the
// test ends or stopSampling is called.
func startSampler(t *testing.T, d *snoopd, every time.Duration) *sampler {
	s := &sampler{d: d, start: time.Now(), stop: make(chan struct{}), done: make(chan struct{})}
	s.mark("start")
	go func() {
		defer close(s.done)
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			select {
			case <-s.stop:
				return
			case <-tick.C:
				s.mark("")
			}
		}
	}()
	t.Cleanup(s.end)
	return s
}

// mark takes a sample now with a note.
func (s *sampler) mark(note string) {
	r, ok := s.d.sample()
	if !ok {
		return
	}
	r.at, r.note = time.Since(s.start), note
	s.mu.Lock()
	s.rows = append(s.rows, r)
	s.mu.Unlock()
}

// end stops sampling; it may be called more than once.
func (s *sampler) end() {
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	<-s.done
}

// samples returns what was sampled so far.
func (s *sampler) samples() []sample {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]sample(nil), s.rows...)
}

// peak returns the largest RSS, fds and goroutines sampled.
func peak(rows []sample) (rss int64, fds, goroutines int) {
	for _, r := range rows {
		rss, fds, goroutines = max(rss, r.rss), max(fds, r.fds), max(goroutines, r.goroutines)
	}
	return
}

// mb formats bytes as MB.
func mb(n int64) string { return fmt.Sprintf("%.1f MB", float64(n)/(1<<20)) }

// ctlRun is a finished snoopctl run.
type ctlRun struct {
	out, err string
	code     int
}

// snoopctl runs snoopctl against d.
func (d *snoopd) snoopctl(t *testing.T, args ...string) ctlRun {
	t.Helper()
	c, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	cmd := exec.CommandContext(c, bins.snoopctl, append([]string{"-a", "unix://" + d.sock, "--timeout", "20s"}, args...)...)
	cmd.Env = append(os.Environ(), "SNOOPD_ADDRESS=", "SNOOPD_TOKEN_FILE=", "NO_COLOR=1")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := ctlRun{out: out.String(), err: errb.String()}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	case err != nil:
		t.Fatalf("snoopctl %s: %v", strings.Join(args, " "), err)
	}
	return r
}

// mustCtl runs snoopctl and fails the test unless it succeeds; it
// returns stdout, trimmed.
func (d *snoopd) mustCtl(t *testing.T, args ...string) string {
	t.Helper()
	r := d.snoopctl(t, args...)
	if r.code != 0 {
		t.Fatalf("snoopctl %s: exit %d: %s%s", strings.Join(args, " "), r.code, r.out, r.err)
	}
	return strings.TrimSpace(r.out)
}

// addProxy creates a proxy with snoopctl add and returns the address it
// listens on (as add prints it).
func (d *snoopd) addProxy(t *testing.T, name, server string, flags ...string) string {
	t.Helper()
	return d.mustCtl(t, append([]string{"add", name, "--listen", "IP:127.0.0.1:0", "--server", server}, flags...)...)
}

// dccache is a running dccache.
type dccache struct {
	*proc
	addr string // as it printed it
}

// startCache starts dccache on listen and waits for its address.
func startCache(t *testing.T, listen string) *dccache {
	t.Helper()
	for attempt := 0; ; attempt++ {
		c := &dccache{proc: startProc(t, "dccache", bins.dccache, "-listen", listen)}
		for deadline := time.Now().Add(waitLimit); time.Now().Before(deadline) && !c.exited(); time.Sleep(5 * time.Millisecond) {
			for _, line := range strings.Split(c.out.String(), "\n") {
				if a, ok := strings.CutPrefix(line, "dccache: listening on "); ok {
					c.addr = strings.TrimSpace(a)
					return c
				}
			}
		}
		// A port just given up by a killed process can take a moment to
		// be free again; retry a few times.
		if !c.exited() || attempt == 20 {
			t.Fatalf("dccache on %s did not start: %s", listen, tail(c.out.String()))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// runLoad runs the load generator to completion with -json and returns
// its report. Its exit status is 0 without errors and 1 with; either is
// a report. It may run on any goroutine.
func runLoad(args ...string) (loadgen.Report, error) {
	c, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(c, bins.dcload, append(args, "-json")...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !(errors.As(err, &ee) && ee.ExitCode() == 1) {
		return loadgen.Report{}, fmt.Errorf("dcload %s: %v\n%s", strings.Join(args, " "), err, errb.String())
	}
	var rep loadgen.Report
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		return rep, fmt.Errorf("dcload report: %v\n%s\n%s", err, out.String(), errb.String())
	}
	return rep, nil
}

// dcload is runLoad for the test's goroutine.
func dcload(t *testing.T, args ...string) loadgen.Report {
	t.Helper()
	rep, err := runLoad(args...)
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

// causes lists a report's error causes.
func causes(r loadgen.Report) string {
	var parts []string
	for _, c := range r.ErrorCauses {
		parts = append(parts, fmt.Sprintf("%s %d", c.Cause, c.Count))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

// liveHeap is the live heap after the last garbage collection in a
// GODEBUG=gctrace=1 trace ("gc N @...: ..., A->B->C MB, ...": C), in
// bytes; -1 if there is none.
func liveHeap(trace string) int64 {
	live := int64(-1)
	for _, line := range strings.Split(trace, "\n") {
		if !strings.HasPrefix(line, "gc ") {
			continue
		}
		for _, f := range strings.Fields(line) {
			if strings.Count(f, "->") == 2 {
				v, err := strconv.ParseFloat(f[strings.LastIndex(f, "->")+2:], 64)
				if err == nil {
					live = int64(v * (1 << 20))
				}
			}
		}
	}
	return live
}
