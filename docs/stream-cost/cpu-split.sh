#!/usr/bin/env bash
# cpu-split.sh BIN_DIR NET ROUNDS SECONDS [DCLOAD FLAGS...]: where snoopd's
# CPU per transaction goes, against the C select loop. A dccache, a snoopd
# with one proxy in front of it and a cselect in front of the same dccache,
# on loopback TCP (NET tcp) or unix sockets (NET unix). Then ROUNDS pairs
# of dcload runs of SECONDS, one through each proxy, nothing watching.
# Prints each run's ops/s and the proxy's user and system CPU per
# transaction (from /proc/PID/stat), then the medians. DCLOAD FLAGS pick
# the scenario: "-conns 1" is snoopbench's serial one, "-conns 1
# -persistent=false" its connection per operation. BIN_DIR holds snoopd,
# snoopctl, dccache, dcload and cselect (go build -o BIN_DIR/
# ./daemon/snoopd ./ctl/snoopctl ./cmd/dccache ./cmd/dcload; cc -O2 -o
# BIN_DIR/cselect cmd/snoopbench/cselect/cselect.c). SNOOPD_FLAGS in the
# environment go to snoopd (SNOOPD_FLAGS="--loops 1"). WAKE=1 also records
# the scheduler's wake-ups and switches (perf, as root) during each run
# and prints the median time from the kernel waking the proxy's thread to
# that thread running: how long the proxy waits for a CPU, apart from the
# CPU it uses.
set -euo pipefail
if [ $# -lt 4 ]; then
	echo "usage: cpu-split.sh BIN_DIR NET ROUNDS SECONDS [DCLOAD FLAGS...]" >&2
	exit 2
fi
bin=$1 net=$2 rounds=$3 secs=$4
shift 4
. "$(dirname "$0")/proxy.sh"
need cpu-split.sh "$bin/snoopd" "$bin/snoopctl" "$bin/dccache" "$bin/dcload" "$bin/cselect"
local_net cpu-split.sh "$net"
server=$(at 0) snoopd_at=$(at 1) cselect_at=$(at 2)
"$bin/dccache" -listen "$server" >/dev/null 2>&1 &
pids+=($!)
# shellcheck disable=SC2086 # SNOOPD_FLAGS is a list of flags
start_snoopd cpu-split.sh ctl "$bin" "$snoopd_at" "$server" ${SNOOPD_FLAGS:-}
spid=$snoopd_pid
"$bin/cselect" -listen "$cselect_at" -server "$server" >"$dir/cselect.out" 2>&1 &
cpid=$!
pids+=($cpid)
for _ in $(seq 100); do grep -q '^ready' "$dir/cselect.out" && break; sleep 0.05; done
if ! grep -q '^ready' "$dir/cselect.out"; then
	echo "cpu-split.sh: cselect did not start: $(cat "$dir/cselect.out")" >&2
	exit 1
fi
# wakeDelay PID: the median microseconds from a sched_wakeup of one of
# PID's threads to its sched_switch in, in $dir/sched.data.
wakeDelay() {
	perf script -i "$dir/sched.data" -F time,event,trace 2>/dev/null |
		awk -v tids="$(ls "/proc/$1/task" | tr '\n' ' ')" '
			BEGIN { split(tids, l, " "); for (i in l) mine[l[i]] = 1 }
			{ t = $1 + 0 }
			$2 == "sched:sched_wakeup:" && match($0, / pid=[0-9]+/) { w[substr($0, RSTART + 5, RLENGTH - 5)] = t }
			$2 == "sched:sched_switch:" && match($0, /next_pid=[0-9]+/) {
				p = substr($0, RSTART + 9, RLENGTH - 9)
				if ((p in w) && (p in mine)) printf "%.1f\n", (t - w[p]) * 1e6
				delete w[p] }' |
		sort -n | awk '{ d[NR] = $1 } END { print NR ? d[int((NR + 1) / 2)] : "-" }'
}
# one PID ADDR NAME: a dcload run through ADDR; prints NAME ops/s,
# PID's user and system CPU ticks over it and (WAKE=1) its median
# wake-up delay.
one() {
	local u0 s0 u1 s1 ops rec= wake=-
	if [ "${WAKE:-}" = 1 ]; then
		perf record -q -a -e sched:sched_wakeup,sched:sched_switch -o "$dir/sched.data" -- sleep $((secs + 1)) >/dev/null 2>&1 &
		rec=$!
		sleep 0.3
	fi
	read -r u0 s0 < <(awk '{print $14, $15}' "/proc/$1/stat")
	ops=$("$bin/dcload" -addr "$2" -duration "${secs}s" -data 50-1024 -json "${dcload[@]}" | grep -o '"ops": *[0-9]*' | tr -dc 0-9)
	read -r u1 s1 < <(awk '{print $14, $15}' "/proc/$1/stat")
	if [ -n "$rec" ]; then
		wait $rec || true
		wake=$(wakeDelay "$1")
	fi
	echo "$3 $ops $((u1 - u0)) $((s1 - s0)) $wake"
}
dcload=("$@")
for _ in $(seq "$rounds"); do
	one $spid "$snoopd_at" snoopd
	one $cpid "$cselect_at" cselect
done | awk -v secs="$secs" -v tck="$(getconf CLK_TCK)" '
	{ n[$1]++; k = n[$1]; ops[$1, k] = $2 / secs; us[$1, k] = $3 * 1e6 / tck / $2; sy[$1, k] = $4 * 1e6 / tck / $2; wk[$1, k] = $5
	  printf "%-8s %8.0f ops/s  user %6.1f us/tx  system %6.1f us/tx", $1, ops[$1, k], us[$1, k], sy[$1, k]
	  if ($5 != "-") printf "  wake-up to running %s us", $5
	  printf "\n" }
	function med(a, name, c,   i, j, v, x) { for (i = 1; i <= c; i++) x[i] = a[name, i]
		for (i = 1; i <= c; i++) for (j = i + 1; j <= c; j++) if (x[j] < x[i]) { v = x[i]; x[i] = x[j]; x[j] = v }
		return (c % 2) ? x[(c + 1) / 2] : (x[c / 2] + x[c / 2 + 1]) / 2 }
	END { for (p in n) { printf "median %-8s %8.0f ops/s  user %6.1f us/tx  system %6.1f us/tx", p, med(ops, p, n[p]), med(us, p, n[p]), med(sy, p, n[p])
		if (wk[p, 1] != "-") printf "  wake-up to running %.1f us", med(wk, p, n[p])
		printf " (%d runs)\n", n[p] } }'
