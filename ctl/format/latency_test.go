package format

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
)

// A transaction a fault held shows what the client waited and, apart,
// what the server took; one nothing held shows its latency alone.
func TestTextShowsServerLatencyOfHeldTransactions(t *testing.T) {
	tx := func(lat, srv time.Duration) *snoopv1.Event {
		return &snoopv1.Event{Kind: snoopv1.EventKind_EVENT_KIND_TRANSACTION, Proxy: "p", Transaction: &snoopv1.Transaction{
			Op: snoopv1.Op_OP_GET, Result: "hit", Latency: durationpb.New(lat), ServerLatency: durationpb.New(srv), Fault: "slow"}}
	}
	held := string(Text{}.AppendEvent(nil, tx(50200*time.Microsecond, 200*time.Microsecond)))
	if !strings.Contains(held, "hit 50.2ms server=200µs fault=slow") {
		t.Errorf("held transaction: %q", held)
	}
	plain := string(Text{}.AppendEvent(nil, tx(200*time.Microsecond, 200*time.Microsecond)))
	if strings.Contains(plain, "server=") {
		t.Errorf("a transaction nothing held: %q", plain)
	}
}
