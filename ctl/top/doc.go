// Package top is snoopctl top: it polls proxies' cumulative counters and
// latency histograms from a Source, turns two polls into an interval's
// rates and percentiles (a Frame), and shows frames as a live full-screen
// view (bubbletea) or as plain tables and JSON lines (batch mode).
//
// A Source is the one seam between top and where the numbers come from:
// the daemon's control API today (APISource), other sources (a fleet)
// later, with nothing else to change.
package top
