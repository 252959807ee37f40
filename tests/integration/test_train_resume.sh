#!/usr/bin/env bash
# Resume is exact: a 4-rank DP run with a checkpoint every 10 steps, killed after step 35 by the
# test-only hook DTRAIN_TRAIN_FAULT_STEP (rank 2 SIGKILLs itself on the first attempt), is restarted by
# dtrain launch (max_restarts 1), resumes from the newest committed checkpoint (step 30, or 20 if the
# async save of 30 had not committed) and ends with the same weights and AdamW moments, bit for bit,
# and the same per-step losses as an uninterrupted run. A finished run resumed again trains nothing.
# ctest-labels: train
# ctest-timeout: 300
source "$(dirname "${BASH_SOURCE[0]}")/launch_lib.sh"

cat > "$T/r.yaml" <<YAML
job:
  name: resume
  seed: 11
launch:
  nproc_per_node: 4
  max_restarts: 1
parallel:
  dp: 4
model:
  block_size: 11
  n_layer: 1
  n_head: 2
  n_embd: 32
data:
  kind: addition
  digits: 3
train:
  steps: 60
  global_batch: 16
  micro_batch: 4
  lr: 3.0e-3
  warmup_steps: 5
  log_every: 10
  eval_every: 20
  threads: 1
checkpoint:
  every: 10
  keep: 3
  async: true
YAML

det_cols() { cut -d, -f1,2,3,6,8 "$1"; }
timeout 150 "$DTRAIN" run "$T/r.yaml" job.run_dir="$T/a" > "$T/a.out" 2> "$T/a.err" \
  || fail "uninterrupted run exit $?: $(tail -20 "$T/a.err")"
DTRAIN_TRAIN_FAULT_STEP=35 DTRAIN_TRAIN_FAULT_RANK=2 timeout 200 "$DTRAIN" run "$T/r.yaml" job.run_dir="$T/b" \
  > "$T/b.out" 2> "$T/b.err" || fail "interrupted run exit $?: $(tail -20 "$T/b.err")"

grep -q "DTRAIN_TRAIN_FAULT_STEP=35: killing this rank after step 35" "$T/b.out" "$T/b.err" \
  || fail "the fault hook did not fire: $(tail -5 "$T/b.err")"
grep -q "restart 1 of 1" "$T/b.err" || fail "dtrain launch did not restart: $(tail -5 "$T/b.err")"
from=$(grep -o 'resumed from checkpoint step [0-9]*' "$T/b.out" | grep -o '[0-9]*$')
[ "$from" = 30 ] || [ "$from" = 20 ] || fail "expected a resume from step 30 (or 20): '$from' $(grep -i resum "$T/b.out")"
grep -q "^start_step=$from$" "$T/b/summary.txt" || fail "summary.txt: $(cat "$T/b/summary.txt")"
[ -s "$T/b/checkpoints/latest" ] && [ "$(cat "$T/b/checkpoints/latest")" = 60 ] || fail "latest should be 60"

wa=$(grep weights_xxh64 "$T/a/summary.txt"); wb=$(grep weights_xxh64 "$T/b/summary.txt")
[ -n "$wa" ] && [ "$wa" = "$wb" ] || fail "weights after resume differ from the uninterrupted run: $wa vs $wb"
# metrics.csv of the resumed run keeps attempt 0's rows up to the checkpoint, then attempt 1's
[ "$(wc -l < "$T/b/metrics.csv")" = 61 ] || fail "resumed metrics.csv has $(wc -l < "$T/b/metrics.csv") lines"
cmp <(det_cols "$T/a/metrics.csv") <(det_cols "$T/b/metrics.csv") \
  || fail "losses differ: $(diff <(det_cols "$T/a/metrics.csv") <(det_cols "$T/b/metrics.csv") | head -6)"

# resuming a finished run trains nothing and says so
timeout 60 "$DTRAIN" run "$T/r.yaml" job.run_dir="$T/a" > "$T/c.out" 2> "$T/c.err" || fail "re-run exit $?"
grep -q "all 60 steps are done" "$T/c.out" || fail "re-run of a finished job: $(cat "$T/c.out")"
grep -q "step  1/60" "$T/c.out" && fail "a finished job trained again"
# checkpoint.resume=false starts over and ends where the first run did
timeout 150 "$DTRAIN" run "$T/r.yaml" job.run_dir="$T/a" checkpoint.resume=false > "$T/d.out" 2> "$T/d.err" \
  || fail "resume=false exit $?: $(tail "$T/d.err")"
[ "$(grep weights_xxh64 "$T/a/summary.txt")" = "$wa" ] || fail "a fresh start with resume=false changed the result"
echo PASS
