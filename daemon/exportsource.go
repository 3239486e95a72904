package daemon

import snoopv1 "github.com/snoopd/snoopd/gen/snoop/v1"

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
