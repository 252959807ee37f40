#!/usr/bin/env bash
# Losing the store's host does not end a job that has nodes and restarts left (issue 19). Three
# namespace nodes, each agent in its own IPC and UTS namespace, --nnodes 2:3; node 0's agent hosts the
# store and mirrors its rendezvous state to node 1's standby.
#  1. kill -9 of node 0's agent: nodes 1 and 2 move to the standby (epoch 1), rejoin as a 2-node job
#     and finish; their workers find the store on node 1.
#  2. node 0's link goes down: nodes 1 and 2 (the majority) move to the standby and finish; node 0, cut
#     off, stops with 82 (a minority) instead of waiting out --rdzv-timeout or forming a job of its own.
#  3. SIGSTOP of node 0's agent, SIGCONT once the others have moved on: the old primary is fenced at
#     its first change (its standby was promoted), so it never runs the old round again; its agent goes
#     to the new store and rejoins the job as a new member, and all three finish.
# ctest-timeout: 240
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/cluster_lib.sh"
cluster_start 3 230

export DTRAIN_HEARTBEAT_TIMEOUT_MS=1500 DTRAIN_RDZV_LAST_CALL_MS=500
ADDR0=$(ns_addr 0)
ADDR1=$(ns_addr 1)
# Every worker says which store and world it got, then reports N progress steps 50 ms apart.
prog() {
  echo "echo \"WORKER RANK=\$RANK WORLD_SIZE=\$WORLD_SIZE GROUP_WORLD_SIZE=\$GROUP_WORLD_SIZE STORE=\$DTRAIN_STORE RESTART=\$DTRAIN_RESTART_COUNT\"; exec $WORKER progress $1 50"
}

# start_job TAG PORT STEPS: the three agents (node 0 first: it hosts the store), then wait until every
# node runs its attempt-0 worker.
start_job() {
  local tag=$1 port=$2 k
  for k in 0 1 2; do
    node_start $k "$tag-node$k" --nnodes 2:3 --nproc-per-node 1 --rdzv-endpoint "$ADDR0:$port" --rdzv-id "$tag" \
      --rdzv-timeout 60 --max-restarts 4 --grace-period 1 -- /bin/bash -c "$(prog "$3")"
    [[ $k == 0 ]] && { ns_wait_port 0 "$ADDR0" "$port" 10 || fail "$tag: node 0's store never listened"; }
  done
  for k in 0 1 2; do
    wait_for_log "$TMP/$tag-node$k.log" "WORKER RANK=$k WORLD_SIZE=3 .*RESTART=0" 30 ||
      fail "$tag: node $k never ran its first worker"
  done
  wait_for_log "$TMP/$tag-node0.log" "mirrored to node 1's standby" 5 || fail "$tag: node 0 named no standby"
}

# since_ms T0: milliseconds since the date +%s%N stamp T0
since_ms() { echo $((($(date +%s%N) - $1) / 1000000)); }

# ---- 1. kill -9 of the store host's agent
start_job kill 29610 120
t0=$(date +%s%N)
kill -KILL "${AGENT_PID[kill-node0]}"
wait_for_log "$TMP/kill-node1.log" "the store is the standby at $ADDR1:[0-9]* now \(epoch 1, on this node;" 15 ||
  fail "kill: node 1 did not take over the store"
wait_for_log "$TMP/kill-node2.log" "the store is the standby at $ADDR1:[0-9]* now \(epoch 1;" 15 ||
  fail "kill: node 2 did not move to the standby"
t_over=$(since_ms "$t0")
for k in 1 2; do
  wait_for_log "$TMP/kill-node$k.log" "WORKER .*WORLD_SIZE=2 GROUP_WORLD_SIZE=2 STORE=$ADDR1:[0-9]* RESTART=1" 20 ||
    fail "kill: node $k runs no worker of the 2-node job on the new store"
done
t_back=$(since_ms "$t0")
for k in 1 2; do
  agent_wait "kill-node$k" 60
  [[ $AGENT_RC == 0 ]] || fail "kill: node $k's agent exited $AGENT_RC, want 0 (the job should finish on two nodes)"
done
agent_wait kill-node0 5
[[ $AGENT_RC == 137 ]] || fail "kill: node 0's agent exited $AGENT_RC, want 137"
echo "kill -9 of the store host: both survivors on the standby after ${t_over} ms, workers back after ${t_back} ms"
ok "the store host killed: nodes 1 and 2 went on with the standby (epoch 1) as a 2-node job and finished"

# ---- 2. the store host's link goes down
start_job cut 29620 160
t0=$(date +%s%N)
link_down 0
wait_for_log "$TMP/cut-node2.log" "the store is the standby at $ADDR1:[0-9]* now" 15 ||
  fail "cut: node 2 did not move to the standby"
t_over=$(since_ms "$t0")
for k in 1 2; do
  wait_for_log "$TMP/cut-node$k.log" "WORKER .*WORLD_SIZE=2 .*STORE=$ADDR1:[0-9]* RESTART=1" 20 ||
    fail "cut: node $k runs no worker of the 2-node job"
done
agent_wait cut-node0 40
rc0=$AGENT_RC
t_minority=$(since_ms "$t0")
[[ $rc0 == 82 ]] || fail "cut: node 0's agent exited $rc0, want 82 (a minority stops)"
grep -q "this side is a minority" "$TMP/cut-node0.log" || fail "cut: node 0 did not say it was a minority"
grep -q "WORKER RANK=0 WORLD_SIZE=1" "$TMP/cut-node0.log" && fail "cut: node 0 formed a job of its own"
for k in 1 2; do
  agent_wait "cut-node$k" 60
  [[ $AGENT_RC == 0 ]] || fail "cut: node $k's agent exited $AGENT_RC, want 0"
done
link_up 0
echo "link down on the store host: the majority on the standby after ${t_over} ms; node 0 stopped as a minority after ${t_minority} ms"
ok "the store host cut off: the majority went on with the standby, node 0 stopped with 82"

# ---- 3. SIGSTOP of the store host's agent, SIGCONT after the others moved on
start_job stop 29630 200
kill -STOP "${AGENT_PID[stop-node0]}"
wait_for_log "$TMP/stop-node2.log" "the store is the standby at $ADDR1:[0-9]* now" 15 || {
  kill -CONT "${AGENT_PID[stop-node0]}"
  fail "stop: node 2 did not move to the standby"
}
wait_for_log "$TMP/stop-node1.log" "WORKER .*WORLD_SIZE=2 .*RESTART=1" 20 || {
  kill -CONT "${AGENT_PID[stop-node0]}"
  fail "stop: the 2-node job did not start"
}
lines_before=$(grep -c "attempt 0:" "$TMP/stop-node0.log")
kill -CONT "${AGENT_PID[stop-node0]}"
wait_for_log "$TMP/stop-node0.log" "superseded by epoch 1" 15 || fail "stop: node 0 was not fenced"
[[ $(grep -c "attempt 0:" "$TMP/stop-node0.log") == "$lines_before" ]] || fail "stop: node 0 ran the old round again"
grep -q "node 0.* attempt 0: node" "$TMP/stop-node1.log" && fail "stop: node 1 joined an old round"
for k in 0 1 2; do
  agent_wait "stop-node$k" 90
  [[ $AGENT_RC == 0 ]] || fail "stop: node $k's agent exited $AGENT_RC, want 0"
done
wait_for_log "$TMP/stop-node0.log" "WORKER .*WORLD_SIZE=3 .*STORE=$ADDR1:[0-9]*" 1 ||
  fail "stop: node 0 did not come back into the job through the new store"
ok "a SIGSTOPped store host came back fenced: it never re-ran the old round, moved to the new store and rejoined"
no_workers_left || fail "processes still running in the nodes: $(ns_all_pids | xargs)"
echo PASS
