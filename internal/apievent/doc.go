// Package apievent turns a proxy's events into the control API's Event
// messages: the one conversion behind everything that shows an event in
// the API's form, the daemon's watch streams, history and export, and the
// dc_snoop command, which runs a proxy without a daemon and prints its
// events as snoopctl tail does.
//
// A Builder fills one set of messages in place, event after event, so
// that converting costs no allocation; the result is valid until the next
// Fill.
package apievent
