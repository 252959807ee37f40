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
CHK=$BUILD/bin/ckpt_gpu_check
[ -x "$CHK" ] || fail "$CHK not built"

rc=0
timeout -k 5 240 "$CHK" "$T" > "$T/out" 2>&1 || rc=$?
if ! nvidia-smi -L > /dev/null 2>&1; then
  [ $rc = 77 ] || { cat "$T/out"; fail "no GPU here, but ckpt_gpu_check exited $rc instead of 77"; }
  grep -q '^ok   device tensor refused: not supported' "$T/out" || { cat "$T/out"; fail "no clean refusal line"; }
  echo "no CUDA device: skipped (nvidia-smi -L failed; $(grep -m1 'skipped' "$T/out"))"
  exit 77
fi
features=$("$DTRAIN" --version | head -n1)
grep -qw cuda <<< "$features" || fail "GPUs present but this build has no CUDA: $features"
if [ $rc = 77 ]; then
  cat "$T/out"
  fail "nvidia-smi lists a GPU but ckpt_gpu_check found none usable"
fi
if [ $rc != 0 ]; then
  grep -v '^ok' "$T/out" | tail -n 60
  fail "ckpt_gpu_check exited $rc (repro: $CHK DIR)"
fi
grep -Eq '^ckpt_gpu_check: [0-9]+ checks, 0 failed$' "$T/out" || fail "no passing summary: $(tail -n 3 "$T/out")"
n=$(grep -c '^ok' "$T/out")
[ "$n" -ge 20 ] || { cat "$T/out"; fail "only $n passing check lines; expected every tensor of both steps"; }
grep -E '^(snapshot|sync save|async save):' "$T/out"
echo "ok: $n device checkpoint checks"
