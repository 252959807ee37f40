#!/usr/bin/env bash
# bench/coll_perf itself: every --op with --check on the host backend (3 ranks, shared memory, and 2
# ranks over TCP), sizes from 8 bytes to 1 MiB. The benchmark's reference (which rank's data belongs
# where) must agree with the backend's result, or its figures would be timing a wrong answer.
# ctest-labels: coll
# ctest-timeout: 180
source "$(dirname "${BASH_SOURCE[0]}")/launch_lib.sh"
CP=$BUILD/bin/coll_perf
[ -x "$CP" ] || fail "coll_perf not built"

for op in allreduce reducescatter allgather broadcast reduce alltoall sendrecv; do
  for how in shm-3 tcp-2; do
    n=${how#*-}
    env_=()
    [ "${how%-*}" = tcp ] && env_=(DTRAIN_HOST_TRANSPORT=tcp)
    rc=0
    env "${env_[@]}" timeout -k 5 60 "$DTRAIN" launch --nproc-per-node "$n" -- "$CP" --op "$op" --backend host \
      -b 8 -e 1M -f 32 -n 2 -w 1 --check --timeout-ms 20000 > "$T/$op.$how" 2>&1 || rc=$?
    [ $rc = 0 ] || { tail -n 20 "$T/$op.$how"; fail "coll_perf --op $op ($how) exited $rc"; }
    # one row per size (8 B is below one element per rank for reducescatter/allgather/alltoall)
    rows=$(grep -cE "^\[0:0\] +[0-9]+ +[0-9]+ +[a-z0-9]+ +[a-z]+ " "$T/$op.$how" || true)
    good=$(grep -cE "^\[0:0\] +[0-9]+ +[0-9]+ +[a-z0-9]+ +[a-z]+ .* 0$" "$T/$op.$how" || true)
    ((rows >= 3 && good == rows)) || { cat "$T/$op.$how"; fail "coll_perf --op $op ($how): $good of $rows sizes had 0 wrong"; }
  done
  echo "ok: coll_perf --op $op --check, 3 ranks on shared memory and 2 over TCP"
done
echo PASS
