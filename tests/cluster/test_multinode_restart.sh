#!/usr/bin/env bash
# A rank on node 1 crashes once (launch_worker crash-once 3: every rank passes a barrier, then rank 3
# exits 3 on the first attempt). With --max-restarts 1 both nodes restart their workers, every rank runs
# again with DTRAIN_RESTART_COUNT=1, and both agents exit 0. With --max-restarts 0 both agents give up
# and exit with the failed rank's code (3), naming rank 3 as the first failure.
# ctest-timeout: 120
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/cluster_lib.sh"
cluster_start 2 110

ADDR0=$(ns_addr 0)
CODE=3

# run_job TAG PORT MAX_RESTARTS: start both agents (node 1 first) and wait for both.
run_job() {
  local tag=$1 port=$2 mr=$3 k
  for k in 1 0; do
    node_start $k "$tag-node$k" --nnodes 2 --nproc-per-node 2 --rdzv-endpoint "$ADDR0:$port" \
      --rdzv-id "$tag" --rdzv-timeout 30 --max-restarts "$mr" --grace-period 2 -- "$WORKER" crash-once 3 $CODE
  done
  agent_wait "$tag-node0" 60
  RC0=$AGENT_RC
  agent_wait "$tag-node1" 60
  RC1=$AGENT_RC
}

# ---- 1. one restart allowed: the job recovers
run_job restart 29400 1
[[ $RC0 == 0 && $RC1 == 0 ]] || fail "restart: agents exited $RC0 (node 0) and $RC1 (node 1), expected 0 and 0"
grep -q "^\[1:3\] rank 3 crashing on purpose with code $CODE" "$TMP/restart-node1.log" ||
  fail "restart: rank 3 never crashed on attempt 0 (the test did not test anything)"
for r in 0 1 2 3; do
  k=$((r / 2))
  n=$(grep -c "^\[$k:$r\] rank $r done (restart 1)" "$TMP/restart-node$k.log")
  [[ $n == 1 ]] || fail "restart: rank $r on node $k ran $n times with DTRAIN_RESTART_COUNT=1, expected once"
done
# Nothing ran a third time.
grep -q "(restart 2)" "$TMP"/restart-node*.log && fail "restart: a worker ran with restart count 2"
ok "rank 3 crashed once; both nodes restarted (DTRAIN_RESTART_COUNT=1 on ranks 0-3); both agents exited 0"

# ---- 2. no restart allowed: both agents fail with the rank's code
run_job norestart 29401 0
[[ $RC0 == "$CODE" && $RC1 == "$CODE" ]] ||
  fail "norestart: agents exited $RC0 (node 0) and $RC1 (node 1), expected $CODE and $CODE (rank 3's code)"
for k in 0 1; do
  grep -Eq "rank 3.*(code|exit).*$CODE|$CODE.*rank 3" "$TMP/norestart-node$k.log" ||
    fail "norestart: node $k's agent did not report rank 3's exit code $CODE"
  grep -q "(restart 1)" "$TMP/norestart-node$k.log" && fail "norestart: node $k restarted with --max-restarts 0"
done
ok "--max-restarts 0: both agents exited $CODE and named rank 3"
no_workers_left || fail "processes still running in the nodes: $(ns_all_pids | xargs)"
echo PASS
