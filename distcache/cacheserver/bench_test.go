package cacheserver

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/snoopd/snoopd/distcache"
)

// BenchmarkServerGet measures GET hits over a unix socket, per request,
// client included. The allocation count covers the whole process, so it
// shows whether the server allocates per request (it should not). With
// pipelining, a batch costs the server one read and one write.
func BenchmarkServerGet(b *testing.B) {
	for _, bc := range []struct {
		dataLen, batch int
	}{
		{200, 1},
		{200, 64},
		{4096, 16},
	} {
		b.Run(fmt.Sprintf("data=%d/pipeline=%d", bc.dataLen, bc.batch), func(b *testing.B) {
			benchmarkGet(b, bc.dataLen, bc.batch)
		})
	}
}

func benchmarkGet(b *testing.B, dataLen, batch int) {
	s := startServer(b, unixAddr(b), Config{})
	id := []byte("benchmark-session-id-0123456789")
	data := bytes.Repeat([]byte{0xa5}, dataLen)
	if st := s.Cache().Add(id, data, time.Hour); st != distcache.StatusOK {
		b.Fatal(st)
	}
	c := dial(b, s.Addr())
	var reqs []byte
	for i := range batch {
		reqs = distcache.AppendMessage(reqs, false, uint32(i), distcache.OpGet, id)
	}
	reqSize := len(reqs) / batch

	b.SetBytes(int64(dataLen))
	b.ReportAllocs()
	b.ResetTimer()
	for done := 0; done < b.N; done += batch {
		n := min(batch, b.N-done)
		if _, err := c.nc.Write(reqs[:n*reqSize]); err != nil {
			b.Fatal(err)
		}
		for range n {
			m, err := c.r.ReadMessage()
			if err != nil {
				b.Fatal(err)
			}
			if len(m.Payload) != dataLen {
				b.Fatalf("GET returned %d bytes, want %d", len(m.Payload), dataLen)
			}
		}
	}
}

// BenchmarkServerAddRemove measures the write path: an ADD and a REMOVE of
// the same id per iteration, pipelined in pairs.
func BenchmarkServerAddRemove(b *testing.B) {
	s := startServer(b, unixAddr(b), Config{})
	c := dial(b, s.Addr())
	pair := distcache.AppendMessage(nil, false, 1, distcache.OpAdd, addPayload(60000, "session", string(bytes.Repeat([]byte{1}, 200))))
	pair = distcache.AppendMessage(pair, false, 2, distcache.OpRemove, []byte("session"))
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, err := c.nc.Write(pair); err != nil {
			b.Fatal(err)
		}
		for range 2 {
			m, err := c.r.ReadMessage()
			if err != nil {
				b.Fatal(err)
			}
			if len(m.Payload) != 1 || m.Payload[0] != 0 {
				b.Fatalf("%s answered % x", m.Op, m.Payload)
			}
		}
	}
}
