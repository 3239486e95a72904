// Package faultsuite is snoopd's fault suite: tests that start the
// real binaries (snoopd, snoopctl, dccache, dcload and dc_snoop, built
// once into a temporary directory) and drive real faults at them, each
// scenario recording a figure of what happened.
//
// The scenarios:
//
//   - the backend killed (SIGKILL) and restarted on the same address in
//     the middle of a load through a proxy;
//   - snoopd SIGKILLed during a churn of creates and deletes, and
//     restarted on the same --state-dir;
//   - silent and slow backends against a proxy's response timeout;
//   - a backend that closes every connection at once (the spares back off);
//   - idle and half-open clients against the idle timeout;
//   - snoopd under a low open-file limit with more clients than fit;
//   - a state file holding a proxy whose server is its own listen address;
//   - event streams that never read while a load runs;
//   - a watch filtering the whole history through an expensive CEL filter
//     while single GETs go through two proxies on the same event loop;
//   - that filter live beside an unfiltered watch under a 3,000/s load;
//   - a latency fault with that filter on one proxy, and the p99 of
//     another proxy on the same loop;
//   - snoopctl tail -o json of 20,000 serial transactions beside a
//     competing CPU and allocation load (the test binary started again
//     as a burner, bounded in time);
//   - two daemons whose proxies lead to each other (a loop neither can
//     see): their descriptors with no client, GETs through the loop, the
//     condition named, another proxy beside it;
//   - several clients reading a whole history of 4 KiB sessions with
//     their data at once (what snoopd allocates against what it sends);
//   - two daemons on one state dir;
//   - /metrics scraped three times in a row and four times at once with
//     3,000 proxies, snoopd's resident memory bounded;
//   - the state dir on a full disk (a 64 KiB tmpfs; root only);
//   - GETs of many clients held by a stall of an hour, released by
//     snoopctl fault clear; a fault's --for end read back the same after
//     snoopd restarts on its state dir;
//   - dc_snoop between dccache and dcload on unix sockets, as dc_snoop(1)'s
//     example runs it: its log against dcload's report, text and JSON, its
//     summary on SIGTERM, and its exit statuses for help and bad input;
//   - a live tap (snoopctl add --tap lo) beside dccache on 127.0.0.1
//     while dcload runs straight at the cache (root only): snoopctl tail
//     -o json of the tap against dcload's count, show, the tap's
//     counters in /metrics, a fault refused, remove;
//   - a pcapng written by snoopctl save from a dcload run through a
//     proxy (TCP clients and unix socket clients), read by tshark with
//     contrib/wireshark/distcache.lua and held to snoopctl tail -o json;
//     and a client's traffic through a proxy, cut inside headers and
//     frames and ended by a corrupt frame, recorded segment by segment
//     and held the same way, the rule included (both skipped where
//     tshark is missing);
//   - the NATS export's server going away is driven with the fleet's tests
//     (ctl/snoopctl TestFleetNATSRestartUnderLoad: two real snoopd
//     exporting under load while the NATS server stops and comes back).
//
// Run it with the rest of the tests (the short mode, a couple of minutes
// on two cores):
//
//	go test ./faultsuite
//	go test -v -run TestBackendKilledMidLoad ./faultsuite   # one scenario, with its figure
//
// The long mode runs each scenario longer, samples snoopd's resident
// memory, open descriptors (/proc/PID/fd) and goroutines (go_goroutines
// from its /metrics) over time, and rewrites docs/reliability.md with a
// table per scenario and the command that reproduced it:
//
//	SNOOPD_FAULTS_LONG=1 go test -v -timeout 30m ./faultsuite
//	go test -v -timeout 30m ./faultsuite -long
//
// Everything runs on loopback and unix sockets in temporary directories;
// every loop is bounded in count and time; every process the suite starts
// runs in a process group of its own, killed when its test ends. Times
// are figures, reported; the few bounds on them are containment bounds
// (a GET under half a second where a freeze lasts tens of seconds, a p99
// within three times its own baseline, and never under 5 ms), far from
// both the normal figure and the failure they catch.
package faultsuite
