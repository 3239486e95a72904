#!/usr/bin/env bash
# live.sh BIN_DIR LOAD_BIN_DIR CONNS OPS [MODE]
# Measures snoopd's and an attached `snoopctl tail` process's CPU per
# transaction (utime+stime from /proc/PID/stat) while dcload runs a
# bounded number of operations through one proxy.
# MODE: json (tail -o json), text (tail), none (no watcher).
set -euo pipefail
bin=$1 load=$2 conns=$3 ops=$4 mode=${5:-json}
dir=$(mktemp -d /tmp/sc.XXXXXX)
tck=$(getconf CLK_TCK)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$dir"
}
trap cleanup EXIT
cpu() { awk -v t="$tck" '{print ($14+$15)*1000000/t}' "/proc/$1/stat"; }
cport=$((10000 + RANDOM % 20000)) # below the ephemeral ports, which a load may hold in TIME_WAIT
"$load/dccache" -listen "IP:127.0.0.1:$cport" >/dev/null 2>&1 &
pids+=($!)
"$bin/snoopd" --control "UNIX:$dir/c.sock" --log-level error >/dev/null 2>&1 &
spid=$!
pids+=($spid)
for _ in $(seq 100); do [ -S "$dir/c.sock" ] && break; sleep 0.05; done
"$bin/snoopctl" -a "UNIX:$dir/c.sock" add p --listen "IP:127.0.0.1:0" --server "IP:127.0.0.1:$cport" >/dev/null
paddr=$("$bin/snoopctl" -a "UNIX:$dir/c.sock" -o json show p | grep -o '"listen_address":"[^"]*"' | cut -d'"' -f4)
tpid=""
case $mode in
json) "$bin/snoopctl" -a "UNIX:$dir/c.sock" tail -o json >/dev/null 2>"$dir/tail.err" & tpid=$! ;;
text) "$bin/snoopctl" -a "UNIX:$dir/c.sock" tail >/dev/null 2>"$dir/tail.err" & tpid=$! ;;
esac
[ -n "$tpid" ] && pids+=($tpid)
sleep 0.5
# Warm up the proxy (spares, first connections) before counting.
"$load/dcload" -addr "$paddr" -conns "$conns" -ops 500 -data 50-1024 >/dev/null
sleep 0.3
s0=$(cpu $spid)
t0=0
[ -n "$tpid" ] && t0=$(cpu $tpid)
start=$(date +%s.%N)
"$load/dcload" -addr "$paddr" -conns "$conns" -ops "$ops" -data 50-1024 -json >"$dir/load.json"
end=$(date +%s.%N)
sleep 0.5 # let the watcher drain
s1=$(cpu $spid)
t1=0
[ -n "$tpid" ] && t1=$(cpu $tpid)
dropped=-
if [ -n "$tpid" ]; then
	kill -INT "$tpid"
	wait "$tpid" 2>/dev/null || true
	dropped=$(awk '/events shown/ {print $4}' "$dir/tail.err")
fi
awk -v s="$s0" -v S="$s1" -v t="$t0" -v T="$t1" -v n="$ops" -v a="$start" -v b="$end" -v d="$dropped" \
	'BEGIN { printf "snoopd_us_per_tx=%.1f tail_us_per_tx=%.1f ops_per_s=%.0f dropped=%s\n", (S-s)/n, (T-t)/n, n/(b-a), d }'
