#!/usr/bin/env bash
# The trainer on files: recipes/gpt-text.yaml's text (byte-level, vocab 256) and a uint16 token file
# (vocab 300, ids above 255) train on 2 DP ranks and their loss falls from about ln(vocab); a token
# file with an id at or above model.vocab_size fails before training with the file named; the
# text recipe's effective recipe resolves data.path next to the recipe.
# ctest-labels: train
# ctest-timeout: 300
source "$(dirname "${BASH_SOURCE[0]}")/launch_lib.sh"

SMALL=(model.n_layer=1 model.n_embd=32 model.n_head=2 model.block_size=32 train.global_batch=8 train.micro_batch=4
       train.steps=60 train.warmup_steps=5 train.log_every=20 train.lr=1e-2 checkpoint.every=0)
falls() { # falls DIR LN_VOCAB: first loss near ln(vocab), last loss clearly lower
  /usr/bin/python3 - "$1/metrics.csv" "$2" <<'PY'
import csv, math, sys
l = [float(r["loss"]) for r in csv.DictReader(open(sys.argv[1]))]
ln = math.log(float(sys.argv[2]))
print(f"loss {l[0]:.3f} -> {l[-1]:.3f} (ln vocab {ln:.3f})")
assert abs(l[0] - ln) < 0.5, l[0]
assert l[-1] < l[0] - 1.0, (l[0], l[-1])
PY
}

# ---- text: the recipe that ships, made small
timeout 200 "$DTRAIN" run "$SRC/recipes/gpt-text.yaml" job.run_dir="$T/text" "${SMALL[@]}" > "$T/text.out" 2> "$T/text.err" \
  || fail "gpt-text exit $?: $(tail -20 "$T/text.err")"
grep -q "recipes/data/public-domain.txt (8014 tokens)" "$T/text.out" || fail "header: $(head -3 "$T/text.out")"
falls "$T/text" 256 || fail "text loss did not fall"

# ---- tokens: uint16 ids 0..299 from a little Markov chain, so there is something to learn
/usr/bin/python3 - "$T/tok.bin" <<'PY'
import random, struct, sys
random.seed(3)
ids, x = [], 0
for _ in range(20000):
    x = (x * 7 + random.choice((1, 2, 3))) % 300
    ids.append(x)
open(sys.argv[1], "wb").write(struct.pack("<%dH" % len(ids), *ids))
PY
cat > "$T/tok.yaml" <<YAML
job:
  name: tok
launch:
  nproc_per_node: 2
model:
  vocab_size: 300
data:
  kind: tokens
  path: tok.bin
train:
  threads: 1
YAML
timeout 200 "$DTRAIN" run "$T/tok.yaml" job.run_dir="$T/tok" "${SMALL[@]}" > "$T/tok.out" 2> "$T/tok.err" \
  || fail "tokens exit $?: $(tail -20 "$T/tok.err")"
grep -q "tok.bin (20000 tokens)" "$T/tok.out" || fail "tokens header: $(head -3 "$T/tok.out")"
falls "$T/tok" 300 || fail "tokens loss did not fall"

# ---- an id that does not fit the vocabulary: a clear error naming the file, nothing trained
timeout 60 "$DTRAIN" run "$T/tok.yaml" job.run_dir="$T/bad" model.vocab_size=299 "${SMALL[@]}" > "$T/bad.out" 2> "$T/bad.err"
rc=$?
[ $rc != 0 ] || fail "a token file with id 299 >= vocab_size 299 trained"
grep -q "tok.bin" "$T/bad.err" && grep -q "299" "$T/bad.err" || fail "the error does not name the file and id: $(tail -5 "$T/bad.err")"
[ -s "$T/bad/metrics.csv" ] && fail "metrics were written for a run that should not start"
echo PASS
