#!/usr/bin/env bash
# The nccl backend on this machine's GPUs: coll_nccl_check (every collective, in-place forms, p2p, split,
# requests in flight, device buffers) on one rank per GPU under `dtrain launch`, then on one rank.
# Skipped (77) where there is no GPU: `nvidia-smi -L` fails or dtrain sees none.
# ctest-labels: gpu coll
# ctest-timeout: 300
source "$(dirname "${BASH_SOURCE[0]}")/launch_lib.sh"
source "$(dirname "${BASH_SOURCE[0]}")/gpu_lib.sh"
CHK=$BUILD/bin/coll_nccl_check
[ -x "$CHK" ] || fail "$CHK not built"

gpu_require_nccl

export DTRAIN_JOB_TOKEN=tok-$RANDOM-nccl
run_check() { # NPROC
  local n=$1 t0=$SECONDS rc=0
  timeout -k 5 240 "$DTRAIN" launch --nproc-per-node "$n" -- "$CHK" > "$T/out.$n" 2> "$T/err.$n" || rc=$?
  if [ $rc != 0 ]; then
    echo "---- stdout ($n ranks)"; tail -n 40 "$T/out.$n"
    echo "---- stderr ($n ranks)"; tail -n 60 "$T/err.$n"
    fail "coll_nccl_check on $n GPU rank(s) exited $rc (repro: $DTRAIN launch --nproc-per-node $n -- $CHK)"
  fi
  for ((r = 0; r < n; r++)); do
    grep -Eq "^\[0:$r\] coll_nccl_check rank $r: [0-9]+ checks, 0 failed" "$T/out.$n" \
      || fail "rank $r of $n printed no passing summary: $(grep "rank $r" "$T/out.$n" "$T/err.$n" | head -5)"
  done
  echo "ok: nccl, $n rank(s), $((SECONDS - t0)) s"
}
run_check "$gpus"
[ "$gpus" = 1 ] || run_check 1
