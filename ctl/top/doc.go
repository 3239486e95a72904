// Package top is snoopctl top: it polls proxies' cumulative counters and
// latency histograms from a Source, turns two polls into an interval's
// rates and percentiles (a Frame), and shows frames as a live full-screen
// view (bubbletea) or as plain tables and JSON lines (batch mode).
//
// A Source is the one seam between top and where the numbers come from:
// the daemon's control API (APISource), several daemons' APIs at once
// (FleetSource, for -a naming several), or the events a fleet exports
// counted as its daemons would count them (EventCounter, fed from NATS by
// snoopctl top --from). A fleet's snapshots name each proxy's daemon; its
// rows then carry a DAEMON column and are keyed DAEMON/NAME.
package top
