#!/usr/bin/env bash
# The GPU kernels (runtime/kernels_cuda*.cu) against a plain C reference: gpu_kernels_check runs every op
# in fp32 (tolerance 1e-4) and bf16 mixed precision (2e-2) on two shapes and prints one line per check;
# the weight-gradient reductions and sumsq also run twice at many-block shapes (8192 rows, odd sizes)
# and must give bit-identical results (determinism).
# Skipped (77) where there is no GPU: `nvidia-smi -L` fails, or the check itself finds no device.
# ctest-labels: gpu
# ctest-timeout: 300
source "$(dirname "${BASH_SOURCE[0]}")/launch_lib.sh"
source "$(dirname "${BASH_SOURCE[0]}")/gpu_lib.sh"
gpu_run_check gpu_kernels_check
n=$(grep -c '^ok' "$T/out")
[ "$n" -ge 60 ] || fail "only $n passing check lines; expected every op, dtype and shape"
tail -n 1 "$T/out"
echo "ok: $n GPU kernel checks against the CPU reference"
