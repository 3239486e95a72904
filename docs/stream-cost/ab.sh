#!/usr/bin/env bash
# ab.sh BIN_A BIN_B NET ROUNDS SECONDS [DCLOAD FLAGS...]: two builds of
# snoopd against each other on the data path, nothing watching. One
# dccache, and a snoopd from each of BIN_A and BIN_B with one proxy in
# front of it, on loopback TCP (NET tcp) or unix sockets (NET unix); then
# ROUNDS pairs of dcload runs of SECONDS, one through each snoopd, the
# order swapped every round. Prints each run's ops/s and that snoopd's CPU
# per transaction (user + system, from /proc/PID/stat), then per build
# the median ops/s and CPU, and the paired ratio of ops/s A/B: its
# median, range and the number of rounds A was ahead. DCLOAD FLAGS pick the
# scenario as in cpu-split.sh: "-conns 1 -persistent=false" is a
# connection per operation. Each BIN holds snoopd and snoopctl; BIN_A also
# dccache and dcload (go build -o BIN/ ./daemon/snoopd ./ctl/snoopctl
# ./cmd/dccache ./cmd/dcload). SNOOPD_FLAGS in the environment go to both
# snoopds.
set -euo pipefail
if [ $# -lt 5 ]; then
	echo "usage: ab.sh BIN_A BIN_B NET ROUNDS SECONDS [DCLOAD FLAGS...]" >&2
	exit 2
fi
binA=$1 binB=$2 net=$3 rounds=$4 secs=$5
shift 5
. "$(dirname "$0")/proxy.sh"
need ab.sh "$binA/snoopd" "$binA/snoopctl" "$binA/dccache" "$binA/dcload" "$binB/snoopd" "$binB/snoopctl"
local_net ab.sh "$net"
server=$(at 0) at_a=$(at 1) at_b=$(at 2)
"$binA/dccache" -listen "$server" >/dev/null 2>&1 &
pids+=($!)
# shellcheck disable=SC2086 # SNOOPD_FLAGS is a list of flags
start_snoopd ab.sh a "$binA" "$at_a" "$server" ${SNOOPD_FLAGS:-}
pid_a=$snoopd_pid
# shellcheck disable=SC2086
start_snoopd ab.sh b "$binB" "$at_b" "$server" ${SNOOPD_FLAGS:-}
pid_b=$snoopd_pid
# one NAME PID ADDR ROUND: a dcload run through ADDR; prints NAME, ROUND,
# its operations and PID's CPU ticks over it.
one() {
	local c0 c1 ops
	c0=$(ticks "$2")
	ops=$("$binA/dcload" -addr "$3" -duration "${secs}s" -data 50-1024 -json "${dcload[@]}" | grep -o '"ops": *[0-9]*' | tr -dc 0-9)
	c1=$(ticks "$2")
	if [ "${ops:-0}" -eq 0 ]; then
		echo "ab.sh: round $4: no operation went through $1 ($3)" >&2
		exit 1
	fi
	echo "$1 $4 $ops $((c1 - c0))"
}
dcload=("$@")
"$binA/dcload" -addr "$at_a" -duration 1s -data 50-1024 "${dcload[@]}" >/dev/null
"$binA/dcload" -addr "$at_b" -duration 1s -data 50-1024 "${dcload[@]}" >/dev/null
for r in $(seq "$rounds"); do
	if [ $((r % 2)) -eq 1 ]; then
		one A "$pid_a" "$at_a" "$r"
		one B "$pid_b" "$at_b" "$r"
	else
		one B "$pid_b" "$at_b" "$r"
		one A "$pid_a" "$at_a" "$r"
	fi
done | awk -v secs="$secs" -v tck="$(getconf CLK_TCK)" '
	{ ops[$1, $2] = $3 / secs; cpu[$1, $2] = $4 * 1e6 / tck / $3; if (($1 == "A" ? "B" : "A", $2) in ops) n = $2
	  printf "round %d %s %8.0f ops/s  cpu %6.1f us/tx\n", $2, $1, ops[$1, $2], cpu[$1, $2] }
	function med(a, c,   i, j, v) { for (i = 1; i <= c; i++) for (j = i + 1; j <= c; j++) if (a[j] < a[i]) { v = a[i]; a[i] = a[j]; a[j] = v }
		return (c % 2) ? a[(c + 1) / 2] : (a[c / 2] + a[c / 2 + 1]) / 2 }
	END {
		if (n == 0) exit 1
		for (i = 1; i <= n; i++) { oa[i] = ops["A", i]; ob[i] = ops["B", i]; ca[i] = cpu["A", i]; cb[i] = cpu["B", i]
			q[i] = ops["A", i] / ops["B", i]; if (q[i] > 1) ahead++ }
		printf "median A %8.0f ops/s  cpu %6.1f us/tx\n", med(oa, n), med(ca, n)
		printf "median B %8.0f ops/s  cpu %6.1f us/tx\n", med(ob, n), med(cb, n)
		lo = hi = q[1]; for (i = 1; i <= n; i++) { if (q[i] < lo) lo = q[i]; if (q[i] > hi) hi = q[i] }
		printf "ops/s A/B, paired: median %.3f, range %.3f-%.3f, A ahead in %d of %d rounds\n", med(q, n), lo, hi, ahead, n }'
