#!/usr/bin/env bash
# Single-rank training throughput of dtrain's reference GPT beside the same model in PyTorch CPU: the
# same configs (gpt-tiny: block 16, 2 layers, 64 embd, 4 heads, vocab 14, batch 16; larger: block 128,
# 4 layers, 256 embd, 8 heads, vocab 256, batch 8), forward + backward + AdamW, fp32, the same thread
# counts (torch.set_num_threads). Runs bench/train_perf and bench/torch_gpt.py alternately per
# (model, threads) so both see the same machine state; prints tokens/s and the ratio ours / torch.
# usage: bench/train_vs_torch.sh [--build DIR] [--threads 1,2] [--model tiny|larger|all] [--seconds S]
#                                [--threshold R]   (exit 1 when any ratio < R; default 1.0, 0 = off)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
build=$here/../build threads=1,2 model=all seconds=20 threshold=1.0
while [ $# -gt 0 ]; do
  case $1 in
    --build) build=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --model) model=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --threshold) threshold=$2; shift 2 ;;
    -h|--help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "train_vs_torch: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
perf=$build/bin/train_perf
PY=/usr/bin/python3
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
