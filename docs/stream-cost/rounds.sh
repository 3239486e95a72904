#!/usr/bin/env bash
# rounds.sh N: interleaved rounds, new (/tmp/x) and old (/tmp/xold) binaries, both modes, 1 and 8 connections.
for i in $(seq $1); do
  for conns in 1 8; do
    for mode in json none text; do
      for b in x xold; do
        echo "round=$i conns=$conns mode=$mode bin=$b $("$(dirname "$0")/live.sh" /tmp/$b /tmp/x $conns 20000 $mode)"
      done
    done
  done
done
