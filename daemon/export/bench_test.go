package export_test

import (
	"syscall"
	"testing"
	"time"

	"github.com/snoopd/snoopd/daemon"
	"github.com/snoopd/snoopd/daemon/export"
	"github.com/snoopd/snoopd/daemon/hub"
	"github.com/snoopd/snoopd/distcache"
	"github.com/snoopd/snoopd/internal/natstest"
)

// BenchmarkExport is the exporter's whole path per event: the hub hands
// the event over, it is rendered, encoded and published, and JetStream
// (in this process, storing to a temporary directory) acknowledges it.
// Events go in rounds the queue holds, so none is dropped. The NATS
// server's own work is in the figure; docs/fleet.md has what the real
// binaries cost.
func BenchmarkExport(b *testing.B) {
	for _, c := range []struct {
		name   string
		stream string
		format string
		batch  int
	}{
		{"jetstream/protobuf/batched", "SNOOP", export.FormatProtobuf, 0},
		{"jetstream/protobuf/per-event", "SNOOP", export.FormatProtobuf, 1},
		{"jetstream/json/batched", "SNOOP", export.FormatJSON, 0},
		{"jetstream/json/per-event", "SNOOP", export.FormatJSON, 1},
		{"core/protobuf/batched", "", export.FormatProtobuf, 0},
		{"core/protobuf/per-event", "", export.FormatProtobuf, 1},
	} {
		b.Run(c.name, func(b *testing.B) {
			srv := natstest.Start(b)
			h := hub.New(hub.Config{Interval: time.Millisecond, History: 16384, NewEncoder: daemon.NewEventEncoder})
			defer h.Close()
			x, err := export.Start(h, export.Config{Servers: []string{srv.URL()}, Daemon: "bench", Stream: c.stream, Format: c.format,
				Batch: c.batch})
			if err != nil {
				b.Fatal(err)
			}
			defer x.Close(5 * time.Second)
			ev := txEvent("sessions", 1, distcache.OpGet)
			// Rounds of whole default batches, so that none waits for
			// the flush interval; one event a message, rounds within
			// the acknowledgements JetStream may owe.
			round := 8 * export.DefaultBatch
			if c.batch == 1 {
				round = 2048
			}
			b.ReportAllocs()
			b.ResetTimer()
			cpu0 := processCPU(b)
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
			// The wall time per event is mostly this loop waiting for
			// the hub's hand-over and the acknowledgements; the CPU the
			// process spent (exporter, hub and NATS server together) is
			// the cost.
			b.ReportMetric(float64(processCPU(b)-cpu0)/float64(b.N), "cpu-ns/event")
			if s := x.Stats(); s.GetDropped() != 0 {
				b.Fatalf("dropped %d", s.GetDropped())
			}
		})
	}
}

// processCPU is the user and system time this process has used.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
