#!/usr/bin/env bash
# Tensor and pipeline parallelism on this machine's GPUs: the tensor-parallel blocks on the device
# (tp_check --cuda: the CUDA kernels and an nccl tp group, against the unsplit layers on the host) on one
# GPU and on every GPU (at most 4), and the pipeline executor over nccl link communicators with its
# buffers in GPU memory (pp_check --cuda) on every GPU (at most 4; needs 2). Skipped (77) without a GPU:
# `nvidia-smi -L` fails or dtrain sees none. The single-GPU kernels of the tensor-parallel pieces are
# checked by test_gpu_kernels.sh.
# ctest-labels: gpu tp pp
# ctest-timeout: 400
source "$(dirname "${BASH_SOURCE[0]}")/launch_lib.sh"
source "$(dirname "${BASH_SOURCE[0]}")/gpu_lib.sh"
gpu_require_nccl
n=$((gpus < 4 ? gpus : 4))
export DTRAIN_JOB_TOKEN=tok-$RANDOM-pgpu
run() { # NAME NPROC PROGRAM ARGS... (every rank must print PATTERN: the program's passing verdict)
  local name=$1 np=$2 prog=$3 rc=0
  shift 3
  timeout -k 5 240 "$DTRAIN" launch --nproc-per-node "$np" -- "$BUILD/bin/$prog" "$@" > "$T/$name.out" 2> "$T/$name.err" \
    || rc=$?
  [ $rc = 0 ] || { tail -n 40 "$T/$name.out"; tail -n 40 "$T/$name.err"; fail "$name: exit $rc"; }
}
run tp1 1 tp_check --cuda
grep -q "tp_check rank 0: [0-9]* checks ok.* on the GPU" "$T/tp1.out" || fail "tp 1 on the GPU: $(tail -3 "$T/tp1.out")"
echo "ok: $(grep -o 'tp_check rank 0:.*' "$T/tp1.out")"
if [ "$n" -ge 2 ]; then
  run tpn "$n" tp_check --cuda
  for ((r = 0; r < n; r++)); do
    grep -q "tp_check rank $r: [0-9]* checks ok.* on the GPU" "$T/tpn.out" || fail "tp $n rank $r: no passing verdict"
  done
  echo "ok: tp $n: $(grep -o 'tp_check rank 0:.*' "$T/tpn.out")"
  for sched in "1f1b --micro 8" "interleaved --micro 8 --chunks 2" "gpipe --micro 4"; do
    run pp "$n" pp_check --cuda --act 100000 --schedule $sched
    for ((r = 0; r < n; r++)); do
      grep -q "pp_check stage $r: .* messages ok .* over nccl" "$T/pp.out" || fail "pp $sched: stage $r: no passing verdict"
    done
    echo "ok: pipeline over nccl, $n stages, $sched"
  done
else
  echo "one GPU: the multi-rank tp and the pipeline over nccl need 2 (not run)"
fi
echo PASS
