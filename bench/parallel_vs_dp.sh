#!/usr/bin/env bash
# Tensor and pipeline parallelism, ZeRO-1, beside plain data parallelism in one run (the same machine
# state), from each run's summary.txt:
#   1. tokens/s of gpt-small (4 layers, 256 wide) on 4 ranks: dp4, dp2 x tp2, tp4 (rounds interleaved,
#      each cell the median); the ratio to dp4;
#   2. tokens/s of recipes/gpt-small-3d.yaml (dp2 x tp2 x pp2, ZeRO-1) beside the same model at dp8;
#   3. AdamW state per rank (bytes allocated for the moments) with and without ZeRO-1 at dp 2 and 4,
#      beside 8 bytes x parameters / dp;
#   4. bytes through the tp communicator per step at tp 2 and 4 (rank 0's all-reduce payload), beside the
#      formula 4 all-reduces of b*s*h floats per layer (forward and backward) and the embedding, head and
#      cross-entropy all-reduces on top;
#   5. activation memory of pipeline stage 0 at pp 4, m 16 micro-batches, gpipe against 1f1b (bytes the
#      model allocated for its activation slots: m of them under gpipe, p under 1f1b).
#   bench/parallel_vs_dp.sh [--build DIR] [--steps N] [--rounds R]
set -euo pipefail
build=build; steps=20; rounds=3
while [ $# -gt 0 ]; do
  case $1 in
    --build) build=$2; shift 2 ;;
    --steps) steps=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    *) echo "parallel_vs_dp.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
src=$(cd "$(dirname "$0")/.." && pwd)
D=$build/bin/dtrain
[ -x "$D" ] || { echo "parallel_vs_dp.sh: build $build first" >&2; exit 2; }
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
val() { sed -n "s/^$2=//p" "$T/$1/summary.txt"; }
run() { # NAME RECIPE NPROC [overrides...]
  local name=$1 recipe=$2 n=$3; shift 3
  "$D" run "$recipe" job.run_dir="$T/$name" launch.nproc_per_node="$n" checkpoint.resume=false \
    checkpoint.every=0 train.steps="$steps" train.warmup_steps=2 train.log_every=1000 train.threads=1 "$@" \
    > "$T/$name.out" 2>&1 || { tail -20 "$T/$name.out"; exit 1; }
}
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
small=$src/recipes/gpt-small.yaml
echo "parallel_vs_dp: $(date -u +%F), $(nproc) cores, $steps steps per run, $rounds rounds"
echo "memcpy on this machine: $(/usr/bin/python3 -c 'import numpy as np, time
a=np.ones(1<<25,np.float32); b=np.empty_like(a); t=time.time()
for _ in range(5): b[:]=a
print(f"{5*a.nbytes/(time.time()-t)/1e9:.1f} GB/s")')"

echo; echo "1. gpt-small on 4 ranks, tokens/s (median of $rounds)"
for r in $(seq "$rounds"); do
  run dp4-$r "$small" 4 parallel.dp=4; run tp2-$r "$small" 4 parallel.dp=2 parallel.tp=2; run tp4-$r "$small" 4 parallel.dp=1 parallel.tp=4
done
base=$(for r in $(seq "$rounds"); do val dp4-$r tokens_per_s; done | median)
for l in dp4 tp2 tp4; do
  v=$(for r in $(seq "$rounds"); do val $l-$r tokens_per_s; done | median)
  printf "  %-8s %10.0f tok/s  %.2fx dp4\n" "$l" "$v" "$(awk -v a="$v" -v b="$base" 'BEGIN{print a/b}')"
done

echo; echo "2. gpt-small-3d (8 ranks), tokens/s (median of $rounds)"
for r in $(seq "$rounds"); do
  run 3d-$r "$src/recipes/gpt-small-3d.yaml" 8; run dp8-$r "$src/recipes/gpt-small-3d.yaml" 8 parallel.dp=8 parallel.tp=1 parallel.pp=1 train.zero=0
done
a=$(for r in $(seq "$rounds"); do val 3d-$r tokens_per_s; done | median); b=$(for r in $(seq "$rounds"); do val dp8-$r tokens_per_s; done | median)
printf "  dp2 x tp2 x pp2 %10.0f tok/s, dp8 %10.0f tok/s: %.2fx\n" "$a" "$b" "$(awk -v a="$a" -v b="$b" 'BEGIN{print a/b}')"

echo; echo "3. AdamW state per rank (bytes allocated), gpt-small"
for dp in 2 4; do
  run z0-$dp "$small" "$dp" parallel.dp="$dp" train.global_batch=32 train.micro_batch=8
  run z1-$dp "$small" "$dp" parallel.dp="$dp" train.global_batch=32 train.micro_batch=8 train.zero=1
  p=$(val z0-$dp params_rank0); o0=$(val z0-$dp optimizer_bytes_rank0); o1=$(val z1-$dp optimizer_bytes_rank0)
  printf "  dp %d: plain %d, ZeRO-1 %d (%.3f of plain; 8 x %d params / dp = %d)\n" "$dp" "$o0" "$o1" \
    "$(awk -v a="$o1" -v b="$o0" 'BEGIN{print a/b}')" "$p" $((8 * p / dp))
done

echo; echo "4. tp all-reduce payload per step (rank 0), gpt-small: micro 8 x 128 tokens, 256 wide, 4 layers"
for tp in 2 4; do
  run tpb-$tp "$small" 4 parallel.dp=$((4 / tp)) parallel.tp=$tp
  m=$((32 / (8 * (4 / tp)))); NC=$((8 * 128 * 256)); N=$((8 * 128))
  got=$(val tpb-$tp tp_bytes_per_step_rank0)
  layers=$((4 * 4 * NC * 4 * m)); extra=$(((2 * NC + 3 * N) * 4 * m))
  printf "  tp %d: %d bytes/step; formula 4 x L x b*s*h x 4 B x %d micro-batches = %d, + embedding, head, cross-entropy %d = %d\n" \
    "$tp" "$got" "$m" "$layers" "$extra" $((layers + extra))
done

echo; echo "5. activation memory of stage 0 at pp 4, 16 micro-batches (bytes allocated)"
for s in gpipe 1f1b; do
  run act-$s "$small" 4 parallel.dp=1 parallel.pp=4 parallel.schedule=$s train.global_batch=32 train.micro_batch=2
  printf "  %-6s %12d\n" "$s" "$(val act-$s activation_bytes_rank0)"
done
