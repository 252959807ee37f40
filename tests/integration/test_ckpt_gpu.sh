#!/usr/bin/env bash
# Checkpoints of tensors in CUDA device memory: ckpt_gpu_check saves f32 and bf16 device tensors (whole,
# strided sub-boxes, a shard of a 3-D tensor) synchronously and asynchronously (overwriting the device
# memory right after the async save returns), loads both steps into fresh device buffers in another
# layout, compares bit for bit, and prints the blocking time of both saves.
# Skipped (77) where there is no GPU: `nvidia-smi -L` fails, or the check itself finds no device (it
# still checks that a device tensor is refused cleanly there).
# ctest-labels: gpu ckpt
# ctest-timeout: 300
source "$(dirname "${BASH_SOURCE[0]}")/launch_lib.sh"
source "$(dirname "${BASH_SOURCE[0]}")/gpu_lib.sh"
# Without a GPU the program must still have seen a device tensor refused cleanly.
GPU_NODEV_EXPECT='^ok   device tensor refused: not supported' gpu_run_check ckpt_gpu_check "$T"
n=$(grep -c '^ok' "$T/out")
[ "$n" -ge 20 ] || { cat "$T/out"; fail "only $n passing check lines; expected every tensor of both steps"; }
grep -E '^(snapshot|sync save|async save):' "$T/out"
echo "ok: $n device checkpoint checks"
