package daemon

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/snoopd/snoopd/ctl/capture"
	"github.com/snoopd/snoopd/ctl/filter"
	"github.com/snoopd/snoopd/distcache"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
	"github.com/snoopd/snoopd/internal/apiconv"
	"github.com/snoopd/snoopd/match"
	"github.com/snoopd/snoopd/proxy"
	"github.com/snoopd/snoopd/vocab"
)

// anyEvent makes a proxy event of any kind, and for transactions any
// op, result, session id and latency.
func anyEvent(r *rand.Rand, i int) *proxy.Event {
	kinds := vocab.Kinds()
	e := &proxy.Event{Kind: kinds[r.IntN(len(kinds))], Time: time.Unix(1700000000, int64(i)*1000),
		Proxy: []string{"a", "b", "c"}[r.IntN(3)], ConnID: uint64(1 + r.IntN(4)), Client: "127.0.0.1:5"}
	switch e.Kind {
	case proxy.KindTransaction:
		t := &proxy.Transaction{}
		t.Op = distcache.Op(r.IntN(int(distcache.NumOps)))
		t.Status = []distcache.Status{distcache.StatusOK, distcache.StatusNotOK, distcache.StatusAddExists,
			distcache.StatusAddIDRange, distcache.StatusDisconnected, 77}[r.IntN(6)]
		t.Hit = t.Op == distcache.OpGet && r.IntN(2) == 0
		t.ResponseMalformed = r.IntN(20) == 0
		t.Unanswered = r.IntN(15) == 0
		t.Orphan = !t.Unanswered && r.IntN(15) == 0
		t.SessionID = []byte{byte(r.IntN(3)), byte(r.IntN(3)), 7}
		t.RequestSize, t.ResponseSize = r.IntN(2000), r.IntN(2000)
		if !t.Unanswered {
			t.Latency = time.Duration(r.IntN(5000)) * time.Microsecond
		}
		e.Tx = t
	case proxy.KindConnClosed:
		e.Closed = &proxy.ConnClosed{Reason: "client closed"}
	case proxy.KindConnectFailed, proxy.KindConnRefused:
		e.Err = fmt.Errorf("no")
	case proxy.KindProtocolError:
		e.Err = &distcache.ProtocolError{Rule: distcache.RuleShortFrame}
	}
	return e
}

var expressions = []string{
	"", `op == "get" && result == "miss"`, `latency > duration("2ms") || kind == "conn-closed"`,
	`error`, `req_bytes > resp_bytes && conn <= 2u`, `size(session_id) == 3 && session_id != b"\x01\x01\x07"`,
	`proxy in ["a", "c"] && result != "hit"`,
}

// randomRequest makes a watch request from any mix of the filter fields.
func randomRequest(r *rand.Rand) *snoopv1.WatchEventsRequest {
	req := &snoopv1.WatchEventsRequest{}
	if r.IntN(3) == 0 {
		req.Proxies = []string{[]string{"a", "b", "c"}[r.IntN(3)]}
	}
	if r.IntN(4) == 0 {
		req.Kinds = []snoopv1.EventKind{snoopv1.EventKind(1 + r.IntN(6))}
	}
	if r.IntN(3) == 0 {
		req.Ops = []snoopv1.Op{snoopv1.Op(1 + r.IntN(4))}
	}
	if r.IntN(3) == 0 {
		names := vocab.ResultNames()
		req.Results = []string{names[r.IntN(len(names))], names[r.IntN(len(names))]}
	}
	if r.IntN(4) == 0 {
		req.SessionIdPrefix = []byte{byte(r.IntN(3))}
	}
	if r.IntN(4) == 0 {
		req.MinLatency = durationpb.New(time.Duration(r.IntN(4000)) * time.Microsecond)
	}
	if r.IntN(5) == 0 {
		req.ConnectionId = uint64(1 + r.IntN(4))
	}
	req.ErrorsOnly = r.IntN(4) == 0
	req.Filter = expressions[r.IntN(len(expressions))]
	return req
}

// The one matcher keeps the same events whether it runs in the daemon,
// on the proxy's events, or in snoopctl read, on the lines a save wrote of
// the same stream: the property behind "a filter means the same thing
// live and on a file".
func TestFiltersLiveAndSavedAgree(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 13))
	const n = 400
	events := make([]*proxy.Event, n)
	path := filepath.Join(t.TempDir(), "cap.jsonl")
	w, err := capture.Create(path, capture.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range events {
		events[i] = anyEvent(r, i)
		if err := w.WriteEvent(&snoopv1.WatchEventsResponse{Event: toAPIEvent(events[i], false)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rd, err := capture.NewReader(path, f)
	if err != nil {
		t.Fatal(err)
	}
	saved := make([]*snoopv1.Event, 0, n)
	for {
		resp, err := rd.Next()
		if err != nil {
			break
		}
		saved = append(saved, resp.GetEvent())
	}
	if len(saved) != n {
		t.Fatalf("read back %d of %d events", len(saved), n)
	}
	keptTotal := 0
	for round := range 300 {
		req := randomRequest(r)
		live, err := compileFilter(req)
		if err != nil {
			t.Fatalf("round %d: %v: %v", round, req, err)
		}
		m, err := filter.Compile(req)
		if err != nil {
			t.Fatalf("round %d: snoopctl's compile: %v", round, err)
		}
		kept := 0
		for i, e := range events {
			var ev match.View
			e.MatchView(&ev)
			inDaemon := live.Full == nil || live.Full(&ev)
			// The quick filter counts lost events: it must keep at
			// least what the whole filter keeps.
			if inDaemon && live.Quick != nil && !live.Quick(&ev) {
				t.Fatalf("round %d: request %v: event %d kept by the filter but not by its quick part", round, req, i)
			}
			var v match.View
			apiconv.View(saved[i], "", &v)
			onFile := m.Match(&v)
			if inDaemon != onFile {
				t.Fatalf("round %d: request %v: event %d (%s %+v) kept live %v, on file %v", round, req, i, e.Kind, e.Tx, inDaemon, onFile)
			}
			if inDaemon {
				kept++
			}
		}
		keptTotal += kept
	}
	// The rounds must have kept some events and dropped others, or the
	// property says nothing.
	if keptTotal == 0 || keptTotal == 300*n {
		t.Fatalf("kept %d of %d: the random filters do not discriminate", keptTotal, 300*n)
	}
}
