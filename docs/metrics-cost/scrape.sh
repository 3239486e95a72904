#!/bin/sh
# What a /metrics scrape costs snoopd with many proxies: snoopd's resident
# memory (VmRSS) before and after three scrapes, each scrape's time and
# body size, and the RSS after four concurrent scrapes.
#
#   docs/metrics-cost/scrape.sh [PROXIES] [snoopd flags...]
#   docs/metrics-cost/scrape.sh 3000 --metrics-histograms=ops
#
# It builds snoopd into a temporary directory, starts it with --config
# holding PROXIES proxies (default 3000) listening on 127.0.0.1 with
# port 0, their server unreachable (no traffic: every counter at zero),
# and scrapes its unix metrics socket with curl, asking for gzip as
# Prometheus does when GZIP=1. Needs curl and an open-file limit above
# twice PROXIES (ulimit -n; a proxy's listener is opened once per event
# loop, so with 10,000 proxies add --loops 1).
set -eu
n=${1:-3000}
[ $# -gt 0 ] && shift
repo=$(cd "$(dirname "$0")/../.." && pwd)
tmp=$(mktemp -d)
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$tmp"' EXIT INT TERM
(cd "$repo" && go build -o "$tmp/" ./daemon/snoopd)
{
	printf '{"proxies": ['
	i=0
	while [ $i -lt "$n" ]; do
		[ $i -gt 0 ] && printf ','
		printf '{"name":"p%05d","listen":"IP:127.0.0.1:0","server":"IP:127.0.0.1:1","spare_connections":0}' $i
		i=$((i + 1))
	done
	printf ']}\n'
} >"$tmp/config.json"
"$tmp/snoopd" --control "UNIX:$tmp/ctl.sock" --metrics-listen "UNIX:$tmp/metrics.sock" \
	--config "$tmp/config.json" "$@" 2>"$tmp/log" &
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
sleep 1
rss() { awk '/^VmRSS:/ {printf "%.0f MB", $2/1024}' /proc/$pid/status; }
compressed=
[ "${GZIP:-0}" = 1 ] && compressed=--compressed
scrape() {
	curl -sS $compressed --unix-socket "$tmp/metrics.sock" -o /dev/null \
		-w '%{time_total} s, %{size_download} bytes\n' http://snoopd/metrics
}
echo "proxies: $n  flags: $*"
echo "RSS before: $(rss)"
for k in 1 2 3; do
	echo "scrape $k: $(scrape)"
done
echo "RSS after 3 scrapes: $(rss)"
curls=
for k in 1 2 3 4; do
	scrape >/dev/null &
	curls="$curls $!"
done
wait $curls
echo "RSS after 4 concurrent scrapes: $(rss)"
