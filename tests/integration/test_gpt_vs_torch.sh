#!/usr/bin/env bash
# The reference GPT against PyTorch: gpt_dump writes weights, inputs, targets (some -1), dtrain's loss,
# logits and gradients; gpt_torch_ref.py rebuilds the model in torch (float64) and compares (loss to
# 1e-5 relative, logits and each gradient tensor to 1e-4 of their max). Several shapes, 1 and 2 threads,
# T < block_size, perturbed weights, gradient accumulation; and a tampered dump must be caught. Then the
# tensor-parallel split (gpt_dump on 2 and 4 ranks under dtrain launch, gpt_torch_tp.py): every rank's
# gradient slices and logits of its vocabulary slice against the matching slices of torch's.
# ctest-labels: model torch
# ctest-timeout: 300
set -u
BUILD=${DTRAIN_BUILD:?set by ctest}; SRC=${DTRAIN_SRC:?set by ctest}
PY=/usr/bin/python3
DUMP=$BUILD/bin/gpt_dump
REF=$SRC/tests/integration/gpt_torch_ref.py
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
$PY -c 'import torch' 2>/dev/null || fail "$PY cannot import torch (run scripts/install-deps.sh)"
[ -x "$DUMP" ] || fail "$DUMP not built"

run_case() { # name, gpt_dump flags...
  local name=$1; shift
  timeout 120 "$DUMP" "$T/$name.bin" "$@" > "$T/$name.dump.log" 2>&1 || fail "$name: gpt_dump $*: $(cat "$T/$name.dump.log")"
  timeout 120 $PY "$REF" "$T/$name.bin" > "$T/$name.ref.log" 2>&1 || fail "$name ($*): $(cat "$T/$name.ref.log")"
  echo "$name: $(tr '\n' ' ' < "$T/$name.ref.log")"
}

run_case gpt-tiny
run_case tiny-2threads --threads 2 --seed 3
run_case perturbed --perturb 0.3 --T 11 --batch 3 --vocab 37 --layers 3 --embd 48 --heads 3 --seed 5
run_case accumulate --perturb 0.2 --accum 3 --threads 2 --seed 9
run_case larger --vocab 256 --block 128 --layers 4 --embd 256 --heads 8 --batch 2 --threads 2

# the comparison must be able to fail: change one gradient (the last float of the file) and one logit
$PY - "$T/perturbed.bin" "$T/bad_grad.bin" "$T/bad_logit.bin" <<'PY'
import struct, sys
raw = bytearray(open(sys.argv[1], "rb").read())
g = bytearray(raw); v = struct.unpack_from("<f", g, len(g) - 4)[0]
struct.pack_into("<f", g, len(g) - 4, v + 0.05 + abs(v) * 0.01)
open(sys.argv[2], "wb").write(g)
V, block, L, nh, C, B, T = struct.unpack_from("<7i", raw, 8); n = struct.unpack_from("<q", raw, 36)[0]
lo = 44 + 4 * n + 8 * B * T + 4   # first logit
l = bytearray(raw); v = struct.unpack_from("<f", l, lo)[0]
struct.pack_into("<f", l, lo, v + 0.01)
open(sys.argv[3], "wb").write(l)
PY
if $PY "$REF" "$T/bad_grad.bin" > "$T/bad_grad.log" 2>&1; then fail "a changed gradient was not detected: $(cat "$T/bad_grad.log")"; fi
grep -q "grad lnf.b" "$T/bad_grad.log" || fail "the changed gradient was not named: $(cat "$T/bad_grad.log")"
if $PY "$REF" "$T/bad_logit.bin" > "$T/bad_logit.log" 2>&1; then fail "a changed logit was not detected"; fi
grep -q "logits differ" "$T/bad_logit.log" || fail "the changed logit was not named: $(cat "$T/bad_logit.log")"
# tensor parallel: each rank's slices against torch's (DTRAIN is set by ctest)
DTRAIN=${DTRAIN:?set by ctest}
TPREF=$SRC/tests/integration/gpt_torch_tp.py
run_tp() { # name, ranks, gpt_dump flags...
  local name=$1 n=$2; shift 2
  timeout 120 "$DTRAIN" launch --nproc-per-node "$n" -- "$DUMP" "$T/$name.bin" "$@" > "$T/$name.dump.log" 2>&1 \
    || fail "$name: gpt_dump on $n ranks: $(tail "$T/$name.dump.log")"
  timeout 120 $PY "$TPREF" "$T/$name.bin" > "$T/$name.ref.log" 2>&1 || fail "$name: $(cat "$T/$name.ref.log")"
  echo "$name: $(tr '\n' ' ' < "$T/$name.ref.log")"
}
run_tp tp2 2 --perturb 0.2 --seed 5
run_tp tp4 4 --perturb 0.3 --vocab 16 --layers 3 --T 11 --batch 3 --seed 7
run_tp tp2-accumulate 2 --perturb 0.2 --accum 3 --seed 9
# the comparison must be able to fail: one gradient of rank 1's slice changed (the float before its logits)
$PY - "$T/tp2.bin.rank1" <<'PY'
import struct, sys
raw = bytearray(open(sys.argv[1], "rb").read())
logits = 4 * 4 * 16 * 7 + 4     # B*T*(V/tp) floats and the loss, at the end
at = len(raw) - logits - 4      # the last gradient element (lnf.b's)
v = struct.unpack_from("<f", raw, at)[0]
struct.pack_into("<f", raw, at, v + 0.05 + abs(v) * 0.01)
open(sys.argv[1], "wb").write(raw)
PY
if $PY "$TPREF" "$T/tp2.bin" > "$T/bad_tp.log" 2>&1; then fail "a changed slice gradient was not detected: $(cat "$T/bad_tp.log")"; fi
grep -q "rank 1: grad lnf.b" "$T/bad_tp.log" || fail "the changed slice was not named: $(cat "$T/bad_tp.log")"
echo "PASS"
