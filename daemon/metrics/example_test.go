package metrics_test

import (
	"context"
	"log"
	"net"
	"net/http"
	"time"

	"github.com/snoopd/snoopd/daemon"
	"github.com/snoopd/snoopd/daemon/metrics"
)

// Serving a daemon's metrics on a loopback port, on a server of its own.
func ExampleHandler() {
	d, err := daemon.New(daemon.Config{})
	if err != nil {
		log.Fatal(err)
	}
	defer d.Close(context.Background())

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", metrics.Handler(d, nil))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(l)
	defer srv.Shutdown(context.Background())
	// Prometheus scrapes http://<l.Addr()>/metrics.
}
