// Package format renders snoopctl's output: one text line per event in the
// manner of tcpdump, tables of proxies, connections and statistics, and
// the API's protojson for -o json (written by internal/apijson).
//
// Everything here is a pure function of its input and options (time zone,
// colour, the current time for ages), so the text output is checked by
// golden tests and never depends on the terminal it ends up on.
package format
