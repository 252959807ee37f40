#!/usr/bin/env bash
# Pretrained weights in and out, against PyTorch (gpt_hf.py: GPT-2 in Hugging Face's layout, random
# weights, safetensors written by a few lines of Python):
# - parity: gpt_dump --init-from FILE loads a GPT-2 file as the trainer does; its logits and loss on the
#   dump's tokens match the torch model's within 1e-5 relative, for f32, bf16 (with the transformer.
#   prefix, a tied lm_head and the mask buffers), f16 (n_head from a config.json), f64, a shorter block,
#   and at tp 2 and 4 (each rank's vocabulary slice loaded straight from the file); a changed weight is
#   caught;
# - the trainer: model.init_from on 1 rank, dp 2, tp 2, pp 2 and dp2 x tp2 x pp2 with ZeRO-1 (8 ranks)
#   gives one first loss, and the checkpoint after a step of lr 1e-30, exported with --layout hf-gpt2 and
#   loaded strictly as transformers would (names, shapes, config), equals the file bit for bit; a padded
#   vocabulary at tp 2; a resumed run ignores init_from;
# - bad input: a missing, misshapen (transposed), wrongly typed or unknown tensor, a head count that
#   disagrees or is unknown, not a safetensors file: exit 2 naming file:line:col and every tensor, with
#   the run's checkpoints untouched; an untied lm_head stops the trainer naming it.
# ctest-labels: model torch train ckpt recipe
# ctest-timeout: 480
source "$(dirname "${BASH_SOURCE[0]}")/launch_lib.sh"
PY=/usr/bin/python3
G=$SRC/tests/integration/gpt_hf.py
DUMP=$BUILD/bin/gpt_dump
export PYTHONPATH=$SRC/tests/integration
$PY -c 'import torch' 2>/dev/null || fail "$PY cannot import torch (run scripts/install-deps.sh)"
[ -x "$DUMP" ] || fail "$DUMP not built"
cd "$T" || fail "cd $T"

# ---- parity with torch
parity() { # NAME FILE TP [gpt_dump flags...]
  local name=$1 file=$2 tp=$3; shift 3
  if [ "$tp" = 1 ]; then
    timeout 120 "$DUMP" "$name.bin" --init-from "$file" "$@" > "$name.dump.log" 2>&1 || fail "$name: gpt_dump: $(cat "$name.dump.log")"
  else
    timeout 120 "$DTRAIN" launch --nproc-per-node "$tp" -- "$DUMP" "$name.bin" --init-from "$file" "$@" \
      > "$name.dump.log" 2>&1 || fail "$name: gpt_dump on $tp ranks: $(tail "$name.dump.log")"
  fi
  timeout 120 $PY "$G" check "$name.bin" "$file" --tp "$tp" > "$name.ref.log" 2>&1 || fail "$name: $(cat "$name.ref.log")"
  echo "$name: $(tr '\n' ' ' < "$name.ref.log")"
}
$PY "$G" make f32.safetensors > /dev/null || fail "make f32"
$PY "$G" make bf16.safetensors --dtype bf16 --prefix --lm-head --mask-buffers --layers 3 --heads 2 --seed 2 > /dev/null || fail "make bf16"
mkdir -p cfg && $PY "$G" make cfg/f16.safetensors --dtype f16 --no-meta --config-json --heads 8 --seed 4 > /dev/null || fail "make f16"
$PY "$G" make f64.safetensors --dtype f64 --seed 5 > /dev/null || fail "make f64"
parity f32 f32.safetensors 1
parity bf16 bf16.safetensors 1 --seed 3
parity f16 cfg/f16.safetensors 1 --batch 3 --T 13
parity f64 f64.safetensors 1
parity crop f32.safetensors 1 --block 8
parity tp2 f64.safetensors 2 --T 11 --batch 3
$PY "$G" make tp4.safetensors --vocab 64 --heads 4 --embd 32 --layers 3 --seed 6 > /dev/null || fail "make tp4"
parity tp4 tp4.safetensors 4
# the comparison must be able to fail: the f32 dump against a file with one weight changed
$PY "$G" edit f32.safetensors changed.safetensors h.1.mlp.c_fc.bias --shape 128 || fail "edit"
if $PY "$G" check f32.bin changed.safetensors > changed.log 2>&1; then fail "a changed weight was not detected: $(cat changed.log)"; fi
grep -q "logits differ" changed.log || fail "the changed weight's logits were not named: $(cat changed.log)"

# ---- the trainer in every layout: one first loss, and the weights exported back bit for bit
$PY -c "import numpy as np; np.random.default_rng(1).integers(0, 64, 6000).astype('<u2').tofile('tokens.bin')"
cat > ft.yaml <<YAML
job: {name: ft, seed: 5}
launch: {nproc_per_node: 1}
model:
  init_from: f32.safetensors
data: {kind: tokens, path: tokens.bin}
train: {steps: 1, global_batch: 8, micro_batch: 2, lr: 1.0e-30, min_lr: 0, log_every: 1, threads: 1}
YAML
layout() { # NAME NPROC [overrides...]
  local name=$1 n=$2; shift 2
  timeout 300 "$DTRAIN" run ft.yaml job.run_dir="$T/$name" launch.nproc_per_node="$n" "$@" > "$name.out" 2> "$name.err" \
    || fail "$name: exit $?: $(tail -20 "$name.err")"
  grep -q "initialised from $T/f32.safetensors (hf-gpt2 layout)" "$name.out" || fail "$name: no init_from line: $(head -5 "$name.out")"
  grep -q "step 1/1 .*(weights from init_from; a random model starts near ln 64 = 4.16)" "$name.out" \
    || fail "$name: the first loss line does not say where the weights came from: $(grep 'step 1/' "$name.out")"
  "$DTRAIN" ckpt export "$T/$name/checkpoints" "$T/$name/hf/" --layout hf-gpt2 > "$name.export" 2>&1 \
    || fail "$name: export: $(cat "$name.export")"
  $PY "$G" export "$T/$name/hf/model.safetensors" f32.safetensors > "$name.cmp" 2>&1 || fail "$name: $(cat "$name.cmp")"
  grep -q '"n_head": 4' "$T/$name/hf/config.json" || fail "$name: config.json: $(cat "$T/$name/hf/config.json")"
}
first_loss() { sed -n 's/^first_loss=//p' "$T/$1/summary.txt"; }
layout one 1
l1=$(first_loss one)
echo "1 rank: first loss $l1"
for spec in "dp2 2 parallel.dp=2" "tp2 2 parallel.tp=2" "pp2 2 parallel.pp=2" "3d 8 parallel.dp=2 parallel.tp=2 parallel.pp=2 train.zero=1"; do
  set -- $spec
  layout "$@"
  l=$(first_loss "$1")
  $PY -c "import sys; a, b = float(sys.argv[1]), float(sys.argv[2]); sys.exit(abs(a - b) > 1e-5 * abs(a))" "$l1" "$l" \
    || fail "$1: first loss $l, 1 rank's $l1"
  echo "$1: first loss $l, exported weights equal the file's"
done
# a vocabulary padded for tp (rows 64-71 seeded) and a block shorter than the file's
timeout 120 "$DTRAIN" run ft.yaml job.run_dir="$T/pad" launch.nproc_per_node=2 parallel.tp=2 model.vocab_size=72 \
  model.block_size=8 > pad.out 2> pad.err || fail "padded: $(tail pad.err)"
grep -q "vocabulary rows 64-71 seeded; positions 8 of its 16" pad.out || fail "padded: $(grep initialised pad.out)"
# a resumed run ignores init_from (it may even be gone)
timeout 120 "$DTRAIN" run ft.yaml job.run_dir="$T/res" train.steps=2 train.lr=1e-3 > res1.out 2>&1 || fail "resume 1: $(tail res1.out)"
timeout 120 "$DTRAIN" run ft.yaml job.run_dir="$T/res" train.steps=4 train.lr=1e-3 > res2.out 2>&1 || fail "resume 2: $(tail res2.out)"
grep -q "resumed from checkpoint step 2" res2.out || fail "not resumed: $(head -3 res2.out)"
grep -q "initialised from" res2.out && fail "a resumed run initialised from the file again"

# ---- bad input: exit 2, file:line:col of the key, every tensor named; nothing saved is lost
before=$(ls -R "$T/res/checkpoints")
bad() { # NAME EXPECTED-PATTERN [overrides...]
  local name=$1 want=$2; shift 2
  local rc=0
  timeout 60 "$DTRAIN" run ft.yaml job.run_dir="$T/res" "$@" > "$name.out" 2> "$name.err" || rc=$?
  [ $rc = 2 ] || fail "$name: exit $rc, not 2: $(cat "$name.err")"
  grep -q -- "$want" "$name.err" || fail "$name: expected '$want' in: $(cat "$name.err")"
  echo "$name: $(head -c 300 "$name.err" | tr '\n' '|')"
}
edit() { $PY "$G" edit f32.safetensors "$@" || fail "edit $*"; }
edit missing.safetensors h.1.attn.c_attn.weight --drop
edit shape.safetensors h.0.mlp.c_proj.weight --shape 32,128
edit dtype.safetensors ln_f.bias --dtype I32
edit extra.safetensors h.1.attn.c_atn.weight --add
sed 's/init_from: f32.safetensors/init_from: missing.safetensors/' ft.yaml > bad.yaml
rc=0; "$DTRAIN" run bad.yaml --dry-run > bad.out 2> bad.err || rc=$?
[ $rc = 2 ] && grep -q "bad.yaml:4:14: model.init_from: .*missing.safetensors (hf-gpt2 layout.*1 tensor differs:" bad.err \
  && grep -q "^  h.1.attn.c_attn.weight: missing; the model needs \[32, 96\]" bad.err || fail "missing tensor: rc $rc $(cat bad.err)"
bad shape "h.0.mlp.c_proj.weight: \[32, 128\] in the file, the model needs \[128, 32\] (transposed" model.init_from=shape.safetensors
bad dtype "ln_f.bias: dtype I32, not a float" model.init_from=dtype.safetensors
bad extra "h.1.attn.c_atn.weight: \[4\] in the file, not a tensor of this layout's GPT" model.init_from=extra.safetensors
bad layers "ft.yaml:4:14: model.init_from: .*24 tensors differ:" model.n_layer=4
grep -q "h.2-3.attn.c_attn.weight: missing; the model needs \[32, 96\]" layers.err || fail "layers 2-3 not on one line: $(cat layers.err)"
bad width "28 tensors differ:" model.n_embd=64
bad heads "model.n_head: 8, but model.init_from '$T/f32.safetensors' holds a model of 4 heads (per its metadata)" model.n_head=8
$PY "$G" make nometa.safetensors --no-meta > /dev/null || fail "make nometa"
bad nohead "does not say how many attention heads its model has .*: set model.n_head" model.init_from=nometa.safetensors
bad nofile "nope.safetensors: cannot open" model.init_from=nope.safetensors
bad notst "not a safetensors file" model.init_from=tokens.bin
[ "$(ls -R "$T/res/checkpoints")" = "$before" ] || fail "a refused run changed the checkpoints"
# an untied head stops the trainer (exit 1), naming it
$PY - <<'PY' || fail "untied"
from gpt_hf import read_safetensors, write_safetensors
t, meta = read_safetensors("f32.safetensors")
t["lm_head.weight"] = t["wte.weight"] * 2
write_safetensors("untied.safetensors", t, meta)
PY
rc=0; timeout 60 "$DTRAIN" run ft.yaml job.run_dir="$T/untied" model.init_from=untied.safetensors > untied.out 2>&1 || rc=$?
[ $rc != 0 ] && grep -q "lm_head.weight differs from wte.weight" untied.out || fail "untied head: rc $rc $(tail -5 untied.out)"
echo "PASS"
