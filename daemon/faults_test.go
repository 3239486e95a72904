package daemon

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/snoopd/snoopd/distcache"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
	"github.com/snoopd/snoopd/internal/skip"
	"github.com/snoopd/snoopd/proxy"
)

func TestFaultsNeedEpollEngine(t *testing.T) {
	eng, err := proxy.NewEngine(proxy.EngineGoroutines, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { eng.Close() }) // runs after the daemon's own cleanup
	a := startAPI(t, Config{Engine: eng}, ServerOptions{})
	s := spec("g", startCache(t).String())
	s.Faults = []*snoopv1.Fault{{Name: "m", Type: snoopv1.FaultType_FAULT_TYPE_MISS}}
	_, err = a.proxy.CreateProxy(context.Background(), &snoopv1.CreateProxyRequest{Spec: s})
	wantCode(t, err, codes.FailedPrecondition, "faults need the epoll engine")
}

// epollEngine is an event-loop engine of one loop for a test that needs
// faults (which the goroutine engine refuses). It is closed after the
// test's daemons, whose cleanups were registered later and run first.
func epollEngine(t *testing.T) proxy.Engine {
	t.Helper()
	eng, err := proxy.NewEngine(proxy.EngineEpoll, 1)
	if err != nil {
		skip.Missing(t, "the epoll engine, which faults need: %v", err)
	}
	t.Cleanup(func() { eng.Close() })
	return eng
}

func TestFaultsInSpec(t *testing.T) {
	eng := epollEngine(t)
	dir := t.TempDir()
	a := startAPI(t, Config{Engine: eng, StateDir: dir}, ServerOptions{})
	ctx := context.Background()
	s := spec("f", startCache(t).String())
	if _, err := a.proxy.CreateProxy(ctx, &snoopv1.CreateProxyRequest{Spec: s}); err != nil {
		t.Fatal(err)
	}
	update := func(faults ...*snoopv1.Fault) (*snoopv1.UpdateProxyResponse, error) {
		return a.proxy.UpdateProxy(ctx, &snoopv1.UpdateProxyRequest{Spec: &snoopv1.ProxySpec{Name: "f", Faults: faults},
			UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"faults"}}})
	}
	// Bad input names the field.
	_, err := update(&snoopv1.Fault{Name: "slow", Type: snoopv1.FaultType_FAULT_TYPE_LATENCY})
	wantCode(t, err, codes.InvalidArgument, "spec.faults[0].delay")
	_, err = update(&snoopv1.Fault{Name: "c", Type: snoopv1.FaultType_FAULT_TYPE_CORRUPT, Field: "op"})
	wantCode(t, err, codes.InvalidArgument, "acknowledge_corruption")

	declared := []*snoopv1.Fault{{Name: "m", Type: snoopv1.FaultType_FAULT_TYPE_MISS},
		{Name: "slow", Type: snoopv1.FaultType_FAULT_TYPE_LATENCY, Delay: durationpb.New(5e6)}}
	resp, err := update(declared...)
	if err != nil {
		t.Fatal(err)
	}
	// The spec reads back as declared; the effective spec has the
	// defaults explicit.
	want := []*snoopv1.Fault{
		{Name: "m", Type: snoopv1.FaultType_FAULT_TYPE_MISS, Ops: []snoopv1.Op{snoopv1.Op_OP_GET},
			Direction: snoopv1.FaultDirection_FAULT_DIRECTION_RESPONSE, Probability: proto.Float64(1)},
		{Name: "slow", Type: snoopv1.FaultType_FAULT_TYPE_LATENCY, Delay: durationpb.New(5e6),
			Direction: snoopv1.FaultDirection_FAULT_DIRECTION_RESPONSE, Probability: proto.Float64(1)},
	}
	got := resp.GetProxy().GetSpec().GetFaults()
	if len(got) != 2 || !proto.Equal(got[0], declared[0]) || !proto.Equal(got[1], declared[1]) {
		t.Fatalf("spec's faults %v, want them as declared: %v", got, declared)
	}
	got = resp.GetProxy().GetEffectiveSpec().GetFaults()
	if len(got) != 2 || !proto.Equal(got[0], want[0]) || !proto.Equal(got[1], want[1]) {
		t.Fatalf("effective faults %v, want %v", got, want)
	}
	if c := resp.GetProxy().GetCounters().GetFaults(); len(c) != 2 || c[0].GetName() != "m" {
		t.Fatalf("fault counters %v", c)
	}
	// Applying the spec as shown changes nothing.
	cur := resp.GetProxy().GetSpec()
	ar, err := a.proxy.ApplyProxies(ctx, &snoopv1.ApplyProxiesRequest{Proxies: []*snoopv1.ProxySpec{cur}})
	if err != nil || ar.GetResults()[0].GetAction() != snoopv1.ApplyAction_APPLY_ACTION_UNCHANGED {
		t.Fatalf("apply of the shown spec: %v %v", ar, err)
	}
	// A restart brings the faults back.
	a.d.Close(ctx)
	d2, err := New(Config{Engine: eng, StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer d2.Close(ctx)
	p, err := d2.GetProxy("f")
	if err != nil || len(p.GetSpec().GetFaults()) != 2 || !proto.Equal(p.GetSpec().GetFaults()[1], declared[1]) ||
		!proto.Equal(p.GetEffectiveSpec().GetFaults()[1], want[1]) {
		t.Fatalf("after restart: %v %v", p.GetSpec().GetFaults(), err)
	}
}

// getStatus sends one GET of a session the cache does not have through
// the proxy at listen and returns the status of the answer.
func getStatus(t *testing.T, listen string) distcache.Status {
	t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(listen, "IP:"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(distcache.AppendMessage(nil, false, 1, distcache.OpGet, []byte("absent"))); err != nil {
		t.Fatal(err)
	}
	m, err := distcache.NewReader(c, distcache.ServerToClient).ReadMessage()
	if err != nil || len(m.Payload) == 0 {
		t.Fatalf("GET through the proxy: %v", err)
	}
	return distcache.Status(m.Payload[0])
}

// A fault's end is fixed when it is declared: re-applying it unchanged,
// adding another beside it and restarting snoopd keep it; changing it
// starts it anew; a fault whose end passed while snoopd was down stays
// spent after the restart.
func TestFaultEndIsFixedWhenDeclared(t *testing.T) {
	eng := epollEngine(t)
	dir := t.TempDir()
	a := startAPI(t, Config{Engine: eng, StateDir: dir}, ServerOptions{})
	ctx := context.Background()
	if _, err := a.proxy.CreateProxy(ctx, &snoopv1.CreateProxyRequest{Spec: spec("f", startCache(t).String())}); err != nil {
		t.Fatal(err)
	}
	update := func(faults ...*snoopv1.Fault) *snoopv1.Proxy {
		t.Helper()
		resp, err := a.proxy.UpdateProxy(ctx, &snoopv1.UpdateProxyRequest{Spec: &snoopv1.ProxySpec{Name: "f", Faults: faults},
			UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"faults"}}})
		if err != nil {
			t.Fatal(err)
		}
		return resp.GetProxy()
	}
	ends := func(p *snoopv1.Proxy) map[string]time.Time {
		out := map[string]time.Time{}
		for _, f := range p.GetSpec().GetFaults() {
			if f.GetEndsAt() != nil {
				out[f.GetName()] = f.GetEndsAt().AsTime()
			}
		}
		return out
	}
	long := &snoopv1.Fault{Name: "long", Type: snoopv1.FaultType_FAULT_TYPE_LATENCY, Delay: durationpb.New(time.Millisecond),
		Ops: []snoopv1.Op{snoopv1.Op_OP_HAVE}, Duration: durationpb.New(time.Hour)}
	// Answers every GET "disconnected" for two seconds.
	short := &snoopv1.Fault{Name: "short", Type: snoopv1.FaultType_FAULT_TYPE_ERROR, Status: "disconnected",
		Ops: []snoopv1.Op{snoopv1.Op_OP_GET}, Duration: durationpb.New(2 * time.Second)}
	before := time.Now()
	p := update(long, short)
	first := ends(p)
	if e := first["long"]; e.Before(before.Add(time.Hour)) || e.After(time.Now().Add(time.Hour)) {
		t.Fatalf("end of a 1h fault declared at %v: %v", before, e)
	}
	if got := getStatus(t, p.GetListenAddress()); got != distcache.StatusDisconnected {
		t.Fatalf("GET under the short fault: status %v", got)
	}
	time.Sleep(10 * time.Millisecond)

	// The same spec again, as shown (with its ends) and as written (a
	// file without them): unchanged, ends kept.
	shown := p.GetSpec()
	written := proto.Clone(shown).(*snoopv1.ProxySpec)
	for _, f := range written.GetFaults() {
		f.EndsAt = nil
	}
	for _, s := range []*snoopv1.ProxySpec{shown, written} {
		ar, err := a.proxy.ApplyProxies(ctx, &snoopv1.ApplyProxiesRequest{Proxies: []*snoopv1.ProxySpec{s}})
		if err != nil || ar.GetResults()[0].GetAction() != snoopv1.ApplyAction_APPLY_ACTION_UNCHANGED {
			t.Fatalf("apply of the same faults: %v %v", ar, err)
		}
		if got := ends(ar.GetResults()[0].GetProxy()); !got["long"].Equal(first["long"]) || !got["short"].Equal(first["short"]) {
			t.Fatalf("apply of the same faults moved their ends: %v, were %v", got, first)
		}
	}
	// The same faults with their defaults written out (the effective
	// spec's): the same faults in other words, so their ends stay.
	if got := ends(update(p.GetEffectiveSpec().GetFaults()...)); !got["long"].Equal(first["long"]) || !got["short"].Equal(first["short"]) {
		t.Fatalf("faults declared with their defaults written out moved their ends: %v, were %v", got, first)
	}
	// Another fault beside them (snoopctl fault add sends the others
	// back as it got them): theirs stay.
	cur := p.GetSpec().GetFaults()
	added := &snoopv1.Fault{Name: "added", Type: snoopv1.FaultType_FAULT_TYPE_MISS, Duration: durationpb.New(time.Hour)}
	p = update(append(cur, added)...)
	if got := ends(p); !got["long"].Equal(first["long"]) || !got["added"].After(first["long"]) {
		t.Fatalf("after adding a fault: %v, were %v", got, first)
	}
	// A client's own end is not taken.
	forged := proto.Clone(added).(*snoopv1.Fault)
	forged.Name = "forged"
	forged.EndsAt = timestamppb.New(time.Now().Add(time.Minute))
	p = update(append(p.GetSpec().GetFaults(), forged)...)
	if got := ends(p); got["forged"].Before(time.Now().Add(59 * time.Minute)) {
		t.Fatalf("a fault declared with an end of its own ends at %v", got["forged"])
	}
	// A changed fault starts anew.
	changed := proto.Clone(long).(*snoopv1.Fault)
	changed.Delay = durationpb.New(2 * time.Millisecond)
	var faults []*snoopv1.Fault
	for _, f := range p.GetSpec().GetFaults() {
		if f.GetName() == "long" {
			f = changed
		}
		faults = append(faults, f)
	}
	p = update(faults...)
	renewed := ends(p)
	if !renewed["long"].After(first["long"]) || !renewed["short"].Equal(first["short"]) {
		t.Fatalf("after changing long: %v, were %v", renewed, first)
	}

	// Down until the short fault's end has passed, then up again.
	a.d.Close(ctx)
	time.Sleep(time.Until(first["short"]) + 50*time.Millisecond)
	d2, err := New(Config{Engine: eng, StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer d2.Close(ctx)
	p, err = d2.GetProxy("f")
	if err != nil {
		t.Fatal(err)
	}
	if got := ends(p); len(got) != len(renewed) || !got["long"].Equal(renewed["long"]) || !got["short"].Equal(renewed["short"]) {
		t.Fatalf("after a restart: %v, were %v", got, renewed)
	}
	if got := getStatus(t, p.GetListenAddress()); got != distcache.StatusNotOK {
		t.Fatalf("GET after a restart past the short fault's end: status %v, want the cache's miss", got)
	}
	for _, c := range p.GetCounters().GetFaults() {
		if c.GetName() == "short" && c.GetMatched() != 0 {
			t.Fatalf("the short fault matched %d messages after its end", c.GetMatched())
		}
	}

	// Started again with the same spec declared (snoopd --config, a file
	// without ends): the saved ends stand.
	declared := proto.Clone(p.GetSpec()).(*snoopv1.ProxySpec)
	for _, f := range declared.GetFaults() {
		f.EndsAt = nil
	}
	d2.Close(ctx)
	d3, err := New(Config{Engine: eng, StateDir: dir, Apply: []*snoopv1.ProxySpec{declared}})
	if err != nil {
		t.Fatal(err)
	}
	defer d3.Close(ctx)
	if p, err = d3.GetProxy("f"); err != nil {
		t.Fatal(err)
	}
	if got := ends(p); len(got) != len(renewed) || !got["long"].Equal(renewed["long"]) || !got["short"].Equal(renewed["short"]) {
		t.Fatalf("after a restart with the spec declared again: %v, were %v", got, renewed)
	}
}

// A state file whose faults have a duration and no end (written before
// snoopd kept ends) gets ends at the restart, saved at once, so that the
// restart after it, even after a SIGKILL, keeps them.
func TestRestoredFaultWithoutEndGetsOneSaved(t *testing.T) {
	eng := epollEngine(t)
	dir := t.TempDir()
	ctx := context.Background()
	d, err := New(Config{Engine: eng, StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	s := spec("f", startCache(t).String())
	s.Faults = []*snoopv1.Fault{{Name: "m", Type: snoopv1.FaultType_FAULT_TYPE_MISS, Duration: durationpb.New(time.Hour)}}
	if _, err := d.CreateProxy(ctx, s); err != nil {
		t.Fatal(err)
	}
	d.Close(ctx)
	path := filepath.Join(dir, stateFileName)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	old := regexp.MustCompile(`,\s*"ends_at":\s*"[^"]*"`).ReplaceAll(b, nil)
	if bytes.Equal(old, b) || bytes.Contains(old, []byte("ends_at")) {
		t.Fatalf("no end to take out of the state file:\n%s", b)
	}
	if err := os.WriteFile(path, old, 0o600); err != nil {
		t.Fatal(err)
	}
	endOf := func() time.Time {
		t.Helper()
		d, err := New(Config{Engine: eng, StateDir: dir})
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close(ctx)
		p, err := d.GetProxy("f")
		if err != nil || p.GetSpec().GetFaults()[0].GetEndsAt() == nil {
			t.Fatalf("restored fault without an end: %v %v", p.GetSpec().GetFaults(), err)
		}
		// Saved while running, not only at a clean shutdown (a SIGKILL
		// skips that).
		if b, err := os.ReadFile(path); err != nil || !bytes.Contains(b, []byte("ends_at")) {
			t.Fatalf("the end given at the restart is not saved: %v\n%s", err, b)
		}
		return p.GetSpec().GetFaults()[0].GetEndsAt().AsTime()
	}
	first := endOf()
	time.Sleep(10 * time.Millisecond)
	if again := endOf(); !again.Equal(first) {
		t.Fatalf("the end given at one restart moved at the next: %v, then %v", first, again)
	}
}
