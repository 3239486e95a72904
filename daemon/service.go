package daemon

import (
	"context"
	"crypto/subtle"
	"fmt"
	"strings"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
)

// ServerOptions configure the control API's gRPC server.
type ServerOptions struct {
	// Token, if set, must be presented by every call as
	// "authorization: Bearer <token>". Health checks are exempt, so a
	// supervisor can probe the daemon without the secret.
	Token string
	// Creds, if set, secures every connection (TLS, with client
	// certificates for mTLS).
	Creds credentials.TransportCredentials
}

// NewServer returns a gRPC server with the control API, the standard
// health service and server reflection (so `grpcurl -unix <socket> list`
// works) registered, and the health server to flip at shutdown.
func NewServer(d *Daemon, opts ServerOptions) (*grpc.Server, *HealthServer) {
	so := []grpc.ServerOption{grpc.ForceServerCodecV2(newCodec())}
	if opts.Creds != nil {
		so = append(so, grpc.Creds(opts.Creds))
	}
	if opts.Token != "" {
		a := &tokenAuth{token: opts.Token}
		so = append(so, grpc.ChainUnaryInterceptor(a.unary), grpc.ChainStreamInterceptor(a.stream))
	}
	s := grpc.NewServer(so...)
	svc := &service{d: d}
	snoopv1.RegisterProxyServiceServer(s, &proxyService{service: svc})
	snoopv1.RegisterEventServiceServer(s, &eventService{service: svc, responses: new(responsePool)})
	snoopv1.RegisterDaemonServiceServer(s, &daemonService{service: svc})
	hs := &HealthServer{Server: health.NewServer(), stopped: make(chan struct{})}
	// Each service answers for itself too, so a probe that names one
	// (as Kubernetes' and grpc-health-probe's -service do) gets SERVING,
	// not NOT_FOUND; Shutdown sets them all NOT_SERVING.
	for _, name := range []string{
		snoopv1.ProxyService_ServiceDesc.ServiceName,
		snoopv1.EventService_ServiceDesc.ServiceName,
		snoopv1.DaemonService_ServiceDesc.ServiceName,
	} {
		hs.SetServingStatus(name, healthpb.HealthCheckResponse_SERVING)
	}
	healthpb.RegisterHealthServer(s, hs)
	reflection.Register(s)
	return s, hs
}

// HealthServer is the standard health service, except that Shutdown also
// ends Watch streams (with UNAVAILABLE) after telling them NOT_SERVING: the
// stock server keeps them open, and an open stream holds a graceful stop
// until its deadline.
type HealthServer struct {
	*health.Server
	once    sync.Once
	stopped chan struct{}
}

// Shutdown sets every service NOT_SERVING and ends the Watch streams.
func (h *HealthServer) Shutdown() {
	h.Server.Shutdown()
	h.once.Do(func() { close(h.stopped) })
}

// Watch streams status changes until the client leaves or Shutdown, which
// ends the stream with UNAVAILABLE once the stream has sent its final
// status. The stock server's Watch takes status updates through a
// one-slot channel of its own, so the end cannot be timed from outside;
// instead the stream handed to it records what it sent, and the stream is
// ended when, after Shutdown, the last status sent is final: NOT_SERVING,
// or SERVICE_UNKNOWN for a service the server does not know (Shutdown
// sends it nothing new).
func (h *HealthServer) Watch(req *healthpb.HealthCheckRequest, stream healthpb.Health_WatchServer) error {
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	ws := &watchStream{Health_WatchServer: stream, ctx: ctx, sent: make(chan healthpb.HealthCheckResponse_ServingStatus, 1)}
	go func() {
		select {
		case <-h.stopped:
		case <-ctx.Done():
			return
		}
		last := healthpb.HealthCheckResponse_UNKNOWN
		for {
			if last == healthpb.HealthCheckResponse_NOT_SERVING || last == healthpb.HealthCheckResponse_SERVICE_UNKNOWN {
				cancel()
				return
			}
			select {
			case last = <-ws.sent:
			case <-ctx.Done():
				return
			}
		}
	}()
	err := h.Server.Watch(req, ws)
	select {
	case <-h.stopped:
		return status.Error(codes.Unavailable, "snoopd is shutting down")
	default:
		return err
	}
}

// watchStream is a health stream with a context that Shutdown can cancel,
// which tells Watch each status it has sent.
type watchStream struct {
	healthpb.Health_WatchServer
	ctx  context.Context
	sent chan healthpb.HealthCheckResponse_ServingStatus // holds the last status sent
}

func (s *watchStream) Context() context.Context { return s.ctx }

// Send sends m and records its status, replacing a status not yet looked
// at: only the last one matters.
func (s *watchStream) Send(m *healthpb.HealthCheckResponse) error {
	if err := s.Health_WatchServer.Send(m); err != nil {
		return err
	}
	for {
		select {
		case s.sent <- m.GetStatus():
			return nil
		default:
		}
		select {
		case <-s.sent:
		default:
		}
	}
}

// tokenAuth checks the bearer token of every call but health checks.
type tokenAuth struct{ token string }

func (a *tokenAuth) check(ctx context.Context, method string) error {
	if strings.HasPrefix(method, "/grpc.health.v1.Health/") {
		return nil
	}
	md, _ := metadata.FromIncomingContext(ctx)
	vals := md.Get("authorization")
	if len(vals) == 0 {
		return Status(fmt.Errorf("%w: this snoopd requires a bearer token (authorization: Bearer <token>)", ErrUnauthenticated))
	}
	// The scheme is case-insensitive (RFC 7235 section 2.1). The token is
	// what follows the one space, exactly: a padded token is not the token.
	scheme, got, ok := strings.Cut(vals[0], " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || subtle.ConstantTimeCompare([]byte(got), []byte(a.token)) != 1 {
		return Status(fmt.Errorf("%w: wrong bearer token", ErrUnauthenticated))
	}
	return nil
}

func (a *tokenAuth) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if err := a.check(ctx, info.FullMethod); err != nil {
		return nil, err
	}
	return h(ctx, req)
}

func (a *tokenAuth) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	if err := a.check(ss.Context(), info.FullMethod); err != nil {
		return err
	}
	return h(srv, ss)
}

// service is shared by the three API services: thin adapters over Daemon
// that map errors to gRPC codes with Status, once, on the way out.
type service struct{ d *Daemon }

type proxyService struct {
	*service
	snoopv1.UnimplementedProxyServiceServer
}

type eventService struct {
	*service
	snoopv1.UnimplementedEventServiceServer
	// responses holds the buffers every watch stream writes into.
	responses *responsePool
}

type daemonService struct {
	*service
	snoopv1.UnimplementedDaemonServiceServer
}

var (
	_ snoopv1.ProxyServiceServer  = (*proxyService)(nil)
	_ snoopv1.EventServiceServer  = (*eventService)(nil)
	_ snoopv1.DaemonServiceServer = (*daemonService)(nil)
)

func (s *proxyService) CreateProxy(ctx context.Context, req *snoopv1.CreateProxyRequest) (*snoopv1.CreateProxyResponse, error) {
	p, err := s.d.CreateProxy(ctx, req.GetSpec())
	if err != nil {
		return nil, Status(err)
	}
	return &snoopv1.CreateProxyResponse{Proxy: p}, nil
}

func (s *proxyService) GetProxy(ctx context.Context, req *snoopv1.GetProxyRequest) (*snoopv1.GetProxyResponse, error) {
	p, err := s.d.GetProxy(req.GetName())
	if err != nil {
		return nil, Status(err)
	}
	if req.GetIncludeHistograms() {
		s.d.addHistograms([]*snoopv1.Proxy{p})
	}
	return &snoopv1.GetProxyResponse{Proxy: p}, nil
}

func (s *proxyService) ListProxies(ctx context.Context, req *snoopv1.ListProxiesRequest) (*snoopv1.ListProxiesResponse, error) {
	ps := s.d.ListProxies()
	if req.GetIncludeHistograms() {
		s.d.addHistograms(ps)
	}
	return &snoopv1.ListProxiesResponse{Proxies: ps}, nil
}

func (s *proxyService) UpdateProxy(ctx context.Context, req *snoopv1.UpdateProxyRequest) (*snoopv1.UpdateProxyResponse, error) {
	p, err := s.d.UpdateProxy(ctx, req.GetSpec(), req.GetUpdateMask().GetPaths(), req.GetCloseConnections())
	if err != nil {
		return nil, Status(err)
	}
	return &snoopv1.UpdateProxyResponse{Proxy: p}, nil
}

func (s *proxyService) DeleteProxy(ctx context.Context, req *snoopv1.DeleteProxyRequest) (*snoopv1.DeleteProxyResponse, error) {
	drain := minDuration(req.GetDrain())
	if d := req.GetDrain(); d != nil && (d.CheckValid() != nil || drain < 0) {
		return nil, Status(&FieldError{Field: "drain", Reason: "must be a non-negative duration"})
	}
	res, err := s.d.DeleteProxy(ctx, req.GetName(), drain, req.GetForce())
	if err != nil {
		return nil, Status(err)
	}
	return &snoopv1.DeleteProxyResponse{ConnectionsDrained: res.Drained, ConnectionsCut: res.Cut}, nil
}

func (s *proxyService) ApplyProxies(ctx context.Context, req *snoopv1.ApplyProxiesRequest) (*snoopv1.ApplyProxiesResponse, error) {
	res, err := s.d.ApplyProxiesSelected(ctx, req.GetProxies(), req.GetPrune(), req.GetPruneSelector(), req.GetDryRun())
	if err != nil {
		return nil, Status(err)
	}
	return &snoopv1.ApplyProxiesResponse{Results: res}, nil
}

func (s *proxyService) ListConnections(ctx context.Context, req *snoopv1.ListConnectionsRequest) (*snoopv1.ListConnectionsResponse, error) {
	cs, err := s.d.Connections(req.GetProxy())
	if err != nil {
		return nil, Status(err)
	}
	return &snoopv1.ListConnectionsResponse{Connections: cs}, nil
}

func (s *proxyService) CloseConnection(ctx context.Context, req *snoopv1.CloseConnectionRequest) (*snoopv1.CloseConnectionResponse, error) {
	if err := s.d.CloseConnection(req.GetProxy(), req.GetId()); err != nil {
		return nil, Status(err)
	}
	return &snoopv1.CloseConnectionResponse{}, nil
}

// WatchEvents streams matching events until the client goes away or the
// daemon shuts down (then the stream ends with UNAVAILABLE). The headers
// go out at once, so a client knows the watch is live before any event.
// History comes first, in as many responses as it takes, then the
// history_done notice with the number of history events asked for and not
// held. With max_batch above 1, each response carries as many of the
// events ready at that moment as fit (never waiting for more); notices
// always travel alone, in order with the events.
func (s *eventService) WatchEvents(req *snoopv1.WatchEventsRequest, stream grpc.ServerStreamingServer[snoopv1.WatchEventsResponse]) error {
	filter, err := compileFilter(req)
	if err != nil {
		return Status(err)
	}
	release, err := s.d.acquireWatcher()
	if err != nil {
		return Status(err)
	}
	defer release()
	w := s.d.hub.Watch(s.d.watchOptions(req, filter))
	defer w.Close()
	if err := stream.SendHeader(metadata.MD{}); err != nil {
		return err
	}
	ctx := stream.Context()
	out := newEventSender(stream, req, s.responses)
	for {
		b, err := w.Next(ctx)
		if err != nil {
			return Status(err)
		}
		if b.Dropped > 0 {
			if err := out.dropped(b.Dropped); err != nil {
				return err
			}
		}
		if err := out.events(b.Records); err != nil {
			return err
		}
		if b.HistoryEnd {
			if err := out.historyDone(b.HistoryMissing, b.HistoryBeyond); err != nil {
				return err
			}
		}
	}
}

func (s *daemonService) GetDaemonInfo(ctx context.Context, req *snoopv1.GetDaemonInfoRequest) (*snoopv1.GetDaemonInfoResponse, error) {
	return s.d.Info(), nil
}
