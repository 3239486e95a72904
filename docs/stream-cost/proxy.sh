# proxy.sh, sourced by the scripts beside it: start_proxy BIN_DIR
# [SNOOPD FLAGS...] starts a dccache on a random loopback port and a snoopd
# (its control socket in a temporary directory) with one proxy, p, in front
# of it. It sets dir (the temporary directory), spid (snoopd's pid), ctl
# (snoopctl aimed at that snoopd, as an array) and paddr (the proxy's
# address), and a trap that kills every pid in pids and removes dir on
# exit; a script adds the processes it starts to pids.
start_proxy() {
	local bin=$1
	shift
	dir=$(mktemp -d /tmp/sc.XXXXXX)
	pids=()
	trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$dir"' EXIT
	local cport=$((20000 + RANDOM % 20000))
	"$bin/dccache" -listen "IP:127.0.0.1:$cport" >/dev/null 2>&1 &
	pids+=($!)
	"$bin/snoopd" --control "UNIX:$dir/c.sock" --log-level error "$@" >/dev/null 2>&1 &
	spid=$!
	pids+=($spid)
	for _ in $(seq 100); do [ -S "$dir/c.sock" ] && break; sleep 0.05; done
	ctl=("$bin/snoopctl" -a "UNIX:$dir/c.sock")
	"${ctl[@]}" add p --listen "IP:127.0.0.1:0" --server "IP:127.0.0.1:$cport" >/dev/null
	paddr=$("${ctl[@]}" -o json show p | grep -o '"listen_address":"[^"]*"' | cut -d'"' -f4)
}
