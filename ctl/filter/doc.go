// Package filter turns snoopctl's filter flags into a watch request for the
// daemon and into the same matcher the daemon runs (package match), so
// that read filters saved events exactly as tail would have had them
// filtered live.
package filter
