#!/usr/bin/env bash
# The host backend's hierarchical all-reduce, reduce-scatter and all-gather on one machine
# (DTRAIN_HOST_FAKE_NODES=k: the ranks count as k nodes of contiguous ranks, so each fake node gets its own
# shared-memory segment and the nodes talk TCP): coll_check BIT-IDENTICAL to the rank-ordered reference on 4
# ranks as 2 nodes, 6 as 3, 8 as 4 and 8 as 2, and on 4 ranks as 4 nodes (one rank per node: the chain
# alone). --big (2x2, 4x1, and 3x2 and 3x1 with small chunks; the other cases would add minutes under ASan,
# not paths) adds all-reduces of 4 and 12 MiB and reduce-scatters / all-gathers of 4 MiB blocks, and small
# chunk settings make them cross many outer chunks, wrap the chain's rings and end ragged. Under sanitizers
# (DTRAIN_TEST_SANITIZED) only 2x2 and 3x2-all keep --big, and 4x1 (whose small sizes stay flat) is left
# out: the MiB sizes cost minutes there and take the paths the small-chunk cases take. The "-all" cases set
# the thresholds to 0 so that all sizes (1 element, counts below the number of local ranks, ...) take the
# hierarchical paths; every case checks in the debug log that the hierarchical (or chained) all-reduce, and
# with several ranks per node the hierarchical reduce-scatter and all-gather, ran on every rank.
# Then a rank that dies mid all-reduce: every other rank fails naming it, within the deadline; and a
# rank that stalls alive: every other rank times out naming it.
# ctest-labels: coll
# ctest-timeout: 600
source "$(dirname "${BASH_SOURCE[0]}")/launch_lib.sh"
CC=$BUILD/bin/coll_check
CF=$BUILD/bin/coll_fault
[ -x "$CC" ] && [ -x "$CF" ] || fail "coll_check / coll_fault not built"

# run_case NAME NPROC FAKE_NODES [coll_check args...]: every rank passes, and the hierarchical (or
# chained) all-reduce ran on every rank (its debug line).
run_case() {
  local name=$1 n=$2 k=$3 rc=0 how
  shift 3
  DTRAIN_HOST_FAKE_NODES=$k DTRAIN_LOG_LEVEL=debug timeout -k 5 200 "$DTRAIN" launch --nproc-per-node "$n" -- \
    "$CC" --backend host --seed $((3000 + n * 10 + k)) --timeout-ms 60000 --max-seconds 190 "$@" \
    > "$T/$name.out" 2> "$T/$name.err" || rc=$?
  [ $rc = 0 ] || { grep -v "dtrain debug" "$T/$name.out" "$T/$name.err" | tail -n 40; fail "$name: coll_check exited $rc"; }
  for ((r = 0; r < n; r++)); do
    grep -Eq "^\[0:$r\] coll_check rank $r: [0-9]+ checks, 0 failed" "$T/$name.out" \
      || fail "$name: rank $r printed no passing summary"
  done
  how=hierarchical
  ((n == k)) && how=chained
  local ops="all-reduce"
  ((n == k)) || ops="all-reduce reduce-scatter all-gather"
  for op in $ops; do
    for ((r = 0; r < n; r++)); do
      grep -Eq "^\[0:$r\] .*host backend: rank $r: first $how $op" "$T/$name.err" \
        || fail "$name: rank $r never took the $how $op"
    done
  done
  grep -q "host backend: hierarchical: $k nodes x $((n / k)) ranks" "$T/$name.err" \
    || fail "$name: the world communicator was not $k nodes x $((n / k)) ranks"
  echo "ok: $name ($k nodes x $((n / k)) ranks): $(sed -n "s/^\[0:0\] coll_check rank 0: //p" "$T/$name.out")"
}

# The hierarchical reduce-scatter is off by default (slower than the flat mesh on one machine):
# every case here turns it on from 16 KiB (the "-all" cases from 0 bytes).
export DTRAIN_HOST_HIER_RS_MIN_BYTES=16384
# Default thresholds and chunks, with the MiB-size cases.
BIG=--big
[ -n "${DTRAIN_TEST_SANITIZED:-}" ] && BIG=
run_case 2x2 4 2 --quick --big
# at the default thresholds only the MiB sizes take the chain: under sanitizers 4x1-all stands for it
[ -n "$BIG" ] && DTRAIN_HOST_CHAIN_MIN_NODES=2 run_case 4x1 4 4 --quick --big
# Everything hierarchical, small chunks: many outer chunks, the chain's rings wrap, ragged ends,
# slices shorter than the alignment or empty.
export DTRAIN_HOST_HIER_MIN_BYTES=0 DTRAIN_HOST_CHAIN_MIN_BYTES=0 DTRAIN_HOST_CHAIN_MIN_NODES=2
export DTRAIN_HOST_HIER_RS_MIN_BYTES=0
export DTRAIN_HOST_HIER_CHUNK_BYTES=65536 DTRAIN_HOST_CHAIN_CHUNK_BYTES=4096
run_case 2x2-all 4 2
run_case 3x2-all 6 3 --quick --big
run_case 4x2-all 8 4 --quick
run_case 2x4-all 8 2 --quick
run_case 4x1-all 4 4 --quick
DTRAIN_HOST_CHAIN_DIRECT=1 run_case 3x1-direct 3 3 --quick $BIG
unset DTRAIN_HOST_HIER_CHUNK_BYTES DTRAIN_HOST_CHAIN_CHUNK_BYTES

# A rank leaves in the middle of a 16 MiB all-reduce (2 fake nodes x 2 ranks): the others must fail
# with a timeout or connection error naming rank 1 within the deadline (coll_fault checks each).
DTRAIN_HOST_FAKE_NODES=2 run_coll_fault exit 4 60 -- peer-exit --timeout-ms 3000
expect_verdicts exit "peer-exit ok: all-reduce #[0-9]+ failed after" 0 2 3
echo "ok: peer-exit, 2 fake nodes x 2 ranks: $(grep -m1 -o "coll_fault rank 2: .*" "$T/exit.out" | cut -c1-300)"
# A rank that stalls (alive) in a hierarchical all-reduce (2 fake nodes x 2 ranks, rank 3 stays away):
# every other rank times out with an error that names rank 3, including rank 0, whose rail peer (rank
# 2) is the one it waits on (its message lists node 1's ranks as the candidates).
DTRAIN_HOST_FAKE_NODES=2 run_coll_fault stall 4 60 -- deadline-large --timeout-ms 1500
expect_verdicts stall "deadline-large ok: timeout after [0-9]+ ms naming rank 3" 0 1 2
echo "ok: stall, 2 fake nodes x 2 ranks: $(grep -m1 -o "coll_fault rank 0: .*" "$T/stall.out" | cut -c1-400)"
echo PASS
