#!/usr/bin/env bash
# Single-rank training throughput of dtrain's reference GPT beside the same model in PyTorch CPU: the
# same configs (gpt-tiny: block 16, 2 layers, 64 embd, 4 heads, vocab 14, batch 16; larger: block 128,
# 4 layers, 256 embd, 8 heads, vocab 256, batch 8), forward + backward + AdamW, fp32, the same thread
# counts (torch.set_num_threads). Runs bench/train_perf and bench/torch_gpt.py alternately per
# (model, threads) so both see the same machine state; prints tokens/s and the ratio ours / torch.
# --device cuda: the same models on a GPU. dtrain is `dtrain train` itself (train.device cuda,
# launch.backend nccl on 1 rank, gradients through the NCCL path, data from the host, one loss download
# per step) at --precision bf16 (default) or fp32; tokens/s from the median step time of metrics.csv
# past the first 10 steps. PyTorch runs the same model, batch and AdamW on the same GPU, bf16 under
# torch.autocast (fp32 weights and optimizer, as ours). A torch without CUDA is said, and dtrain's
# figure is printed alone. The threshold applies on cuda only when given.
# usage: bench/train_vs_torch.sh [--build DIR] [--threads 1,2] [--model tiny|larger|all] [--seconds S]
#                                [--threshold R]   (exit 1 when any ratio < R; default 1.0, 0 = off)
#                                [--device cpu|cuda] [--precision bf16|fp32] [--steps N]   (cuda)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
build=$here/../build threads=1,2 model=all seconds=20 threshold=1.0 device=cpu precision=bf16 steps=300
threshold_set=0
while [ $# -gt 0 ]; do
  case $1 in
    --build) build=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --model) model=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --threshold) threshold=$2; threshold_set=1; shift 2 ;;
    --device) device=$2; shift 2 ;;
    --precision) precision=$2; shift 2 ;;
    --steps) steps=$2; shift 2 ;;
    -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "train_vs_torch: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
case $device in cpu|cuda) ;; *) echo "train_vs_torch: --device $device: cpu or cuda" >&2; exit 2 ;; esac
case $precision in bf16|fp32) ;; *) echo "train_vs_torch: --precision $precision: bf16 or fp32" >&2; exit 2 ;; esac
[[ $steps =~ ^[0-9]+$ ]] && [ "$steps" -ge 20 ] || { echo "train_vs_torch: --steps $steps: at least 20" >&2; exit 2; }
[ "$device" = cuda ] && on_cuda=1 || on_cuda=0
perf=$build/bin/train_perf
PY=/usr/bin/python3
if [ $on_cuda = 1 ]; then
  dtrain=$build/bin/dtrain
  [ -x "$dtrain" ] || { echo "train_vs_torch: $dtrain not built" >&2; exit 1; }
  "$dtrain" --version | head -n1 | grep -qw cuda || { echo "train_vs_torch: $dtrain is built without CUDA" >&2; exit 1; }
  nvidia-smi -L > /dev/null 2>&1 || { echo "train_vs_torch: no GPU here (nvidia-smi -L failed)" >&2; exit 1; }
  [ $threshold_set = 1 ] || threshold=0
  models=$model; [ "$model" = all ] && models="tiny larger"
  tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
  torch_cuda=1
  $PY -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null || torch_cuda=0
  echo "# device: $(nvidia-smi -L | head -n1); $("$dtrain" --version | head -n1)"
  if [ $torch_cuda = 1 ]; then
    echo "# torch $($PY -c 'import torch; print(torch.__version__, torch.version.cuda)'); $precision; forward+backward+AdamW; tokens/s = batch*T/step time"
  else
    echo "# torch $($PY -c 'import torch; print(torch.__version__)' 2>/dev/null || echo '(none)') has no CUDA here: dtrain's figures alone"
  fi
  for m in $models; do
    # the configs of train_perf / torch_gpt.py: vocab, block, layers, heads, embd, batch
    if [ "$m" = tiny ]; then cfg=(14 16 2 4 64 16); data="kind: addition"; else
      cfg=(256 128 4 8 256 8); data="kind: text
  path: $here/../recipes/data/public-domain.txt"; fi
    cat > "$tmp/$m.yaml" <<YAML
job: {name: bench-$m, seed: 1337, run_dir: $tmp/run-$m}
launch: {nproc_per_node: 1, backend: nccl}
model: {vocab_size: ${cfg[0]}, block_size: ${cfg[1]}, n_layer: ${cfg[2]}, n_head: ${cfg[3]}, n_embd: ${cfg[4]}}
data:
  $data
train: {device: cuda, precision: $precision, steps: $steps, global_batch: ${cfg[5]}, micro_batch: ${cfg[5]},
        lr: 1.0e-3, min_lr: 1.0e-3, warmup_steps: 0, log_every: 1000000, threads: 1}
checkpoint: {every: 0, resume: false}
YAML
    timeout 600 "$dtrain" train "$tmp/$m.yaml" > "$tmp/$m.out" 2>&1 || { tail -n 20 "$tmp/$m.out" >&2; echo "train_vs_torch: dtrain train $m failed" >&2; exit 1; }
    $PY - "$tmp/run-$m/metrics.csv" "$m" "${cfg[5]}" "${cfg[1]}" "$precision" >> "$tmp/ours.jsonl" <<'PY'
import csv, json, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1])))[10:]
ms = statistics.median(float(r["step_ms"]) for r in rows)
B, T = int(sys.argv[3]), int(sys.argv[4])
print(json.dumps(dict(impl="dtrain", model=sys.argv[2], batch=B, T=T, steps=len(rows), step_ms=ms,
                      tokens_per_s=B * T / (ms / 1e3), precision=sys.argv[5])))
PY
    if [ $torch_cuda = 1 ]; then
      $PY "$here/torch_gpt.py" --device cuda --precision "$precision" --model "$m" --threads 1 --warmup 10 \
        --steps "$steps" --seconds "$seconds" --json >> "$tmp/torch.jsonl"
    fi
  done
  [ -s "$tmp/torch.jsonl" ] || : > "$tmp/torch.jsonl"
  $PY - "$tmp/ours.jsonl" "$tmp/torch.jsonl" "$threshold" <<'PY'
import json, sys
ours = [json.loads(l) for l in open(sys.argv[1])]
ref = [json.loads(l) for l in open(sys.argv[2])]
thr = float(sys.argv[3])
print("%-8s %6s %5s %9s %10s %14s %14s %8s" % ("model", "batch", "T", "precision", "step_ms", "dtrain tok/s",
                                              "torch tok/s", "ratio"))
worst = None
for i, o in enumerate(ours):
    r = ref[i] if i < len(ref) else None
    ratio = o["tokens_per_s"] / r["tokens_per_s"] if r else None
    if ratio is not None:
        worst = ratio if worst is None else min(worst, ratio)
    print("%-8s %6d %5d %9s %10.3f %14.1f %14s %8s" % (o["model"], o["batch"], o["T"], o["precision"], o["step_ms"],
          o["tokens_per_s"], "%.1f" % r["tokens_per_s"] if r else "n/a", "%.2fx" % ratio if r else "n/a"))
if worst is None:
    print("# no PyTorch figure on this GPU: dtrain alone")
    sys.exit(0)
ok = thr <= 0 or worst >= thr
print(f"# worst ratio {worst:.2f}x (threshold {thr:.2f}x): {'ok' if ok else 'BELOW THRESHOLD'}")
sys.exit(0 if ok else 1)
PY
  exit $?
fi
[ -x "$perf" ] || { echo "train_vs_torch: $perf not built" >&2; exit 1; }
$PY -c 'import torch' 2>/dev/null || { echo "train_vs_torch: $PY cannot import torch" >&2; exit 1; }
models=$model; [ "$model" = all ] && models="tiny larger"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT

echo "# machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# torch $($PY -c 'import torch; print(torch.__version__)'); fp32; forward+backward+AdamW; tokens/s = batch*T*steps/time"
for m in $models; do
  for t in ${threads//,/ }; do
    "$perf" --model "$m" --threads "$t" --seconds "$seconds" --json >> "$tmp/ours.jsonl"
    OMP_NUM_THREADS=$t $PY "$here/torch_gpt.py" --model "$m" --threads "$t" --seconds "$seconds" --json >> "$tmp/torch.jsonl"
  done
done
$PY - "$tmp/ours.jsonl" "$tmp/torch.jsonl" "$threshold" <<'PY'
import json, sys
ours = [json.loads(l) for l in open(sys.argv[1])]
ref = [json.loads(l) for l in open(sys.argv[2])]
thr = float(sys.argv[3])
print("%-8s %10s %6s %5s %8s %14s %14s %8s" % ("model", "params", "batch", "T", "threads", "dtrain tok/s",
                                                "torch tok/s", "ratio"))
worst = None
for o, r in zip(ours, ref):
    ratio = o["tokens_per_s"] / r["tokens_per_s"]
    worst = ratio if worst is None else min(worst, ratio)
    print("%-8s %10d %6d %5d %8d %14.1f %14.1f %7.2fx" % (o["model"], o["params"], o["batch"], o["T"], o["threads"],
                                                          o["tokens_per_s"], r["tokens_per_s"], ratio))
ok = thr <= 0 or worst >= thr
print(f"# worst ratio {worst:.2f}x (threshold {thr:.2f}x): {'ok' if ok else 'BELOW THRESHOLD'}")
sys.exit(0 if ok else 1)
PY
