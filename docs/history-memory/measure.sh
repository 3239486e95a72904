#!/usr/bin/env bash
# measure.sh BIN_DIR [CLIENTS] [EVENTS]
# What snoopd's memory does while many clients read a huge history at
# once: snoopd --history EVENTS, a proxy with --capture-data, EVENTS
# transactions of ~1 KB sessions through it (dcload), then CLIENTS
# concurrent `snoopctl tail --history 2147483648 --data -o json` (the
# most snoopctl asks for; the daemon treats any request above the ring
# alike). Prints snoopd's VmRSS before, at its peak while the reads run,
# and 0, 10, 30, 60, 150 and 240 s after they end (the Go runtime collects
# at least every 2 minutes); Go heap figures from /metrics
# beside each, with what snoopd allocated since it started.
# AFTER="10 30" samples at other times after the reads (seconds, rising).
# BIN_DIR holds snoopd, snoopctl, dccache and dcload:
#   go build -o /tmp/hm/bin/ ./daemon/snoopd ./ctl/snoopctl ./cmd/dccache ./cmd/dcload
set -euo pipefail
bin=$1 clients=${2:-8} events=${3:-100000}
dir=$(mktemp -d /tmp/hm.XXXXXX)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$dir"
}
trap cleanup EXIT
rss() { awk '/^VmRSS:/ {printf "%.1f", $2/1024}' "/proc/$spid/status"; }
heap() {
	curl -s --unix-socket "$dir/m.sock" http://snoopd/metrics |
		awk '/^go_memstats_heap_inuse_bytes / {i=$2} /^go_memstats_heap_released_bytes / {r=$2} /^go_memstats_heap_idle_bytes / {d=$2}
		/^go_memstats_alloc_bytes_total / {a=$2}
		END {printf "heap in use %.1f MB, idle %.1f MB (released to the OS %.1f MB); allocated since start %.0f MB", i/1048576, d/1048576, r/1048576, a/1048576}'
}
ctl() { "$bin/snoopctl" -a "UNIX:$dir/c.sock" "$@"; }
cport=$((20000 + RANDOM % 20000))
"$bin/dccache" -listen "IP:127.0.0.1:$cport" >/dev/null 2>&1 &
pids+=($!)
"$bin/snoopd" --control "UNIX:$dir/c.sock" --metrics-listen "UNIX:$dir/m.sock" --log-level error --history "$events" >"$dir/snoopd.log" 2>&1 &
spid=$!
pids+=($spid)
for _ in $(seq 100); do [ -S "$dir/c.sock" ] && break; sleep 0.05; done
ctl add p --listen "IP:127.0.0.1:0" --server "IP:127.0.0.1:$cport" --capture-data >/dev/null
paddr=$(ctl -o json show p | grep -o '"listen_address":"[^"]*"' | cut -d'"' -f4)
echo "snoopd at start: RSS $(rss) MB; $(heap)"
"$bin/dcload" -addr "$paddr" -conns 4 -ops "$events" -data 1024 >/dev/null
sleep 2
echo "history full ($events transactions, 1 KB sessions): RSS $(rss) MB; $(heap)"
tails=()
for i in $(seq "$clients"); do
	"$bin/snoopctl" -a "UNIX:$dir/c.sock" -o json tail --history 2147483648 --data >"$dir/tail.$i" 2>"$dir/tail.$i.err" &
	tails+=($!)
	pids+=($!)
done
peak=0 peakheap=0
start=$(date +%s.%N)
for _ in $(seq 3000); do # at most 5 minutes
	r=$(rss)
	awk -v r="$r" -v p="$peak" 'BEGIN {exit !(r > p)}' && peak=$r
	h=$(curl -s --unix-socket "$dir/m.sock" http://snoopd/metrics | awk '/^go_memstats_heap_inuse_bytes / {printf "%.1f", $2/1048576}')
	awk -v r="$h" -v p="$peakheap" 'BEGIN {exit !(r > p)}' && peakheap=$h
	done=0
	# The history's end is the last line once it is sent (no load runs).
	for i in $(seq "$clients"); do tail -n 1 "$dir/tail.$i" 2>/dev/null | grep -q '"history_done":true' && done=$((done + 1)); done
	[ "$done" -eq "$clients" ] && break
	sleep 0.1
done
took=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN {printf "%.1f", e-s}')
echo "$clients reads of the whole history with data, $done of them finished in $took s: peak RSS $peak MB, peak heap in use $peakheap MB"
for t in "${tails[@]}"; do kill -INT "$t" 2>/dev/null || true; done
for t in "${tails[@]}"; do wait "$t" 2>/dev/null || true; done
echo "client 1 got $(grep -c '"connection_id"' "$dir/tail.1" || true) events ($(du -m "$dir/tail.1" | cut -f1) MB of JSON)"
rm -f "$dir"/tail.*
echo "after the reads, 0 s: RSS $(rss) MB; $(heap)"
for w in ${AFTER:-10 30 60 150 240}; do
	sleep $((w - ${last:-0}))
	last=$w
	echo "after the reads, $w s: RSS $(rss) MB; $(heap)"
done
