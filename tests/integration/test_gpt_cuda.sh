#!/usr/bin/env bash
# The GPU GPT (runtime/model/gpt_cuda.c) against the CPU reference model: gpt_cuda_check compares losses,
# logits and gradients in fp32 (loss 1e-5 relative, gradients 1e-4 of max abs) and bf16 (loss 2e-2,
# gradient cosine > 0.99 per tensor), AdamW steps, the ready-callback order, determinism (two models
# from the same weights and batches: losses, every gradient tensor, the gradient norm and the weights
# after AdamW bit-identical, f32 and bf16), then prints tokens/s.
# Skipped (77) where there is no GPU: `nvidia-smi -L` fails, or the check itself finds no device.
# ctest-labels: gpu model
# ctest-timeout: 300
source "$(dirname "${BASH_SOURCE[0]}")/launch_lib.sh"
source "$(dirname "${BASH_SOURCE[0]}")/gpu_lib.sh"
gpu_run_check gpt_cuda_check
n=$(grep -c '^ok' "$T/out")
[ "$n" -ge 150 ] || fail "only $n passing check lines; expected every tensor of every config and dtype"
[ "$(grep -c '^speed' "$T/out")" = 2 ] || fail "no speed lines: $(tail -n 3 "$T/out")"
nrep=$(grep -c '^ok .*repeat:' "$T/out")
[ "$nrep" -ge 40 ] || fail "only $nrep passing determinism checks; expected every tensor of 2 configs x 2 dtypes"
grep '^speed' "$T/out"
tail -n 1 "$T/out"
echo "ok: $n GPU model checks against the CPU model"
