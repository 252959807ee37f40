#!/usr/bin/env bash
# Elastic membership: a job started with --nnodes 1:2 on two nodes loses node 1 (its agent is SIGKILLed
# while the workers sleep). Node 0 sees the heartbeat stop, restarts on its own as a 1-node job (ranks
# 0-1 of WORLD_SIZE 2, GROUP_WORLD_SIZE 1, restart count 1) and exits 0; nothing of node 1 survives.
# ctest-timeout: 90
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/cluster_lib.sh"
cluster_start 2 80

export DTRAIN_HEARTBEAT_TIMEOUT_MS=1500 DTRAIN_RDZV_LAST_CALL_MS=500
ADDR0=$(ns_addr 0)
# First attempt: sleep (to be interrupted). After a restart: report the world as this attempt sees it.
PROG='if [ "$DTRAIN_RESTART_COUNT" = 0 ]; then exec sleep 60; fi
echo "ELASTIC RANK=$RANK LOCAL_RANK=$LOCAL_RANK WORLD_SIZE=$WORLD_SIZE GROUP_RANK=$GROUP_RANK GROUP_WORLD_SIZE=$GROUP_WORLD_SIZE RESTART=$DTRAIN_RESTART_COUNT"'

for k in 0 1; do
  node_start $k "node$k" --nnodes 1:2 --nproc-per-node 2 --rdzv-endpoint "$ADDR0:29400" --rdzv-id shrink \
    --rdzv-timeout 20 --max-restarts 1 --grace-period 1 -- /bin/bash -c "$PROG"
done
# Both nodes must be in the first round (4 ranks) before node 1 is taken away.
wait_for_log "$TMP/node0.log" 'attempt 0: node 0 of 2' 20 || fail "node 0 never formed a 2-node round"
wait_for_log "$TMP/node1.log" 'attempt 0: node 1 of 2' 20 || fail "node 1 never joined the 2-node round"
sleep 0.5
t0=$(date +%s%N)
kill -KILL "${AGENT_PID[node1]}"
agent_wait node0 20
rc0=$AGENT_RC
dt=$((($(date +%s%N) - t0) / 1000000))
agent_wait node1 5
[[ $AGENT_RC == 137 ]] || fail "node 1's agent exited $AGENT_RC, expected 137 (SIGKILL)"
[[ $rc0 == 0 ]] || fail "node 0's agent exited $rc0; it should have finished the job alone"
for r in 0 1; do
  n=$(grep -c "^\[0:$r\] ELASTIC RANK=$r LOCAL_RANK=$r WORLD_SIZE=2 GROUP_RANK=0 GROUP_WORLD_SIZE=1 RESTART=1$" \
    "$TMP/node0.log")
  [[ $n == 1 ]] || fail "rank $r did not run once as rank $r of 2 on the 1-node round (seen $n times)"
done
grep -q "^\[.*ELASTIC" "$TMP/node1.log" && fail "node 1 ran workers after its agent was killed"
echo "node 0 finished alone ${dt} ms after node 1's agent was killed"
ok "--nnodes 1:2 shrank to one node and finished"
no_workers_left || fail "processes still running in the nodes: $(ns_all_pids | xargs)"
echo PASS
