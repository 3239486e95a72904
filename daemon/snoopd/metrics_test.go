package main

import (
	"context"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
)

// TestMetricsHistogramsFlag: --metrics-histograms decides which latency
// histograms /metrics carries; without it, both the daemon-wide ones per
// operation and the per-proxy one.
func TestMetricsHistogramsFlag(t *testing.T) {
	for _, tc := range []struct {
		args            []string
		perProxy, perOp bool
	}{
		{nil, true, true},
		{[]string{"--metrics-histograms", "ops"}, false, true},
		{[]string{"--metrics-histograms=none"}, false, false},
	} {
		name := strings.Join(tc.args, " ")
		if name == "" {
			name = "default"
		}
		t.Run(name, func(t *testing.T) {
			dir := tempDir(t)
			sock, msock := filepath.Join(dir, "ctl.sock"), filepath.Join(dir, "metrics.sock")
			startSnoopd(t, append([]string{"--control", "unix://" + sock, "--metrics-listen", "UNIX:" + msock}, tc.args...)...)
			_, err := snoopv1.NewProxyServiceClient(dial(t, unixTarget(sock))).CreateProxy(withTimeout(t), &snoopv1.CreateProxyRequest{Spec: &snoopv1.ProxySpec{
				Name: "m", Listen: "IP:127.0.0.1:0", Server: "IP:127.0.0.1:1",
			}})
			if err != nil {
				t.Fatal(err)
			}
			client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
				DisableKeepAlives: true,
				DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
					var d net.Dialer
					return d.DialContext(ctx, "unix", msock)
				},
			}}
			body := scrape(t, client)
			if got := strings.Contains(body, `snoopd_proxy_transaction_duration_seconds_bucket{proxy="m",le="0.001"} 0`); got != tc.perProxy {
				t.Errorf("per-proxy histogram: %v, want %v", got, tc.perProxy)
			}
			if got := strings.Contains(body, `snoopd_transaction_duration_seconds_bucket{op="get",le="0.001"} 0`); got != tc.perOp {
				t.Errorf("per-op histogram: %v, want %v", got, tc.perOp)
			}
			if !strings.Contains(body, `snoopd_proxy_latency_seconds_count{proxy="m"} 0`) {
				t.Error("no latency summary")
			}
		})
	}
}
