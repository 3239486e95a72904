#!/usr/bin/env bash
# replay.sh BIN_DIR LOAD_BIN_DIR N MODE: N transactions into snoopd's history, then
# `snoopctl tail [-o json] --events tx --history N --count N`; prints snoopd's and
# the tail process's CPU per event while the history streams (nothing else runs).
set -euo pipefail
bin=$1 load=$2 n=$3 mode=$4
dir=$(mktemp -d /tmp/rp.XXXXXX)
tck=$(getconf CLK_TCK)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT
cpu() { awk -v t="$tck" '{print ($14+$15)*1000000/t}' "/proc/$1/stat"; }
cport=$((10000 + RANDOM % 20000)) # below the ephemeral ports, which a load may hold in TIME_WAIT
"$load/dccache" -listen "IP:127.0.0.1:$cport" >/dev/null 2>&1 & pids+=($!)
"$bin/snoopd" --control "UNIX:$dir/c.sock" --log-level error --history $((n + 1000)) --watch-queue $((n + 1000)) >/dev/null 2>&1 &
spid=$!; pids+=($spid)
for _ in $(seq 100); do [ -S "$dir/c.sock" ] && break; sleep 0.05; done
"$bin/snoopctl" -a "UNIX:$dir/c.sock" add p --listen "IP:127.0.0.1:0" --server "IP:127.0.0.1:$cport" >/dev/null
paddr=$("$bin/snoopctl" -a "UNIX:$dir/c.sock" -o json show p | grep -o '"listen_address":"[^"]*"' | cut -d'"' -f4)
"$load/dcload" -addr "$paddr" -conns 1 -ops "$n" -data 50-1024 >/dev/null
sleep 0.3
o=()
[ "$mode" = json ] && o=(-o json)
# tail's own start-up and exit, to subtract
/usr/bin/time -f "%U %S" -o "$dir/t0" "$bin/snoopctl" -a "UNIX:$dir/c.sock" "${o[@]}" tail --events tx --history 1 --count 1 >/dev/null 2>&1
s0=$(cpu $spid)
/usr/bin/time -f "%U %S" -o "$dir/t1" "$bin/snoopctl" -a "UNIX:$dir/c.sock" "${o[@]}" tail --events tx --history "$n" --count "$n" >/dev/null 2>"$dir/err"
s1=$(cpu $spid)
shown=$(awk '/events shown/ {print $1}' "$dir/err")
read u0 y0 <"$dir/t0"; read u1 y1 <"$dir/t1"
awk -v s="$s0" -v S="$s1" -v a="$u0" -v b="$y0" -v c="$u1" -v d="$y1" -v n="$n" -v shown="$shown" \
  'BEGIN { printf "events=%s snoopd_us_per_event=%.2f tail_us_per_event=%.2f\n", shown, (S-s)/n, ((c+d)-(a+b))*1e6/n }'
