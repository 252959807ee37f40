#!/usr/bin/env bash
# A node dies mid-job. (1) SIGKILL node 1's agent while every worker sleeps: node 0's agent notices the
# missing heartbeat, stops its workers and exits non-zero within a bounded time, and node 1's workers die
# with their agent (nothing of the job survives on either node). (2) SIGKILL node 0's agent, which hosts
# the store: node 1's agent loses the rendezvous store, stops its workers and exits non-zero.
# ctest-timeout: 120
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/cluster_lib.sh"
cluster_start 2 110

PORT=29500
ADDR0=$(ns_addr 0)
HB_MS=1500 # heartbeat timeout for this test (default 5000)
export DTRAIN_HEARTBEAT_TIMEOUT_MS=$HB_MS
# Detection within the heartbeat timeout, then SIGTERM/SIGKILL of the workers within the grace period:
# the survivor's workers must be gone within WORKERS_BOUND_S (3 s of slack for a loaded machine), and
# its agent must exit soon after (it does not wait for a goodbye from a node it declared dead).
GRACE_S=2
WORKERS_BOUND_S=$((HB_MS / 1000 + GRACE_S + 3))
AGENT_BOUND_S=$((WORKERS_BOUND_S + 2))

# workers_gone_within K SECONDS: wait until node K runs no launch_worker; echo the milliseconds waited.
workers_gone_within() {
  local t0 i
  t0=$(date +%s%N)
  for ((i = 0; i < $2 * 20; i++)); do
    [[ $(workers_in "$1") == 0 ]] && break
    sleep 0.05
  done
  [[ $(workers_in "$1") == 0 ]] || return 1
  WAITED_MS=$((($(date +%s%N) - t0) / 1000000))
}

# workers_in K: how many launch_worker processes run in node K.
workers_in() {
  local n=0 p
  for p in $(ns_pids "$1"); do
    [[ $(cat "/proc/$p/comm" 2>/dev/null) == launch_worker ]] && n=$((n + 1))
  done
  echo "$n"
}

# start_job TAG: a 2x2 job whose workers sleep 60 s; returns once all 4 workers run.
start_job() {
  local tag=$1 k i
  for k in 1 0; do
    node_start $k "$tag-node$k" --nnodes 2 --nproc-per-node 2 --rdzv-endpoint "$ADDR0:$PORT" \
      --rdzv-id "$tag" --rdzv-timeout 20 --max-restarts 0 --grace-period $GRACE_S -- "$WORKER" sleep 60
  done
  for ((i = 0; i < 400; i++)); do
    [[ $(workers_in 0) == 2 && $(workers_in 1) == 2 ]] && return 0
    sleep 0.05
  done
  fail "$tag: workers did not all start within 20 s (node 0: $(workers_in 0), node 1: $(workers_in 1))"
}

# expect_gone TAG: within 5 s, no process at all is left in either node (agents, workers, orphan guards).
expect_gone() {
  local i
  for ((i = 0; i < 100; i++)); do
    no_workers_left && return 0
    sleep 0.05
  done
  local p out=""
  for p in $(ns_all_pids); do out+="$p:$(cat "/proc/$p/comm" 2>/dev/null) "; done
  fail "$1: processes survived in the nodes: $out"
}

# ---- 1. node 1's agent is SIGKILLed
start_job kill1
sleep 0.5
t0=$(date +%s%N)
kill -KILL "${AGENT_PID[kill1-node1]}"
# The dead agent's own workers go with it (its orphan guard), long before any heartbeat runs out.
workers_gone_within 1 3 || fail "kill1: node 1's workers outlived their SIGKILLed agent by 3 s"
echo "node 1 SIGKILLed: its own workers gone after ${WAITED_MS} ms"
workers_gone_within 0 "$WORKERS_BOUND_S" ||
  fail "kill1: node 0 still runs workers ${WORKERS_BOUND_S} s after node 1 died (heartbeat timeout ${HB_MS} ms)"
tw=$((($(date +%s%N) - t0) / 1000000))
agent_wait kill1-node0 "$AGENT_BOUND_S"; rc0=$AGENT_RC
dt=$((($(date +%s%N) - t0) / 1000000))
agent_wait kill1-node1 5; rc1=$AGENT_RC
[[ $rc1 == 137 ]] || fail "kill1: node 1's agent exited $rc1, expected 137 (SIGKILL)"
[[ $rc0 != 124 ]] || fail "kill1: node 0's agent was still running ${AGENT_BOUND_S} s after node 1 died"
[[ $rc0 != 0 ]] || fail "kill1: node 0's agent exited 0 although node 1 died"
grep -Eiq 'node 1 .*stopped heartbeating' "$TMP/kill1-node0.log" ||
  fail "kill1: node 0's agent did not name node 1 as the node that stopped heartbeating"
expect_gone kill1
echo "node 1 SIGKILLed: node 0's workers gone after ${tw} ms, its agent exited $rc0 after ${dt} ms" \
  "(heartbeat timeout ${HB_MS} ms, grace ${GRACE_S} s)"
ok "node 1 killed: node 0 stopped its workers and exited non-zero; node 1's workers died with their agent"

# ---- 2. node 0's agent (the store's host) is SIGKILLed
PORT=29501
start_job kill0
sleep 0.5
t0=$(date +%s%N)
kill -KILL "${AGENT_PID[kill0-node0]}"
workers_gone_within 1 "$WORKERS_BOUND_S" ||
  fail "kill0: node 1 still runs workers ${WORKERS_BOUND_S} s after node 0 died"
tw=$((($(date +%s%N) - t0) / 1000000))
agent_wait kill0-node1 "$AGENT_BOUND_S"; rc1=$AGENT_RC
dt=$((($(date +%s%N) - t0) / 1000000))
agent_wait kill0-node0 5; rc0=$AGENT_RC
[[ $rc0 == 137 ]] || fail "kill0: node 0's agent exited $rc0, expected 137 (SIGKILL)"
[[ $rc1 != 124 ]] || fail "kill0: node 1's agent was still running ${AGENT_BOUND_S} s after node 0 died"
[[ $rc1 != 0 ]] || fail "kill0: node 1's agent exited 0 although the store's host died"
grep -Eiq 'lost the rendezvous store' "$TMP/kill0-node1.log" ||
  fail "kill0: node 1's agent did not say that it lost the rendezvous store"
expect_gone kill0
echo "node 0 SIGKILLed: node 1's workers gone after ${tw} ms, its agent exited $rc1 after ${dt} ms"
ok "node 0 (store host) killed: node 1 stopped its workers and exited non-zero"
echo PASS
