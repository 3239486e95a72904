// Package apievent turns a proxy's events into the control API's Event
// messages: the one conversion behind everything that shows an event in
// the API's form, the daemon's watch streams, history and export, and the
// dc_snoop command, which runs a proxy without a daemon and prints its
// events as snoopctl tail does.
//
// A Builder fills one set of messages in place, event after event, so
// that converting costs no allocation; the result is valid until the next
// Fill. A WireEncoder writes the same Event's protobuf bytes straight
// from the proxy's event, for the daemon's hub, which encodes every event
// while anyone watches; the tests hold it byte for byte to filling and
// encoding with apiwire.
package apievent
