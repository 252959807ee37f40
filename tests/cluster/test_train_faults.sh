#!/usr/bin/env bash
# The built-in trainer on three namespace nodes (each agent in its own IPC and UTS namespace, `dtrain
# run` on every node), faults injected mid-run (issue 19):
#  1. the reference: the job uninterrupted, its final weights' digest;
#  2. SIGSTOP of rank 1's worker after the first checkpoint: its agent names it (stopped) within the
#     worker timeout + 1 s, dumps its threads, the job restarts from the checkpoint and ends with the
#     reference's weights bit for bit;
#  3. kill -9 of node 2's agent (not the store's host) with --nnodes 2:3: nodes 0 and 1 go on as a 2-node
#     job and finish; the collectives that failed on the lost peer left their flight recorders in the log
#     directory (DTRAIN_DIAG_DIR);
#  4. the checkpoint directory fills up (a 3 MiB tmpfs, filled after the first checkpoint): the job
#     stops at the second refused save with 80 on every node, no restart spent, and the last good
#     checkpoint verifies.
# ctest-timeout: 300
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/cluster_lib.sh"
cluster_start 3 290

export DTRAIN_HEARTBEAT_TIMEOUT_MS=1500 DTRAIN_RDZV_LAST_CALL_MS=500
ADDR0=$(ns_addr 0)
cat > "$TMP/r.yaml" <<'YAML'
job: {name: tf, seed: 11}
launch: {nproc_per_node: 1, max_restarts: 3}
model: {block_size: 11, n_layer: 1, n_head: 2, n_embd: 32}
data: {kind: addition, digits: 3}
train: {steps: 1200, global_batch: 48, micro_batch: 8, warmup_steps: 20, log_every: 200, threads: 1}
checkpoint: {every: 200, keep: 0}
YAML

# run_job TAG PORT NNODES [overrides...]: `dtrain run` on the three nodes (node 0 first: it hosts the store)
run_job() {
  local tag=$1 port=$2 nn=$3 k
  shift 3
  for k in 0 1 2; do
    node_cmd $k "$tag-node$k" run "$TMP/r.yaml" --nnodes "$nn" --rdzv-endpoint "$ADDR0:$port" --rdzv-id "$tag" \
      --rdzv-timeout 60 --grace-period 1 --log-dir "$TMP/logs" job.run_dir="$TMP/run-$tag" "$@"
    [[ $k == 0 ]] && { ns_wait_port 0 "$ADDR0" "$port" 10 || fail "$tag: node 0's store never listened"; }
  done
}
# wait_all TAG RC...: each node's agent exits with the given code
wait_all() {
  local tag=$1 k=0 want
  shift
  for want in "$@"; do
    agent_wait "$tag-node$k" 150
    [[ $AGENT_RC == "$want" ]] || fail "$tag: node $k's agent exited $AGENT_RC, want $want"
    k=$((k + 1))
  done
}
digest() { grep -o 'weights_xxh64=.*' "$TMP/run-$1/summary.txt" 2>/dev/null; }
# trainer_pid K: the pid of node K's `dtrain train` worker
trainer_pid() {
  local p
  for p in $(ns_pids "$1"); do
    tr '\0' ' ' < "/proc/$p/cmdline" 2>/dev/null | grep -q "dtrain train" && { echo "$p"; return; }
  done
}

# ---- 1. the reference
run_job ref 29710 3
wait_all ref 0 0 0
REF=$(digest ref)
[[ -n $REF ]] || fail "ref: no summary"
# checkpoint.keep: 0 keeps every committed step (issue 19: it kept 3)
n=$(ls -d "$TMP"/run-ref/checkpoints/step_* | wc -l)
[[ $n == 6 ]] || fail "ref: checkpoint.keep 0 kept $n steps, want all 6"
ok "reference: 1200 steps on 3 nodes, $REF"

# ---- 2. SIGSTOP of a worker
run_job stop 29720 3 launch.worker_timeout=2
wait_for_log "$TMP/stop-node0.log" "checkpoint step 200 committed" 60 || fail "stop: no first checkpoint"
victim=$(trainer_pid 1)
[[ -n $victim ]] || fail "stop: node 1 runs no trainer"
kill -STOP "$victim"
t0=$(date +%s%N)
wait_for_log "$TMP/stop-node1.log" "made no progress" 10 || fail "stop: the stopped rank was not found"
dt=$((($(date +%s%N) - t0) / 1000000))
wait_all stop 0 0 0
grep -q "pid $victim) was stopped (SIGSTOP or a debugger)" "$TMP/stop-node1.log" || fail "stop: not named stopped"
ls "$TMP"/logs/stop/attempt_0/rank_1.threads.txt > /dev/null 2>&1 || fail "stop: no thread dump"
[[ $(digest stop) == "$REF" ]] || fail "stop: final weights $(digest stop), the reference's $REF"
((dt <= 3500)) || fail "stop: found ${dt} ms after the SIGSTOP, want within the 2 s timeout + 1.5 s"
ok "SIGSTOP of rank 1: found after ${dt} ms (timeout 2 s), threads dumped, restarted, same weights as the reference"

# ---- 3. kill -9 of a node that does not host the store
run_job shrink 29730 2:3
wait_for_log "$TMP/shrink-node0.log" "checkpoint step 200 committed" 60 || fail "shrink: no first checkpoint"
kill -KILL "${AGENT_PID[shrink-node2]}"
wait_all shrink 0 0 137
# its rank died with it (the orphan guard), so the others' collectives fail first: the job restarts
grep -q "attempt [0-9]*: node 0 of 2" "$TMP/shrink-node0.log" || fail "shrink: no round of 2 nodes"
grep -q "^dp=2$" "$TMP/run-shrink/summary.txt" || fail "shrink: the job did not finish on 2 nodes"
# the survivors' collectives failed on the lost peer: their flight recorders are in the log directory
fr=$(ls "$TMP"/logs/shrink/attempt_0/rank_[01].flight_recorder.txt 2>/dev/null | head -1)
[[ -n $fr ]] && grep -q "flight recorder of communicator" "$fr" || fail "shrink: no flight recorder in the log directory"
ok "kill -9 of node 2's agent: nodes 0 and 1 finished the job as 2 nodes"

# ---- 4. the checkpoint directory fills up
mkdir -p "$TMP/full"
mount -t tmpfs -o size=3m tmpfs "$TMP/full" || fail "full: cannot mount a tmpfs"
ns_at_exit "umount -l '$TMP/full'"
run_job full 29740 3 checkpoint.dir="$TMP/full/ck"
wait_for_log "$TMP/full-node0.log" "checkpoint step 200 committed" 60 || fail "full: no first checkpoint"
dd if=/dev/zero of="$TMP/full/filler" bs=64k status=none 2>/dev/null # until the device is full
wait_all full 80 80 80
grep -q "restarting every worker" "$TMP"/full-node*.log && fail "full: a restart was spent"
grep -q "permanent failure: .*No space left on device.*second save in a row" "$TMP"/full-node*.log ||
  fail "full: the permanent failure is not named: $(grep -h 'dtrain train' "$TMP"/full-node*.log | head -3)"
"$DTRAIN" ckpt verify "$TMP/full/ck" --step 200 > "$TMP/verify.log" 2>&1 || fail "full: step 200 does not verify: $(cat "$TMP/verify.log")"
ok "disk full: every node stopped with 80 at the second refused save, no restart; step 200 intact"
no_workers_left || fail "processes still running in the nodes: $(ns_all_pids | xargs)"
echo PASS
