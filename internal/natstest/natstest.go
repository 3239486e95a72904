// Package natstest runs a real NATS server with JetStream inside a test
// process, on loopback, with its store in a temporary directory, and can
// stop and restart it on the same port and store (to test what clients do
// while it is gone). Run starts the same server for the benchmark.
package natstest

import (
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Server is an in-process NATS server with JetStream.
type Server struct {
	t    testing.TB
	dir  string
	port int
	srv  *server.Server
}

// Start runs a server on 127.0.0.1 on a free port; it is shut down when
// the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	s := &Server{t: t, dir: t.TempDir(), port: server.RANDOM_PORT}
	s.start()
	s.port = s.srv.Addr().(*net.TCPAddr).Port
	t.Cleanup(s.Stop)
	return s
}

func (s *Server) start() {
	s.t.Helper()
	srv, err := Run(s.dir, s.port)
	if err != nil {
		s.t.Fatal(err)
	}
	s.srv = srv
}

// FreePort asks Run for a free port.
const FreePort = server.RANDOM_PORT

// Run starts a server with JetStream on 127.0.0.1:port (FreePort for any
// free one) storing in dir, and returns it once it takes connections; the
// caller shuts it down. It is what Start runs, for programs that are not
// tests (the benchmark).
func Run(dir string, port int) (*server.Server, error) {
	opts := &server.Options{
		Host:      "127.0.0.1",
		Port:      port,
		JetStream: true,
		StoreDir:  dir,
		NoLog:     true,
		NoSigs:    true,
		// The cluster name and server name are fixed so a restart finds
		// its own store again.
		ServerName: "natstest",
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("nats server: %w", err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		return nil, errors.New("nats server: not ready within 10s")
	}
	return srv, nil
}

// URL is the server's client URL.
func (s *Server) URL() string { return fmt.Sprintf("nats://127.0.0.1:%d", s.port) }

// Stop shuts the server down (its store stays).
func (s *Server) Stop() {
	if s.srv != nil {
		s.srv.Shutdown()
		s.srv.WaitForShutdown()
		s.srv = nil
	}
}

// Restart starts the server again on the same port and store.
func (s *Server) Restart() {
	s.t.Helper()
	s.Stop()
	s.start()
}

// Subscribers returns how many subscriptions would receive a message
// published on the literal subject, so a test can wait until a
// subscriber is in place before it produces what the subscriber should
// see.
func (s *Server) Subscribers(subject string) int {
	s.t.Helper()
	if s.srv == nil {
		return 0
	}
	sz, err := s.srv.Subsz(&server.SubszOptions{Subscriptions: true, Test: subject, Limit: 1024})
	if err != nil {
		s.t.Fatalf("nats server: subscriptions: %v", err)
	}
	return sz.Total
}
