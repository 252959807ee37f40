#!/usr/bin/env bash
# Time limits on a real one-node Slurm. (a) A `dtrain sbatch` job of gpt-tiny with a one-minute limit
# (slurm.time 1) and the preemption signal 55 s before it: every time the signal comes, every rank stops
# after one step and saves, the job requeues itself and resumes, until the training is done with the
# weights of an uninterrupted run. (b) No signal asked for: at the time limit Slurm sends SIGTERM, the
# workers of a `dtrain launch` see the stop file and save (here: exit 86), and because `scontrol show job`
# says Reason=TimeLimit dtrain requeues the job (a scancel'ed one would stay cancelled). Slurm checks time
# limits about every 30 s, so each attempt lasts between 5 and 60 s.
# ctest-timeout: 420
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/slurm_lib.sh"
slurm_start 1 8 400
export DTRAIN_SECRET_FILE=$SL_TMP/secret
cd "$DTRAIN_SRC" || fail "no $DTRAIN_SRC"
OV=(train.steps=2000 train.eval_every=0 train.log_every=50 checkpoint.every=500)

# (b) first: it waits a minute for Slurm's clock, mostly asleep. Slurm's SIGTERM reaches the workers too:
# these ignore it (a program that does not dies of it) and stop through the stop file
cat >"$SL_TMP/term.sbatch" <<EOF
#!/bin/bash
#SBATCH --time=1
#SBATCH --requeue
#SBATCH --open-mode=append
echo "term job \$SLURM_JOB_ID, requeued \${SLURM_RESTART_COUNT:-0} times"
[ -n "\${SLURM_RESTART_COUNT:-}" ] && exit 0
exec srun --ntasks-per-node=1 "$DTRAIN" launch --nproc-per-node 2 -- /bin/sh -c \\
  'trap "" TERM; i=0; while [ \$i -lt 3000 ] && [ ! -e "\$DTRAIN_STOP_FILE" ]; do sleep 0.1; i=\$((i+1)); done; [ -e "\$DTRAIN_STOP_FILE" ] && echo "rank \$RANK saw the stop file" && exit 86; exit 9'
EOF
sl_submit --output="$SL_TMP/term.out" "$SL_TMP/term.sbatch"
TERM_JOB=$SL_JOB

# (a) the reference, outside Slurm, while both jobs run
(cd "$DTRAIN_SRC" && timeout 300 "$DTRAIN" run recipes/gpt-tiny.yaml job.run_dir="$SL_TMP/ref" "${OV[@]}") \
  >"$SL_TMP/reference.log" 2>&1 &
REF_PID=$!
RUN=$SL_TMP/tl
sl_dtrain_sbatch recipes/gpt-tiny.yaml job.run_dir="$RUN" "${OV[@]}" slurm.time=1 slurm.signal_lead=55 slurm.max_requeues=8
grep -q -- "--signal=B:USR2@55" "$RUN/job.sbatch" && grep -q -- "--time=1$" "$RUN/job.sbatch" ||
  fail "job.sbatch: $(cat "$RUN/job.sbatch")"
OUT=$SL_OUT

sl_wait_state "$TERM_JOB" COMPLETED 150
sl_wait_file "$SL_TMP/term.out" "requeued 1 times" 10
[[ $(sl_field "$TERM_JOB" Restarts) == 1 ]] || fail "(b) Restarts=$(sl_field "$TERM_JOB" Restarts), want 1"
grep -q "rank [01] saw the stop file" "$SL_TMP/term.out" || fail "(b) the workers saw no stop file: $(cat "$SL_TMP/term.out")"
grep -q "stopped by the time limit: requeueing job $TERM_JOB (requeue 1 of 3)" "$SL_TMP/term.out" ||
  fail "(b) no requeue at the time limit: $(cat "$SL_TMP/term.out")"
ok "(b) SIGTERM at the time limit: the workers stopped through the stop file, Reason=TimeLimit, requeued"

sl_wait_state "$SL_JOB" COMPLETED 300
sl_wait_file "$OUT" "done: [0-9]+ steps" 10
wait "$REF_PID" || fail "the reference run failed: $(tail -n 20 "$SL_TMP/reference.log")"
restarts=$(sl_field "$SL_JOB" Restarts)
((restarts >= 1)) || fail "(a) the job was never preempted (Restarts=$restarts): the test proves nothing"
stops=$(grep -o 'every rank stopped after step [0-9]*' "$OUT" | grep -o '[0-9]*$' | tr '\n' ' ')
[[ $(sl_digest "$RUN") == $(sl_digest "$SL_TMP/ref") ]] ||
  fail "(a) preempted at steps $stops and resumed: weights $(sl_digest "$RUN"), want $(sl_digest "$SL_TMP/ref")"
ok "(a) a one-minute limit: preempted after steps $stops, requeued $restarts times, the reference weights"
echo PASS
