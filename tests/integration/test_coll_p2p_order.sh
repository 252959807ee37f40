#!/usr/bin/env bash
# p2p messages and collectives interleaved (coll_p2p_order): each rank sends a message, all-reduces,
# then receives its neighbour's message, 24 rounds, on every host transport: shared memory, TCP on one
# node (DTRAIN_HOST_TRANSPORT=tcp) and the hierarchical path on two fake nodes. Every all-reduce result
# and every message must be exact (on a transport where a pair's p2p and collective data shared one
# stream, the all-reduce reads the message's bytes).
# ctest-labels: coll
# ctest-timeout: 240
source "$(dirname "${BASH_SOURCE[0]}")/launch_lib.sh"
H=$BUILD/bin/coll_p2p_order
[ -x "$H" ] || fail "coll_p2p_order not built"

run() { # NAME NPROC [ENV=VALUE...]
  local name=$1 n=$2 rc=0
  shift 2
  env "$@" timeout -k 5 90 "$DTRAIN" launch --nproc-per-node "$n" --max-restarts 0 -- "$H" \
    > "$T/$name.out" 2> "$T/$name.err" || rc=$?
  [ $rc = 0 ] || { cat "$T/$name.out"; tail -n 30 "$T/$name.err"; fail "$name: launch exited $rc"; }
  for ((r = 0; r < n; r++)); do
    grep -Eq "^\[0:$r\] coll_p2p_order rank $r: 24 rounds ok" "$T/$name.out" \
      || { cat "$T/$name.out"; fail "$name: rank $r gave no passing verdict"; }
  done
  echo "ok: $name"
}
run shm-2 2
run shm-3 3
run tcp-2 2 DTRAIN_HOST_TRANSPORT=tcp
run tcp-3 3 DTRAIN_HOST_TRANSPORT=tcp
run hier-4 4 DTRAIN_HOST_FAKE_NODES=2 DTRAIN_HOST_HIER_MIN_BYTES=0 DTRAIN_LOG_LEVEL=debug
grep -Eq "host backend: rank [0-9]: first hierarchical all-reduce" "$T/hier-4.err" || fail "hier-4: the hierarchical all-reduce never ran"
echo PASS
