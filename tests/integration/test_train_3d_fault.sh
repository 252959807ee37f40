#!/usr/bin/env bash
# kill -9 inside a dp x tp x pp job: recipes/gpt-small-3d.yaml (8 ranks: dp 2 x tp 2 x pp 2, ZeRO-1), cut
# to 40 steps with a checkpoint every 10; rank 5 (stage 1, a tensor-parallel rank of the second replica)
# SIGKILLs itself after step 25 on the first attempt (DTRAIN_TRAIN_FAULT_STEP). dtrain launch stops the
# others and restarts all 8, they resume from the newest committed checkpoint (20, or 10 if the async save
# of 20 had not committed) and finish with the same weights and AdamW state as an uninterrupted run (the
# digest of every rank's part) and the same per-step losses.
# ctest-labels: train tp pp faults
# ctest-timeout: 400
source "$(dirname "${BASH_SOURCE[0]}")/launch_lib.sh"
R=$SRC/recipes/gpt-small-3d.yaml
det_cols() { cut -d, -f1,2,3,6,8 "$1"; }
short=(train.steps=40 train.warmup_steps=5 train.log_every=10 checkpoint.every=10 checkpoint.keep=0)
timeout 200 "$DTRAIN" run "$R" job.run_dir="$T/a" "${short[@]}" > "$T/a.out" 2> "$T/a.err" \
  || fail "uninterrupted run exit $?: $(tail -20 "$T/a.err")"
DTRAIN_TRAIN_FAULT_STEP=25 DTRAIN_TRAIN_FAULT_RANK=5 timeout 300 "$DTRAIN" run "$R" job.run_dir="$T/b" "${short[@]}" \
  > "$T/b.out" 2> "$T/b.err" || fail "interrupted run exit $?: $(tail -20 "$T/b.err")"
grep -q "killing this rank after step 25" "$T/b.out" "$T/b.err" || fail "the fault hook did not fire"
grep -q "rank 5 .* was killed by SIGKILL" "$T/b.err" || fail "the agent did not see rank 5 die: $(grep -i 'rank 5' "$T/b.err" | head -3)"
grep -q "restart 1 of 3" "$T/b.err" || fail "dtrain launch did not restart: $(tail -5 "$T/b.err")"
from=$(grep -o 'resumed from checkpoint step [0-9]*' "$T/b.out" | grep -o '[0-9]*$')
[ "$from" = 20 ] || [ "$from" = 10 ] || fail "expected a resume from step 20 (or 10): '$from'"
wa=$(grep weights_xxh64 "$T/a/summary.txt"); wb=$(grep weights_xxh64 "$T/b/summary.txt")
[ -n "$wa" ] && [ "$wa" = "$wb" ] || fail "weights after the restart differ from the uninterrupted run: $wa vs $wb"
cmp <(det_cols "$T/a/metrics.csv") <(det_cols "$T/b/metrics.csv") \
  || fail "losses differ: $(diff <(det_cols "$T/a/metrics.csv") <(det_cols "$T/b/metrics.csv") | head -6)"
echo "PASS: resumed from step $from, $wa"
