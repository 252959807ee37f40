#!/usr/bin/env bash
# Every example in README.md, docs/ and recipes/ runs (doc_examples.py says what counts and how): the
# dtrain commands (run, launch and store with --dry-run; ckpt on checkpoints of short real runs), the
# synopses against --help, the recipe fragments with --dry-run, docs/cli.md's --help texts verbatim.
# The checker must be able to fail: a copy of the docs with a broken command, a fragment with a typo
# and a stale --help text is refused, naming each.
# ctest-labels: recipe launch ckpt
# ctest-timeout: 300
source "$(dirname "${BASH_SOURCE[0]}")/launch_lib.sh"
PY=/usr/bin/python3
CHECK=$SRC/tests/integration/doc_examples.py
BOX=$T/box
mkdir -p "$BOX/root/ckpt" "$BOX/root/tmp" && cd "$BOX" || fail "sandbox"
ln -s "$SRC/recipes" recipes && ln -s "$SRC/recipes/data" data && ln -s "$SRC/scripts" scripts || fail "links"
printf 'import sys\nsys.exit(0)\n' > train.py
printf '#!/bin/sh\nexit 0\n' > train && chmod +x train
# the checkpoints the examples look into: short real runs of the recipes they name
fixture() { # RECIPE [overrides...]
  timeout 120 "$DTRAIN" run "recipes/$1.yaml" train.steps=2 "${@:2}" > "$T/$1.out" 2>&1 || fail "fixture $1: $(tail "$T/$1.out")"
}
fixture gpt-tiny launch.nproc_per_node=1 parallel.dp=1
fixture gpt-text
fixture gpt-finetune
cp -r runs/gpt-tiny/checkpoints root/ckpt/gpt || fail "cp"
"$DTRAIN" ckpt export runs/gpt-tiny/checkpoints root/tmp/init.safetensors > /dev/null || fail "init.safetensors"

timeout 240 $PY "$CHECK" "$SRC" "$DTRAIN" "$BOX" > "$T/check.out" 2>&1 || fail "$(cat "$T/check.out")"
cat "$T/check.out"

# the checker fails, naming each: a command with a typo, a fragment with a typo, a stale --help text
FAKE=$T/fake
mkdir -p "$FAKE/docs" "$FAKE/recipes"
cp "$SRC/docs/cli.md" "$FAKE/docs/" && cp -r "$SRC/recipes/data" "$FAKE/recipes/"
printf '# x\n\n    dtrain run recipes/gpt-tiny.yaml train.stepz=20\n\nand\n\n    train: {stepz: 3}\n' > "$FAKE/README.md"
sed -i 's/^      --host H        address to listen on/      --host H        address to listen at/' "$FAKE/docs/cli.md"
rc=0; timeout 240 $PY "$CHECK" "$FAKE" "$DTRAIN" "$BOX" > "$T/fake.out" 2>&1 || rc=$?
[ $rc = 1 ] || fail "broken docs passed (exit $rc): $(cat "$T/fake.out")"
grep -q "FAIL: README.md:3: 'dtrain run recipes/gpt-tiny.yaml train.stepz=20'.*unknown key 'stepz' in train" "$T/fake.out" \
  || fail "the broken command was not named: $(cat "$T/fake.out")"
grep -q "FAIL: README.md:7: recipe fragment .*unknown key 'stepz'" "$T/fake.out" || fail "the broken fragment was not named: $(cat "$T/fake.out")"
grep -q "FAIL: docs/cli.md:[0-9]*: the dtrain store --help text differs from the program's: line 6" "$T/fake.out" \
  || fail "the stale help text was not named: $(cat "$T/fake.out")"
echo "PASS"
