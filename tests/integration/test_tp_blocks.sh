#!/usr/bin/env bash
# The tensor-parallel blocks (tp_check) on 2, 4 and 8 ranks, and on 1 (every block's single-rank path
# against itself through the same code): f and g on exact integers, column- and row-parallel linear,
# attention with heads split, the MLP, the vocabulary-parallel embedding and cross-entropy, each output
# and gradient against the unsplit layer's (tolerance in tests/helpers/tp_check.c), also over TCP; and the
# model's initialisation: each rank's slice of every tensor equals the whole model's, bit for bit.
# ctest-labels: tp
# ctest-timeout: 240
source "$(dirname "${BASH_SOURCE[0]}")/launch_lib.sh"
H=$BUILD/bin/tp_check
[ -x "$H" ] || fail "tp_check not built"
run() { # NAME NPROC [ENV=VALUE...]
  local name=$1 n=$2 rc=0
  shift 2
  env "$@" timeout -k 5 100 "$DTRAIN" launch --nproc-per-node "$n" --max-restarts 0 -- "$H" \
    > "$T/$name.out" 2> "$T/$name.err" || rc=$?
  [ $rc = 0 ] || { cat "$T/$name.out"; tail -n 30 "$T/$name.err"; fail "$name: launch exited $rc"; }
  for ((r = 0; r < n; r++)); do
    grep -Eq "^\[0:$r\] tp_check rank $r: 57 checks ok" "$T/$name.out" \
      || { cat "$T/$name.out"; fail "$name: rank $r gave no passing verdict"; }
  done
  grep -m1 "tp_check rank 0" "$T/$name.out"
}
run tp1 1
run tp2 2
run tp4 4
run tp8 8
run tp2-tcp 2 DTRAIN_HOST_TRANSPORT=tcp
# every block's all-reduces: f/g 2, linear 2, attention 2, mlp 2, embedding 1, cross-entropy 2
grep -q "tp_check rank 0: 57 checks ok, .* (11 all-reduces" "$T/tp4.out" || fail "tp4: expected 11 all-reduces"
grep -q "tp_check rank 0: 57 checks ok, .* (0 all-reduces" "$T/tp1.out" || fail "tp1: a single rank all-reduced"
echo PASS
