#!/usr/bin/env bash
# CI for the Node.js example: installs its pinned dependencies with
# `npm ci`, starts a real dccache and snoopd (a token, a unix control
# socket and loopback TCP), and runs example.js over both. It skips, with
# one line saying why, when node or npm is missing; any other failure
# fails it. The processes it started are stopped on the way out.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"

for tool in node npm; do
	if ! command -v "$tool" >/dev/null 2>&1; then
		why="$tool is not installed (the Node.js example needs node 18 or later and npm)"
		echo "SKIP examples/node: $why"
		# Under .ci/run the skip is logged like a Go test's (internal/skip).
		if [ -n "${SNOOPD_SKIP_LOG:-}" ]; then
			printf '%s\t%s\tmissing\t%s\n' "$root/examples/node" run-ci.sh "$why" >>"$SNOOPD_SKIP_LOG"
		fi
		exit 0
	fi
done
echo "node $(node --version), npm $(npm --version)"

# A short path: unix socket paths must stay under about 100 bytes.
work="$(mktemp -d /tmp/snoopd-node.XXXXXX)"
pids=()
cleanup() {
	for pid in "${pids[@]}"; do
		kill "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
	rm -rf "$work"
}
trap cleanup EXIT

(cd "$root" && go build -o "$work/" ./daemon/snoopd ./cmd/dccache ./cmd/dcload)
(cd "$here" && npm ci --no-audit --no-fund)

printf 'node-example-token\n' >"$work/token"
chmod 600 "$work/token"
"$work/dccache" -listen "UNIX:$work/cache.sock" 2>"$work/dccache.log" &
pids+=($!)
"$work/snoopd" --log-format json --token-file "$work/token" \
	--control "unix://$work/snoopd.sock" --control 127.0.0.1:0 --insecure 2>"$work/snoopd.log" &
pids+=($!)

# snoopd logs each control endpoint, TCP port 0 resolved.
tcp=""
for _ in $(seq 300); do
	tcp="$(grep -o '"endpoint":"127\.0\.0\.1:[0-9]*"' "$work/snoopd.log" | head -1 | cut -d'"' -f4 || true)"
	if [ -n "$tcp" ] && [ -S "$work/snoopd.sock" ] && [ -S "$work/cache.sock" ]; then
		break
	fi
	sleep 0.1
done
if [ -z "$tcp" ] || [ ! -S "$work/snoopd.sock" ] || [ ! -S "$work/cache.sock" ]; then
	echo "snoopd or dccache did not start:" >&2
	cat "$work/snoopd.log" "$work/dccache.log" >&2
	exit 1
fi

for address in "unix://$work/snoopd.sock" "$tcp"; do
	echo "-- example.js over $address"
	node "$here/example.js" --address "$address" --token-file "$work/token" \
		--server "UNIX:$work/cache.sock" --dcload "$work/dcload"
done
echo "-- without the token, the example must fail UNAUTHENTICATED"
if out="$(node "$here/example.js" --address "unix://$work/snoopd.sock" --server "UNIX:$work/cache.sock" --dcload "$work/dcload" 2>&1)"; then
	echo "the example succeeded without the token:" >&2
	echo "$out" >&2
	exit 1
fi
case "$out" in
*UNAUTHENTICATED*) echo "$out" ;;
*) echo "want UNAUTHENTICATED, got: $out" >&2; exit 1 ;;
esac
echo "examples/node: ok"
