#!/usr/bin/env bash
# tail-loss.sh BIN_DIR ROUNDS SECONDS CONNS [SNOOPD FLAGS...]: what one
# `snoopctl tail -o json` costs the traffic. A dccache, a snoopd with one
# proxy in front of it, then ROUNDS pairs of dcload runs of SECONDS with
# CONNS persistent connections: one unwatched, one with a JSON tail
# attached (output to /dev/null). Prints the median ops/s of each, the
# median loss, the tail's CPU per transaction of the watched runs,
# snoopd's CPU per transaction unwatched and watched, and how many events
# the tails were told the daemon dropped for them. BIN_DIR holds snoopd,
# snoopctl, dccache and dcload (go build -o BIN_DIR/ ./daemon/snoopd
# ./ctl/snoopctl ./cmd/dccache ./cmd/dcload).
# Extra arguments go to snoopd (--loops 1, ...). TAILENV=GOMAXPROCS=1 runs
# the tail with that environment, TAILARGS=--nice=0 with those arguments,
# TAILWRAP="chrt -b 0" under that command.
set -euo pipefail
bin=$1 rounds=$2 secs=$3 conns=$4
shift 4
. "$(dirname "$0")/proxy.sh"
start_proxy "$bin" "$@"
one() { "$bin/dcload" -addr "$paddr" -conns "$conns" -duration "${secs}s" -data 50-1024 -json | grep -o '"ops_per_sec": *[0-9.]*' | cut -d: -f2 | tr -d ' '; }
for _ in $(seq "$rounds"); do
	u0=$(ticks $spid)
	a=$(one)
	u1=$(ticks $spid)
	${TAILWRAP:-} env ${TAILENV:-} "${ctl[@]}" -o json tail ${TAILARGS:-} >/dev/null 2>"$dir/tail.err" & tp=$!
	sleep 0.3
	s0=$(ticks $spid)
	b=$(one)
	s1=$(ticks $spid); tc=$(ticks $tp)
	kill -INT $tp; wait $tp 2>/dev/null || true
	# The tail's summary: "N events shown, M dropped, over ..."
	dr=$(sed -n 's/.* \([0-9][0-9]*\) dropped.*/\1/p' "$dir/tail.err" | head -1)
	echo "$a $b $tc $((s1 - s0)) $((u1 - u0)) ${dr:-?}"
done | awk -v secs="$secs" -v tck="$(getconf CLK_TCK)" '
	{ a[NR]=$1; b[NR]=$2; l[NR]=1-$2/$1; t[NR]=$3*1e6/tck/($2*secs); d[NR]=$4*1e6/tck/($2*secs); u[NR]=$5*1e6/tck/($1*secs); dropped += $6 }
	function med(x, n,   i, j, v) { for (i=1;i<=n;i++) for (j=i+1;j<=n;j++) if (x[j]<x[i]) { v=x[i]; x[i]=x[j]; x[j]=v } return (n%2) ? x[(n+1)/2] : (x[n/2]+x[n/2+1])/2 }
	END { n=NR; printf "unwatched %.0f ops/s, with a JSON tail %.0f ops/s: loss %.1f%%; tail CPU %.2f us/tx; snoopd CPU %.2f us/tx unwatched, %.2f watched (medians of %d rounds); the tails were told of %d dropped events\n", med(a,n), med(b,n), 100*med(l,n), med(t,n), med(u,n), med(d,n), n, dropped }'
