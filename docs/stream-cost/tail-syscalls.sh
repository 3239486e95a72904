#!/usr/bin/env bash
# tail-syscalls.sh BIN_DIR SECONDS CONNS: the system calls a `snoopctl
# tail -o json` (output to /dev/null) makes per 1,000 transactions, by
# `strace -c -f` over one dcload run of SECONDS with CONNS persistent
# connections through a snoopd proxy. Each read, poll or futex wake is a
# wake-up of the tail, so the counts show how often watching interrupts
# it; strace slows the tail, so the counts matter here, not its times.
# BIN_DIR holds snoopd, snoopctl, dccache and dcload, as for tail-loss.sh.
set -euo pipefail
bin=$1 secs=$2 conns=$3
command -v strace >/dev/null || { echo "strace is missing (apt-get install strace)" >&2; exit 1; }
dir=$(mktemp -d /tmp/ts.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT
cport=$((20000 + RANDOM % 20000))
"$bin/dccache" -listen "IP:127.0.0.1:$cport" >/dev/null 2>&1 & pids+=($!)
"$bin/snoopd" --control "UNIX:$dir/c.sock" --log-level error >/dev/null 2>&1 & pids+=($!)
for _ in $(seq 100); do [ -S "$dir/c.sock" ] && break; sleep 0.05; done
ctl=("$bin/snoopctl" -a "UNIX:$dir/c.sock")
"${ctl[@]}" add p --listen "IP:127.0.0.1:0" --server "IP:127.0.0.1:$cport" >/dev/null
paddr=$("${ctl[@]}" -o json show p | grep -o '"listen_address":"[^"]*"' | cut -d'"' -f4)
"${ctl[@]}" -o json tail >/dev/null 2>&1 & tp=$!; pids+=($tp)
sleep 0.3
strace -c -f -p "$tp" -o "$dir/strace" 2>/dev/null & st=$!
sleep 0.2
ops=$("$bin/dcload" -addr "$paddr" -conns "$conns" -duration "${secs}s" -data 50-1024 -json | grep -o '"ops_per_sec": *[0-9.]*' | cut -d: -f2 | tr -d ' ')
kill -INT $st; wait $st 2>/dev/null || true
awk -v tx="$(awk -v o="$ops" -v s="$secs" 'BEGIN { print o * s }')" '
	$NF ~ /^(futex|read|write|epoll_pwait|nanosleep|sched_yield)$/ { n[$NF] = $4; tot += $4 }
	END { printf "%.0f tx:", tx; for (k in n) printf " %s %.1f", k, 1000 * n[k] / tx; printf " (per 1,000 tx; these six %.1f)\n", 1000 * tot / tx }' "$dir/strace"
