package afpacket

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/snoopd/snoopd/distcache/loadgen"
	"github.com/snoopd/snoopd/internal/skip"
	"golang.org/x/sys/unix"
)

// measureEnv turns on TestMeasureTapOnLoopback, which is a measurement,
// not a check: it takes about a minute and its figures depend on the
// machine.
const measureEnv = "SNOOPD_TAP_MEASURE"

// TestMeasureTapOnLoopback runs the real dccache and dcload on
// 127.0.0.1 at a rising rate, each load once without a tap and once with
// one (a Source at the default ring size on lo, read by this process,
// which decodes every packet's Ethernet, IP and TCP headers as a
// reassembler must), and prints a markdown table: medians over the
// rounds of the rate dcload reached, packets per transaction, the tap's
// CPU per transaction and the CPU the capture adds to the cache and the
// load generator (the kernel copies each packet into the ring on the
// sender's time); the rounds in which the kernel dropped packets, the
// most it dropped in one, and the highest rate of a round without a drop.
// The machine's load average is printed before and after, since a
// reader that is not scheduled in time is what fills a ring. Run it as
// root:
//
//	SNOOPD_TAP_MEASURE=1 go test -run TestMeasureTapOnLoopback -v -timeout 30m ./internal/afpacket
//
// SNOOPD_TAP_SECONDS sets each run's length (default 5), SNOOPD_TAP_ROUNDS
// the rounds (default 3), SNOOPD_TAP_BLOCKS the ring's blocks (default
// DefaultBlockCount, of DefaultBlockSize each).
func TestMeasureTapOnLoopback(t *testing.T) {
	if os.Getenv(measureEnv) == "" {
		skip.ByDesign(t, "a measurement: set %s=1 to run it", measureEnv)
	}
	needRoot(t)
	seconds, rounds := envInt(t, "SNOOPD_TAP_SECONDS", 5), envInt(t, "SNOOPD_TAP_ROUNDS", 3)
	opts := Options{BlockCount: envInt(t, "SNOOPD_TAP_BLOCKS", DefaultBlockCount)}
	dir := t.TempDir()
	build := exec.Command("go", "build", "-o", dir+"/", "github.com/snoopd/snoopd/cmd/dccache", "github.com/snoopd/snoopd/cmd/dcload")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building dccache and dcload: %v\n%s", err, out)
	}
	cache, addr, port := startDccache(t, filepath.Join(dir, "dccache"))

	pipelined := []string{"-conns", "4", "-pipeline", "16"}
	loads := []struct {
		name string
		args []string
	}{
		{"4 conns × pipeline 16, -rate 10000", append([]string{"-rate", "10000"}, pipelined...)},
		{"4 conns × pipeline 16, -rate 25000", append([]string{"-rate", "25000"}, pipelined...)},
		{"4 conns × pipeline 16, -rate 50000", append([]string{"-rate", "50000"}, pipelined...)},
		{"4 conns × pipeline 16, -rate 100000", append([]string{"-rate", "100000"}, pipelined...)},
		{"4 conns × pipeline 16, no limit", pipelined},
		{"1 conn, no pipeline, no limit", []string{"-conns", "1"}},
		{"a conn per op, 4 workers, no limit", []string{"-conns", "4", "-persistent=false"}},
	}
	fmt.Printf("\nring: %d blocks of %d KiB; load average before: %s", opts.BlockCount, DefaultBlockSize>>10, loadavg())
	fmt.Printf("| load (%d s, %d rounds) | txn/s untapped | txn/s tapped | packets/txn | rounds with drops | most drops | highest txn/s without drops | tap CPU µs/txn | CPU added to dccache+dcload µs/txn |\n", seconds, rounds)
	fmt.Println("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
	for _, l := range loads {
		args := append([]string{"-addr", addr, "-duration", fmt.Sprintf("%ds", seconds), "-json"}, l.args...)
		var bareRate, rate, pkts, tapCPU, added []float64
		var drops uint64
		dropRounds, best := 0, "-"
		var bestRate float64
		for range rounds {
			bare, err := runMeasured(filepath.Join(dir, "dcload"), cache, args, 0, opts)
			if err != nil {
				t.Fatal(err)
			}
			tapped, err := runMeasured(filepath.Join(dir, "dcload"), cache, args, port, opts)
			if err != nil {
				t.Fatal(err)
			}
			ops, bareOps := float64(tapped.rep.Ops), float64(bare.rep.Ops)
			bareRate = append(bareRate, bare.rep.OpsPerSec)
			rate = append(rate, tapped.rep.OpsPerSec)
			pkts = append(pkts, float64(tapped.stats.Packets)/ops)
			tapCPU = append(tapCPU, float64(tapped.tapCPU.Microseconds())/ops)
			added = append(added, float64(tapped.peerCPU.Microseconds())/ops-float64(bare.peerCPU.Microseconds())/bareOps)
			drops = max(drops, tapped.stats.Drops)
			if tapped.stats.Drops > 0 {
				dropRounds++
			} else if tapped.rep.OpsPerSec > bestRate {
				bestRate = tapped.rep.OpsPerSec
				best = fmt.Sprintf("%.0f", bestRate)
			}
		}
		fmt.Printf("| %s | %.0f | %.0f | %.1f | %d | %d | %s | %.2f | %.2f |\n", l.name,
			median(bareRate), median(rate), median(pkts), dropRounds, drops, best, median(tapCPU), median(added))
	}
	fmt.Printf("load average after: %s\n", loadavg())
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return err.Error() + "\n"
	}
	return string(b)
}

func envInt(t *testing.T, name string, def int) int {
	t.Helper()
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		t.Fatalf("%s=%q: want a whole number, at least 1", name, s)
	}
	return n
}

func median(v []float64) float64 {
	v = slices.Clone(v)
	slices.Sort(v)
	return v[len(v)/2]
}

type measured struct {
	rep     loadgen.Report
	stats   Stats
	tapCPU  time.Duration // this process while it read the tap
	peerCPU time.Duration // dccache and dcload
}

// runMeasured runs dcload to its end, with a tap on port when port is
// not 0, its ring shaped by opts.
func runMeasured(dcload string, cache *exec.Cmd, args []string, port uint16, opts Options) (measured, error) {
	var m measured
	var src *Source
	done := make(chan int, 1)
	if port != 0 {
		var err error
		if src, err = Open("lo", port, opts); err != nil {
			return m, err
		}
		go func() { done <- decodeAll(src) }()
	}
	cacheBefore, err := procCPU(cache.Process.Pid)
	if err != nil {
		return m, err
	}
	selfBefore := selfCPU()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, dcload, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return m, fmt.Errorf("dcload %s: %v\n%s", strings.Join(args, " "), err, errb.String())
	}
	if err := json.Unmarshal(out.Bytes(), &m.rep); err != nil {
		return m, fmt.Errorf("dcload report: %v\n%s", err, out.String())
	}
	if m.rep.Errors != 0 {
		return m, fmt.Errorf("dcload: %d errors: %v", m.rep.Errors, m.rep.ErrorSamples)
	}
	if src != nil {
		// The last block reaches the reader at most a block timeout
		// after its last packet.
		time.Sleep(5 * DefaultBlockTimeout)
		m.tapCPU = selfCPU() - selfBefore
		// The reader may be decoding a packet in the ring: it must see
		// io.EOF before the ring goes.
		if err := src.Stop(); err != nil {
			return m, err
		}
		read := <-done
		if err := src.Close(); err != nil {
			return m, err
		}
		if m.stats, err = src.Stats(); err != nil {
			return m, err
		}
		if uint64(read) != m.stats.Packets-m.stats.Drops {
			return m, fmt.Errorf("read %d packets, the kernel delivered %d", read, m.stats.Packets-m.stats.Drops)
		}
	}
	cacheAfter, err := procCPU(cache.Process.Pid)
	if err != nil {
		return m, err
	}
	m.peerCPU = cacheAfter - cacheBefore + cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	return m, nil
}

// decodeAll reads src until it is closed, decoding each packet's
// headers, and returns how many packets it read.
func decodeAll(src *Source) int {
	var (
		eth     layers.Ethernet
		ip4     layers.IPv4
		ip6     layers.IPv6
		tcp     layers.TCP
		decoded []gopacket.LayerType
	)
	parser := gopacket.NewDecodingLayerParser(layers.LayerTypeEthernet, &eth, &ip4, &ip6, &tcp)
	parser.IgnoreUnsupported = true
	n := 0
	for {
		data, _, err := src.ZeroCopyReadPacketData()
		if err != nil {
			return n
		}
		parser.DecodeLayers(data, &decoded)
		n++
	}
}

func selfCPU() time.Duration {
	var ru unix.Rusage
	unix.Getrusage(unix.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// procCPU reads a process's user and system time from /proc/PID/stat.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The fields after the command name, which is in parentheses and may
	// hold spaces: utime and stime are the 12th and 13th.
	i := bytes.LastIndexByte(b, ')')
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, errors.New("short /proc/PID/stat")
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	// USER_HZ is 100 on Linux.
	return time.Duration(ut+st) * 10 * time.Millisecond, nil
}

// startDccache starts dccache on a free loopback port and returns it,
// its address and its port.
func startDccache(t *testing.T, bin string) (*exec.Cmd, string, uint16) {
	t.Helper()
	cmd := exec.Command(bin, "-listen", "IP:127.0.0.1:0")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line := make([]byte, 256)
	n, err := stdout.Read(line)
	if err != nil {
		t.Fatalf("dccache: %v", err)
	}
	addr, ok := strings.CutPrefix(strings.TrimSpace(string(line[:n])), "dccache: listening on ")
	if !ok {
		t.Fatalf("dccache printed %q", line[:n])
	}
	p, err := strconv.ParseUint(addr[strings.LastIndexByte(addr, ':')+1:], 10, 16)
	if err != nil {
		t.Fatalf("dccache address %q: %v", addr, err)
	}
	return cmd, addr, uint16(p)
}
