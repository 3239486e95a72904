# proxy.sh, sourced by the scripts beside it.
#
# need SCRIPT FILE...: exits 2, naming the first FILE that is not an
# executable, for SCRIPT, whose top comment says how to build them.
need() {
	local script=$1
	shift
	for f; do
		if [ ! -x "$f" ]; then
			echo "$script: no $f (see the comment at the top for how to build it)" >&2
			exit 2
		fi
	done
}

# local_net SCRIPT NET: a temporary directory (dir), the pids to kill on
# exit (pids, a script adds the processes it starts; a trap kills them and
# removes dir) and addresses on NET, tcp or unix (anything else exits 2
# for SCRIPT): at N prints the N-th (N below 16), UNIX:$dir/N.sock or a
# loopback TCP port N above a random base.
local_net() {
	case $2 in
	tcp | unix) ;;
	*) echo "$1: NET is tcp or unix, not $2" >&2; exit 2 ;;
	esac
	# The ports sit below the ephemeral range: a load of a connection per
	# operation leaves thousands of its ports in TIME_WAIT, where a
	# listener could not bind.
	local lo
	lo=$(awk '{print $1}' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
	net=$2 net_base=$((10000 + RANDOM % (lo - 10016)))
	dir=$(mktemp -d /tmp/sc.XXXXXX)
	pids=()
	trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$dir"' EXIT
}
at() {
	if [ "$net" = unix ]; then
		echo "UNIX:$dir/$1.sock"
	else
		echo "IP:127.0.0.1:$((net_base + $1))"
	fi
}

# ticks PID: the CPU (user + system) PID has used so far, in clock ticks
# (getconf CLK_TCK a second).
ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }

# start_snoopd SCRIPT NAME BIN LISTEN SERVER [SNOOPD FLAGS...]: a snoopd
# from BIN with its control socket at $dir/NAME.ctl (after local_net) and
# one proxy, p, from LISTEN to SERVER. It sets snoopd_pid. A snoopd that
# does not start (a bad flag) exits 1 for SCRIPT, with what it printed.
start_snoopd() {
	local script=$1 name=$2 bin=$3 listen=$4 server=$5
	shift 5
	"$bin/snoopd" --control "UNIX:$dir/$name.ctl" --log-level error "$@" >"$dir/$name.log" 2>&1 &
	snoopd_pid=$!
	pids+=($snoopd_pid)
	for _ in $(seq 100); do
		[ -S "$dir/$name.ctl" ] && break
		kill -0 "$snoopd_pid" 2>/dev/null || break
		sleep 0.05
	done
	if [ ! -S "$dir/$name.ctl" ]; then
		echo "$script: snoopd $* did not start:" >&2
		cat "$dir/$name.log" >&2
		exit 1
	fi
	"$bin/snoopctl" -a "UNIX:$dir/$name.ctl" add p --listen "$listen" --server "$server" >/dev/null
}

# start_proxy BIN_DIR [SNOOPD FLAGS...] starts a dccache on a random
# loopback port and a snoopd (its control socket in a temporary directory)
# with one proxy, p, in front of it. It sets what local_net sets, spid
# (snoopd's pid), ctl (snoopctl aimed at that snoopd, as an array) and
# paddr (the proxy's address).
start_proxy() {
	local bin=$1
	shift
	local_net start_proxy tcp
	local cport=$net_base
	"$bin/dccache" -listen "IP:127.0.0.1:$cport" >/dev/null 2>&1 &
	pids+=($!)
	start_snoopd start_proxy c "$bin" "IP:127.0.0.1:0" "IP:127.0.0.1:$cport" "$@"
	spid=$snoopd_pid
	ctl=("$bin/snoopctl" -a "UNIX:$dir/c.ctl")
	paddr=$("${ctl[@]}" -o json show p | grep -o '"listen_address":"[^"]*"' | cut -d'"' -f4)
}
