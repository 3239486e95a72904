#!/usr/bin/env bash
# watch-interval.sh BIN NET ROUNDS SECONDS INTERVALS [DCLOAD FLAGS...]:
# what snoopd --watch-interval costs a watched proxy. One dccache, and for
# each of the comma-separated INTERVALS (such as 10ms,50ms) a snoopd with
# that --watch-interval, one proxy in front of the dccache on NET (tcp or
# unix) and a `snoopctl tail -o json` attached (output to /dev/null).
# Then ROUNDS rounds, each going through the snoopds in an order that
# turns every round: SECONDS with no traffic, then a dcload run of
# SECONDS with DCLOAD FLAGS ("-conns 1 -rate 100" for a quiet proxy,
# "-conns 8" for a busy one). An interval of "none" is a snoopd with
# nothing watching it, the baseline: each watched run's loss is then
# measured against the unwatched run of the same round. Prints every
# run, then per interval the medians: the CPU snoopd and the tail used a
# second while idle, the ops/s, the loss against the unwatched snoopd,
# and the CPU each used a transaction under load (user + system, from
# /proc/PID/stat); and how many events the tails were told they lost.
# BIN holds snoopd, snoopctl, dccache and dcload (go build -o BIN/
# ./daemon/snoopd ./ctl/snoopctl ./cmd/dccache ./cmd/dcload).
set -euo pipefail
if [ $# -lt 5 ]; then
	echo "usage: watch-interval.sh BIN NET ROUNDS SECONDS INTERVALS [DCLOAD FLAGS...]" >&2
	exit 2
fi
bin=$1 net=$2 rounds=$3 secs=$4
IFS=, read -ra ivs <<<"$5"
shift 5
. "$(dirname "$0")/proxy.sh"
need watch-interval.sh "$bin/snoopd" "$bin/snoopctl" "$bin/dccache" "$bin/dcload"
local_net watch-interval.sh "$net"
server=$(at 0)
"$bin/dccache" -listen "$server" >/dev/null 2>&1 &
pids+=($!)
n=${#ivs[@]}
spid=() tpid=()
for k in $(seq "$n"); do
	iv=${ivs[k - 1]}
	flags=(--watch-interval "$iv")
	[ "$iv" = none ] && flags=()
	start_snoopd watch-interval.sh "$k" "$bin" "$(at "$k")" "$server" "${flags[@]}"
	spid[k]=$snoopd_pid
	tpid[k]=
	[ "$iv" = none ] && continue
	"$bin/snoopctl" -a "UNIX:$dir/$k.ctl" -o json tail >/dev/null 2>"$dir/$k.tail" &
	pids+=($!)
	tpid[k]=$!
done
sleep 0.5
# tcpu K: the CPU of snoopd K's tail so far, 0 without one.
tcpu() { if [ -n "${tpid[$1]}" ]; then ticks "${tpid[$1]}"; else echo 0; fi; }
tck=$(getconf CLK_TCK)
for r in $(seq "$rounds"); do
	for j in $(seq 0 $((n - 1))); do
		k=$(((r + j) % n + 1))
		s0=$(ticks "${spid[k]}") t0=$(tcpu "$k")
		sleep "$secs"
		s1=$(ticks "${spid[k]}") t1=$(tcpu "$k")
		ops=$("$bin/dcload" -addr "$(at "$k")" -duration "${secs}s" -json "$@" | grep -o '"ops_per_sec": *[0-9.]*' | cut -d: -f2 | tr -d ' ')
		s2=$(ticks "${spid[k]}") t2=$(tcpu "$k")
		echo "$r ${ivs[k - 1]} $((s1 - s0)) $((t1 - t0)) ${ops:-0} $((s2 - s1)) $((t2 - t1))"
	done
done | awk -v secs="$secs" -v tck="$tck" '
	function med(a, iv, n,   i, j, v, x, m) { m=0; for (i=1;i<=n;i++) if ((iv,i) in a) x[++m]=a[iv,i]; for (i=1;i<=m;i++) for (j=i+1;j<=m;j++) if (x[j]<x[i]) { v=x[i]; x[i]=x[j]; x[j]=v } if (m==0) return "-"; return (m%2) ? x[(m+1)/2] : (x[m/2]+x[m/2+1])/2 }
	function f(v, fmt) { return v == "-" ? "-" : sprintf(fmt, v) }
	{ iv=$2; if (!(iv in seen)) { seen[iv]=1; order[++m]=iv }
	  c=++cnt[iv]; rnd[iv,c]=$1; is[iv,c]=$3*1000/tck/secs; o[iv,c]=$5; ops[$1,iv]=$5
	  if (iv != "none") it[iv,c]=$4*1000/tck/secs
	  if ($5 > 0) { ls[iv,c]=$6*1e6/tck/($5*secs); if (iv != "none") lt[iv,c]=$7*1e6/tck/($5*secs) }
	  printf "round %d, %s: idle snoopd %.1f ms/s, tail %s ms/s; %.0f ops/s, snoopd %s us/tx, tail %s us/tx\n", $1, iv, is[iv,c], ((iv,c) in it) ? sprintf("%.1f", it[iv,c]) : "-", $5, ((iv,c) in ls) ? sprintf("%.2f", ls[iv,c]) : "-", ((iv,c) in lt) ? sprintf("%.2f", lt[iv,c]) : "-" }
	END {
		for (q=1;q<=m;q++) { iv=order[q]; for (c=1;c<=cnt[iv];c++) { r=rnd[iv,c]; if (iv != "none" && ((r,"none") in ops) && ops[r,"none"] > 0) loss[iv,c]=100*(1-o[iv,c]/ops[r,"none"]) } }
		for (q=1;q<=m;q++) { iv=order[q]; k=cnt[iv]
			printf "%s, medians of %d rounds: idle snoopd %s ms/s, tail %s ms/s; %s ops/s, loss %s, snoopd %s us/tx, tail %s us/tx\n", iv, k, f(med(is,iv,k), "%.1f"), f(med(it,iv,k), "%.1f"), f(med(o,iv,k), "%.0f"), f(med(loss,iv,k), "%.1f%%"), f(med(ls,iv,k), "%.2f"), f(med(lt,iv,k), "%.2f") } }'
for k in $(seq "$n"); do [ -n "${tpid[k]}" ] && kill -INT "${tpid[k]}"; done
for k in $(seq "$n"); do [ -n "${tpid[k]}" ] && { wait "${tpid[k]}" 2>/dev/null || true; }; done
for k in $(seq "$n"); do
	[ -n "${tpid[k]}" ] || continue
	# The tail's summary: "N events shown, M dropped, over ..."
	dr=$(sed -n 's/.* \([0-9][0-9]*\) dropped.*/\1/p' "$dir/$k.tail" | head -1)
	echo "--watch-interval ${ivs[k - 1]}: the tail was told of ${dr:-?} dropped events"
done
