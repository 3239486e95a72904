// Command example is a client of snoopd's control API written as
// automation elsewhere would write it: it uses only the generated API
// package, gRPC and the standard error details (docs/clients.md).
//
// Against a running snoopd and a distcache server it connects (a unix
// socket or TCP, with a bearer token if given), creates a proxy, shows
// the error details of three refused calls, applies a set of two proxies,
// watches one of them with a filter while it sends load through it, checks
// that the watch saw exactly the load's GET hits, and deletes what it
// made. It prints one line per step and exits 1 on any failure.
//
//	go run ./examples/go -address unix:///tmp/snoopd-$(id -u)/snoopd.sock -server IP:127.0.0.1:9001
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/snoopd/snoopd/distcache"
	"github.com/snoopd/snoopd/distcache/loadgen"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
)

func main() {
	var o options
	flag.StringVar(&o.address, "address", "", "snoopd's control endpoint: unix:///path/to/snoopd.sock or host:port (required)")
	flag.StringVar(&o.tokenFile, "token-file", "", "a file holding the bearer token, if snoopd has --token-file")
	flag.StringVar(&o.server, "server", "", "the distcache server the proxies forward to, e.g. IP:127.0.0.1:9001 (required)")
	flag.StringVar(&o.prefix, "prefix", "example", "the proxies' names start with this")
	flag.IntVar(&o.load, "load", 200, "how many sessions the load adds and reads back")
	flag.Parse()
	if o.address == "" || o.server == "" || o.load < 1 {
		fmt.Fprintln(os.Stderr, "example: -address and -server are required, and -load must be 1 or more")
		os.Exit(2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := run(ctx, o, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "example:", err)
		os.Exit(1)
	}
}

type options struct {
	address, tokenFile, server, prefix string
	load                               int
}

// bearer sends "authorization: Bearer <token>" with every call. Over a
// unix socket or loopback TCP without TLS, the token travels in clear text
// on this machine only, so it does not demand transport security.
type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}

func (bearer) RequireTransportSecurity() bool { return false }

func run(ctx context.Context, o options, out io.Writer) error {
	opts := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	if o.tokenFile != "" {
		b, err := os.ReadFile(o.tokenFile)
		if err != nil {
			return fmt.Errorf("token: %w", err)
		}
		opts = append(opts, grpc.WithPerRPCCredentials(bearer(strings.TrimSpace(string(b)))))
	}
	// grpc-go takes "unix:///path" and "host:port" as they are.
	conn, err := grpc.NewClient(o.address, opts...)
	if err != nil {
		return fmt.Errorf("connect to %s: %w", o.address, err)
	}
	defer conn.Close()
	proxies := snoopv1.NewProxyServiceClient(conn)
	events := snoopv1.NewEventServiceClient(conn)
	info, err := snoopv1.NewDaemonServiceClient(conn).GetDaemonInfo(ctx, &snoopv1.GetDaemonInfoRequest{})
	if err != nil {
		return fmt.Errorf("daemon info: %w", err)
	}
	fmt.Fprintf(out, "connected: snoopd %s, engine %s, %d proxies\n", info.GetVersion(), info.GetEngine(), info.GetProxies())

	one, two := o.prefix+"-one", o.prefix+"-two"
	created, err := proxies.CreateProxy(ctx, &snoopv1.CreateProxyRequest{Spec: &snoopv1.ProxySpec{
		Name: one, Listen: "IP:127.0.0.1:0", Server: o.server,
	}})
	if err != nil {
		return fmt.Errorf("create %s: %w", one, err)
	}
	defer cleanup(proxies, out, one, two)
	p := created.GetProxy()
	eff := p.GetEffectiveSpec()
	fmt.Fprintf(out, "created %s: listening on %s port %d (%s), spares %d, dial timeout %v\n", one,
		p.GetListenHost(), p.GetListenPort(), p.GetListenAddress(), eff.GetSpareConnections(), eff.GetDialTimeout().AsDuration())

	// Refused calls: each error carries details a script acts on
	// without reading the message.
	_, err = proxies.CreateProxy(ctx, &snoopv1.CreateProxyRequest{Spec: &snoopv1.ProxySpec{Name: one, Listen: "IP:127.0.0.1:0", Server: o.server}})
	fmt.Fprintln(out, "create again:", describeError(err))
	_, err = proxies.GetProxy(ctx, &snoopv1.GetProxyRequest{Name: o.prefix + "-missing"})
	fmt.Fprintln(out, "get missing:", describeError(err))
	_, err = proxies.CreateProxy(ctx, &snoopv1.CreateProxyRequest{Spec: &snoopv1.ProxySpec{Name: o.prefix + "-bad", Listen: "IP:99999", Server: o.server}})
	fmt.Fprintln(out, "create bad:", describeError(err))

	// A declared set: the first proxy as it is, and a second one.
	applied, err := proxies.ApplyProxies(ctx, &snoopv1.ApplyProxiesRequest{Proxies: []*snoopv1.ProxySpec{
		{Name: one, Listen: "IP:127.0.0.1:0", Server: o.server},
		{Name: two, Listen: "IP:127.0.0.1:0", Server: o.server, SpareConnections: ptr[uint32](1)},
	}})
	if err != nil {
		return fmt.Errorf("apply: %w", err)
	}
	var target string
	for _, r := range applied.GetResults() {
		fmt.Fprintf(out, "apply: %s %s at %s\n", r.GetName(), r.GetAction(), r.GetProxy().GetListenAddress())
		if r.GetName() == two {
			target = r.GetProxy().GetListenAddress()
		}
	}
	if target == "" {
		return errors.New("apply did not report " + two)
	}

	// Watch the second proxy's GET hits while load runs through it.
	hits, err := watchHits(ctx, events, two, func() (int, error) { return sendLoad(ctx, target, o.load) })
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "watch: %d GET hits seen, %d sent\n", hits.seen, hits.sent)
	if hits.seen != hits.sent {
		return fmt.Errorf("the watch saw %d GET hits, the load made %d", hits.seen, hits.sent)
	}
	got, err := proxies.GetProxy(ctx, &snoopv1.GetProxyRequest{Name: two})
	if err != nil {
		return fmt.Errorf("get %s: %w", two, err)
	}
	for _, oc := range got.GetProxy().GetCounters().GetOps() {
		fmt.Fprintf(out, "counters: %s %d %v\n", oc.GetOp(), oc.GetCount(), oc.GetResults())
	}
	return nil
}

func ptr[T any](v T) *T { return &v }

// describeError renders a status and its details: ErrorInfo's reason,
// ResourceInfo's resource, BadRequest's fields.
func describeError(err error) string {
	if err == nil {
		return "no error"
	}
	st := status.Convert(err)
	parts := []string{st.Code().String()}
	for _, d := range st.Details() {
		switch v := d.(type) {
		case *errdetails.ErrorInfo:
			parts = append(parts, "reason="+v.GetReason(), "domain="+v.GetDomain())
		case *errdetails.ResourceInfo:
			parts = append(parts, "resource="+v.GetResourceType()+"/"+v.GetResourceName())
		case *errdetails.BadRequest:
			for _, f := range v.GetFieldViolations() {
				parts = append(parts, "field="+f.GetField())
			}
		}
	}
	return strings.Join(parts, " ") + ": " + st.Message()
}

type hitCount struct{ seen, sent int }

// watchHits watches proxy's GET hits, runs load once the watch is live
// and counts the events until they match what load reports. The history
// notice is the sign that the watch is registered: with history asked
// for, it comes as soon as the past is sent, and every event after it is
// live.
func watchHits(ctx context.Context, events snoopv1.EventServiceClient, proxy string, load func() (int, error)) (hitCount, error) {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := events.WatchEvents(wctx, &snoopv1.WatchEventsRequest{
		Proxies: []string{proxy}, Operations: []string{"get"}, Results: []string{"hit"}, History: 1, MaxBatch: 64,
	})
	if err != nil {
		return hitCount{}, fmt.Errorf("watch: %w", err)
	}
	// Responses arrive on a channel, so the count can be compared with
	// the load's whenever either changes.
	type recv struct {
		r   *snoopv1.WatchEventsResponse
		err error
	}
	responses := make(chan recv)
	go func() {
		for {
			r, err := stream.Recv()
			select {
			case responses <- recv{r, err}:
			case <-wctx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()
	type loaded struct {
		n   int
		err error
	}
	done := make(chan loaded, 1)
	var c hitCount
	live, finished := false, false
	for !finished || c.seen < c.sent {
		select {
		case l := <-done:
			if l.err != nil {
				return c, l.err
			}
			c.sent, finished = l.n, true
		case in := <-responses:
			switch {
			case in.err != nil:
				return c, fmt.Errorf("watch: %w", in.err)
			case in.r.GetHistoryDone() && !live:
				live, c.seen = true, 0 // count live events only
				go func() {
					n, err := load()
					done <- loaded{n, err}
				}()
			case in.r.GetDropped() > 0:
				return c, fmt.Errorf("watch: %d events dropped", in.r.GetDropped())
			case in.r.GetEvent() != nil:
				c.seen++
			default:
				c.seen += len(in.r.GetEvents())
			}
		case <-ctx.Done():
			return c, fmt.Errorf("watch: saw %d GET hits of %d: %w", c.seen, c.sent, ctx.Err())
		}
	}
	return c, nil
}

// sendLoad adds n sessions through the proxy and reads each back (a hit)
// along with one that does not exist (a miss); it returns the hits.
func sendLoad(ctx context.Context, listen string, n int) (int, error) {
	addr, err := distcache.ParseConnectAddr(listen)
	if err != nil {
		return 0, fmt.Errorf("load: %w", err)
	}
	c, err := loadgen.Dial(ctx, addr, 5*time.Second)
	if err != nil {
		return 0, fmt.Errorf("load: %w", err)
	}
	defer c.Close()
	hits := 0
	for i := range n {
		id := []byte("example-session-" + strconv.Itoa(i))
		if _, err := c.Add(id, []byte("session data"), time.Minute); err != nil {
			return hits, fmt.Errorf("load: add: %w", err)
		}
		if _, hit, err := c.Get(id); err != nil || !hit {
			return hits, fmt.Errorf("load: get %s: hit %v, %v", id, hit, err)
		}
		hits++
		if _, _, err := c.Get([]byte("example-missing-" + strconv.Itoa(i))); err != nil {
			return hits, fmt.Errorf("load: get: %w", err)
		}
	}
	return hits, nil
}

// cleanup deletes the example's proxies, with a deadline of its own so it
// runs after a failure too.
func cleanup(proxies snoopv1.ProxyServiceClient, out io.Writer, names ...string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, name := range names {
		if _, err := proxies.DeleteProxy(ctx, &snoopv1.DeleteProxyRequest{Name: name}); err != nil {
			fmt.Fprintf(out, "delete %s: %s\n", name, describeError(err))
			continue
		}
		fmt.Fprintf(out, "deleted %s\n", name)
	}
}
