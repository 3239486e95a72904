package loadgen

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/snoopd/snoopd/distcache"
	"github.com/snoopd/snoopd/internal/skip"
)

// checkClean fails the test unless rep shows a clean run of ops answers.
func checkClean(t *testing.T, rep Report, ops int64) {
	t.Helper()
	if rep.Errors != 0 || rep.Unanswered != 0 || rep.Ops != ops {
		t.Fatalf("ops %d (want %d), unanswered %d, errors %d:\n%s", rep.Ops, ops, rep.Unanswered, rep.Errors, rep.String())
	}
	if rep.Latency.Count != rep.Ops {
		t.Errorf("latency count %d, ops %d", rep.Latency.Count, rep.Ops)
	}
	var byOp int64
	for _, o := range rep.ByOp {
		byOp += o.Count
	}
	if byOp != rep.Ops {
		t.Errorf("per-op counts add up to %d, ops %d", byOp, rep.Ops)
	}
}

func TestRunVerify(t *testing.T) {
	for _, nw := range networks {
		t.Run(nw.Name, func(t *testing.T) {
			srv := startCache(t, nw.Addr(t))
			cfg := Config{
				Addr: srv.Addr(), Conns: 16, Persistent: true, Pipeline: 4,
				Sessions: 500, MinData: 50, MaxData: 4096,
				Ops: 20000, Verify: true, Seed: 42,
			}
			var rep Report
			within(t, time.Minute, "Run", func() {
				var err error
				rep, err = Run(context.Background(), cfg)
				if err != nil {
					t.Error(err)
				}
			})
			checkClean(t, rep, 20000)
			if rep.Dials != 16 {
				t.Errorf("%d dials, want one per connection (16)", rep.Dials)
			}
			// The mix and the model must have produced every kind of answer,
			// or verification proved less than it seems.
			for _, k := range []string{"ok", "notok", "exists", "hit", "miss"} {
				if rep.Results[k] == 0 {
					t.Errorf("no %q answers: %v", k, rep.Results)
				}
			}
			for _, o := range rep.ByOp {
				if o.Count == 0 || o.Latency.P50 <= 0 || o.Latency.P50 > o.Latency.Max {
					t.Errorf("%s: count %d, latency %+v", o.Op, o.Count, o.Latency)
				}
			}
			t.Logf("\n%s", rep.String())
		})
	}
}

func TestRunVerifyPerOpConnections(t *testing.T) {
	srv := startCache(t, distcache.MustParseAddr("IP:127.0.0.1:0"))
	cfg := Config{Addr: srv.Addr(), Conns: 8, Sessions: 64, Ops: 2000, Verify: true, MinData: 2, MaxData: 3000}
	rep, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	checkClean(t, rep, 2000)
	if rep.Dials != 2000 {
		t.Errorf("%d dials for 2000 operations, want one each", rep.Dials)
	}
	if rep.Results["hit"] == 0 || rep.Results["exists"] == 0 {
		t.Errorf("results %v lack hits or exists", rep.Results)
	}
}

func TestRunOpLatency(t *testing.T) {
	srv := startCache(t, distcache.MustParseAddr("IP:127.0.0.1:0"))
	// Per-operation connections: the wait includes the connect, so it is
	// at least the request's latency, one sample per answer.
	rep, err := Run(context.Background(), Config{Addr: srv.Addr(), Conns: 4, Sessions: 40, Ops: 1000})
	if err != nil {
		t.Fatal(err)
	}
	checkClean(t, rep, 1000)
	if rep.OpLatency.Count != rep.Ops {
		t.Errorf("op latency count %d, ops %d", rep.OpLatency.Count, rep.Ops)
	}
	if rep.OpLatency.P50 < rep.Latency.P50 || rep.OpLatency.Min < rep.Latency.Min {
		t.Errorf("op latency %+v below request latency %+v", rep.OpLatency, rep.Latency)
	}
	if s := rep.String(); !strings.Contains(s, "op wait:") {
		t.Errorf("per-operation report lacks the op wait line:\n%s", s)
	}

	// Persistent connections: nothing precedes a request.
	rep, err = Run(context.Background(), Config{Addr: srv.Addr(), Conns: 2, Persistent: true, Pipeline: 2, Sessions: 40, Ops: 500})
	if err != nil {
		t.Fatal(err)
	}
	checkClean(t, rep, 500)
	if rep.OpLatency != rep.Latency {
		t.Errorf("persistent: op latency %+v, want latency %+v", rep.OpLatency, rep.Latency)
	}
	if s := rep.String(); strings.Contains(s, "op wait:") {
		t.Errorf("persistent report shows an op wait line:\n%s", s)
	}
}

// TestRunVerifyCatchesWrongServer proves verification can fail: servers
// that answer wrongly in one way each must be caught with that cause, and
// the same servers pass when Verify is off.
func TestRunVerifyCatchesWrongServer(t *testing.T) {
	type hookFunc = func(req distcache.Message, n int, uid uint32, resp []byte) (uint32, []byte)
	tests := []struct {
		name  string
		hook  hookFunc
		cause string
	}{
		{"GET data corrupted", func(req distcache.Message, n int, uid uint32, resp []byte) (uint32, []byte) {
			if req.Op == distcache.OpGet && len(resp) > 1 && n%7 == 0 {
				resp[len(resp)/2] ^= 1
			}
			return uid, resp
		}, "GET wrong-data"},
		{"GET data truncated", func(req distcache.Message, n int, uid uint32, resp []byte) (uint32, []byte) {
			if req.Op == distcache.OpGet && len(resp) > 2 && n%7 == 0 {
				resp = resp[:len(resp)-1]
			}
			return uid, resp
		}, "GET wrong-data"},
		{"GET misses", func(req distcache.Message, n int, uid uint32, resp []byte) (uint32, []byte) {
			if req.Op == distcache.OpGet && n%5 == 0 {
				resp = []byte{byte(distcache.StatusNotOK)}
			}
			return uid, resp
		}, "GET unexpected-miss"},
		{"ADD says ok when it exists", func(req distcache.Message, n int, uid uint32, resp []byte) (uint32, []byte) {
			if req.Op == distcache.OpAdd {
				resp = []byte{byte(distcache.StatusOK)}
			}
			return uid, resp
		}, "ADD wrong-status"},
		{"HAVE inverted", func(req distcache.Message, n int, uid uint32, resp []byte) (uint32, []byte) {
			if req.Op == distcache.OpHave && n%3 == 0 {
				resp = []byte{resp[0] ^ 1}
			}
			return uid, resp
		}, "HAVE wrong-status"},
		{"REMOVE says not found", func(req distcache.Message, n int, uid uint32, resp []byte) (uint32, []byte) {
			if req.Op == distcache.OpRemove {
				resp = []byte{byte(distcache.StatusNotOK)}
			}
			return uid, resp
		}, "REMOVE wrong-status"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, verify := range []bool{true, false} {
				srv := startFake(t, distcache.MustParseAddr("IP:127.0.0.1:0"), &fakeServer{hook: tt.hook})
				cfg := Config{Addr: srv.addr, Conns: 4, Persistent: true, Pipeline: 3, Sessions: 40, Ops: 3000, Verify: verify}
				rep, err := Run(context.Background(), cfg)
				if err != nil {
					t.Fatal(err)
				}
				if !verify {
					checkClean(t, rep, 3000)
					continue
				}
				if rep.Errors == 0 {
					t.Fatalf("no errors from a wrong server:\n%s", rep.String())
				}
				if rep.ErrorCauses[0].Cause != tt.cause {
					t.Errorf("main cause %q, want %q:\n%s", rep.ErrorCauses[0].Cause, tt.cause, rep.String())
				}
				ex := rep.ErrorCauses[0].Example
				if !strings.Contains(ex, "want") || !strings.Contains(ex, "got") || !strings.Contains(ex, rep.IDPrefix) {
					t.Errorf("example %q does not say which id, what was expected and what came", ex)
				}
				if len(rep.ErrorSamples) == 0 || len(rep.ErrorSamples) > MaxErrorSamples {
					t.Errorf("%d error samples", len(rep.ErrorSamples))
				}
				// Wrong answers leave the connections usable: every request
				// is still answered.
				if rep.Ops != 3000 || rep.Unanswered != 0 {
					t.Errorf("ops %d, unanswered %d; want 3000, 0", rep.Ops, rep.Unanswered)
				}
			}
		})
	}
}

func TestRunReconnectsAfterDrops(t *testing.T) {
	// A server that hangs up every 25 requests: each drop is one error,
	// the worker reconnects, and the sessions whose requests were lost
	// are not checked until known again, so no wrong-answer errors follow.
	for _, persistent := range []bool{true, false} {
		srv := startFake(t, distcache.MustParseAddr("IP:127.0.0.1:0"), &fakeServer{closeAfter: 25})
		pipeline := 1
		if persistent {
			pipeline = 4
		}
		cfg := Config{Addr: srv.addr, Conns: 4, Persistent: persistent, Pipeline: pipeline, Sessions: 40, Ops: 2000, Verify: true}
		rep, err := Run(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		if !persistent {
			checkClean(t, rep, 2000) // one request per connection never meets the limit
			continue
		}
		if rep.Errors == 0 || rep.Dials < rep.Ops/25 {
			t.Fatalf("errors %d, dials %d; want drops and reconnects:\n%s", rep.Errors, rep.Dials, rep.String())
		}
		for _, c := range rep.ErrorCauses {
			if !strings.HasSuffix(c.Cause, " closed") && !strings.HasSuffix(c.Cause, " reset") {
				t.Errorf("cause %q (%d): want only dropped connections:\n%s", c.Cause, c.Count, rep.String())
			}
		}
		if rep.Ops+rep.Unanswered != 2000 {
			t.Errorf("answered %d + unanswered %d != 2000", rep.Ops, rep.Unanswered)
		}
	}
}

func TestRunDurationOnly(t *testing.T) {
	srv := startCache(t, distcache.MustParseAddr("IP:127.0.0.1:0"))
	for _, persistent := range []bool{true, false} {
		cfg := Config{Addr: srv.Addr(), Conns: 4, Persistent: persistent, Duration: 300 * time.Millisecond, Verify: true}
		var rep Report
		el := within(t, 10*time.Second, "duration-bound Run", func() {
			var err error
			rep, err = Run(context.Background(), cfg)
			if err != nil {
				t.Error(err)
			}
		})
		if el < 300*time.Millisecond || rep.Ops == 0 || rep.Errors != 0 {
			t.Errorf("persistent %v: ran %v, %d ops, %d errors", persistent, el, rep.Ops, rep.Errors)
		}
	}
}

func TestRunRate(t *testing.T) {
	srv := startCache(t, distcache.MustParseAddr("IP:127.0.0.1:0"))
	// 200 ops/s for 500ms over 4 pipelining workers: about 100 operations.
	cfg := Config{Addr: srv.Addr(), Conns: 4, Persistent: true, Pipeline: 2, Duration: 500 * time.Millisecond, Rate: 200, Verify: true}
	rep, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Ops < 60 || rep.Ops > 130 || rep.Errors != 0 {
		t.Errorf("%d ops, %d errors at 200/s for 500ms; want about 100 ops", rep.Ops, rep.Errors)
	}
	// With an operation bound the rate sets the duration: 50 ops at
	// 500/s take about 100ms.
	cfg = Config{Addr: srv.Addr(), Conns: 2, Ops: 50, Rate: 500}
	rep, err = Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Ops != 50 || rep.Elapsed < 80*time.Millisecond || rep.Elapsed > 2*time.Second {
		t.Errorf("%d ops in %v at 500/s; want 50 in about 100ms", rep.Ops, rep.Elapsed)
	}
	// A paced pipelining worker still takes answers in as they come, so
	// latency is not stretched to the send interval (20ms per worker).
	cfg = Config{Addr: srv.Addr(), Conns: 1, Persistent: true, Pipeline: 4, Ops: 20, Rate: 50}
	if rep, err = Run(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	if rep.Latency.P50 > 10*time.Millisecond {
		t.Errorf("median latency %v under a 50/s pace; answers wait for the next send slot", rep.Latency.P50)
	}
}

func TestRunCancel(t *testing.T) {
	t.Run("busy server", func(t *testing.T) {
		// Cancelled once the server has answered 200 requests: with at
		// most 4 unanswered per connection, the client has had answers
		// to at least 200-8*4 of them by then, however slow the machine.
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		var answered atomic.Int64
		srv := startFake(t, distcache.MustParseAddr("IP:127.0.0.1:0"), &fakeServer{
			hook: func(_ distcache.Message, _ int, uid uint32, resp []byte) (uint32, []byte) {
				if answered.Add(1) == 200 {
					cancel()
				}
				return uid, resp
			},
		})
		var rep Report
		var err error
		el := within(t, 30*time.Second, "cancelled Run", func() {
			rep, err = Run(ctx, Config{Addr: srv.addr, Conns: 8, Persistent: true, Pipeline: 4, Duration: time.Hour, Verify: true})
		})
		if !errors.Is(err, context.Canceled) || !rep.Interrupted || rep.Ops == 0 || rep.Errors != 0 {
			t.Errorf("after %v: err %v, interrupted %v, %d ops, %d errors", el, err, rep.Interrupted, rep.Ops, rep.Errors)
		}
	})
	t.Run("silent server", func(t *testing.T) {
		// Workers blocked reading answers that never come must stop at
		// once, not after the hour-long timeout.
		for _, persistent := range []bool{true, false} {
			srv := startFake(t, distcache.MustParseAddr("IP:127.0.0.1:0"), &fakeServer{silent: true})
			ctx, cancel := context.WithCancel(context.Background())
			// Cancel once every worker waits for an answer.
			go func() {
				for srv.received.Load() < 4 && ctx.Err() == nil {
					time.Sleep(time.Millisecond)
				}
				cancel()
			}()
			var rep Report
			var err error
			// Far less than the hour the workers would wait for their
			// answers, however loaded the machine.
			el := within(t, 30*time.Second, "cancelled Run", func() {
				rep, err = Run(ctx, Config{Addr: srv.addr, Conns: 4, Persistent: persistent, Ops: 1000, Timeout: time.Hour})
			})
			cancel()
			if !errors.Is(err, context.Canceled) || rep.Errors != 0 || rep.Unanswered != 4 {
				t.Errorf("persistent %v: after %v: err %v, %d errors, %d unanswered (want 4)",
					persistent, el, err, rep.Errors, rep.Unanswered)
			}
		}
	})
}

func TestRunUnreachable(t *testing.T) {
	tests := []struct {
		name  string
		addr  distcache.Addr
		cause string
	}{
		{"tcp refused", deadAddr(t), "dial refused"},
		{"unix no socket", unixAddr(t), "dial no-socket"},
	}
	for _, tt := range tests {
		for _, persistent := range []bool{true, false} {
			var rep Report
			within(t, 10*time.Second, "Run against a dead address", func() {
				var err error
				rep, err = Run(context.Background(), Config{Addr: tt.addr, Conns: 2, Persistent: persistent, Ops: 10})
				if err != nil {
					t.Error(err)
				}
			})
			if rep.Ops != 0 || rep.Errors != 10 || len(rep.ErrorCauses) != 1 || rep.ErrorCauses[0].Cause != tt.cause {
				t.Errorf("%s, persistent %v: %d ops, %d errors, causes %+v; want 10 %q errors",
					tt.name, persistent, rep.Ops, rep.Errors, rep.ErrorCauses, tt.cause)
				continue
			}
			if ex := rep.ErrorCauses[0].Example; !strings.Contains(ex, tt.addr.String()) {
				t.Errorf("example %q does not name the address %s", ex, tt.addr)
			}
		}
	}
	// MaxErrors ends a hopeless run early.
	rep, err := Run(context.Background(), Config{Addr: deadAddr(t), Conns: 1, Duration: time.Hour, MaxErrors: 3})
	if err != nil || rep.Errors != 3 {
		t.Errorf("MaxErrors 3: %d errors, %v", rep.Errors, err)
	}
}

func TestRunTimeout(t *testing.T) {
	srv := startFake(t, distcache.MustParseAddr("IP:127.0.0.1:0"), &fakeServer{silent: true})
	rep, err := Run(context.Background(), Config{Addr: srv.addr, Conns: 2, Persistent: true, Pipeline: 2, Ops: 4, Timeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Errors != 2 || rep.Unanswered != 4 || !strings.HasSuffix(rep.ErrorCauses[0].Cause, " timeout") {
		t.Errorf("%d errors, %d unanswered, causes %+v; want one timeout per connection", rep.Errors, rep.Unanswered, rep.ErrorCauses)
	}
}

func TestReportOutput(t *testing.T) {
	srv := startCache(t, distcache.MustParseAddr("IP:127.0.0.1:0"))
	rep, err := Run(context.Background(), Config{Addr: srv.Addr(), Conns: 2, Persistent: true, Sessions: 20, Ops: 200, Verify: true, IDPrefix: "rep-"})
	if err != nil {
		t.Fatal(err)
	}
	s := rep.String()
	for _, want := range []string{srv.Addr().String(), "200 answered", "errors:   0", "latency:", "p99", "GET", "hit", "verify on"} {
		if !strings.Contains(s, want) {
			t.Errorf("report lacks %q:\n%s", want, s)
		}
	}
	b, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if back.Ops != 200 || back.IDPrefix != "rep-" || back.Latency != rep.Latency || back.OpLatency != rep.OpLatency ||
		!bytes.Contains(b, []byte(`"p99_ns"`)) || !bytes.Contains(b, []byte(`"op_latency"`)) {
		t.Errorf("JSON round trip lost data: %s", b)
	}
}

// TestRunHotLoopAllocations checks the worker loop does not allocate per
// operation: two runs differing only in length must allocate about the
// same. ADD is left out because the server allocates to store sessions.
func TestRunHotLoopAllocations(t *testing.T) {
	if testing.Short() {
		skip.ByDesign(t, "-short: measures a few thousand operations")
	}
	srv := startCache(t, distcache.MustParseAddr("IP:127.0.0.1:0"))
	mallocs := func(ops int64) uint64 {
		var a, b runtime.MemStats
		runtime.ReadMemStats(&a)
		_, err := Run(context.Background(), Config{Addr: srv.Addr(), Conns: 2, Persistent: true, Pipeline: 4,
			Sessions: 100, Ops: ops, Verify: true, Mix: Mix{0, 1, 1, 1}, IDPrefix: "alloc-"})
		runtime.ReadMemStats(&b)
		if err != nil {
			t.Fatal(err)
		}
		return b.Mallocs - a.Mallocs
	}
	mallocs(100)
	short, long := mallocs(1000), mallocs(11000)
	if per := float64(long-min(short, long)) / 10000; per > 0.1 {
		t.Errorf("%.3f allocations per operation (runs: %d, %d)", per, short, long)
	}
}

func TestRunVerifyToleratesExpiry(t *testing.T) {
	// Sessions that live 30ms expire all through a 400ms run, paced so
	// that a session is touched about every 40ms. The model stops checking
	// a session before it may expire, so expiry is never mistaken for a
	// wrong answer, while absent sessions are still checked.
	srv := startCache(t, distcache.MustParseAddr("IP:127.0.0.1:0"))
	rep, err := Run(context.Background(), Config{Addr: srv.Addr(), Conns: 4, Persistent: true, Pipeline: 2,
		Sessions: 20, Duration: 400 * time.Millisecond, Rate: 500, Verify: true,
		SessionTimeout: 30 * time.Millisecond, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Errors != 0 || rep.Ops == 0 {
		t.Fatalf("%d errors in %d ops:\n%s", rep.Errors, rep.Ops, rep.String())
	}
}
