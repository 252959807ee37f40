#!/usr/bin/env bash
# A checkpoint that cannot be written loses that checkpoint, not the run: with the checkpoint
# directory on a read-only mount (root ignores permission bits, so a read-only tmpfs in a private
# mount namespace), every mid-run save fails with one message naming the file system error and
# training goes on to the last step; the final save, which the run needs, fails the job with a clear
# message. Synchronous and asynchronous saves alike.
# ctest-labels: train faults
# ctest-timeout: 120
source "$(dirname "${BASH_SOURCE[0]}")/launch_lib.sh"

cat > "$T/r.yaml" <<YAML
job:
  name: rotest
launch:
  nproc_per_node: 2
  max_restarts: 0
model:
  block_size: 11
  n_layer: 1
  n_head: 2
  n_embd: 32
data:
  kind: addition
  digits: 3
train:
  steps: 30
  global_batch: 16
  micro_batch: 4
  warmup_steps: 2
  log_every: 10
  threads: 1
checkpoint:
  every: 10
YAML
mkdir -p "$T/ro"
for mode in false true; do
  rc=0
  timeout 100 unshare -m bash -c "mount -t tmpfs -o size=4M tmpfs '$T/ro' && mkdir -p '$T/ro/ck' &&
    mount -o remount,ro '$T/ro' && '$DTRAIN' run '$T/r.yaml' checkpoint.async=$mode checkpoint.dir='$T/ro/ck' \
    job.run_dir='$T/run-$mode'" > "$T/out-$mode" 2>&1 || rc=$?
  [ $rc = 1 ] || fail "async=$mode: exit $rc, want 1 (the final save cannot be written): $(tail -5 "$T/out-$mode")"
  grep -q "step 10 not committed: .*Read-only file system" "$T/out-$mode" ||
    fail "async=$mode: no warning for the failed save of step 10: $(grep -i warn "$T/out-$mode" | head -3)"
  last=$(tail -n 1 "$T/run-$mode/metrics.csv" | cut -d, -f1)
  [ "$last" = 30 ] || fail "async=$mode: training stopped at step '$last', not 30"
  grep -q "dtrain train: rank [01]: checkpoint.*step 30 not committed: .*Read-only file system" "$T/out-$mode" ||
    fail "async=$mode: the final failure is not named: $(tail -3 "$T/out-$mode")"
  echo "ok: async=$mode: saves of steps 10 and 20 failed with a warning, all 30 steps ran, the final save failed the job"
done
echo PASS
