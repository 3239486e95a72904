package daemon

import (
	snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"
	"github.com/snoopd/snoopd/proxy"
)

// EventFiller renders proxy events in API form for consumers of the hub
// outside this package (the NATS exporter), with the same conversion the
// watch streams use. Like a stream's slots, it reuses one set of messages:
// the Event Fill returns is valid until the next Fill. The zero value is
// ready to use; it is not safe for concurrent use.
type EventFiller struct{ a apiEvent }

// Fill renders e, with captured session data only if includeData is set,
// and stamps it with the daemon's name.
func (f *EventFiller) Fill(e *proxy.Event, daemon string, includeData bool) *snoopv1.Event {
	ev := f.a.fill(e, includeData)
	ev.Daemon = daemon
	return ev
}

// ExportSource reports the exporter's counters for GetDaemonInfo and the
// metrics; *export.Exporter is one.
type ExportSource interface {
	Stats() *snoopv1.ExportStats
}

// SetExport records the exporter whose counters GetDaemonInfo reports.
func (d *Daemon) SetExport(x ExportSource) {
	d.mu.Lock()
	d.export = x
	d.mu.Unlock()
}
