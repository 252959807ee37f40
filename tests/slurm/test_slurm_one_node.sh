#!/usr/bin/env bash
# A real one-node Slurm (slurmctld + slurmd, 8 CPUs declared): recipes/slurm/one-node.sbatch as it is
# trains gpt-tiny to the weights of a run outside Slurm; a job written by `dtrain sbatch` and preempted
# with `scancel --signal=USR2 --batch` stops every rank after one step, saves, requeues itself
# (Restarts=1), resumes from that checkpoint and ends with the uninterrupted run's weights (the figures:
# signal to checkpoint saved and every process gone; requeue to the first step, Slurm's part and
# dtrain's); at slurm.max_requeues 0 the job ends with exit code 87 and says why; a batch script that
# runs dtrain without exec and dies of the signal (the trial that left orphans) takes dtrain with it,
# which saves first; ranks-as-tasks.sbatch (`srun dtrain train`, one task per rank, --overcommit) is
# preempted and requeued by its rank 0 alike; array-seeds.sbatch runs two seeds side by side.
# ctest-timeout: 400
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/slurm_lib.sh"
slurm_start 1 8 380
export DTRAIN_SECRET_FILE=$SL_TMP/secret
cd "$DTRAIN_SRC" || fail "no $DTRAIN_SRC"
TPL=$DTRAIN_SRC/recipes/slurm
# gpt-tiny, shortened: long enough to be preempted mid-run, short enough for CI
OV=(train.steps=600 train.eval_every=0 train.log_every=20 checkpoint.every=200)

sl_reference "$SL_TMP/ref" recipes/gpt-tiny.yaml "${OV[@]}"
REF=$(sl_digest "$SL_TMP/ref")
echo "reference (outside Slurm): weights $REF"

# ---- the one-node template, as it is
sl_submit --chdir="$DTRAIN_SRC" --output="$SL_TMP/tpl.out" "$TPL/one-node.sbatch" recipes/gpt-tiny.yaml \
  job.run_dir="$SL_TMP/tpl" "${OV[@]}"
sl_wait_state "$SL_JOB" COMPLETED 120
sl_wait_file "$SL_TMP/tpl.out" "done: 600 steps" 10
[[ $(sl_digest "$SL_TMP/tpl") == "$REF" ]] || fail "one-node.sbatch: weights $(sl_digest "$SL_TMP/tpl"), want $REF"
ok "one-node.sbatch as it is: job $SL_JOB COMPLETED with the reference weights"

# ---- `dtrain sbatch`, preempted: stop after one step, save, requeue, resume, same weights
RUN=$SL_TMP/pre
sl_dtrain_sbatch recipes/gpt-tiny.yaml job.run_dir="$RUN" "${OV[@]}"
grep -q -- "--signal=B:USR2@120" "$RUN/job.sbatch" || fail "job.sbatch asks for no signal: $(cat "$RUN/job.sbatch")"
OUT=$SL_OUT
sl_wait_file "$OUT" "step +(1[0-9]|[2-5])[0-9]0/600" 90
t0=$(sl_now_ms)
sl 0 scancel --signal=USR2 --batch "$SL_JOB"
sl_wait_file "$OUT" "every rank stopped after step" 30
t_saved=$(sl_now_ms)
sl_wait_gone "dtrain (run|train|launch)" 30
t_gone=$(sl_now_ms)
STEP=$(grep -o 'every rank stopped after step [0-9]*' "$OUT" | head -1 | grep -o '[0-9]*$')
grep -q "requeueing job $SL_JOB (requeue 1 of 3)" "$OUT" || fail "no requeue: $(tail -n 20 "$OUT")"
ok "preempted after step $STEP: checkpoint saved $((t_saved - t0)) ms after the signal, every process gone after $((t_gone - t0)) ms"
sl_wait_file "$OUT" "^dtrain sbatch: job $SL_JOB on .*, requeue 1 of 3," 60
t_start=$(sl_now_ms)
sl_wait_file "$OUT" "resumed from checkpoint step $STEP " 60
sl_wait_file "$OUT" "step +$((STEP + 1))/600" 60
t_step=$(sl_now_ms)
sl_wait_state "$SL_JOB" COMPLETED 120
sl_wait_file "$OUT" "done: $((600 - STEP)) steps" 10
[[ $(sl_field "$SL_JOB" Restarts) == 1 ]] || fail "Restarts=$(sl_field "$SL_JOB" Restarts), want 1"
[[ $(sl_digest "$RUN") == "$REF" ]] || fail "preempted and resumed: weights $(sl_digest "$RUN"), want $REF"
ok "requeued: the job ran again $((t_start - t_gone)) ms after it ended (Slurm), its first step $((t_step - t_start)) ms later (dtrain); same weights"

# ---- the requeue limit: slurm.max_requeues=0 ends the job with 87 and a clear message
RUN=$SL_TMP/lim
sl_dtrain_sbatch recipes/gpt-tiny.yaml job.run_dir="$RUN" "${OV[@]}" slurm.max_requeues=0
OUT=$SL_OUT
sl_wait_file "$OUT" "step +[1-5][0-9]0/600" 90
sl 0 scancel --signal=USR2 --batch "$SL_JOB"
sl_wait_state "$SL_JOB" "FAILED|COMPLETED" 60
[[ $(sl_field "$SL_JOB" ExitCode) == 87:0 ]] || fail "limit: ExitCode $(sl_field "$SL_JOB" ExitCode), want 87:0"
sl_wait_file "$OUT" "requeued 0 times already \(SLURM_RESTART_COUNT=0; the limit is 0" 10
ok "the requeue limit: job $SL_JOB ended with exit code 87 and said why"

# ---- a batch script without exec dies of the signal: dtrain goes with it (and saves), nothing stays
RUN=$SL_TMP/orphan
# 20000 steps: left running, it would outlive every wait below
cat >"$SL_TMP/plain.sbatch" <<EOF
#!/bin/bash
"$DTRAIN" run recipes/gpt-tiny.yaml job.run_dir="$RUN" ${OV[*]} train.steps=20000
echo "the script went on"
EOF
sl_submit --chdir="$DTRAIN_SRC" --output="$SL_TMP/plain.out" "$SL_TMP/plain.sbatch"
sl_wait_file "$SL_TMP/plain.out" "step +[1-5][0-9]0/20000" 90
sl 0 scancel --signal=USR1 --batch "$SL_JOB"
sl_wait_state "$SL_JOB" "FAILED|CANCELLED|COMPLETED" 30
sl_wait_gone "dtrain (run|train|launch)" 30
grep -q "the script went on" "$SL_TMP/plain.out" && fail "the batch script survived USR1; the test proves nothing"
sl_wait_file "$SL_TMP/plain.out" "every rank stopped after step [0-9]+; checkpoint step [0-9]+ saved" 10
grep -q "the batch script (pid [0-9]*) that started dtrain is gone" "$SL_TMP/plain.out" ||
  fail "no word about the batch script: $(tail -n 20 "$SL_TMP/plain.out")"
ok "a batch script killed by its signal: dtrain saved and stopped with it, no process left"

# ---- one task per rank (`srun dtrain train`), preempted: rank 0 requeues; same weights
RUN=$SL_TMP/ranks
sl_submit --chdir="$DTRAIN_SRC" --output="$SL_TMP/ranks.out" "$TPL/ranks-as-tasks.sbatch" recipes/gpt-tiny.yaml \
  job.run_dir="$RUN" "${OV[@]}"
sl_wait_file "$SL_TMP/ranks.out" "step +[1-5][0-9]0/600" 90
sl 0 scancel --signal=USR2 --batch "$SL_JOB"
sl_wait_file "$SL_TMP/ranks.out" "requeueing job $SL_JOB \(requeue 1 of 3\)" 30
sl_wait_state "$SL_JOB" COMPLETED 150
sl_wait_file "$SL_TMP/ranks.out" "done: [0-9]+ steps" 10
[[ $(sl_digest "$RUN") == "$REF" ]] || fail "ranks-as-tasks: weights $(sl_digest "$RUN"), want $REF"
ok "ranks-as-tasks.sbatch: srun dtrain train preempted, requeued by rank 0, same weights"

# ---- a job array of seeds: two tasks side by side, each its own run (runs/gpt-tiny-seed<i> of its cwd)
mkdir -p "$SL_TMP/arr"
sl_submit --chdir="$SL_TMP/arr" --array=0-1 --output="$SL_TMP/arr-%a.out" "$TPL/array-seeds.sbatch" \
  "$DTRAIN_SRC/recipes/gpt-tiny.yaml" train.steps=100 train.eval_every=0
for a in 0 1; do
  sl_wait_state "${SL_JOB}_$a" COMPLETED 120
  sl_wait_file "$SL_TMP/arr-$a.out" "done: 100 steps" 10
  grep -q "job.seed=$((1000 + a))" "$SL_TMP/arr-$a.out" || fail "array task $a: $(head -3 "$SL_TMP/arr-$a.out")"
  [[ -n $(sl_digest "$SL_TMP/arr/runs/gpt-tiny-seed$a") ]] || fail "array task $a wrote no run"
done
[[ $(sl_digest "$SL_TMP/arr/runs/gpt-tiny-seed0") != $(sl_digest "$SL_TMP/arr/runs/gpt-tiny-seed1") ]] ||
  fail "the two seeds trained the same weights"
ok "array-seeds.sbatch: tasks 0 and 1 trained seeds 1000 and 1001 into their own runs"
echo PASS
