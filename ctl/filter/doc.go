// Package filter turns snoopctl's filter flags into a
// snoop.v1.WatchEventsRequest and evaluates the same filter on the client.
//
// The daemon filters a live stream; snoopctl read filters saved files. Both
// must agree on what an event filter means, so Match implements the rules
// the API documents for WatchEventsRequest (different fields AND, values of
// one field OR, transaction filters pass only transactions), and New is the
// single place where flag values become request fields. The one filter the
// API cannot express, --errors, is kept beside the request and applied on
// the client in both cases.
package filter
