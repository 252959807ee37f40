#!/usr/bin/env bash
# The host backend across nodes (its TCP transport): coll_check --backend host on namespace nodes,
# 2 nodes x 1 rank (flat TCP mesh), 2 nodes x 2 ranks (hierarchical: shared memory inside each node, a
# chain per rail between them) and 3 nodes x 1 rank (the chain of nodes), every result BIT-IDENTICAL to
# the rank-ordered reference; --big adds all-reduces of 4 and 12 MiB (and reduce-scatters, all-gathers
# of 4 MiB blocks) so the hierarchical and chained paths run (checked in the debug log: 2x2 takes the
# hierarchical all-reduce, reduce-scatter (turned on: off by default) and all-gather on every rank).
# Each agent runs in its own IPC and UTS namespace (hostname node<K>), so the ranks of different nodes
# cannot share memory and the backend must take TCP. Then a fault: a rank on node 1 is SIGKILLed
# mid-run; the ranks on node 0 must fail with "closed the connection" at once instead of hanging, and
# both agents must exit.
# ctest-labels: coll
# Then transport faults with coll_fault: a rank that never arrives (timeout naming it) and a rank
# that exits mid-series (the others fail naming it within the deadline).
# ctest-timeout: 300
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/cluster_lib.sh"
CC=$DTRAIN_BUILD/bin/coll_check
[[ -x $CC ]] || { echo "FAIL: $CC is not built" >&2; exit 1; }
cluster_start 3 280

PORT=29600
ADDR0=$(ns_addr 0)

# run_check TAG NNODES NPROC RDZV_ID [coll_check args...]: every agent exits 0 and every rank passes.
run_check() {
  local tag=$1 nn=$2 k=$3 id=$4 r n node t0=$SECONDS
  shift 4
  local args=(--nnodes "$nn" --nproc-per-node "$k" --rdzv-endpoint "$ADDR0:$PORT" --rdzv-timeout 30 --rdzv-id "$id"
    -- "$CC" --backend host --seed 77 --timeout-ms 30000 --max-seconds 120 "$@")
  for ((node = 0; node < nn; node++)); do node_start "$node" "$tag-node$node" "${args[@]}"; done
  local rcs=()
  for ((node = 0; node < nn; node++)); do
    agent_wait "$tag-node$node" 150
    rcs+=("$AGENT_RC")
  done
  for ((node = 0; node < nn; node++)); do
    [[ ${rcs[node]} == 0 ]] || fail "$tag: the agents exited ${rcs[*]} (node 0, 1, ...), expected 0 each"
  done
  n=$((nn * k))
  for ((r = 0; r < n; r++)); do
    grep -Eq "^\[$((r / k)):$r\] coll_check rank $r: [0-9]+ checks, 0 failed \(host, $n ranks" \
      "$TMP/$tag-node$((r / k)).log" || fail "$tag: rank $r printed no passing summary"
  done
  ok "$tag: coll_check --backend host on $nn nodes x $k ranks passed on every rank ($((SECONDS - t0)) s)"
}

DTRAIN_LOG_LEVEL=debug run_check 2x1 2 1 job1 --quick
grep -q "TCP transport" "$TMP/2x1-node0.log" || fail "2x1: the host backend did not report the TCP transport"
grep -q "host backend tcp: rank 1/2 connected" "$TMP/2x1-node1.log" || fail "2x1: rank 1 did not connect over TCP"
# 2 nodes x 2 ranks: hierarchical, and the MiB-size all-reduces took that path on every rank.
DTRAIN_LOG_LEVEL=debug DTRAIN_HOST_HIER_RS_MIN_BYTES=16384 run_check 2x2 2 2 job2 --quick --big
for op in all-reduce reduce-scatter all-gather; do
  for r in 0 1 2 3; do
    grep -Eq "^\[$((r / 2)):$r\] .*host backend: rank $r: first hierarchical $op" "$TMP/2x2-node$((r / 2)).log" \
      || fail "2x2: rank $r never took the hierarchical $op"
  done
done
grep -q "host backend: hierarchical: 2 nodes x 2 ranks" "$TMP/2x2-node1.log" || fail "2x2: not hierarchical"
# 3 nodes x 1 rank: the chain of nodes for the large all-reduces (by default only from 16 nodes).
DTRAIN_LOG_LEVEL=debug DTRAIN_HOST_CHAIN_MIN_NODES=3 run_check 3x1 3 1 job2b --quick --big
for r in 0 1 2; do
  grep -Eq "^\[$r:$r\] .*host backend: rank $r: first chained all-reduce" "$TMP/3x1-node$r.log" \
    || fail "3x1: rank $r never took the chained all-reduce"
done

# Fault: SIGKILL node 1's rank mid-run (full coll_check runs long enough to be caught mid-way).
args=(--nnodes 2 --nproc-per-node 1 --rdzv-endpoint "$ADDR0:$PORT" --rdzv-timeout 30 --rdzv-id job3
  -- "$CC" --backend host --full --seed 5 --timeout-ms 60000 --max-seconds 120)
node_start 0 kill-node0 "${args[@]}"
node_start 1 kill-node1 "${args[@]}"
victim=""
for ((i = 0; i < 400; i++)); do
  [[ -z $victim ]] || break
  for p in $(ns_pids 1); do [[ $(cat "/proc/$p/comm" 2>/dev/null) == coll_check ]] && victim=$p; done
  sleep 0.05
done
[[ -n $victim ]] || fail "fault: coll_check never started on node 1"
sleep 1.5
kill -0 "$victim" 2>/dev/null || fail "fault: coll_check on node 1 finished before it could be killed"
t_kill=$(date +%s%N)
kill -KILL "$victim"
agent_wait kill-node0 20; rc0=$AGENT_RC
agent_wait kill-node1 20; rc1=$AGENT_RC
ms=$((($(date +%s%N) - t_kill) / 1000000))
[[ $rc0 != 124 && $rc1 != 124 ]] || fail "fault: an agent hung after the kill (node 0 rc $rc0, node 1 rc $rc1)"
[[ $rc0 != 0 ]] || fail "fault: node 0's agent exited 0 although its peer rank was killed"
ok "fault: node 1's rank killed mid-run; both agents exited within $ms ms (rc $rc0, $rc1)"
if grep -q "closed the connection" "$TMP/kill-node0.log"; then
  ok "fault: rank 0 reported: $(grep -m1 -o 'rank 1 ([^)]*) closed the connection' "$TMP/kill-node0.log")"
else
  echo "note: rank 0 was stopped by its agent before it reported the closed connection"
fi

# Transport-level faults (coll_fault, 2 nodes x 2 ranks), where the agents stay out of the way:
# deadline: rank 3 (node 1) never joins an all-reduce: ranks 0-2 get DTR_ERR_TIMEOUT naming rank 3;
# peer-exit: rank 1 _exit(0)s between large (16 MiB: hierarchical) all-reduces: the others fail naming
# rank 1 within the deadline (rank 2 hears of it from rank 3, its node's rank on rank 1's rail).
CF=$DTRAIN_BUILD/bin/coll_fault
run_fault() { # TAG MODE RDZV_ID
  local tag=$1 mode=$2 id=$3 rc0 rc1 t0=$SECONDS
  local args=(--nnodes 2 --nproc-per-node 2 --rdzv-endpoint "$ADDR0:$PORT" --rdzv-timeout 30 --rdzv-id "$id"
    --max-restarts 0 -- "$CF" "$mode" --timeout-ms 1500)
  node_start 0 "$tag-node0" "${args[@]}"
  node_start 1 "$tag-node1" "${args[@]}"
  agent_wait "$tag-node0" 60; rc0=$AGENT_RC
  agent_wait "$tag-node1" 60; rc1=$AGENT_RC
  [[ $rc0 == 0 && $rc1 == 0 ]] || fail "$tag: agents exited $rc0 (node 0) and $rc1 (node 1), expected 0 and 0"
  grep -hE "coll_fault rank [0-9]+: .*FAILED" "$TMP/$tag-node0.log" "$TMP/$tag-node1.log" &&
    fail "$tag: a rank failed its check"
  ok "$tag ($((SECONDS - t0)) s): $(grep -h -m1 -o "coll_fault rank 0: .*" "$TMP/$tag-node0.log" | cut -c1-300)"
}
run_fault deadline deadline job4
for r in 0 1 2; do
  grep -Eq "^\[$((r / 2)):$r\] coll_fault rank $r: deadline ok: timeout after [0-9]+ ms naming rank 3" \
    "$TMP/deadline-node$((r / 2)).log" || fail "deadline: rank $r gave no verdict naming rank 3"
done
run_fault peer-exit peer-exit job5
for r in 0 2 3; do
  grep -Eq "^\[$((r / 2)):$r\] coll_fault rank $r: peer-exit ok: all-reduce #[0-9]+ failed after" \
    "$TMP/peer-exit-node$((r / 2)).log" || fail "peer-exit: rank $r gave no verdict"
done

no_workers_left || fail "processes still running in the nodes: $(ns_all_pids | xargs)"
echo PASS
