package main

import (
	"bufio"
	"bytes"
	_ "embed"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/snoopd/snoopd/distcache"
)

// The cselect path measures a stand-in for distcache's C dc_snoop: a
// single-threaded select(2) proxy shaped like it (cselect/cselect.c says
// exactly what it is and is not), compiled with the machine's cc once per
// run. Its C source sits in a directory of its own with no Go files, so
// that no Go package holds a .c file and neither building nor vetting
// needs cgo; it is embedded here and written to the run's temp dir.

//go:embed cselect/cselect.c
var cselectSource []byte

// compileCSelect writes the C source into dir and compiles it there with
// cc, returning the binary's path. errNoCC when there is no cc on PATH.
func compileCSelect(dir string) (string, error) {
	if _, err := exec.LookPath("cc"); err != nil {
		return "", errNoCC
	}
	src := filepath.Join(dir, "cselect.c")
	if err := os.WriteFile(src, cselectSource, 0o644); err != nil {
		return "", fmt.Errorf("write cselect source: %w", err)
	}
	bin := filepath.Join(dir, "cselect")
	cmd := exec.Command("cc", "-O2", "-o", bin, src)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := runBounded(cmd, buildTimeout); err != nil {
		return "", fmt.Errorf("cc -O2 -o %s %s: %w: %s", bin, src, err, strings.TrimSpace(out.String()))
	}
	return bin, nil
}

var errNoCC = fmt.Errorf("no cc on PATH")

// cselectProc is a running cselect.
type cselectProc struct {
	cmd    *exec.Cmd
	addr   distcache.Addr
	exited chan struct{}
}

// startCSelect starts the compiled proxy in a process group of its own
// and waits for its "ready ADDR" line.
func startCSelect(bin, listen, server string) (*cselectProc, error) {
	cmd := exec.Command(bin, "-listen", listen, "-server", server)
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := startGroup(cmd); err != nil {
		return nil, fmt.Errorf("start cselect: %w", err)
	}
	p := &cselectProc{cmd: cmd, exited: make(chan struct{})}
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		if sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		// Nothing else is printed; reading to EOF lets Wait finish.
		for sc.Scan() {
		}
		cmd.Wait()
		close(p.exited)
	}()
	var line string
	select {
	case line = <-lines:
	case <-time.After(startTimeout):
	}
	a, err := distcache.ParseAddr(strings.TrimPrefix(line, "ready "))
	if err != nil || !strings.HasPrefix(line, "ready ") {
		p.stop()
		return nil, fmt.Errorf("cselect -listen %s -server %s said %q, not \"ready ADDR\" (within %v)", listen, server, line, startTimeout)
	}
	p.addr = a
	return p, nil
}

func (p *cselectProc) pid() int { return p.cmd.Process.Pid }

// stop ends the proxy with SIGTERM, which its default action obeys.
func (p *cselectProc) stop() {
	stopGroup(p.cmd, syscall.SIGTERM, 5*time.Second, func() error {
		<-p.exited
		return nil
	})
}
