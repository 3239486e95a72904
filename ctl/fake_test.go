package ctl

import (
	"bytes"
	"context"
	"errors"
	"net"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/snoopd/snoopd/ctl/filter"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
	"github.com/snoopd/snoopd/internal/apiconv"
	"github.com/snoopd/snoopd/internal/testutil"
	"github.com/snoopd/snoopd/match"
)

// fakeDaemon implements the control API in memory, enough to drive every
// snoopctl command: proxies, connections, and an event stream that
// filters like the daemon (with filter.Compile, the daemon's matcher).
type fakeDaemon struct {
	snoopv1.UnimplementedProxyServiceServer
	snoopv1.UnimplementedEventServiceServer
	snoopv1.UnimplementedDaemonServiceServer

	mu      sync.Mutex
	proxies map[string]*snoopv1.Proxy
	conns   map[string][]*snoopv1.Connection
	// events are sent to every watcher, filtered; drop notices always.
	events []*snoopv1.WatchEventsResponse
	// streamEnd is how a stream ends after the events: nil keeps it open
	// until the client goes; errEOF ends it; anything else is returned.
	streamEnd error
	// batch makes WatchEvents honour max_batch as snoopd does, with
	// batches of at most 3 events; without it the fake is a daemon that
	// predates batching and sends one event per response.
	batch bool
	// watches records the requests of WatchEvents.
	watches []*snoopv1.WatchEventsRequest
	// updates, deletes and applies record the other calls.
	updates []*snoopv1.UpdateProxyRequest
	deletes []*snoopv1.DeleteProxyRequest
	token   string   // when set, every call must carry it
	auth    []string // authorization headers seen
	// watching is closed when the first watcher has been sent its events.
	watching chan struct{}
	once     sync.Once
}

// errEOF ends a fake stream normally (the client sees io.EOF).
var errEOF = errors.New("end the stream")

var (
	_ snoopv1.ProxyServiceServer  = (*fakeDaemon)(nil)
	_ snoopv1.EventServiceServer  = (*fakeDaemon)(nil)
	_ snoopv1.DaemonServiceServer = (*fakeDaemon)(nil)
)

// startFake serves a fakeDaemon on a unix socket in a short temporary
// directory (unix socket paths must stay under ~100 bytes) and returns it
// with the socket's address.
func startFake(t *testing.T) (*fakeDaemon, string) {
	t.Helper()
	sock := filepath.Join(testutil.SocketDir(t), "s.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeDaemon{proxies: map[string]*snoopv1.Proxy{}, conns: map[string][]*snoopv1.Connection{}, watching: make(chan struct{})}
	srv := grpc.NewServer(grpc.UnaryInterceptor(f.unaryAuth), grpc.StreamInterceptor(f.streamAuth))
	snoopv1.RegisterProxyServiceServer(srv, f)
	snoopv1.RegisterEventServiceServer(srv, f)
	snoopv1.RegisterDaemonServiceServer(srv, f)
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(l)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-done
	})
	return f, "unix://" + sock
}

func (f *fakeDaemon) check(ctx context.Context) error {
	md, _ := metadata.FromIncomingContext(ctx)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.auth = append(f.auth, md.Get("authorization")...)
	if f.token == "" {
		return nil
	}
	if got := md.Get("authorization"); len(got) != 1 || got[0] != "Bearer "+f.token {
		return status.Error(codes.Unauthenticated, "missing or wrong bearer token")
	}
	return nil
}

func (f *fakeDaemon) unaryAuth(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if err := f.check(ctx); err != nil {
		return nil, err
	}
	return h(ctx, req)
}

func (f *fakeDaemon) streamAuth(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	if err := f.check(ss.Context()); err != nil {
		return err
	}
	return h(srv, ss)
}

func notFound(name string) error {
	return status.Errorf(codes.NotFound, "no proxy named %q", name)
}

func (f *fakeDaemon) CreateProxy(_ context.Context, req *snoopv1.CreateProxyRequest) (*snoopv1.CreateProxyResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := req.GetSpec()
	if s.GetName() == "" {
		return nil, status.Error(codes.InvalidArgument, "spec.name: empty")
	}
	if _, ok := f.proxies[s.GetName()]; ok {
		return nil, status.Errorf(codes.AlreadyExists, "proxy %q already exists", s.GetName())
	}
	state := snoopv1.ProxyState_PROXY_STATE_LISTENING
	if !s.GetEnabled() {
		state = snoopv1.ProxyState_PROXY_STATE_DISABLED
	}
	p := &snoopv1.Proxy{Spec: s, ListenAddress: strings.Replace(s.GetListen(), ":0", ":40001", 1), State: state,
		Counters: &snoopv1.ProxyCounters{}, CreateTime: timestamppb.New(testNow.Add(-time.Hour))}
	f.proxies[s.GetName()] = p
	return &snoopv1.CreateProxyResponse{Proxy: p}, nil
}

func (f *fakeDaemon) GetProxy(_ context.Context, req *snoopv1.GetProxyRequest) (*snoopv1.GetProxyResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	p, ok := f.proxies[req.GetName()]
	if !ok {
		return nil, notFound(req.GetName())
	}
	return &snoopv1.GetProxyResponse{Proxy: p}, nil
}

func (f *fakeDaemon) ListProxies(context.Context, *snoopv1.ListProxiesRequest) (*snoopv1.ListProxiesResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	resp := &snoopv1.ListProxiesResponse{}
	for _, p := range f.proxies {
		resp.Proxies = append(resp.Proxies, p)
	}
	sort.Slice(resp.Proxies, func(i, j int) bool { return resp.Proxies[i].GetSpec().GetName() < resp.Proxies[j].GetSpec().GetName() })
	return resp, nil
}

func (f *fakeDaemon) UpdateProxy(_ context.Context, req *snoopv1.UpdateProxyRequest) (*snoopv1.UpdateProxyResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.updates = append(f.updates, req)
	p, ok := f.proxies[req.GetSpec().GetName()]
	if !ok {
		return nil, notFound(req.GetSpec().GetName())
	}
	if len(req.GetUpdateMask().GetPaths()) == 0 {
		return nil, status.Error(codes.InvalidArgument, "update_mask: empty")
	}
	p = proto.Clone(p).(*snoopv1.Proxy)
	p.Spec.Enabled = proto.Bool(req.GetSpec().GetEnabled())
	p.State = snoopv1.ProxyState_PROXY_STATE_DISABLED
	if req.GetSpec().GetEnabled() {
		p.State = snoopv1.ProxyState_PROXY_STATE_LISTENING
	}
	f.proxies[p.GetSpec().GetName()] = p
	return &snoopv1.UpdateProxyResponse{Proxy: p}, nil
}

func (f *fakeDaemon) DeleteProxy(_ context.Context, req *snoopv1.DeleteProxyRequest) (*snoopv1.DeleteProxyResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.deletes = append(f.deletes, req)
	if _, ok := f.proxies[req.GetName()]; !ok {
		return nil, notFound(req.GetName())
	}
	delete(f.proxies, req.GetName())
	return &snoopv1.DeleteProxyResponse{}, nil
}

func (f *fakeDaemon) ApplyProxies(_ context.Context, req *snoopv1.ApplyProxiesRequest) (*snoopv1.ApplyProxiesResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	resp := &snoopv1.ApplyProxiesResponse{}
	declared := map[string]bool{}
	for _, s := range req.GetProxies() {
		declared[s.GetName()] = true
		action := snoopv1.ApplyAction_APPLY_ACTION_CREATED
		if old, ok := f.proxies[s.GetName()]; ok {
			action = snoopv1.ApplyAction_APPLY_ACTION_CHANGED
			if proto.Equal(old.GetSpec(), s) {
				action = snoopv1.ApplyAction_APPLY_ACTION_UNCHANGED
			}
		}
		if !req.GetDryRun() {
			f.proxies[s.GetName()] = &snoopv1.Proxy{Spec: s, ListenAddress: s.GetListen(), State: snoopv1.ProxyState_PROXY_STATE_LISTENING}
		}
		resp.Results = append(resp.Results, &snoopv1.ApplyResult{Name: s.GetName(), Action: action})
	}
	if req.GetPrune() {
		for name := range f.proxies {
			if !declared[name] {
				if !req.GetDryRun() {
					delete(f.proxies, name)
				}
				resp.Results = append(resp.Results, &snoopv1.ApplyResult{Name: name, Action: snoopv1.ApplyAction_APPLY_ACTION_REMOVED})
			}
		}
	}
	sort.Slice(resp.Results, func(i, j int) bool { return resp.Results[i].GetName() < resp.Results[j].GetName() })
	return resp, nil
}

func (f *fakeDaemon) ListConnections(_ context.Context, req *snoopv1.ListConnectionsRequest) (*snoopv1.ListConnectionsResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.proxies[req.GetProxy()]; !ok {
		return nil, notFound(req.GetProxy())
	}
	return &snoopv1.ListConnectionsResponse{Connections: f.conns[req.GetProxy()]}, nil
}

func (f *fakeDaemon) CloseConnection(_ context.Context, req *snoopv1.CloseConnectionRequest) (*snoopv1.CloseConnectionResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.proxies[req.GetProxy()]; !ok {
		return nil, notFound(req.GetProxy())
	}
	cs := f.conns[req.GetProxy()]
	for i, c := range cs {
		if c.GetId() == req.GetId() {
			f.conns[req.GetProxy()] = append(cs[:i:i], cs[i+1:]...)
			return &snoopv1.CloseConnectionResponse{}, nil
		}
	}
	return nil, status.Errorf(codes.NotFound, "proxy %q has no connection %d", req.GetProxy(), req.GetId())
}

func (f *fakeDaemon) GetDaemonInfo(context.Context, *snoopv1.GetDaemonInfoRequest) (*snoopv1.GetDaemonInfoResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return &snoopv1.GetDaemonInfoResponse{Version: "9.9.9-fake", StartTime: timestamppb.New(testNow.Add(-2 * time.Hour)),
		Proxies: int32(len(f.proxies)), Watchers: 1, HistorySize: 10000, WatcherQueueSize: 4096,
		Engine: "epoll", Loops: 1, FdLimit: 524288}, nil
}

func (f *fakeDaemon) WatchEvents(req *snoopv1.WatchEventsRequest, st grpc.ServerStreamingServer[snoopv1.WatchEventsResponse]) error {
	f.mu.Lock()
	f.watches = append(f.watches, req)
	evs, end, batch := f.events, f.streamEnd, f.batch && req.GetMaxBatch() > 1
	f.mu.Unlock()
	var pending []*snoopv1.Event
	sendPending := func() error {
		if len(pending) == 0 {
			return nil
		}
		err := st.Send(&snoopv1.WatchEventsResponse{Events: pending})
		pending = nil
		return err
	}
	m, err := filter.Compile(req)
	if err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	for _, r := range evs {
		if ev := r.GetEvent(); ev != nil {
			var v match.View
			apiconv.View(ev, "", &v)
			if !m.Match(&v) {
				continue
			}
		}
		if r.GetEvent() != nil && !req.GetIncludeData() && r.GetEvent().GetTransaction().GetData() != nil {
			r = proto.Clone(r).(*snoopv1.WatchEventsResponse)
			r.Event.Transaction.Data = nil
		}
		if batch && r.GetEvent() != nil {
			pending = append(pending, r.GetEvent())
			if len(pending) < min(3, int(req.GetMaxBatch())) {
				continue
			}
		}
		if err := sendPending(); err != nil {
			return err
		}
		if batch && r.GetEvent() != nil {
			continue
		}
		if err := st.Send(r); err != nil {
			return err
		}
	}
	if err := sendPending(); err != nil {
		return err
	}
	f.once.Do(func() { close(f.watching) })
	switch {
	case end == nil:
		<-st.Context().Done()
		return nil
	case end == errEOF:
		return nil
	}
	return end
}

func (f *fakeDaemon) setEvents(evs []*snoopv1.WatchEventsResponse, end error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.events, f.streamEnd = evs, end
}

func (f *fakeDaemon) lastWatch() *snoopv1.WatchEventsRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.watches) == 0 {
		return nil
	}
	return f.watches[len(f.watches)-1]
}

// testNow is the fixed "now" of the in-process runs, so that ages in the
// output are stable.
var testNow = time.Date(2026, 3, 14, 15, 9, 26, 0, time.UTC)

// result is one snoopctl run.
type result struct {
	out, err string
	code     int
}

// runCtl runs snoopctl in-process with the given stdin, at testNow, with
// times in UTC.
func runCtl(ctx context.Context, stdin string, args ...string) result {
	var out, errb bytes.Buffer
	e := &env{stdio: Stdio{In: strings.NewReader(stdin), Out: &out, Err: &errb}, now: func() time.Time { return testNow }}
	code := e.run(ctx, append([]string{"--utc"}, args...))
	return result{out.String(), errb.String(), code}
}

// run is runCtl with a background context bounded to a test-sized time.
func run(t *testing.T, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return runCtl(ctx, "", args...)
}

// wantOK fails the test unless r succeeded.
func wantOK(t *testing.T, r result) {
	t.Helper()
	if r.code != 0 {
		t.Fatalf("exit %d, stderr %q, stdout %q", r.code, r.err, r.out)
	}
}

// wantFail checks the exit code and that stderr is one line starting with
// "snoopctl:" and containing want.
func wantFail(t *testing.T, r result, code int, want string) {
	t.Helper()
	if r.code != code {
		t.Fatalf("exit %d, want %d; stderr %q", r.code, code, r.err)
	}
	lines := strings.Split(strings.TrimSuffix(r.err, "\n"), "\n")
	last := lines[len(lines)-1]
	if !strings.HasPrefix(last, "snoopctl: ") || !strings.Contains(last, want) {
		t.Fatalf("stderr %q, want a line starting with snoopctl: and containing %q", r.err, want)
	}
}
