#!/bin/sh
# Where a daemon's memory goes with many idle proxies: snoopd's resident
# memory (VmRSS) after PROXIES proxies are created one CreateProxy call
# at a time (snoopctl add, 16 at once), and after a restart that restores
# the same set from its state dir.
#
#   docs/metrics-cost/creates.sh [PROXIES]      # default 10000
#
# It builds snoopd and snoopctl into a temporary directory; snoopd runs
# with --loops 1 so that 10,000 listeners fit the open-file limit, and
# with GODEBUG=gctrace=1, whose last line gives the heap at the last
# collection: in use when it started, when it ended, and live after it.
set -eu
n=${1:-10000}
repo=$(cd "$(dirname "$0")/../.." && pwd)
tmp=$(mktemp -d)
pid=
trap '[ -n "$pid" ] && kill $pid 2>/dev/null; wait 2>/dev/null; rm -rf "$tmp"' EXIT INT TERM
(cd "$repo" && go build -o "$tmp/" ./daemon/snoopd ./ctl/snoopctl)
mkdir "$tmp/state"
start() {
	rm -f "$tmp/log"
	GODEBUG=gctrace=1 "$tmp/snoopd" --control "UNIX:$tmp/ctl.sock" --state-dir "$tmp/state" --loops 1 2>"$tmp/log" &
	pid=$!
	i=0
	until grep -q "snoopd started" "$tmp/log"; do
		i=$((i + 1))
		if [ $i -gt 1200 ] || ! kill -0 $pid 2>/dev/null; then
			echo "snoopd did not start:" >&2
			cat "$tmp/log" >&2
			exit 1
		fi
		sleep 0.1
	done
}
rss() {
	awk '/^VmRSS:/ {printf "RSS %.0f MB", $2/1024}' /proc/$pid/status
	grep '^gc ' "$tmp/log" | tail -1 | sed 's/.*, \([0-9]*->[0-9]*->[0-9]* MB\), \([0-9]* MB goal\).*/; heap \1, \2/'
}
start
echo "snoopd with no proxy: $(rss)"
seq -f 'p%05g' 0 $((n - 1)) | xargs -P 16 -I NAME \
	"$tmp/snoopctl" -a "unix://$tmp/ctl.sock" add NAME --listen IP:127.0.0.1:0 --server IP:127.0.0.1:1 --spares 0 >/dev/null
sleep 5
echo "after $n creates through the API: $(rss)"
kill $pid
wait $pid || true
start
sleep 5
echo "restarted, the $n restored from the state dir: $(rss)"
