package proxy

import (
	"bytes"
	"slices"
	"testing"
	"time"

	"github.com/snoopd/snoopd/distcache"
	"github.com/snoopd/snoopd/match"
	"github.com/snoopd/snoopd/vocab"
)

func mustCompile(t *testing.T, specs ...FaultSpec) *faultSet {
	t.Helper()
	fs, err := compileFaults(specs, nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return fs
}

// Faults are tried in order on the messages of their direction and
// operations; the first that matches and wins its draw applies; a budget
// counts matches exactly and then the fault applies no more.
func TestDecideInOrderWithinDirectionOpsAndBudget(t *testing.T) {
	fs := mustCompile(t,
		FaultSpec{Name: "drop-have", Type: FaultDrop, Ops: []distcache.Op{distcache.OpHave}, Probability: 1},
		FaultSpec{Name: "miss", Type: FaultMiss, Probability: 1, Budget: 2},
		FaultSpec{Name: "slow", Type: FaultLatency, Delay: time.Millisecond, Probability: 1},
	)
	now := time.Now().UnixNano()
	get := &match.View{Op: distcache.OpGet}
	have := &match.View{Op: distcache.OpHave}
	if f := fs.decide(distcache.ClientToServer, have, now); f == nil || f.spec.Name != "drop-have" {
		t.Errorf("HAVE request: %v, want drop-have", f)
	}
	if f := fs.decide(distcache.ClientToServer, get, now); f != nil {
		t.Errorf("GET request: %s, want none (the others act on answers)", f.spec.Name)
	}
	var got []string
	for range 4 {
		got = append(got, fs.decide(distcache.ServerToClient, get, now).spec.Name)
	}
	if want := []string{"miss", "miss", "slow", "slow"}; !slices.Equal(got, want) {
		t.Errorf("GET answers: %v, want %v", got, want)
	}
	if m := fs.faults[1].matched.Load(); m != 2 {
		t.Errorf("miss matched %d, want its budget of 2", m)
	}
}

// A fault's filter sees the transaction so far; one that is spent
// applies to nothing; two sets with one seed draw the same choices.
func TestDecideFiltersSpentAndSeeded(t *testing.T) {
	fs := mustCompile(t,
		FaultSpec{Name: "only-x", Type: FaultMiss, Filter: `session_id == b"x"`, Probability: 1},
		FaultSpec{Name: "spent", Type: FaultMiss, Probability: 1, Ends: time.Unix(1, 0)},
	)
	now := time.Now().UnixNano()
	if f := fs.decide(distcache.ServerToClient, &match.View{Op: distcache.OpGet, SessionID: []byte("y"), Kind: KindTransaction, Result: vocab.ResultMiss}, now); f != nil {
		t.Errorf("session y: %s applied", f.spec.Name)
	}
	if f := fs.decide(distcache.ServerToClient, &match.View{Op: distcache.OpGet, SessionID: []byte("x"), Kind: KindTransaction, Result: vocab.ResultMiss}, now); f == nil || f.spec.Name != "only-x" {
		t.Errorf("session x: %v, want only-x", f)
	}
	draws := func() []bool {
		f := mustCompile(t, FaultSpec{Name: "p", Type: FaultMiss, Probability: 0.5, Seed: 42}).faults[0]
		out := make([]bool, 64)
		for i := range out {
			out[i] = f.draw()
		}
		return out
	}
	a, b := draws(), draws()
	applied := 0
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("draw %d differs between two faults of one seed", i)
		}
		if a[i] {
			applied++
		}
	}
	if applied == 0 || applied == len(a) {
		t.Errorf("%d of %d draws applied at probability 0.5", applied, len(a))
	}
}

// What a fault makes of a message: a replacing answer is one frame
// holding the status; a corrupt fault damages exactly its field; a
// latency's hold stays within Delay ± Jitter.
func TestFaultEffectsOnMessages(t *testing.T) {
	errFault := mustCompile(t, FaultSpec{Name: "e", Type: FaultError, Status: distcache.StatusDisconnected, Probability: 1}).faults[0]
	if got, want := errFault.answer(9, distcache.OpHave), distcache.AppendMessage(nil, true, 9, distcache.OpHave, []byte{byte(distcache.StatusDisconnected)}); !bytes.Equal(got, want) {
		t.Errorf("answer % x, want % x", got, want)
	}
	orig := distcache.AppendMessage(nil, true, 0x01020304, distcache.OpGet, []byte{1})
	for field, at := range map[HeaderField][]int{
		FieldVersion: {1}, FieldIsResponse: {4}, FieldRequestUID: {5, 6, 7, 8},
		FieldOp: {10}, FieldComplete: {11}, FieldDataLen: {12, 13},
	} {
		f := mustCompile(t, FaultSpec{Name: "c", Type: FaultCorrupt, Field: field, Acknowledged: true, Probability: 1}).faults[0]
		msg := bytes.Clone(orig)
		f.damage(msg)
		for i := range msg {
			changed := msg[i] != orig[i]
			want := false
			for _, j := range at {
				want = want || i == j
			}
			if changed != want {
				t.Errorf("%s: byte %d changed %v, want %v", field, i, changed, want)
			}
		}
		var d distcache.Decoder
		d.Reset(distcache.ServerToClient)
		if _, _, err := d.Next(msg); err == nil && field != FieldRequestUID && field != FieldOp {
			t.Errorf("%s: the damaged header decodes, though the protocol forbids it", field)
		}
	}
	lat := mustCompile(t, FaultSpec{Name: "l", Type: FaultLatency, Delay: 10 * time.Millisecond, Jitter: 5 * time.Millisecond, Probability: 1}).faults[0]
	for range 100 {
		if d := lat.delay(); d < 5*time.Millisecond || d > 15*time.Millisecond {
			t.Fatalf("hold %v outside 10ms ± 5ms", d)
		}
	}
}
