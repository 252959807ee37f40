# Shared by the gpu-labelled tests: run a *_check program and settle the verdict every one of them
# needs. Source after launch_lib.sh.
#
#   gpu_run_check NAME [ARGS...]
# runs $BUILD/bin/NAME ARGS (4 minutes at most) into $T/out. Without a GPU (`nvidia-smi -L` fails) the
# program must have exited 77 with a reason, after its own no-device checks: the test then skips (77).
# With a GPU, a build without CUDA or a program that finds no usable device is a failure, and so is
# any exit but 0 or a missing `NAME: N checks, 0 failed` summary. Returns only when the checks passed.
# GPU_NODEV_EXPECT (a grep -E pattern), when set, must match the output of a run without a GPU.
#   gpu_require_nccl
# for the tests that start ranks on GPUs over NCCL: skips (77) without a GPU (`nvidia-smi -L` fails, or
# dtrain sees none), fails when GPUs are there but the build has no NCCL (a build problem, not missing
# hardware); sets gpus to the number dtrain sees.
gpu_require_nccl() {
  if ! nvidia-smi -L > /dev/null 2>&1; then
    echo "no CUDA device: skipped (nvidia-smi -L failed)"
    exit 77
  fi
  gpus=$("$DTRAIN" --version | sed -n 's/.*GPUs visible: \([0-9]*\).*/\1/p')
  if [ "${gpus:-0}" -lt 1 ]; then
    echo "no CUDA device: skipped (dtrain --version reports ${gpus:-no} GPUs)"
    exit 77
  fi
  local features
  features=$("$DTRAIN" --version | head -n1)
  grep -qw nccl <<< "$features" || fail "GPUs present but this build has no NCCL: $features"
}

gpu_run_check() {
  local name=$1
  shift
  local chk=$BUILD/bin/$name rc=0
  [ -x "$chk" ] || fail "$chk not built"
  timeout -k 5 240 "$chk" "$@" > "$T/out" 2>&1 || rc=$?
  if ! nvidia-smi -L > /dev/null 2>&1; then
    [ $rc = 77 ] || { cat "$T/out"; fail "no GPU here, but $name exited $rc instead of 77"; }
    grep '^ok' "$T/out" || true
    if [ -n "${GPU_NODEV_EXPECT:-}" ]; then
      grep -Eq "$GPU_NODEV_EXPECT" "$T/out" || { cat "$T/out"; fail "no line matching '$GPU_NODEV_EXPECT'"; }
    fi
    echo "no CUDA device: skipped (nvidia-smi -L failed; $(grep -m1 'skipped' "$T/out"))"
    exit 77
  fi
  local features
  features=$("$DTRAIN" --version | head -n1)
  grep -qw cuda <<< "$features" || fail "GPUs present but this build has no CUDA: $features"
  [ $rc != 77 ] || { cat "$T/out"; fail "nvidia-smi lists a GPU but $name found none usable"; }
  if [ $rc != 0 ]; then
    grep -v '^ok' "$T/out" | tail -n 80
    fail "$name exited $rc (repro: $chk $*)"
  fi
  grep -Eq "^$name: [0-9]+ checks, 0 failed\$" "$T/out" || fail "no passing summary: $(tail -n 3 "$T/out")"
}
