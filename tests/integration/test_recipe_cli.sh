#!/usr/bin/env bash
# `dtrain run` / `dtrain train` with recipes: a bad recipe (or override, or launch flag that breaks it)
# exits 2 with one `file:line:col: what` line and starts nothing (no run directory, no rank output);
# --dry-run prints the effective recipe and the launch line and reads back the same; a tiny recipe
# really trains through launch + train and leaves the effective recipe in its run directory.
# ctest-labels: recipe launch
# ctest-timeout: 240
source "$(dirname "${BASH_SOURCE[0]}")/launch_lib.sh"
cd "$T" || fail "cd $T"
export DTRAIN_JOB_TOKEN=recipe-cli-test

cat > "$T/ok.yaml" <<'EOF'
job:
  name: clitest
launch:
  nproc_per_node: 2
parallel:
  dp: 0
model:
  block_size: 12
  n_layer: 1
  n_head: 2
  n_embd: 16
data:
  kind: addition
  digits: 2
train:
  steps: 4
  global_batch: 8
  micro_batch: 2
  warmup_steps: 1
  log_every: 1
EOF

# bad RECIPE_TEXT RC WANT_STDERR -- dtrain args...: exit RC, exactly WANT on stderr (one line), nothing
# on stdout, no run directory, within 20 s
bad() {
  local text=$1 want_rc=$2 want=$3; shift 4
  [ -n "$text" ] && printf '%s' "$text" > "$T/bad.yaml"
  rm -rf "$T/runs"
  timeout 20 "$DTRAIN" "$@" > "$T/out" 2> "$T/err" < /dev/null; local rc=$?
  [ $rc != 124 ] || fail "hung: dtrain $*"
  [ $rc = "$want_rc" ] || fail "exit $rc, want $want_rc: dtrain $* ($(cat "$T/err"))"
  [ "$(cat "$T/err")" = "$want" ] || fail "dtrain $*: stderr is
$(cat "$T/err")
want
$want"
  [ ! -s "$T/out" ] || fail "dtrain $* printed on stdout (did a rank start?): $(cat "$T/out")"
  [ ! -e "$T/runs" ] || fail "dtrain $* created the run directory although the recipe is bad"
  echo "ok ($rc): $want"
}

B=$T/bad.yaml
bad $'model:\n  n_layer: 2\n  n_heads: 4\n' 2 "$B:3:3: unknown key 'n_heads' in model (did you mean 'n_head'?)" -- run "$B"
bad $'train:\n  steps: 10\n  lr: fast\n' 2 "$B:3:7: train.lr: expected a number, got 'fast'" -- run "$B"
bad $'launch:\n  nproc_per_node: 4\nparallel:\n  dp: 2\n' 2 \
  "$B:4:7: parallel: dp*tp*pp = 2*1*1 = 2, but the launch section makes 4 ranks (nproc_per_node 4 x nnodes 1)" \
  -- run "$B"
bad $'model:\n  n_head: 3\n' 2 "$B:2:11: model: n_embd 64 is not divisible by n_head 3" -- run "$B"
bad $'data:\n  kind: text\n  path: corpus/missing.txt\n' 2 \
  "$B:3:9: data.path: '$T/corpus/missing.txt': No such file or directory" -- run "$B"
bad $'train:\n  steps: 3\n   lr: 0.1\n' 2 "$B:3:6: YAML syntax error: mapping values are not allowed in this context" \
  -- run "$B"
bad $'train:\n  precision: bf16\n' 2 \
  "$B:2:14: train.precision bf16 needs train.device cuda (the CPU path is fp32)" -- run "$B"
# overrides and launch flags are checked the same way
bad "" 2 "override 'train.stepz=20': unknown key 'stepz' in train (did you mean 'steps'?)" \
  -- run "$T/ok.yaml" train.stepz=20
bad "" 2 "override 'train.steps=many': train.steps: expected an integer, got 'many'" -- run "$T/ok.yaml" train.steps=many
# a consistent mesh the model cannot split: refused before any rank starts
bad "" 2 "override 'parallel.tp=2': model: n_head 1 is not divisible by parallel.tp 2 (tensor parallelism splits the heads)" \
  -- run "$T/ok.yaml" parallel.tp=2 parallel.dp=1 model.n_head=1 model.n_embd=16
bad "" 2 "override 'parallel.pp=2': model: n_layer 1 is fewer than the 2 pipeline stages (pp 2 x virtual_stages 1): every stage needs a layer" \
  -- run "$T/ok.yaml" parallel.pp=2 parallel.dp=1
bad "" 2 "$T/ok.yaml:17:17: train: global_batch 8 is not a multiple of micro_batch 2 x dp 3 = 6" \
  -- run "$T/ok.yaml" --nproc-per-node 3
bad "" 2 "override 'parallel.dp=4': parallel: dp*tp*pp = 4*1*1 = 4, but the launch section makes 2 ranks (nproc_per_node 2 x nnodes 1)" \
  -- run "$T/ok.yaml" parallel.dp=4 --nproc_per_node=2
timeout 20 "$DTRAIN" run "$T/ok.yaml" --nproc-per-node lots > "$T/out" 2> "$T/err"; rc=$?
[ $rc = 2 ] && grep -q "^dtrain run: --nproc-per-node: 'lots'" "$T/err" || fail "--nproc-per-node lots: exit $rc, $(cat "$T/err")"
# a warmup longer than the run is clamped, with one warning
"$DTRAIN" run "$T/ok.yaml" train.warmup_steps=9 --dry-run > "$T/out" 2> "$T/err" || fail "warmup 9: $(cat "$T/err")"
grep -q "^  warmup_steps: 4$" "$T/out" && [ "$(cat "$T/err")" = "dtrain: warning: override 'train.warmup_steps=9': train.warmup_steps 9 is more than train.steps 4: warming up over all 4 steps" ] \
  || fail "warmup 9: $(cat "$T/err")"
bad "" 2 "$T/nope.yaml: cannot open the recipe: No such file or directory" -- run "$T/nope.yaml"
bad "" 2 "dtrain run: unknown option '--bogus' (try 'dtrain run --help')" -- run "$T/ok.yaml" --bogus
bad "" 2 "dtrain run: unexpected argument 'extra' (overrides are section.key=value)" -- run "$T/ok.yaml" extra
bad "" 2 "dtrain run: no recipe given (usage: dtrain run RECIPE [section.key=value ...] [--dry-run])" -- run --dry-run
bad "" 2 "override 'launch.nnodes=2': launch.nnodes: 2 nodes need launch.rdzv_endpoint (host:port) so that they can meet" \
  -- run "$T/ok.yaml" --nnodes 2
"$DTRAIN" run --help | grep -q '^usage: dtrain run RECIPE' || fail "dtrain run --help"
"$DTRAIN" train --help | grep -q '^usage: dtrain train RECIPE' || fail "dtrain train --help"
# `dtrain train` checks against the world it was started in
WORLD_SIZE=3 RANK=0 MASTER_ADDR=127.0.0.1 MASTER_PORT=1 bad $'parallel:\n  dp: 2\n' 2 "$B:2:7: parallel: dp*tp*pp = 2*1*1 = 2, but the job has 3 ranks" \
  -- train "$B"
bad "" 2 "override 'model.n_embd=x': model.n_embd: expected an integer, got 'x'" -- train "$T/ok.yaml" model.n_embd=x

# --dry-run: the effective recipe with defaults, overrides and flags applied; the launch line; no run dir
rm -rf "$T/runs"
"$DTRAIN" run "$T/ok.yaml" train.steps=20 --nproc-per-node 4 --max-restarts=2 --log-dir "$T/logs" --dry-run \
  > "$T/dry.yaml" 2> "$T/dry.err" || fail "dry run failed: $(cat "$T/dry.err")"
[ ! -e "$T/runs" ] || fail "--dry-run created the run directory"
[ ! -e "$T/logs" ] || fail "--dry-run created the log directory"
for want in "  steps: 20" "  nproc_per_node: 4" "  max_restarts: 2" "  dp: 4" "  beta2: 0.95" "  vocab_size: 14" \
  "  run_dir: \"$T/runs/clitest\"" "  dir: \"$T/runs/clitest/checkpoints\"" "  kind: addition"; do
  grep -qxF -- "$want" "$T/dry.yaml" || fail "dry run output lacks '$want': $(cat "$T/dry.yaml")"
done
launch_line=$(grep '^# dtrain would run: ' "$T/dry.yaml") || fail "no launch line: $(cat "$T/dry.yaml")"
case "$launch_line" in
  *"dtrain launch --nproc-per-node 4 --nnodes 1 --max-restarts 2 --worker-timeout 180 --worker-start-timeout 900 --log-dir $T/logs -- "*" train $T/ok.yaml train.steps=20 launch.nproc_per_node=4 launch.max_restarts=2") ;;
  *) fail "launch line: $launch_line" ;;
esac
echo "ok: dry run: $launch_line"
# the effective recipe reads back to itself (first line names the source)
"$DTRAIN" run "$T/dry.yaml" --dry-run > "$T/dry2.yaml" 2> "$T/dry.err" || fail "re-reading the dry run: $(cat "$T/dry.err")"
diff <(grep -v '^#' "$T/dry.yaml") <(grep -v '^#' "$T/dry2.yaml") > "$T/diff" || fail "round trip differs: $(cat "$T/diff")"
echo "ok: the effective recipe reads back unchanged"

# a real run: 2 ranks through launch + train; the run directory keeps the effective recipe
rm -rf "$T/runs"
timeout 180 "$DTRAIN" run "$T/ok.yaml" train.steps=3 > "$T/run.out" 2> "$T/run.err"; rc=$?
[ $rc = 0 ] || fail "dtrain run exited $rc: $(tail -20 "$T/run.err") $(tail -20 "$T/run.out")"
[ -s "$T/runs/clitest/recipe.yaml" ] || fail "no effective recipe in the run directory"
grep -qxF "  steps: 3" "$T/runs/clitest/recipe.yaml" || fail "the run directory's recipe lacks the override"
ls "$T"/runs/clitest/checkpoints/step_*/rank_00001.dtck >/dev/null 2>&1 ||
  fail "rank 1 wrote no checkpoint shard: $(cat "$T/run.out" "$T/run.err")"
echo "ok: dtrain run trained 3 steps on 2 ranks"
echo PASS
