#!/usr/bin/env bash
# watch-faults.sh BIN_DIR CONNS SECONDS: snoopd's page faults and TLB
# flushes (perf stat, minor-faults and tlb:tlb_flush) over a dcload run of
# SECONDS with CONNS persistent connections, with a `snoopctl tail -o json`
# attached just before it (a fresh watch: the hub's log starts empty).
# A warm-up run of 2 s comes first, unwatched. Needs perf. BIN_DIR holds
# snoopd, snoopctl, dccache and dcload.
set -euo pipefail
bin=$1 conns=$2 secs=$3
. "$(dirname "$0")/proxy.sh"
start_proxy "$bin"
"$bin/dcload" -addr "$paddr" -conns "$conns" -duration 2s -data 50-1024 >/dev/null
"${ctl[@]}" -o json tail >/dev/null 2>&1 & tp=$!; pids+=($tp); sleep 0.3
perf stat -x, -e minor-faults,tlb:tlb_flush -p $spid -o $dir/stat -- sleep $secs &
sp=$!
ops=$("$bin/dcload" -addr "$paddr" -conns "$conns" -duration "${secs}s" -data 50-1024 -json | grep -o '"ops_per_sec": *[0-9.]*' | cut -d: -f2 | tr -d ' ')
wait $sp
echo "ops/s ${ops%.*}; snoopd: $(grep -v '^#' $dir/stat | grep -v '^$' | awk -F, '{printf "%s %s; ", $1, $3}')"
