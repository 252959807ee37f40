#!/usr/bin/env bash
# Three Slurm nodes (a slurmd in each of three network namespaces, each with its own IPC and UTS
# namespaces): recipes/slurm/cpu-only.sbatch runs `srun --ntasks-per-node=1 dtrain run` across them with
# no rendezvous flag (the first node, a port from the job id, the job id as the run id, a token from the
# user's secret) and trains to the weights of the same 6 ranks on one machine; a `dtrain sbatch` job
# preempted with `scancel --signal=USR2 --batch` stops every rank of every node after one step, requeues,
# resumes and ends with those weights too; with launch.nnodes 2:3 a node taken down inside the allocation
# (its link, then every process in it, slurmd included) leaves the job to finish on the other two.
# ctest-timeout: 420
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/slurm_lib.sh"
slurm_start 3 2 400
export DTRAIN_SECRET_FILE=$SL_TMP/secret
export DTRAIN_HEARTBEAT_TIMEOUT_MS=3000
cd "$SL_TMP" || fail "no $SL_TMP"

# 2 ranks per node; the global batch divides over 6 ranks and over 4 (after a node is lost)
cat >"$SL_TMP/mn.yaml" <<'YAML'
job:
  name: mn
  seed: 9
launch:
  nproc_per_node: 2
  max_restarts: 2
parallel:
  dp: 0
model:
  block_size: 11
  n_layer: 1
  n_head: 2
  n_embd: 32
data:
  kind: addition
train:
  steps: 1500
  global_batch: 24
  micro_batch: 2
  lr: 3.0e-3
  warmup_steps: 20
  log_every: 50
  threads: 1
checkpoint:
  every: 250
slurm:
  time: "00:10:00"
YAML
sl_reference "$SL_TMP/ref" "$SL_TMP/mn.yaml" launch.nproc_per_node=6
REF=$(sl_digest "$SL_TMP/ref")
echo "reference (6 ranks on one machine, outside Slurm): weights $REF"

# ---- the CPU template over 3 nodes: no rendezvous flag, the nodes meet on node0
sl_submit -N 3 --cpus-per-task=2 --output="$SL_TMP/cpu.out" "$DTRAIN_SRC/recipes/slurm/cpu-only.sbatch" \
  "$SL_TMP/mn.yaml" job.run_dir="$SL_TMP/cpu"
sl_wait_state "$SL_JOB" COMPLETED 150
sl_wait_file "$SL_TMP/cpu.out" "done: 1500 steps" 10
for k in 0 1 2; do
  grep -q "run $SL_JOB attempt 0: node $k of 3, ranks $((2 * k))-$((2 * k + 1)) of 6, master $(ns_addr 0):" "$SL_TMP/cpu.out" ||
    fail "node $k did not join run $SL_JOB on node0: $(grep 'attempt 0' "$SL_TMP/cpu.out")"
done
[[ $(sl_digest "$SL_TMP/cpu") == "$REF" ]] || fail "3 Slurm nodes: weights $(sl_digest "$SL_TMP/cpu"), want $REF"
ok "cpu-only.sbatch on 3 nodes: run $SL_JOB met on node0 without a flag, the same weights as 6 local ranks"

# ---- preempted across the nodes: every rank of every node stops after one step; requeue; same weights
RUN=$SL_TMP/pre
"$DTRAIN" sbatch "$SL_TMP/mn.yaml" slurm.nodes=3 job.run_dir="$RUN" --dry-run >"$SL_TMP/job.sbatch" ||
  fail "dtrain sbatch --dry-run: $(cat "$SL_TMP/job.sbatch")"
grep -q "^#SBATCH --nodes=3$" "$SL_TMP/job.sbatch" || fail "no --nodes=3: $(cat "$SL_TMP/job.sbatch")"
sl_dtrain_sbatch "$SL_TMP/mn.yaml" slurm.nodes=3 job.run_dir="$RUN"
OUT=$SL_OUT
sl_wait_file "$OUT" "step +([3-9][05]0|1[0-1][05]0)/1500" 120
t0=$(sl_now_ms)
sl 0 scancel --signal=USR2 --batch "$SL_JOB"
sl_wait_file "$OUT" "every rank stopped after step" 30
t_saved=$(sl_now_ms)
sl_wait_gone "dtrain (run|train|launch)" 30
t_gone=$(sl_now_ms)
STEP=$(grep -o 'every rank stopped after step [0-9]*' "$OUT" | head -1 | grep -o '[0-9]*$')
# each agent heard of it, from srun (it passes the signal on) or from the first agent's word in the store
[[ $(grep -cE "got SIGUSR2: asking every rank to stop|node [0-2] asked every rank to stop" "$OUT") == 3 ]] ||
  fail "not every agent heard of the stop: $(grep -E 'SIGUSR2|asked every rank' "$OUT")"
grep -q "requeueing job $SL_JOB (requeue 1 of 3)" "$OUT" || fail "no requeue: $(tail -n 20 "$OUT")"
ok "3 nodes preempted after step $STEP: saved $((t_saved - t0)) ms after the signal, every process gone after $((t_gone - t0)) ms"
sl_wait_state "$SL_JOB" COMPLETED 180
sl_wait_file "$OUT" "done: $((1500 - STEP)) steps" 10
grep -q "resumed from checkpoint step $STEP " "$OUT" || fail "did not resume from step $STEP"
[[ $(sl_field "$SL_JOB" Restarts) == 1 ]] || fail "Restarts=$(sl_field "$SL_JOB" Restarts), want 1"
[[ $(sl_digest "$RUN") == "$REF" ]] || fail "preempted on 3 nodes and resumed: weights $(sl_digest "$RUN"), want $REF"
ok "requeued, resumed on 3 nodes from step $STEP, the same weights"

# ---- launch.nnodes 2:3, node 2 taken down mid-run: the job goes on and finishes on nodes 0 and 1
RUN=$SL_TMP/elastic
sl_dtrain_sbatch "$SL_TMP/mn.yaml" launch.nnodes=2:3 slurm.nodes=3 job.run_dir="$RUN"
OUT=$SL_OUT
grep -q "^#SBATCH --nodes=3$" "$RUN/job.sbatch" && grep -q "^#SBATCH --no-kill$" "$RUN/job.sbatch" ||
  fail "job.sbatch for nnodes 2:3: $(cat "$RUN/job.sbatch")"
sl_wait_file "$OUT" "node 2 of 3, ranks 4-5 of 6" 60
sl_wait_file "$OUT" "checkpoint step 250 committed" 120
sl_node_down 2
ok "node 2 taken down after the checkpoint of step 250"
sl_wait_file "$OUT" "node 2 \(host node2\) stopped heartbeating" 30
sl_wait_file "$OUT" "attempt 1: node [01] of 2, ranks [0-3]-[0-3] of 4" 60
sl_wait_file "$OUT" "done: [0-9]+ steps" 150
grep -Eq "resumed from checkpoint step (250|500)" "$OUT" || fail "the two nodes did not resume from a checkpoint"
[[ $(cat "$RUN/checkpoints/latest") == 1500 ]] || fail "latest checkpoint $(cat "$RUN/checkpoints/latest"), want 1500"
sl_wait_state "$SL_JOB" COMPLETED 60
ok "node 2 lost: the job finished on nodes 0 and 1 and COMPLETED (node2 is $(sl 0 sinfo -h -n node2 -o %T))"
echo PASS
