package daemon

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/snoopd/snoopd/daemon/hub"
	"github.com/snoopd/snoopd/distcache"
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
	"github.com/snoopd/snoopd/internal/testutil"
	"github.com/snoopd/snoopd/proxy"
)

// typicalEvents are transactions as a busy proxy publishes them: session
// ids of 19 to 32 bytes, the three times, a latency, a digest.
func typicalEvents(n int) []*proxy.Event {
	evs := make([]*proxy.Event, n)
	now := time.Now()
	for i := range evs {
		tx := &proxy.Transaction{Start: now.Add(-150 * time.Microsecond), Latency: 123456 * time.Nanosecond, ServerLatency: 120001 * time.Nanosecond}
		tx.Op, tx.RequestUID = []distcache.Op{distcache.OpGet, distcache.OpAdd, distcache.OpGet, distcache.OpRemove}[i%4], uint32(1000+i)
		tx.SessionID = []byte("0123456789abcdef0123456789abcdef")[:19+i%14]
		tx.SessionIDLen = len(tx.SessionID)
		tx.RequestSize, tx.ResponseSize, tx.RequestFrames, tx.ResponseFrames = 36, 1040, 1, 1
		tx.Hit, tx.DataLen, tx.HasDigest = i%3 != 0, 1000, true
		evs[i] = &proxy.Event{Kind: proxy.KindTransaction, Time: now.Add(time.Duration(i) * time.Microsecond), Proxy: "sessions",
			ConnID: uint64(42 + i%100), Client: fmt.Sprintf("127.0.0.1:%d", 40000+i%100), Tx: tx}
	}
	return evs
}

// BenchmarkWatchOneStream is the daemon's CPU per event with one watcher
// draining the hub as fast as it can, as snoopctl tail makes it: a
// publisher goroutine publishes b.N typical transactions through a
// proxy's sink of a real Hub, and the watcher's goroutine reads them with
// Next ("next") and also writes them into batched watch responses through
// the server's codec ("send"). "unwatched" is the publishing alone, which
// the proxies pay with nobody watching; what watching costs is the
// difference. The publisher keeps at most a few thousand events ahead of
// the watcher, so the ring is never overrun (dropped/op says if it was).
func BenchmarkWatchOneStream(b *testing.B) {
	for _, mode := range []string{"unwatched", "next", "send"} {
		b.Run(mode, func(b *testing.B) { benchWatch(b, mode) })
	}
}

func benchWatch(b *testing.B, mode string) {
	evs := typicalEvents(1024)
	h := hub.New(hub.Config{NewEncoder: NewEventEncoder})
	defer h.Close()
	pub := h.Publisher("5f0c8a51-3f4e-4d0a-9b1e-6b7f2d9c4a10")
	// window keeps the publisher well inside the ring (DefaultHistory).
	const window = 4096
	var got, dropped atomic.Uint64
	progress := make(chan struct{}, 1)
	done := make(chan error, 1)
	var w *hub.Watcher
	if mode != "unwatched" {
		w = h.Watch(hub.WatchOptions{})
		defer w.Close()
		var out *eventSender
		var cs *codecStream
		if mode == "send" {
			cs = newCodecStream()
			out = newEventSender(cs, &snoopv1.WatchEventsRequest{MaxBatch: hub.MaxBatch}, new(responsePool))
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		go func() {
			for got.Load() < uint64(b.N) {
				batch, err := w.Next(ctx)
				if err != nil {
					done <- err
					return
				}
				if out != nil {
					if err := out.events(batch.Records); err != nil {
						done <- err
						return
					}
				}
				dropped.Add(batch.Dropped)
				got.Add(uint64(len(batch.Records)) + batch.Dropped)
				select {
				case progress <- struct{}{}:
				default:
				}
			}
			done <- nil
		}()
	}
	b.ReportAllocs()
	b.ResetTimer()
	report := testutil.ReportCPU(b)
	for i := range b.N {
		for w != nil && uint64(i)-min(uint64(i), got.Load()) >= window {
			select {
			case <-progress:
			case err := <-done:
				b.Fatalf("the watcher stopped after %d of %d events: %v", got.Load(), b.N, err)
			case <-time.After(10 * time.Second):
				b.Fatalf("the watcher read %d events of %d in 10 s", got.Load(), i)
			}
		}
		pub.Publish(evs[i%len(evs)])
	}
	if w != nil {
		if err := <-done; err != nil {
			b.Fatalf("watcher: %v", err)
		}
	}
	report()
	b.ReportMetric(float64(dropped.Load())/float64(b.N), "dropped/op")
}
