package ctl

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io/fs"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/snoopd/snoopd/distcache"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
	"github.com/snoopd/snoopd/internal/endpoint"
)

// client is a connection to snoopd with its three services. Every command
// that talks to the daemon gets one from env.dial and closes it.
type client struct {
	// local says the daemon is on this machine (a unix socket or a
	// loopback address).
	local   bool
	conn    *grpc.ClientConn
	proxies snoopv1.ProxyServiceClient
	events  snoopv1.EventServiceClient
	daemon  snoopv1.DaemonServiceClient
}

// Close closes the connection.
func (c *client) Close() error { return c.conn.Close() }

// address parses --address (or SNOOPD_ADDRESS) once; a bad one is a usage
// error.
func (e *env) address() (distcache.Addr, error) {
	if !e.opts.addr.IsZero() {
		return e.opts.addr, nil
	}
	a, err := endpoint.Parse(e.opts.rawAddr)
	if err != nil {
		return distcache.Addr{}, usagef("bad --address (or %s): %v", endpoint.EnvAddress, err)
	}
	if !a.CanConnect() {
		return distcache.Addr{}, usagef("bad --address (or %s) %q: it needs a host and a port, or a unix socket path (example: 127.0.0.1:7443 or unix:///run/snoopd.sock)",
			endpoint.EnvAddress, e.opts.rawAddr)
	}
	e.opts.addr = a
	return a, nil
}

// display is the daemon's address as errors show it.
func (e *env) display() string {
	if e.opts.addr.IsZero() {
		return e.opts.rawAddr
	}
	return endpoint.Display(e.opts.addr)
}

// dial connects to the daemon; every command that talks to it dials once
// (most through unary) and closes the client when done. gRPC connects
// lazily, so for a unix socket the path is checked first: a missing
// socket is by far the most common problem and deserves its own plain
// message.
func (e *env) dial() (*client, error) {
	addr, err := e.address()
	if err != nil {
		return nil, err
	}
	creds, err := e.transportCredentials(addr)
	if err != nil {
		return nil, err
	}
	opts := []grpc.DialOption{grpc.WithTransportCredentials(creds),
		// A fixed window of 4 MiB instead of gRPC's default, which starts
		// at 64 KiB and grows by measuring (pings after data, answered by
		// the daemon): on an event stream of 100 KB batches those pings,
		// and window updates every quarter window, woke both the daemon's
		// writer and snoopctl. The larger read buffer takes a batch in
		// few reads (docs/benchmarks.md, "Watching for less").
		grpc.WithInitialWindowSize(4 << 20), grpc.WithInitialConnWindowSize(4 << 20),
		grpc.WithReadBufferSize(256 << 10)}
	if e.opts.tokenFile != "" {
		tok, err := readToken(e.opts.tokenFile)
		if err != nil {
			return nil, err
		}
		if addr.Network() == distcache.NetworkTCP && e.opts.tlsCA == "" && !addr.IsLoopback() {
			return nil, usagef("refusing to send the token in clear text to %s: set --tls-ca to use TLS", endpoint.Display(addr))
		}
		opts = append(opts, grpc.WithPerRPCCredentials(bearer{token: tok}))
	}
	if addr.Network() == distcache.NetworkUnix && !strings.HasPrefix(addr.Path(), "@") {
		if err := e.checkSocket(addr.Path()); err != nil {
			return nil, err
		}
	}
	conn, err := grpc.NewClient(endpoint.DialTarget(addr), opts...)
	if err != nil {
		return nil, failf("cannot set up a connection to snoopd at %s: %v", e.display(), err)
	}
	return &client{
		local:   addr.IsLoopback(),
		conn:    conn,
		proxies: snoopv1.NewProxyServiceClient(conn),
		events:  snoopv1.NewEventServiceClient(conn),
		daemon:  snoopv1.NewDaemonServiceClient(conn),
	}, nil
}

// checkSocket says in plain words why path cannot be the daemon's socket.
func (e *env) checkSocket(path string) error {
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return e.unreachable("no such file", "")
	case errors.Is(err, fs.ErrPermission):
		return e.unreachable("permission denied", "use an account that may open the socket, or set --address")
	case err != nil:
		return e.unreachable(err.Error(), "")
	case fi.Mode()&fs.ModeSocket == 0:
		return e.unreachable("not a socket", hintAddress)
	}
	return nil
}

// transportCredentials picks plain or TLS transport. TLS is used when
// --tls-ca is set; a client certificate (--tls-cert and --tls-key) is added
// for daemons that require mutual TLS.
func (e *env) transportCredentials(addr distcache.Addr) (credentials.TransportCredentials, error) {
	o := e.opts
	if (o.tlsCert == "") != (o.tlsKey == "") {
		return nil, usagef("--tls-cert and --tls-key go together: set both for a client certificate")
	}
	if o.tlsCA == "" {
		if o.tlsCert != "" {
			return nil, usagef("--tls-cert needs --tls-ca, the CA that signed snoopd's certificate")
		}
		return insecure.NewCredentials(), nil
	}
	if addr.Network() == distcache.NetworkUnix {
		return nil, usagef("TLS flags apply to TCP addresses; %s is a unix socket", endpoint.Display(addr))
	}
	pem, err := os.ReadFile(o.tlsCA)
	if err != nil {
		return nil, failf("read --tls-ca: %v", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, failf("--tls-ca %s holds no PEM certificate", o.tlsCA)
	}
	cfg := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	if o.tlsCert != "" {
		cert, err := tls.LoadX509KeyPair(o.tlsCert, o.tlsKey)
		if err != nil {
			return nil, failf("load --tls-cert/--tls-key: %v", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return credentials.NewTLS(cfg), nil
}

// readToken reads a bearer token file: its contents without surrounding
// white space.
func readToken(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", failf("read --token-file: %v", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", failf("--token-file %s is empty", path)
	}
	if strings.ContainsAny(tok, "\r\n") {
		return "", failf("--token-file %s holds more than one line; it should hold only the token", path)
	}
	return tok, nil
}

// bearer sends "authorization: Bearer <token>" with every call.
type bearer struct{ token string }

var _ credentials.PerRPCCredentials = bearer{}

// GetRequestMetadata implements credentials.PerRPCCredentials.
func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + b.token}, nil
}

// RequireTransportSecurity implements credentials.PerRPCCredentials. It
// is false because a unix socket is private without TLS; dial refuses
// plain TCP to other machines itself.
func (b bearer) RequireTransportSecurity() bool { return false }

// callContext bounds one unary call by --timeout (0 means no bound) plus
// extra, for calls that are expected to take a while (a drain).
func (e *env) callContext(ctx context.Context, extra time.Duration) (context.Context, context.CancelFunc) {
	if e.opts.timeout <= 0 {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, e.opts.timeout+extra)
}

// unary is how a command asks the daemon something: it dials, makes call
// on the connection bounded by --timeout, closes the connection, and turns
// a failed call into snoopctl's one line (rpcError with action and
// notFound). call may make several calls on the one client (show: the
// proxy, then its connections); they share the bound. An error call
// returns that is already snoopctl's message (a check between two calls,
// or a code the command words itself) is returned as it is.
func unary[T any](e *env, ctx context.Context, action, notFound string, call func(context.Context, *client) (T, error)) (T, error) {
	var zero T
	c, err := e.dial()
	if err != nil {
		return zero, err
	}
	defer c.Close()
	ctx, cancel := e.callContext(ctx, 0)
	defer cancel()
	resp, err := call(ctx, c)
	if err != nil {
		var ce *cliError
		if errors.As(err, &ce) {
			return zero, err
		}
		return zero, e.rpcError(err, action, notFound)
	}
	return resp, nil
}
