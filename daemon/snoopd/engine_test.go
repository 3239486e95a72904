package main

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/snoopd/snoopd/daemon/hub"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
	"github.com/snoopd/snoopd/proxy"
)

// TestWatchIntervalInInfo: GetDaemonInfo reports the --watch-interval
// the daemon hands events out at, the default when none is given.
func TestWatchIntervalInInfo(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want time.Duration
	}{
		{nil, hub.DefaultInterval},
		{[]string{"--watch-interval", "200ms"}, 200 * time.Millisecond},
		{[]string{"--watch-interval", "1ms"}, time.Millisecond},
	} {
		sock := filepath.Join(tempDir(t), "ctl.sock")
		startSnoopd(t, append([]string{"--control", "unix://" + sock}, tc.args...)...)
		info, err := snoopv1.NewDaemonServiceClient(dial(t, unixTarget(sock))).GetDaemonInfo(withTimeout(t), &snoopv1.GetDaemonInfoRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if got := info.GetWatchInterval().AsDuration(); got != tc.want {
			t.Errorf("%q: watch_interval %v, want %v", tc.args, got, tc.want)
		}
	}
}

// TestEngineFlagAndFDLimit: GetDaemonInfo reports the engine the flags
// chose and the open-file limit start-up raised, which is the hard limit,
// and the start-up log says both.
func TestEngineFlagAndFDLimit(t *testing.T) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args   []string
		engine string
		loops  uint32
	}{
		{[]string{"--engine", "goroutines"}, proxy.EngineGoroutines, 0},
		{[]string{"--engine", "epoll", "--loops", "2"}, "", 0},
		{nil, "", 0},
	} {
		dir := tempDir(t)
		sock := filepath.Join(dir, "ctl.sock")
		sd := startSnoopd(t, append([]string{"--control", "unix://" + sock}, tc.args...)...)
		info, err := snoopv1.NewDaemonServiceClient(dial(t, unixTarget(sock))).GetDaemonInfo(withTimeout(t), &snoopv1.GetDaemonInfoRequest{})
		if err != nil {
			t.Fatal(err)
		}
		want, loops := tc.engine, tc.loops
		if want == "" {
			// Whatever the engine the flags name is on this system.
			name, n := proxy.DefaultEngine, proxy.DefaultLoops()
			if len(tc.args) > 0 {
				name, n = tc.args[1], 2
			}
			eng, err := proxy.NewEngine(name, n)
			if err != nil {
				t.Fatal(err)
			}
			want, loops = eng.Name(), uint32(eng.Loops())
			eng.Close()
		}
		if info.GetEngine() != want || info.GetLoops() != loops {
			t.Errorf("%q: engine %q with %d loops, want %q with %d", tc.args, info.GetEngine(), info.GetLoops(), want, loops)
		}
		if info.GetFdLimit() != uint64(lim.Max) {
			t.Errorf("%q: fd limit %d, want the hard limit %d", tc.args, info.GetFdLimit(), lim.Max)
		}
		rec := sd.findLog("open-file limit")
		if rec == nil || rec["now"] != float64(lim.Max) {
			t.Errorf("%q: open-file limit log %v", tc.args, rec)
		}
		rec = sd.findLog("data path engine")
		if rec == nil || rec["engine"] != info.GetEngine() {
			t.Errorf("%q: engine log %v", tc.args, rec)
		}
		// The event loops keep their Ps while they wait, and a P is left
		// for everything else (unless GOMAXPROCS is set by hand).
		if info.GetEngine() == proxy.EngineEpoll && os.Getenv("GOMAXPROCS") == "" {
			if procs, _ := rec["gomaxprocs"].(float64); int(procs) < int(info.GetLoops())+1 || rec["raw_waits"] != true {
				t.Errorf("%q: %d loops with GOMAXPROCS %v, raw waits %v; want a P beyond the loops and raw waits", tc.args, info.GetLoops(), rec["gomaxprocs"], rec["raw_waits"])
			}
		}
		if code := sd.stop(); code != 0 {
			t.Fatalf("exit code %d:\n%s", code, sd.stderr)
		}
	}
}
