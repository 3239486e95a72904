package faultsuite

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
)

// metric reads one unlabelled sample from snoopd's /metrics.
func (d *snoopd) metric(t *testing.T, name string) float64 {
	t.Helper()
	resp, err := d.httpc.Get("http://snoopd/metrics")
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("metrics: %s: %v", name, err)
			}
			io.Copy(io.Discard, resp.Body)
			return f
		}
	}
	t.Fatalf("metrics: no %s", name)
	return 0
}

// TestHugeHistoryReadsHoldOneBatchAtATime fills a large history with
// ADDs carrying 4 KiB of captured data, then has several clients
// ask for 4294967295 events of history with the data at once, through
// the API, and read it all. What snoopd allocates meanwhile must stay
// well under the data it sends: a read encodes each batch into the
// buffers of the batch before, so its allocations do not grow with the
// events it sends (before, each event was encoded into new memory, more
// than the data itself, which the collector then had to catch up with).
func TestHugeHistoryReadsHoldOneBatchAtATime(t *testing.T) {
	history, clients := pick(10000, 30000), pick(4, 8)
	const size = 4096
	cache := startCache(t, "IP:127.0.0.1:0")
	d := startSnoopd(t, daemonOpts{args: []string{"--history", strconv.Itoa(history)}})
	p := d.addProxy(t, "p", cache.addr, "--capture-data")
	fill := dcload(t, "-addr", p, "-ops", strconv.Itoa(history), "-conns", "4", "-data", strconv.Itoa(size), "-mix", "add=1")
	if fill.Errors != 0 {
		t.Fatalf("filling the history: %d errors (%s)", fill.Errors, causes(fill))
	}
	s := startSampler(t, d, pick(100*time.Millisecond, 250*time.Millisecond))
	s.mark("history full")
	allocBefore := d.metric(t, "go_memstats_alloc_bytes_total")

	type got struct {
		events    int
		dataBytes int64
		err       error
	}
	results := make([]got, clients)
	c, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	var wg sync.WaitGroup
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := &results[i]
			st, err := d.events.WatchEvents(c, &snoopv1.WatchEventsRequest{History: math.MaxUint32, IncludeData: true, MaxBatch: 256})
			if err != nil {
				r.err = err
				return
			}
			for {
				resp, err := st.Recv()
				if err != nil {
					r.err = err
					return
				}
				evs := resp.GetEvents()
				if ev := resp.GetEvent(); ev != nil {
					evs = append(evs, ev)
				}
				for _, ev := range evs {
					r.events++
					r.dataBytes += int64(len(ev.GetTransaction().GetData()))
				}
				if resp.GetHistoryDone() {
					return
				}
			}
		}()
	}
	wg.Wait()
	cancel()
	s.mark("reads done")
	allocated := d.metric(t, "go_memstats_alloc_bytes_total") - allocBefore
	s.end()

	var events int
	var data int64
	for i, r := range results {
		if r.err != nil && !errors.Is(r.err, context.Canceled) {
			t.Fatalf("client %d: %v after %d events", i, r.err, r.events)
		}
		if r.events != results[0].events || r.dataBytes != results[0].dataBytes {
			t.Fatalf("client %d got %d events (%d bytes of data), client 0 %d (%d)", i, r.events, r.dataBytes, results[0].events, results[0].dataBytes)
		}
		events += r.events
		data += r.dataBytes
	}
	if results[0].events < history*9/10 || data == 0 {
		t.Fatalf("each client got %d history events with %d bytes of data; the history holds %d", results[0].events, results[0].dataBytes, history)
	}
	figures := []string{
		fmt.Sprintf("%d transactions of %d bytes of data through a proxy with --capture-data, snoopd --history %d", fill.Ops, size, history),
		fmt.Sprintf("%d clients at once asked for history 4294967295 with include_data; each got %d events, %.1f MB of data", clients, results[0].events, float64(results[0].dataBytes)/(1<<20)),
		fmt.Sprintf("snoopd allocated %.1f MB meanwhile, %.0f bytes an event sent, for %.1f MB of data sent", allocated/(1<<20), allocated/float64(events), float64(data)/(1<<20)),
	}
	record(t, "Huge history reads with captured data", figures, s.samples())
	// Half the data sent: reads that encoded every event into new memory
	// allocated more than all of it (192 MB for 156 MB in the short
	// mode); reads that reuse their batch's buffers allocate some 700
	// bytes an event (27 MB), whatever the data.
	if allocated > float64(data)/2 {
		t.Errorf("snoopd allocated %.1f MB while it sent %.1f MB of captured data in %d events: want under half of it",
			allocated/(1<<20), float64(data)/(1<<20), events)
	}
}
