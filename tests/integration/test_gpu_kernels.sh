#!/usr/bin/env bash
# The GPU kernels (runtime/kernels_cuda*.cu) against a plain C reference: gpu_kernels_check runs every op
# in fp32 (tolerance 1e-4) and bf16 mixed precision (2e-2) on two shapes and prints one line per check.
# Skipped (77) where there is no GPU: `nvidia-smi -L` fails, or the check itself finds no device.
# ctest-labels: gpu
# ctest-timeout: 300
source "$(dirname "${BASH_SOURCE[0]}")/launch_lib.sh"
CHK=$BUILD/bin/gpu_kernels_check
[ -x "$CHK" ] || fail "$CHK not built"

rc=0
timeout -k 5 240 "$CHK" > "$T/out" 2>&1 || rc=$?
if ! nvidia-smi -L > /dev/null 2>&1; then
  # No GPU: the check must still have run its no-device checks and skipped with a reason.
  [ $rc = 77 ] || { cat "$T/out"; fail "no GPU here, but gpu_kernels_check exited $rc instead of 77"; }
  echo "no CUDA device: skipped (nvidia-smi -L failed; $(grep -m1 'skipped' "$T/out"))"
  exit 77
fi
# A GPU without CUDA in the build is a build problem, not missing hardware.
features=$("$DTRAIN" --version | head -n1)
grep -qw cuda <<< "$features" || fail "GPUs present but this build has no CUDA: $features"
if [ $rc = 77 ]; then
  cat "$T/out"
  fail "nvidia-smi lists a GPU but gpu_kernels_check found none usable"
fi
if [ $rc != 0 ]; then
  grep -v '^ok' "$T/out" | tail -n 60
  fail "gpu_kernels_check exited $rc (repro: $CHK)"
fi
grep -Eq '^gpu_kernels_check: [0-9]+ checks, 0 failed$' "$T/out" || fail "no passing summary: $(tail -n 3 "$T/out")"
n=$(grep -c '^ok' "$T/out")
[ "$n" -ge 60 ] || fail "only $n passing check lines; expected every op, dtype and shape"
tail -n 1 "$T/out"
echo "ok: $n GPU kernel checks against the CPU reference"
