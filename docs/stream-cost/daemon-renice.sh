#!/usr/bin/env bash
# daemon-renice.sh BIN_DIR CONNS SECONDS NICE: whether snoopd's own side of
# watching should yield too. A dccache and a snoopd with one proxy, a
# warm-up dcload run of 2 s; with NICE above 0, every thread of snoopd
# but the two busiest (its event loops) is reniced to NICE. Then one
# dcload run of SECONDS with CONNS persistent connections unwatched and
# one with `snoopctl tail -o json` attached (at its default niceness).
# Prints NICE, both ops/s, the loss in %, the events the tail was told
# were dropped, and how many of snoopd's threads run at each niceness.
# BIN_DIR holds snoopd, snoopctl, dccache and dcload.
set -euo pipefail
bin=$1 conns=$2 secs=$3 rn=$4
. "$(dirname "$0")/proxy.sh"
start_proxy "$bin"
"$bin/dcload" -addr "$paddr" -conns "$conns" -duration 2s -data 50-1024 >/dev/null
if [ "$rn" -gt 0 ]; then
  loops=$(for t in /proc/$spid/task/*; do echo "$(awk '{print $14+$15}' $t/stat) ${t##*/}"; done | sort -rn | head -2 | awk '{print $2}')
  for t in /proc/$spid/task/*; do tid=${t##*/}; echo "$loops" | grep -qx "$tid" || renice -n $rn -p $tid >/dev/null; done
fi
one() { "$bin/dcload" -addr "$paddr" -conns "$conns" -duration "${secs}s" -data 50-1024 -json | grep -o '"ops_per_sec": *[0-9.]*' | cut -d: -f2 | tr -d ' '; }
a=$(one)
"${ctl[@]}" -o json tail >/dev/null 2>$dir/t.err & tp=$!; sleep 0.3
b=$(one)
kill -INT $tp; wait $tp 2>/dev/null || true
nices=$(for t in /proc/$spid/task/*; do awk '{print $19}' $t/stat; done | sort | uniq -c | tr '\n' ' ' | tr -s ' ')
echo "nice $rn: unwatched ${a%.*} ops/s, with a JSON tail ${b%.*} ops/s: loss $(awk -v a=$a -v b=$b 'BEGIN{printf "%.1f", 100*(1-b/a)}')%, $(grep -o '[0-9]* dropped' $dir/t.err); snoopd's threads (count niceness):$nices"
