#!/usr/bin/env bash
# The trainer is deterministic: the same recipe and seed on 2 DP ranks give the same losses, learning
# rates, gradient norms and accuracies bit for bit (metrics.csv as text, floats printed to round-trip)
# and the same final weights (the summary's xxh64 of parameters and AdamW moments); another seed gives
# other losses. Overlap off (buckets all-reduced after backward instead of during it) and asynchronous
# checkpoints in the middle change when things happen, not what is computed: same bits again.
# Also checks what a run leaves behind: progress lines, summary, metrics.csv, loss.png.
# ctest-labels: train
# ctest-timeout: 300
source "$(dirname "${BASH_SOURCE[0]}")/launch_lib.sh"

cat > "$T/r.yaml" <<YAML
job:
  name: det
  seed: 7
launch:
  nproc_per_node: 2
parallel:
  dp: 0
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
  eval_every: 30
  threads: 1
  bucket_mb: 0.02
  first_bucket_mb: 0.01
checkpoint:
  every: 0
YAML

run() { # run NAME [overrides...]: trains into $T/NAME
  local name=$1; shift
  timeout 150 "$DTRAIN" run "$T/r.yaml" job.run_dir="$T/$name" "$@" > "$T/$name.out" 2> "$T/$name.err" \
    || fail "run $name exit $?: $(tail -20 "$T/$name.err")"
}
# step,loss,lr,grad_norm,accuracy: everything but the timings
det_cols() { cut -d, -f1,2,3,6,8 "$1"; }

run a
run b
run c job.seed=8
run d train.overlap=false checkpoint.every=20

for f in metrics.csv summary.txt recipe.yaml loss.png; do [ -s "$T/a/$f" ] || fail "run a left no $f"; done
[ "$(head -1 "$T/a/metrics.csv")" = "step,loss,lr,tokens_per_s,step_ms,grad_norm,dp_wait_ms,accuracy" ] \
  || fail "metrics.csv header: $(head -1 "$T/a/metrics.csv")"
[ "$(wc -l < "$T/a/metrics.csv")" = 61 ] || fail "metrics.csv should have 60 rows: $(wc -l < "$T/a/metrics.csv")"
[ "$(cut -d, -f8 "$T/a/metrics.csv" | grep -c '[0-9]')" = 2 ] || fail "accuracy should be evaluated at steps 30 and 60"
head -c 8 "$T/a/loss.png" | od -An -tx1 | grep -q "89 50 4e 47" || fail "loss.png is not a PNG"
# the plot: the loss on a log axis, titled with the recipe's name and layout
grep -qx "set logscale y" "$T/a/loss.gp" && grep -qx "set title 'det: 2 DP ranks, 60 steps' noenhanced" "$T/a/loss.gp" \
  || fail "loss.gp: $(cat "$T/a/loss.gp")"
# progress lines from rank 0 only: steps 1, 10, ..., 60
grep -E '^\[0:0\] step +( 1|10|20|30|40|50|60)/60 \| loss [0-9.]+ \| lr [0-9.e+-]+ \| [0-9,]+ tok/s \| [0-9.]+ ms/step \| ETA [0-9hms]+' \
  "$T/a.out" | wc -l | grep -qx 7 || fail "progress lines: $(grep step "$T/a.out")"
grep -q '^\[0:1\] step' "$T/a.out" && fail "rank 1 printed progress lines"
grep -qE '^\[0:0\] done: 60 steps in [0-9.]+ s \| [0-9,]+ tok/s \| loss [0-9.]+ -> [0-9.]+ \| accuracy [0-9.]+% \| dp wait [0-9.]+% of step time \(overlap on\) \| weights xxh64 [0-9a-f]{16}$' \
  "$T/a.out" || fail "summary line: $(grep done: "$T/a.out")"

# bit for bit: same seed, same numbers; another seed, other numbers
cmp <(det_cols "$T/a/metrics.csv") <(det_cols "$T/b/metrics.csv") \
  || fail "two runs with the same seed differ: $(diff <(det_cols "$T/a/metrics.csv") <(det_cols "$T/b/metrics.csv") | head -5)"
wa=$(grep weights_xxh64 "$T/a/summary.txt"); wb=$(grep weights_xxh64 "$T/b/summary.txt")
[ -n "$wa" ] && [ "$wa" = "$wb" ] || fail "final weights differ: $wa vs $wb"
cmp -s <(det_cols "$T/a/metrics.csv") <(det_cols "$T/c/metrics.csv") && fail "seed 8 gave the same losses as seed 7"
[ "$wa" = "$(grep weights_xxh64 "$T/c/summary.txt")" ] && fail "seed 8 gave the same weights"
cmp <(det_cols "$T/a/metrics.csv") <(det_cols "$T/d/metrics.csv") || fail "overlap off / checkpoints changed the losses"
[ "$wa" = "$(grep weights_xxh64 "$T/d/summary.txt")" ] || fail "overlap off / checkpoints changed the weights"
grep -q "overlap off" "$T/d.out" || fail "run d did not run with overlap off"
[ -d "$T/d/checkpoints/step_00000040" ] || fail "run d saved no checkpoint at step 40: $(ls "$T/d/checkpoints")"
# the loss is a real number that moves
/usr/bin/python3 - "$T/a/metrics.csv" <<'PY' || fail "losses"
import csv, math, sys
rows = list(csv.DictReader(open(sys.argv[1])))
l = [float(r["loss"]) for r in rows]
assert all(math.isfinite(x) and x > 0 for x in l), l
assert 2.0 < l[0] < 3.5, f"first loss {l[0]} should be near ln(14)=2.64"
assert l[-1] < l[0] * 0.85, f"loss did not fall: {l[0]} -> {l[-1]}"
PY
echo PASS
