#!/usr/bin/env bash
# Makes recipes/data/gpt-text-base.safetensors, the pretrained weights recipes/gpt-finetune.yaml starts
# from: a short run of recipes/gpt-text.yaml (its model at n_embd 64, 2 data-parallel ranks) on the prose
# half of public-domain.txt (Lincoln, the Declaration, the Preamble: everything before SONNETS), exported
# in Hugging Face GPT-2's layout as bf16 (about 240 KB). The fine-tune then meets the sonnets for the first
# time. Deterministic on one machine (the same build and CPU give the same tensors bit for bit; only the
# metadata's dtrain_created differs).
# usage: bash recipes/data/make-gpt-text-base.sh [OUT] (DTRAIN: the dtrain binary, default build/bin/dtrain;
# STEPS: pretraining steps, default 500)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
DTRAIN=${DTRAIN:-$root/build/bin/dtrain}
OUT=${1:-$here/gpt-text-base.safetensors}
STEPS=${STEPS:-500}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
sed '/^SONNETS$/,$d' "$here/public-domain.txt" > "$work/prose.txt"
"$DTRAIN" run "$root/recipes/gpt-text.yaml" data.path="$work/prose.txt" model.n_embd=64 train.steps="$STEPS" \
  train.warmup_steps=20 train.log_every=100 checkpoint.every=0 job.name=gpt-text-base job.run_dir="$work/run"
"$DTRAIN" ckpt export "$work/run/checkpoints" "$OUT" --layout hf-gpt2 --dtype bf16
