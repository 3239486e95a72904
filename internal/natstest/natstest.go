// Package natstest runs a real NATS server with JetStream inside a test
// process, on loopback, with its store in a temporary directory, and can
// stop and restart it on the same port and store (to test what clients do
// while it is gone).
package natstest

import (
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
	opts := &server.Options{
		Host:      "127.0.0.1",
		Port:      s.port,
		JetStream: true,
		StoreDir:  s.dir,
		NoLog:     true,
		NoSigs:    true,
		// The cluster name and server name are fixed so a restart finds
		// its own store again.
		ServerName: "natstest",
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		s.t.Fatalf("nats server: %v", err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		s.t.Fatal("nats server: not ready within 10s")
	}
	s.srv = srv
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
