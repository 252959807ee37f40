#!/usr/bin/env bash
# The host backend's pipelined all-reduce gives a slow rank a smaller piece of every chunk
# (collectives/comm_host_share.c), and the results stay exact while the pieces are uneven. Two ranks
# on one node; rank 1's reduces take six times as long (DTRAIN_HOST_TEST_SLOW_REDUCE=6 spins after
# each, as on a core six times slower at them). Its share must fall well below half (it settles at
# 10-25%), and coll_perf --check (run after the timed iterations, so on the moved cuts) must find
# no wrong element, for f32 sum in place and bf16 avg out of place, at sizes that do not divide
# evenly. With DTRAIN_SHM_BALANCE=0 (set on rank 0 only: rank 0 decides for the segment) the cuts must
# stay even and the results exact too.
# ctest-labels: coll
# ctest-timeout: 180
source "$(dirname "${BASH_SOURCE[0]}")/launch_lib.sh"
CP=$BUILD/bin/coll_perf
[ -x "$CP" ] || fail "coll_perf not built"

# Rank 1 slow at reducing; rank 0 gets $R0_ENV (the balance switch).
SLOW1='[ "$LOCAL_RANK" = 1 ] && export DTRAIN_HOST_TEST_SLOW_REDUCE=6; [ "$LOCAL_RANK" = 0 ] && export $R0_ENV; exec "$0" "$@"'

run() { # NAME R0_ENV ARGS... : coll_perf under the slow rank 1; every size must be exact
  local name=$1 r0=$2 rc=0
  shift 2
  R0_ENV=$r0 DTRAIN_LOG_LEVEL=debug timeout -k 5 120 "$DTRAIN" launch --nproc-per-node 2 -- sh -c "$SLOW1" \
    "$CP" --backend host "$@" -b 24M -e 72M -f 1.73 -n 12 -w 2 --check --timeout-ms 60000 > "$T/$name" 2>&1 || rc=$?
  [ $rc = 0 ] || { tail -n 20 "$T/$name"; fail "$name: coll_perf $* exited $rc"; }
  rows=$(grep -cE "^\[0:0\] +[0-9]+ +[0-9]+ +[a-z0-9]+ +[a-z]+ " "$T/$name" || true)
  good=$(grep -cE "^\[0:0\] +[0-9]+ +[0-9]+ +[a-z0-9]+ +[a-z]+ .* 0$" "$T/$name" || true)
  ((rows == 3 && good == rows)) || { cat "$T/$name"; fail "$name: coll_perf $*: $good of $rows sizes had 0 wrong"; }
}

for args in "--dtype f32 --redop sum --inplace" "--dtype bf16 --redop avg"; do
  name=balanced.${args// /}
  # shellcheck disable=SC2086
  run "$name" DTRAIN_SHM_BALANCE=1 $args
  last=$(grep -o "all-reduce pieces now [0-9.]*% [0-9.]*%" "$T/$name" | tail -n 1)
  [ -n "$last" ] || { tail -n 20 "$T/$name"; fail "$args: rank 0 never logged moved pieces"; }
  share1=$(awk '{gsub("%", "", $5); print int($5)}' <<< "$last")
  ((share1 < 30)) || { grep "pieces now" "$T/$name"; fail "$args: the slow rank 1 still reduces $share1% ($last)"; }
  echo "ok: $args, rank 1 reduces 6x slower: $last, every size exact," \
    "busbw $(awk '/^\[0:0\] +[0-9]/ {printf "%s ", $8}' "$T/$name")GB/s"
done

# shellcheck disable=SC2086
run even DTRAIN_SHM_BALANCE=0 --dtype f32 --redop sum --inplace
! grep "pieces now" "$T/even" || fail "DTRAIN_SHM_BALANCE=0 on rank 0: the pieces still moved"
echo "ok: DTRAIN_SHM_BALANCE=0 on rank 0 keeps even pieces on both ranks, every size exact," \
  "busbw $(awk '/^\[0:0\] +[0-9]/ {printf "%s ", $8}' "$T/even")GB/s"
echo PASS
