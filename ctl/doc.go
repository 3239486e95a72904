// Package ctl is snoopctl: the commands that manage snoopd's proxies and
// watch, save and re-read the transactions they see.
//
// It talks to the daemon only through the generated gRPC client
// (gen/snoop/v1), over the default unix socket or a TCP address with TLS;
// env.dial is the one place a connection is made, and env.rpcError the
// one place gRPC status codes become plain words. A command that asks the
// daemon something goes through unary, which dials, bounds the call by
// --timeout and words a failure with rpcError; only event streams and
// commands that keep one connection for many calls (remove, stats, top)
// dial and bound their calls themselves. Commands are built on urfave/cli
// v2, one file per verb in the manner of containerd's ctr. Run is the
// whole program; snoopctl's main only calls it.
//
// Rendering lives in ctl/format, event filters (evaluated by the daemon
// for live streams and by snoopctl for saved files) in ctl/filter, capture
// files in ctl/capture and the statistics of snoopctl stats in ctl/stats.
package ctl
