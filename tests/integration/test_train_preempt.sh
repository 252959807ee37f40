#!/usr/bin/env bash
# Preemption of the built-in trainer: USR2 to `dtrain run`'s agent mid-run makes every rank stop after
# the same step (one all-reduce of the stop flag per step), save that step synchronously (a complete,
# verified checkpoint) and exit 86; running the same command again resumes from it and ends with the
# uninterrupted run's weights, bit for bit. The signal sent straight to one rank (as Slurm signals every
# process of a step) stops every rank alike, and so does SIGTERM from anyone but the agent; the agent
# counts none of it as a failure.
# ctest-labels: train
# ctest-timeout: 240
source "$(dirname "${BASH_SOURCE[0]}")/launch_lib.sh"

cat > "$T/r.yaml" <<YAML
job:
  name: preempt
  seed: 5
launch:
  nproc_per_node: 4
  max_restarts: 2
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
  steps: 3000
  global_batch: 16
  micro_batch: 4
  lr: 3.0e-3
  warmup_steps: 5
  log_every: 10
  threads: 1
checkpoint:
  every: 400
  keep: 3
YAML

timeout 200 "$DTRAIN" run "$T/r.yaml" job.run_dir="$T/a" > "$T/a.out" 2> "$T/a.err" \
  || fail "uninterrupted run exit $?: $(tail -20 "$T/a.err")"
want=$(grep weights_xxh64 "$T/a/summary.txt")

# preempt RUN TARGET SIGNAL: start `dtrain run` into $T/RUN, wait for step 150, send SIGNAL to TARGET
# ("agent", or "rank R": that rank's `dtrain train`); RC is the run's exit code, STEP the stop step
preempt() {
  local run=$1 target=$2 sig=$3 pid
  "$DTRAIN" run "$T/r.yaml" job.run_dir="$T/$run" > "$T/$run.out" 2> "$T/$run.err" & PIDS+=($!)
  local agent=$!
  for _ in $(seq 400); do grep -q "step  *1[5-9]0/" "$T/$run.out" 2>/dev/null && break; sleep 0.05; done
  grep -q "step  *1[5-9]0/" "$T/$run.out" || fail "$run: no step 150 within 20 s: $(tail "$T/$run.err")"
  if [ "$target" = agent ]; then
    pid=$agent
  else
    pid=$(pgrep -P $agent -f " train .*LOCAL_RANK|train $T/r.yaml" | sed -n "$(( ${target#rank } + 1 ))p")
    [ -n "$pid" ] || fail "$run: no rank process under the agent"
  fi
  kill -"$sig" "$pid"
  wait_exit $agent 60; RC=$?
  STEP=$(grep -o 'every rank stopped after step [0-9]*' "$T/$run.out" | grep -o '[0-9]*$')
}

preempt b agent USR2
[ $RC = 86 ] || fail "USR2 to the agent: exit $RC, want 86: $(tail -20 "$T/b.err")"
[ -n "$STEP" ] || fail "rank 0 did not report the stop: $(tail -5 "$T/b.out")"
[ "$(cat "$T/b/checkpoints/latest")" = "$STEP" ] || fail "latest is $(cat "$T/b/checkpoints/latest"), not the stop step $STEP"
"$DTRAIN" ckpt verify "$T/b/checkpoints" > "$T/verify" 2>&1 || fail "the stop checkpoint does not verify: $(cat "$T/verify")"
grep -q "restart" "$T/b.err" && fail "the stop spent a restart: $(cat "$T/b.err")"
timeout 200 "$DTRAIN" run "$T/r.yaml" job.run_dir="$T/b" > "$T/b2.out" 2> "$T/b2.err" \
  || fail "resumed run exit $?: $(tail -20 "$T/b2.err")"
grep -q "resumed from checkpoint step $STEP " "$T/b2.out" || fail "did not resume from step $STEP: $(grep -i resum "$T/b2.out")"
got=$(grep weights_xxh64 "$T/b/summary.txt")
[ "$got" = "$want" ] || fail "preempted at $STEP and resumed: $got, uninterrupted: $want"
echo "ok: USR2 to the agent: every rank stopped after step $STEP, resumed to the same weights"

preempt c "rank 2" USR1
[ $RC = 86 ] || fail "USR1 to rank 2: exit $RC, want 86: $(tail -20 "$T/c.err")"
[ -n "$STEP" ] && [ "$(cat "$T/c/checkpoints/latest")" = "$STEP" ] || fail "USR1 to rank 2: stop step '$STEP'"
grep -q "rank 2 stopped on request" "$T/c.err" || grep -q "stopped on request" "$T/c.err" || fail "USR1 to rank 2: $(cat "$T/c.err")"
grep -q "restart" "$T/c.err" && fail "USR1 to rank 2 spent a restart: $(cat "$T/c.err")"

preempt d "rank 1" TERM
[ $RC = 86 ] || fail "TERM to rank 1 (not from the agent): exit $RC, want 86: $(tail -20 "$T/d.err")"
[ -n "$STEP" ] && [ "$(cat "$T/d/checkpoints/latest")" = "$STEP" ] || fail "TERM to rank 1: stop step '$STEP'"
echo "PASS"
