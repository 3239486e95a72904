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
. "$(dirname "$0")/proxy.sh"
start_proxy "$bin"
"${ctl[@]}" -o json tail >/dev/null 2>&1 & tp=$!; pids+=($tp)
sleep 0.3
strace -c -f -p "$tp" -o "$dir/strace" 2>/dev/null & st=$!
sleep 0.2
ops=$("$bin/dcload" -addr "$paddr" -conns "$conns" -duration "${secs}s" -data 50-1024 -json | grep -o '"ops_per_sec": *[0-9.]*' | cut -d: -f2 | tr -d ' ')
kill -INT $st; wait $st 2>/dev/null || true
awk -v tx="$(awk -v o="$ops" -v s="$secs" 'BEGIN { print o * s }')" '
	$NF ~ /^(futex|read|write|epoll_pwait|nanosleep|sched_yield)$/ { n[$NF] = $4; tot += $4 }
	END { printf "%.0f tx:", tx; for (k in n) printf " %s %.1f", k, 1000 * n[k] / tx; printf " (per 1,000 tx; these six %.1f)\n", 1000 * tot / tx }' "$dir/strace"
