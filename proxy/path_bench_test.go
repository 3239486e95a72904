package proxy

import (
	"bytes"
	"io"
	"net"
	"testing"

	"github.com/snoopd/snoopd/distcache"
	"github.com/snoopd/snoopd/distcache/cacheserver"
)

// benchPath measures the proxy path: one client doing GET round trips of
// a 1 KB session through a proxy (with the test engine) to the in-memory
// cache, on TCP loopback. setup may change the proxy before the timing
// starts (faults: fault_bench_linux_test.go).
func benchPath(b *testing.B, setup func(p *Proxy)) {
	cache, err := cacheserver.Start(distcache.MustParseAddr("IP:127.0.0.1:0"), cacheserver.Config{})
	if err != nil {
		b.Fatal(err)
	}
	defer cache.Close()
	p, err := New(Config{Name: "bench", Listen: distcache.MustParseAddr("IP:127.0.0.1:0"), Server: cache.Addr(), Enabled: true, Engine: testEngine}, nil)
	if err != nil {
		b.Fatal(err)
	}
	if err := p.Start(); err != nil {
		b.Fatal(err)
	}
	defer p.Stop(b.Context())
	if setup != nil {
		setup(p)
	}
	c, err := net.Dial("tcp", p.Addr().NetAddr())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	data := bytes.Repeat([]byte("x"), 1024)
	add := distcache.AppendMessage(nil, false, 1, distcache.OpAdd, distcache.AppendAddRequest(nil, 600000, []byte("bench"), data))
	get := distcache.AppendMessage(nil, false, 2, distcache.OpGet, []byte("bench"))
	resp := make([]byte, 64<<10)
	roundTrip := func(req []byte, want int) {
		if _, err := c.Write(req); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c, resp[:want]); err != nil {
			b.Fatal(err)
		}
	}
	roundTrip(add, distcache.HeaderSize+1)
	hit := distcache.HeaderSize + len(data)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		roundTrip(get, hit)
	}
}

// BenchmarkProxyPath is the path without faults, as it is on a proxy that
// never had any.
func BenchmarkProxyPath(b *testing.B) { benchPath(b, nil) }
