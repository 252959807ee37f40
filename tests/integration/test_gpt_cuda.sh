#!/usr/bin/env bash
# The GPU GPT (runtime/gpt_cuda.c) against the CPU reference model: gpt_cuda_check compares losses,
# logits and gradients in fp32 (loss 1e-5 relative, gradients 1e-4 of max abs) and bf16 (loss 2e-2,
# gradient cosine > 0.99 per tensor), AdamW steps, the ready-callback order, then prints tokens/s.
# Skipped (77) where there is no GPU: `nvidia-smi -L` fails, or the check itself finds no device.
# ctest-labels: gpu model
# ctest-timeout: 300
source "$(dirname "${BASH_SOURCE[0]}")/launch_lib.sh"
CHK=$BUILD/bin/gpt_cuda_check
[ -x "$CHK" ] || fail "$CHK not built"

rc=0
timeout -k 5 240 "$CHK" > "$T/out" 2>&1 || rc=$?
if ! nvidia-smi -L > /dev/null 2>&1; then
  # No GPU: the check must still have seen create refuse cleanly, then skipped with a reason.
  [ $rc = 77 ] || { cat "$T/out"; fail "no GPU here, but gpt_cuda_check exited $rc instead of 77"; }
  grep '^ok' "$T/out"
  echo "no CUDA device: skipped (nvidia-smi -L failed; $(grep -m1 'skipped' "$T/out"))"
  exit 77
fi
features=$("$DTRAIN" --version | head -n1)
grep -qw cuda <<< "$features" || fail "GPUs present but this build has no CUDA: $features"
if [ $rc = 77 ]; then
  cat "$T/out"
  fail "nvidia-smi lists a GPU but gpt_cuda_check found none usable"
fi
if [ $rc != 0 ]; then
  grep -v '^ok' "$T/out" | tail -n 80
  fail "gpt_cuda_check exited $rc (repro: $CHK)"
fi
grep -Eq '^gpt_cuda_check: [0-9]+ checks, 0 failed$' "$T/out" || fail "no passing summary: $(tail -n 3 "$T/out")"
n=$(grep -c '^ok' "$T/out")
[ "$n" -ge 150 ] || fail "only $n passing check lines; expected every tensor of every config and dtype"
[ "$(grep -c '^speed' "$T/out")" = 2 ] || fail "no speed lines: $(tail -n 3 "$T/out")"
grep '^speed' "$T/out"
tail -n 1 "$T/out"
echo "ok: $n GPU model checks against the CPU model"
