package format

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
)

func TestSpecChanges(t *testing.T) {
	old := &snoopv1.ProxySpec{Name: "sess", Listen: "IP:127.0.0.1:9001", Server: "IP:127.0.0.1:9002", Enabled: proto.Bool(true),
		SocketMode: 0o660, IdleTimeout: durationpb.New(time.Minute),
		Faults: []*snoopv1.Fault{{Name: "drop", Type: snoopv1.FaultType_FAULT_TYPE_DROP}, {Name: "flaky", Type: snoopv1.FaultType_FAULT_TYPE_ERROR, Status: "notok"}}}
	now := proto.Clone(old).(*snoopv1.ProxySpec)
	if got := SpecChanges(old, now); len(got) != 0 {
		t.Fatalf("no change gave %v", got)
	}
	now.Server = "IP:127.0.0.1:9003"
	now.Enabled = proto.Bool(false)
	now.OnCorrupt = snoopv1.CorruptPolicy_CORRUPT_POLICY_PASSTHROUGH
	now.SocketMode = 0o600
	now.IdleTimeout = nil
	now.Faults = []*snoopv1.Fault{
		{Name: "flaky", Type: snoopv1.FaultType_FAULT_TYPE_ERROR, Status: "disconnected"},
		{Name: "slow", Type: snoopv1.FaultType_FAULT_TYPE_LATENCY, Delay: durationpb.New(time.Millisecond)},
	}
	want := "server IP:127.0.0.1:9002 → IP:127.0.0.1:9003, enabled true → false, on-corrupt unset → passthrough, " +
		"socket-mode 0660 → 0600, idle-timeout 60.0s → unset, faults ~flaky +slow -drop"
	if got := strings.Join(SpecChanges(old, now), ", "); got != want {
		t.Errorf("changes\n got %s\nwant %s", got, want)
	}
	// The end the daemon fixed for a fault is not a change of it.
	a := proto.Clone(old).(*snoopv1.ProxySpec)
	a.Faults[0].EndsAt = timestamppb.Now()
	if got := SpecChanges(old, a); len(got) != 0 {
		t.Errorf("an end fixed by the daemon reads as a change: %v", got)
	}
}

func TestSpecChangesNamesLabels(t *testing.T) {
	old := &snoopv1.ProxySpec{Name: "sess", Labels: map[string]string{"owner": "ci"}}
	now := &snoopv1.ProxySpec{Name: "sess", Labels: map[string]string{"tier": "web", "owner": "ci"}}
	if got := strings.Join(SpecChanges(old, now), ", "); got != "labels owner=ci → owner=ci,tier=web" {
		t.Errorf("changes: %s", got)
	}
	if got := strings.Join(SpecChanges(old, &snoopv1.ProxySpec{Name: "sess"}), ", "); got != "labels owner=ci → unset" {
		t.Errorf("labels removed: %s", got)
	}
}

func TestHistoryDoneLine(t *testing.T) {
	for _, c := range []struct {
		missing uint32
		beyond  uint64
		want    string
	}{
		{0, 0, HistoryDone},
		{0, 4000000000, HistoryDone}, // asking for more than happened is no loss
		{1, 0, "--- end of history: 1 event asked for was gone (snoopd keeps its most recent ones: --history); live events follow ---\n"},
		{150, 9, "--- end of history: 150 events asked for were gone (snoopd keeps its most recent ones: --history); live events follow ---\n"},
	} {
		if got := string(AppendHistoryDone(nil, c.missing, c.beyond)); got != c.want {
			t.Errorf("missing %d, beyond %d: %q, want %q", c.missing, c.beyond, got, c.want)
		}
	}
}
