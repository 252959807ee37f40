#!/usr/bin/env bash
# Two namespace nodes, one `dtrain launch` agent each, a 2x2 job that meets at node 0's store: every
# global rank 0-3 runs exactly once with the torchrun environment (RANK, LOCAL_RANK, GROUP_RANK,
# WORLD_SIZE=4, MASTER_ADDR = node 0's address...), node ranks do not depend on which agent arrives
# first, workers on both nodes pass a barrier through the store, and both agents exit 0.
# ctest-timeout: 150
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/cluster_lib.sh"
cluster_start 2 140

PORT=29400
ADDR0=$(ns_addr 0)
COMMON=(--nnodes 2 --nproc-per-node 2 --rdzv-endpoint "$ADDR0:$PORT" --rdzv-timeout 30)

# run_job TAG FIRST RDZV_ID worker-args...: start the agent of node FIRST, then (a moment later) the
# other one; both must exit 0 within 60 s.
run_job() {
  local tag=$1 first=$2 id=$3 second rc0 rc1
  shift 3
  second=$((1 - first))
  agent_start "$first" "$tag-node$first" "${COMMON[@]}" --rdzv-id "$id" -- "$WORKER" "$@"
  sleep 0.3 # the late agent must still get the same node rank
  T_SECOND=$(date +%s%N)
  agent_start "$second" "$tag-node$second" "${COMMON[@]}" --rdzv-id "$id" -- "$WORKER" "$@"
  agent_wait "$tag-node0" 60; rc0=$AGENT_RC
  agent_wait "$tag-node1" 60; rc1=$AGENT_RC
  [[ $rc0 == 0 && $rc1 == 0 ]] || fail "$tag: agents exited $rc0 (node 0) and $rc1 (node 1), expected 0 and 0"
}

# check_env TAG RDZV_ID: the environment each worker printed.
check_env() {
  local tag=$1 id=$2 k r lr table v port0 store
  table="$TMP/$tag.env"
  worker_env "$TMP/$tag-node0.log" "$TMP/$tag-node1.log" >"$table"
  # Every rank exactly once, on the node that owns it.
  for r in 0 1 2 3; do
    k=$((r / 2))
    [[ $(awk -v r=$r '$3 == "RANK" && $4 == r' "$table" | wc -l) == 1 ]] ||
      fail "$tag: rank $r reported $(awk -v r=$r '$3 == "RANK" && $4 == r' "$table" | wc -l) times, expected once"
    [[ $(worker_env "$TMP/$tag-node$k.log" | awk -v r=$r '$3 == "RANK" && $4 == r' | wc -l) == 1 ]] ||
      fail "$tag: rank $r did not run on node $k (node 0 hosts the store, so it is group rank 0)"
  done
  [[ $(awk '$3 == "RANK"' "$table" | wc -l) == 4 ]] || fail "$tag: expected 4 workers, saw $(awk '$3 == "RANK"' "$table" | wc -l)"
  port0=$(env_get "$table" 0 MASTER_PORT)
  [[ $port0 =~ ^[0-9]+$ ]] || fail "$tag: rank 0 has no numeric MASTER_PORT ('$port0')"
  [[ $port0 != "$PORT" && $port0 != 29500 ]] || fail "$tag: MASTER_PORT is $port0 (the store's or the fixed 29500)"
  for r in 0 1 2 3; do
    k=$((r / 2))
    lr=$((r % 2))
    expect() {
      v=$(env_get "$table" $r "$1")
      [[ $v == "$2" ]] || fail "$tag: rank $r has $1='$v', expected '$2'"
    }
    expect LOCAL_RANK $lr
    expect GROUP_RANK $k
    expect ROLE_RANK $r
    expect WORLD_SIZE 4
    expect LOCAL_WORLD_SIZE 2
    expect GROUP_WORLD_SIZE 2
    expect MASTER_ADDR "$ADDR0"
    expect MASTER_PORT "$port0"
    expect TORCHELASTIC_RUN_ID "$id"
    expect TORCHELASTIC_RESTART_COUNT 0
    expect DTRAIN_RESTART_COUNT 0
    expect TORCHELASTIC_MAX_RESTARTS 0
    expect TORCHELASTIC_USE_AGENT_STORE False
    expect ROLE_WORLD_SIZE 4
    expect DTRAIN_RUN_ID "$id"
    expect DTRAIN_NODE_RANK $k
    expect DTRAIN_NNODES 2
    store=$(env_get "$table" $r DTRAIN_STORE)
    [[ ${store%:*} == "$ADDR0" ]] || fail "$tag: rank $r has DTRAIN_STORE='$store', expected host $ADDR0"
  done
  # Each output line is prefixed [<node rank>:<global rank>] of the worker that printed it.
  v=$(awk '$3 == "RANK" && ($2 != $4 || $1 != int($4 / 2))' "$table")
  [[ -z $v ]] || fail "$tag: output prefix does not match [GROUP_RANK:RANK]: $v"
  # The token reaches the workers but never the logs.
  for r in 0 1 2 3; do
    v=$(env_get "$table" $r DTRAIN_JOB_TOKEN)
    [[ $v == "<set>" ]] || fail "$tag: rank $r has no DTRAIN_JOB_TOKEN"
  done
  grep -qF -- "$DTRAIN_JOB_TOKEN" "$TMP/$tag-node0.log" "$TMP/$tag-node1.log" && fail "$tag: the job token appears in a log"
}

# 1. node 1 arrives first, node 0 (the store's host) 0.3 s later.
run_job late0 1 job1 env
check_env late0 job1
ok "2x2 job, node 1 first: ranks 0-3 once each, environment as torchrun's"

# 2. node 0 first: the same node ranks.
run_job late1 0 job2 env
check_env late1 job2
ok "2x2 job, node 0 first: same node ranks"

# 3. workers on both nodes meet in a barrier through the agent's store; each stamps the time it passed.
run_job barrier 1 job3 timestamp "$TMP/stamps"
[[ $(awk '{print $1}' "$TMP/stamps" | sort -n | xargs) == "0 1 2 3" ]] ||
  fail "barrier: expected one stamp from each of ranks 0-3, got: $(xargs <"$TMP/stamps")"
# Node 0 started 0.3 s after node 1: nobody may pass the barrier before node 0's agent even started.
awk -v t="$T_SECOND" '$3 < t {bad = 1} END {exit bad}' "$TMP/stamps" ||
  fail "barrier: a rank passed the barrier before the second node started ($(xargs <"$TMP/stamps"); start $T_SECOND)"
ok "cross-node barrier through the store"

no_workers_left || fail "processes still running in the nodes: $(ns_all_pids | xargs)"
echo PASS
