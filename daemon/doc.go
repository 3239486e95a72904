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
//
// The registry (registry.go) owns the map of proxies and its lock, and a
// change is the one way to alter it: reserve the names, bind, record and
// save in one step that is undone if the save fails, then release. Its
// invariants are written at the top of that file. Around it: daemon.go
// starts and stops the daemon; restore.go brings back the saved proxies;
// proxies.go (create, get, list, update), drain.go (delete) and apply.go
// (declared sets) are the changes the API asks for; entry.go is one
// proxy of the registry and how it is made and described; state.go saves
// the registry in groups; addrindex.go files the proxies by address, and
// loopgraph.go walks that index for the proxy-loop checks of loop.go.
//
// A registered name holds a runner (runner.go): a proxy in the traffic's
// path, or a tap beside it (tap.go: a capture on a network interface by
// package tap, fed into one proxy.Observer for the tap's life). Both are
// created, changed, saved, restored, described, counted and watched the
// same way; a tap listens nowhere, so no address check or loop check
// counts it, and takes no faults.
package daemon
