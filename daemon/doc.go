// Package daemon is the heart of snoopd: the registry of named proxies
// (their specs, faults and labels, and the checks that refuse a proxy
// loop), persistence of the proxies across restarts in the state dir, the
// watch streams over the event hub (package daemon/hub) with their
// filters, and the gRPC services of the control API (package snoop.v1).
//
// Daemon is the in-process core; the services are thin adapters over it,
// so most tests call the core directly. Errors are plain Go values with
// context (FieldError, ErrNotFound, ...) until they reach the API
// boundary, where Status turns each into its gRPC code in one place. No
// lock of the registry is held while a proxy binds, drains or stops, so a
// wedged proxy cannot freeze the API.
package daemon
