package export_test

import (
	"testing"
	"time"

	"github.com/snoopd/snoopd/daemon/export"
	"github.com/snoopd/snoopd/daemon/hub"
	"github.com/snoopd/snoopd/distcache"
	"github.com/snoopd/snoopd/internal/natstest"
)

// BenchmarkExport is the exporter's whole path per event: the hub hands
// the event over, it is rendered, encoded and published, and JetStream
// (in this process, storing to a temporary directory) acknowledges it.
// Events go in rounds the queue holds, so none is dropped.
func BenchmarkExport(b *testing.B) {
	for _, c := range []struct {
		name   string
		stream string
		format string
	}{
		{"jetstream/protobuf", "SNOOP", export.FormatProtobuf},
		{"jetstream/json", "SNOOP", export.FormatJSON},
		{"core/protobuf", "", export.FormatProtobuf},
	} {
		b.Run(c.name, func(b *testing.B) {
			srv := natstest.Start(b)
			h := hub.New(hub.Config{Interval: time.Millisecond, History: 8192})
			defer h.Close()
			x, err := export.Start(h, export.Config{Servers: []string{srv.URL()}, Daemon: "bench", Stream: c.stream, Format: c.format, QueueSize: 8192})
			if err != nil {
				b.Fatal(err)
			}
			defer x.Close(5 * time.Second)
			ev := txEvent("sessions", 1, distcache.OpGet)
			const round = 2048
			b.ReportAllocs()
			b.ResetTimer()
			for done := 0; done < b.N; {
				n := min(round, b.N-done)
				for i := 0; i < n; i++ {
					h.Publish(ev)
				}
				done += n
				for j := 0; j < 100000; j++ {
					s := x.Stats()
					if s.GetPublished()+s.GetDropped() == uint64(done) {
						break
					}
					time.Sleep(50 * time.Microsecond)
				}
			}
			b.StopTimer()
			if s := x.Stats(); s.GetDropped() != 0 {
				b.Fatalf("dropped %d", s.GetDropped())
			}
		})
	}
}
