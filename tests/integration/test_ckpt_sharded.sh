#!/usr/bin/env bash
# Sharded checkpoints across ranks: 4 ranks save (synchronously and asynchronously, the registered
# memory scrambled right after save_async returns), then 4, 2, 1 and 3 ranks load and check every
# value they hold against a formula (row- and column-sharded tensors, replicated tensors saved in
# data-parallel slabs, a scalar, per-rank blobs), and 2 ranks save what 4 load. Rotation keeps 2.
# ctest-labels: ckpt
# ctest-timeout: 300
source "$(dirname "${BASH_SOURCE[0]}")/launch_lib.sh"
CW=$BUILD/bin/ckpt_worker
[ -x "$CW" ] || fail "$CW not built"
CK=$T/ck

run() { # NPROC LOGNAME ckpt_worker args...
  local n=$1 log=$2; shift 2
  local rc=0
  timeout -k 5 120 "$DTRAIN" launch --nproc-per-node "$n" -- "$CW" --dir "$CK" "$@" > "$T/$log" 2>&1 || rc=$?
  if [ $rc != 0 ]; then
    tail -n 40 "$T/$log"
    fail "$n ranks ($*) exited $rc"
  fi
}
expect_loaded() { # LOGNAME NPROC STEP
  for ((r = 0; r < $2; r++)); do
    grep -Eq "ckpt_worker rank $r: loaded step $3, [0-9]+ values checked, 0 wrong" "$T/$1" \
      || fail "rank $r of $2 did not load step $3 correctly: $(grep "rank $r:" "$T/$1" | tail -3)"
  done
}

run 4 save4 --save 10 --keep 2
run 4 save4a --save 20,30 --async --keep 2
grep -q "rank 0: saved step 30" "$T/save4a" || fail "no save of step 30: $(tail "$T/save4a")"
[ "$(cat "$CK/latest")" = 30 ] || fail "latest is '$(cat "$CK/latest")', expected 30"
[ -d "$CK/step_00000030" ] && [ -d "$CK/step_00000020" ] || fail "steps 20 and 30 should be kept"
[ ! -e "$CK/step_00000010" ] || fail "rotation (keep 2) should have removed step 10"
ls -a "$CK" | grep -q '^\.tmp_step' && fail "a temporary directory was left: $(ls -a "$CK")"
for r in 0 1 2 3; do [ -s "$CK/step_00000030/rank_0000$r.dtck" ] || fail "no shard of rank $r"; done
grep -q '^world: 4$' "$CK/step_00000030/manifest.yaml" || fail "manifest does not say world 4"
echo "ok: 4 ranks saved steps 10, 20, 30 (sync and async), rotation kept 20 and 30"

for n in 4 2 1 3; do
  run $n load$n --load-expect 30 --saved-world 4
  expect_loaded load$n $n 30
  echo "ok: $n ranks loaded the 4-rank checkpoint, every value checked"
done

# Fewer ranks save, more load: ranks 2 and 3 get rank 0's blobs.
CK=$T/ck2
run 2 save2 --save 7 --async
run 4 load4from2 --load-expect 7 --saved-world 2
expect_loaded load4from2 4 7
echo "ok: 4 ranks loaded a 2-rank checkpoint"
