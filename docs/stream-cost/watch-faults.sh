#!/usr/bin/env bash
# watch-faults.sh BIN_DIR CONNS SECONDS: snoopd's page faults and TLB
# flushes (perf stat, minor-faults and tlb:tlb_flush) over a dcload run of
# SECONDS with CONNS persistent connections, with a `snoopctl tail -o json`
# attached just before it (a fresh watch: the hub's log starts empty).
# A warm-up run of 2 s comes first, unwatched. Needs perf. BIN_DIR holds
# snoopd, snoopctl, dccache and dcload.
set -euo pipefail
bin=$1 conns=$2 secs=$3
dir=$(mktemp -d /tmp/pf.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT
cport=$((20000 + RANDOM % 20000))
"$bin/dccache" -listen "IP:127.0.0.1:$cport" >/dev/null 2>&1 & pids+=($!)
"$bin/snoopd" --control "UNIX:$dir/c.sock" --log-level error >/dev/null 2>&1 & spid=$!; pids+=($spid)
for _ in $(seq 100); do [ -S "$dir/c.sock" ] && break; sleep 0.05; done
ctl=("$bin/snoopctl" -a "UNIX:$dir/c.sock")
"${ctl[@]}" add p --listen "IP:127.0.0.1:0" --server "IP:127.0.0.1:$cport" >/dev/null
paddr=$("${ctl[@]}" -o json show p | grep -o '"listen_address":"[^"]*"' | cut -d'"' -f4)
"$bin/dcload" -addr "$paddr" -conns "$conns" -duration 2s -data 50-1024 >/dev/null
"${ctl[@]}" -o json tail >/dev/null 2>&1 & tp=$!; pids+=($tp); sleep 0.3
perf stat -x, -e minor-faults,tlb:tlb_flush -p $spid -o $dir/stat -- sleep $secs &
sp=$!
ops=$("$bin/dcload" -addr "$paddr" -conns "$conns" -duration "${secs}s" -data 50-1024 -json | grep -o '"ops_per_sec": *[0-9.]*' | cut -d: -f2 | tr -d ' ')
wait $sp
echo "ops/s ${ops%.*}; snoopd: $(grep -v '^#' $dir/stat | grep -v '^$' | awk -F, '{printf "%s %s; ", $1, $3}')"
