package faultsuite

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/snoopd/snoopd/distcache"
	"github.com/snoopd/snoopd/internal/testutil"
)

// TestLoopAcrossTwoDaemons makes two snoopd whose proxies lead to each
// other (xa on X listens on A with server B, ya on Y listens on B with
// server A, default spares), which neither can see from the inside: with
// no client at all, both hold few descriptors five seconds after the pair
// is made; a GET through it ends with an error well before its response
// timeout, and the daemon that closed it names the forwarding-loop
// condition in snoopctl show and /metrics and logs it; the control API
// answers, and another proxy of X carries a load beside the loop.
func TestLoopAcrossTwoDaemons(t *testing.T) {
	const fdBound = 300
	cache := startCache(t, "IP:127.0.0.1:0")
	x := startSnoopd(t, daemonOpts{})
	y := startSnoopd(t, daemonOpts{})
	sx := startSampler(t, x, pick(250*time.Millisecond, 500*time.Millisecond))
	a, b := testutil.FreeAddr(t), testutil.FreeAddr(t)
	x.mustCtl(t, "add", "xa", "--listen", "IP:"+a, "--server", "IP:"+b)
	y.mustCtl(t, "add", "ya", "--listen", "IP:"+b, "--server", "IP:"+a)
	made := time.Now()
	sx.mark("the pair made")

	time.Sleep(time.Until(made.Add(5 * time.Second)))
	fdsX, fdsY := x.fds(t), y.fds(t)
	sx.mark("5 s later")
	if fdsX >= fdBound || fdsY >= fdBound {
		t.Errorf("five seconds after the pair was made, with no client: X holds %d descriptors, Y %d; want both under %d", fdsX, fdsY, fdBound)
	}

	// One GET through the pair: it must end, with an error, long before
	// the 30 s response timeout; and so must the ones after it.
	var tooks []string
	var first error
	for i := range 4 {
		took, err := getThrough(t, a)
		if i == 0 {
			first = err
			sx.mark("the first GET ended")
		}
		tooks = append(tooks, took.Round(100*time.Microsecond).String())
		var ne net.Error
		switch {
		case err == nil:
			t.Errorf("GET %d around the loop got an answer", i+1)
		case errors.As(err, &ne) && ne.Timeout():
			t.Errorf("GET %d around the loop was still waiting after %v", i+1, took.Round(time.Millisecond))
		}
	}
	fdsGetX, fdsGetY := x.fds(t), y.fds(t)

	// The control API answers, and whichever daemon closed the loop
	// names it (the other may never see a request come back that deep).
	var named []string
	for _, d := range []struct {
		d     *snoopd
		proxy string
	}{{x, "xa"}, {y, "ya"}} {
		p := d.d.proxy(t, d.proxy)
		if len(p.GetConditions()) == 0 {
			continue
		}
		named = append(named, fmt.Sprintf("%s: %v, %d loop echoes closed", d.proxy, p.GetConditions(), p.GetCounters().GetLoopEchoes()))
		show := d.d.mustCtl(t, "show", d.proxy)
		if !strings.Contains(show, "condition:") || !strings.Contains(show, "forwarding-loop") {
			t.Errorf("snoopctl show %s does not name the loop:\n%s", d.proxy, show)
		}
		if m := d.d.scrape(t); !strings.Contains(m, fmt.Sprintf(`snoopd_proxy_condition{condition="forwarding-loop",proxy=%q} 1`, d.proxy)) {
			t.Errorf("/metrics of %s's daemon does not name the loop", d.proxy)
		}
		if !strings.Contains(d.d.out.String(), "forwarding loop") {
			t.Errorf("%s's daemon did not log the loop:\n%s", d.proxy, tail(d.d.out.String()))
		}
	}
	if len(named) == 0 {
		t.Errorf("neither daemon names the forwarding loop")
	}

	// Another proxy of X goes on.
	good := x.addProxy(t, "good", cache.addr)
	rep := dcload(t, "-addr", good, "-ops", fmt.Sprint(pick(300, 5000)), "-verify", "-persistent=false")
	if rep.Errors != 0 {
		t.Errorf("load through X's other proxy: %d errors (%s)", rep.Errors, causes(rep))
	}
	fdsEndX, fdsEndY := x.fds(t), y.fds(t)
	if fdsEndX >= fdBound || fdsEndY >= fdBound {
		t.Errorf("at the end: X holds %d descriptors, Y %d; want both under %d", fdsEndX, fdsEndY, fdBound)
	}
	sx.end()
	record(t, "Two daemons whose proxies lead to each other", []string{
		fmt.Sprintf("xa on X listens on %s with server %s, ya on Y the reverse, default spares; no client: 5 s after the pair was made X holds %d descriptors, Y %d (bound %d)", a, b, fdsX, fdsY, fdBound),
		fmt.Sprintf("four GETs through xa one after the other: the first ended with %v; they took %s (response timeout 30 s); then X held %d descriptors, Y %d", plainReadErr(first), strings.Join(tooks, ", "), fdsGetX, fdsGetY),
		fmt.Sprintf("named: %s", strings.Join(named, "; ")),
		fmt.Sprintf("X's other proxy beside the loop: dcload -verify, a connection per operation, %d ops, %d errors; at the end X holds %d descriptors, Y %d", rep.Ops, rep.Errors, fdsEndX, fdsEndY),
	}, sx.samples())
}

// getThrough sends one GET to addr and reads until the first byte of an
// answer, an end or an error, for at most 10 s; it returns how long that
// took and the read's error.
func getThrough(t *testing.T, addr string) (time.Duration, error) {
	t.Helper()
	start := time.Now()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(distcache.AppendMessage(nil, false, 1, distcache.OpGet, []byte("a session id"))); err != nil {
		return time.Since(start), err
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err = c.Read(make([]byte, 64))
	return time.Since(start), err
}

// scrape returns snoopd's /metrics.
func (d *snoopd) scrape(t *testing.T) string {
	t.Helper()
	resp, err := d.httpc.Get("http://snoopd/metrics")
	if err != nil {
		t.Fatalf("/metrics: %v", err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	if _, err := io.Copy(&b, resp.Body); err != nil {
		t.Fatalf("/metrics: %v", err)
	}
	return b.String()
}

// plainReadErr names a read's end the way a client sees it.
func plainReadErr(err error) string {
	switch {
	case err == io.EOF:
		return "an end of stream"
	case err != nil && strings.Contains(err.Error(), "reset"):
		return "a reset"
	}
	return fmt.Sprint(err)
}
