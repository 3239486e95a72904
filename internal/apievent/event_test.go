package apievent

import (
	"errors"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/snoopd/snoopd/distcache"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
	"github.com/snoopd/snoopd/proxy"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestFillLeavesNothingOfThePreviousEvent fills one Builder with a
// transaction, then a connection's end, then a protocol error: each result
// carries its own kind's fields and none of the event before it.
func TestFillLeavesNothingOfThePreviousEvent(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 6000, time.UTC)
	tx := &proxy.Transaction{
		Transaction: distcache.Transaction{Op: distcache.OpGet, RequestUID: 7, SessionID: []byte("abc"), SessionIDLen: 3, Hit: true, DataLen: 10},
		Start:       at.Add(-time.Millisecond),
		Latency:     time.Millisecond,
	}
	var b Builder
	ev := b.Fill(&proxy.Event{Kind: proxy.KindTransaction, Time: at, Proxy: "p", ConnID: 3, Tx: tx}, false)
	if ev.GetKind() != snoopv1.EventKind_EVENT_KIND_TRANSACTION || ev.GetTransaction().GetOp() != snoopv1.Op_OP_GET ||
		string(ev.GetTransaction().GetSessionId()) != "abc" || ev.GetTransaction().GetResult() != "hit" ||
		ev.GetTransaction().GetLatency().AsDuration() != time.Millisecond || !ev.GetTime().AsTime().Equal(tx.Start) {
		t.Fatalf("transaction: %v", ev)
	}

	ev = b.Fill(&proxy.Event{Kind: proxy.KindConnClosed, Time: at, Proxy: "p", ConnID: 3,
		Closed: &proxy.ConnClosed{BytesUp: 5, BytesDown: 6, Transactions: 1, Reason: "client closed"}}, false)
	if ev.GetTransaction() != nil || ev.GetClosed().GetReason() != "client closed" || ev.GetClosed().GetBytesDown() != 6 ||
		!ev.GetTime().AsTime().Equal(at) {
		t.Fatalf("closed after a transaction: %v", ev)
	}

	ev = b.Fill(&proxy.Event{Kind: proxy.KindProtocolError, Time: at, Proxy: "p", ConnID: 4,
		Direction: distcache.ClientToServer, Policy: proxy.PassThrough, Err: errors.New("bad frame")}, false)
	if ev.GetClosed() != nil || ev.GetTransaction() != nil || ev.GetProtocolError().GetMessage() != "bad frame" ||
		ev.GetProtocolError().GetPolicy() != snoopv1.CorruptPolicy_CORRUPT_POLICY_PASSTHROUGH {
		t.Fatalf("protocol error after a close: %v", ev)
	}
}

// TestUnansweredHasNoLatency: a request never answered has no pair to
// time, so its event has no latency rather than a latency of 0.
func TestUnansweredHasNoLatency(t *testing.T) {
	tx := &proxy.Transaction{Transaction: distcache.Transaction{Op: distcache.OpAdd}, Unanswered: true}
	ev := New(&proxy.Event{Kind: proxy.KindTransaction, Time: time.Now(), Tx: tx}, false)
	if ev.GetTransaction().GetLatency() != nil || ev.GetTransaction().GetResult() != "unanswered" {
		t.Fatalf("unanswered: %v", ev.GetTransaction())
	}
}

// TestCaptureGapCarriesItsRange: a capture gap goes out with its
// direction, offsets and size, and nothing of a protocol error before it.
func TestCaptureGapCarriesItsRange(t *testing.T) {
	var b Builder
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	b.Fill(&proxy.Event{Kind: proxy.KindProtocolError, Time: at, Err: errors.New("bad frame")}, false)
	ev := b.Fill(&proxy.Event{Kind: proxy.KindCaptureGap, Time: at, Proxy: "cap.pcap", ConnID: 2,
		Gap: &proxy.CaptureGap{Direction: distcache.ServerToClient, First: 100, Last: 1547}}, false)
	g := ev.GetCaptureGap()
	if ev.GetKind() != snoopv1.EventKind_EVENT_KIND_CAPTURE_GAP || ev.GetProtocolError() != nil ||
		g.GetDirection() != "server->client" || g.GetFirstOffset() != 100 || g.GetLastOffset() != 1547 || g.GetBytesMissing() != 1448 {
		t.Fatalf("capture gap: %v", ev)
	}
	ev = b.Fill(&proxy.Event{Kind: proxy.KindConnOpened, Time: at}, false)
	if ev.GetCaptureGap() != nil {
		t.Fatalf("opened after a gap: %v", ev)
	}
}

// A capture's protocol errors say what it did: the direction resyncs,
// nothing is closed (the daemon once reported them as closes).
func TestPolicyOfEachCorruptPolicy(t *testing.T) {
	for p, want := range map[proxy.CorruptPolicy]snoopv1.CorruptPolicy{
		proxy.CloseOnCorrupt: snoopv1.CorruptPolicy_CORRUPT_POLICY_CLOSE,
		proxy.PassThrough:    snoopv1.CorruptPolicy_CORRUPT_POLICY_PASSTHROUGH,
		proxy.Resync:         snoopv1.CorruptPolicy_CORRUPT_POLICY_RESYNC,
	} {
		if got := Policy(p); got != want {
			t.Errorf("Policy(%v) = %v, want %v", p, got, want)
		}
	}
}
