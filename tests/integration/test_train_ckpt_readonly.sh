#!/usr/bin/env bash
# A checkpoint that cannot be written loses that checkpoint, not the run, once: with the checkpoint
# directory on a read-only mount (root ignores permission bits, so a read-only tmpfs in a private
# mount namespace), the first mid-run save fails with one message naming the file system error and
# training goes on; the second refusal in a row stops the run as a permanent failure (exit 80: a
# restart would only repeat it, so none is spent although max_restarts allows 2), and so does a final
# save, which the run needs. Synchronous and asynchronous saves alike.
# ctest-labels: train faults
# ctest-timeout: 120
source "$(dirname "${BASH_SOURCE[0]}")/launch_lib.sh"

cat > "$T/r.yaml" <<YAML
job:
  name: rotest
launch:
  nproc_per_node: 2
  max_restarts: 2
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
# run TAG STEPS ASYNC: the recipe on the read-only checkpoint directory; sets RC and LAST (the last step)
run() {
  RC=0
  timeout 100 unshare -m bash -c "mount -t tmpfs -o size=4M tmpfs '$T/ro' && mkdir -p '$T/ro/ck' &&
    mount -o remount,ro '$T/ro' && '$DTRAIN' run '$T/r.yaml' train.steps=$2 checkpoint.async=$3 \
    checkpoint.dir='$T/ro/ck' job.run_dir='$T/run-$1'" > "$T/out-$1" 2>&1 || RC=$?
  LAST=$(tail -n 1 "$T/run-$1/metrics.csv" | cut -d, -f1)
}
for mode in false true; do
  run "$mode" 30 "$mode"
  [ $RC = 80 ] || fail "async=$mode: exit $RC, want 80 (a permanent failure): $(tail -5 "$T/out-$mode")"
  grep -q "step 10 not committed: .*Read-only file system.*training goes on" "$T/out-$mode" ||
    fail "async=$mode: no warning for the failed save of step 10: $(grep -i warn "$T/out-$mode" | head -3)"
  # an asynchronous save's refusal is learned when the next one starts (here: the final one, at 30)
  want=20 && [ $mode = true ] && want=30
  [ "$LAST" = $want ] || fail "async=$mode: training stopped at step '$LAST', not $want (the second refused save)"
  grep -q "dtrain train: rank [01]: permanent failure: .*step 20 not committed: .*Read-only file system.*second save in a row" \
    "$T/out-$mode" || fail "async=$mode: the second refusal is not named: $(tail -3 "$T/out-$mode")"
  grep -q "restarting every worker" "$T/out-$mode" && fail "async=$mode: a restart was spent on it"
  grep -q "a permanent failure: no restart" "$T/out-$mode" || fail "async=$mode: the agent did not say why it stops"
  echo "ok: async=$mode: the save of step 10 failed with a warning, training went on, the second (step 20) stopped the job at step $LAST with 80, no restart"
done
# the final save, which the run needs
run final 20 true
[ $RC = 80 ] || fail "final: exit $RC, want 80: $(tail -5 "$T/out-final")"
[ "$LAST" = 20 ] || fail "final: training stopped at step '$LAST', not 20"
grep -q "dtrain train: rank [01]: permanent failure: checkpoint.*step 20 not committed: .*Read-only file system" "$T/out-final" ||
  fail "final: the final failure is not named: $(tail -3 "$T/out-final")"
echo "ok: the final save refused: exit 80 naming it"
echo PASS
