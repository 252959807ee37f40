#!/usr/bin/env bash
# The built-in trainer's permanent failures stop the job at once with 80 and the reason, although
# restarts are left (issue 19: each of these used to be retried, re-running every step since the last
# checkpoint):
#  1. a diverged loss (train.lr=1e99), train.on_divergence: stop;
#  2. train.on_divergence: restart with lr 30 (diverges; 3 does not): one restart with the learning
#     rate x 0.1 from before the divergence, the checkpoints saved since moved aside, the job finishes;
#     with lr 1e99 the second divergence stops it with 80;
#  3. every checkpoint of the directory damaged: no valid one to resume from;
#  4. a checkpoint missing a required blob (a safetensors import holds weights only);
#  5. train.device cuda where no CUDA device is visible: `dtrain run --dry-run` refuses it (2) and a
#     rank started anyway exits 80 (only where the build has CUDA and the machine no GPU).
# ctest-labels: train faults
# ctest-timeout: 180
source "$(dirname "${BASH_SOURCE[0]}")/launch_lib.sh"

cat > "$T/r.yaml" <<'YAML'
job: {name: perm}
launch: {nproc_per_node: 2, max_restarts: 2}
model: {block_size: 11, n_layer: 1, n_head: 2, n_embd: 32}
data: {kind: addition, digits: 3}
train: {steps: 60, global_batch: 16, micro_batch: 4, warmup_steps: 2, log_every: 10, threads: 1}
checkpoint: {every: 10}
YAML
# run TAG ARGS...: dtrain run of the recipe in its own run directory; RC, output in $T/TAG.out
run() {
  local tag=$1
  shift
  RC=0
  timeout 100 "$DTRAIN" run "$T/r.yaml" job.run_dir="$T/$tag" "$@" > "$T/$tag.out" 2>&1 || RC=$?
}
# permanent TAG PATTERN [RESTARTS]: exit 80 after RESTARTS restarts (default 0), the agent quoting
# PATTERN as the rank's reason
permanent() {
  [ $RC = 80 ] || fail "$1: exit $RC, want 80: $(tail -5 "$T/$1.out")"
  [ "$(grep -c "restarting every worker" "$T/$1.out")" = "${3:-0}" ] ||
    fail "$1: restarts spent: $(grep restart "$T/$1.out"), want ${3:-0}"
  grep -q "exited with code 80 (a permanent failure: no restart).*$2" "$T/$1.out" ||
    fail "$1: the agent's report does not give the reason '$2': $(grep dtrain "$T/$1.out" | tail -5)"
}

# ---- 1. diverged, stop
run diverge train.lr=1e99
permanent diverge "training diverged: 10 steps in a row from step 2 had a non-finite gradient norm"
echo "ok: lr 1e99 diverged: exit 80 at once, none of 2 restarts spent"

# ---- 2. diverged, restart once with a lower learning rate
run lower train.lr=30 train.min_lr=0 train.on_divergence=restart
[ $RC = 0 ] || fail "lower: exit $RC, want 0 after one restart at lr x 0.1: $(tail -5 "$T/lower.out")"
[ "$(grep -c "restarting every worker" "$T/lower.out")" = 1 ] || fail "lower: not exactly one restart"
grep -q "restarted after a divergence: learning rate x 0.1" "$T/lower.out" || fail "lower: no lowered learning rate"
grep -q "^lr_factor=0.1" "$T/lower/checkpoints/divergence" || fail "lower: no divergence record"
[ -d "$T/lower/checkpoints/diverged_step_00000010" ] || fail "lower: the diverged step 10 was not moved aside"
grep -q "^steps_run=60$" "$T/lower/summary.txt" || fail "lower: the restarted run did not train 60 steps"
lr=$(awk -F, 'NR == 31 {print $3}' "$T/lower/metrics.csv")
/usr/bin/python3 -c "import sys; sys.exit(not (0 < float('$lr') <= 3.0))" || fail "lower: step 30's lr is $lr, not <= 3"
echo "ok: lr 30 diverged, restarted once from before the divergence at lr x 0.1 (step 30's lr $lr) and finished"
run twice train.lr=1e99 train.on_divergence=restart
permanent twice "again after the restart with a lower learning rate" 1
echo "ok: lr 1e99 diverged again after the restart: exit 80"

# ---- 3. every checkpoint damaged
run ok train.steps=20
[ $RC = 0 ] || fail "ok: exit $RC: $(tail -5 "$T/ok.out")"
for f in "$T"/ok/checkpoints/step_*/rank_*.dtck; do
  printf '\xff\xff\xff\xff\xff\xff\xff\xff' | dd of="$f" bs=1 seek=100 conv=notrunc status=none
done
run ok train.steps=30
permanent ok "no valid checkpoint"
echo "ok: every checkpoint damaged: exit 80 naming it"

# ---- 4. a required blob missing
run src train.steps=10
[ $RC = 0 ] || fail "src: exit $RC"
"$DTRAIN" ckpt export "$T/src/checkpoints" "$T/w.safetensors" > /dev/null || fail "export"
"$DTRAIN" ckpt import "$T/w.safetensors" "$T/imported" --job-id perm > /dev/null 2>&1 || fail "import"
run blob checkpoint.dir="$T/imported"
permanent blob "has no blob 'train_state'"
echo "ok: a checkpoint without the blob train_state: exit 80 naming it"

# ---- 5. no GPU
if "$DTRAIN" --version | grep -q cuda && [ "$("$DTRAIN" --version | grep -ci 'gpus: [1-9]')" = 0 ] &&
  ! nvidia-smi -L > /dev/null 2>&1; then
  rc=0
  "$DTRAIN" run "$T/r.yaml" train.device=cuda launch.backend=nccl --dry-run > "$T/gpu.out" 2>&1 || rc=$?
  [ $rc = 2 ] || fail "gpu: --dry-run exit $rc, want 2: $(cat "$T/gpu.out")"
  grep -q "no CUDA device is visible" "$T/gpu.out" || fail "gpu: $(cat "$T/gpu.out")"
  timeout 60 "$DTRAIN" launch --nproc-per-node 1 --max-restarts 2 -- "$DTRAIN" train "$T/r.yaml" \
    train.device=cuda launch.backend=nccl job.run_dir="$T/gpu" > "$T/gpu.out" 2>&1 || rc=$?
  RC=$rc
  permanent gpu "no CUDA device is visible"
  echo "ok: device cuda without a GPU: --dry-run refused it (2), a rank started anyway exited 80"
else
  echo "note: this build has no CUDA or this machine has a GPU: the no-GPU case is not checked here"
fi
echo PASS
