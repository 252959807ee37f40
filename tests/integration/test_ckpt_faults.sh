#!/usr/bin/env bash
# What each checkpoint fault does, as the user sees it (ckpt_worker on 2 ranks under dtrain launch):
# a rank SIGKILLed during a save, a truncated shard, flipped bytes in a chunk, a missing manifest,
# `latest` naming nothing, a full disk and a read-only directory (tmpfs in a private mount namespace), a FIFO
# in place of a shard, a manifest or `latest`,
# a manifest and a shard of a newer format, another job's checkpoint. In every case the committed
# checkpoint before the damage loads with every value checked, and the message names the culprit.
# ctest-labels: ckpt faults
# ctest-timeout: 400
source "$(dirname "${BASH_SOURCE[0]}")/launch_lib.sh"
CW=$BUILD/bin/ckpt_worker
[ -x "$CW" ] || fail "$CW not built"

launch() { # DIR LOG NPROC ckpt_worker args... ; the launch's exit code in $RC
  local dir=$1 log=$2 n=$3; shift 3
  RC=0
  timeout -k 5 120 "$DTRAIN" launch --nproc-per-node "$n" -- "$CW" --dir "$dir" "$@" > "$T/log.$log" 2>&1 || RC=$?
}
ok_run() { # DIR LOG NPROC args...
  launch "$@"
  [ $RC = 0 ] || { tail -n 30 "$T/log.$2"; fail "$2: exited $RC"; }
}
loaded() { # LOG NPROC STEP
  for ((r = 0; r < $2; r++)); do
    grep -Eq "ckpt_worker rank $r: loaded step $3, [0-9]+ values checked, 0 wrong" "$T/log.$1" \
      || fail "$1: rank $r did not load step $3: $(grep -v "dtrain: " "$T/log.$1" | tail -5)"
  done
}
says() { # LOG PATTERN...: every pattern appears in the log
  local log=$1; shift
  for p in "$@"; do grep -q -- "$p" "$T/log.$log" || fail "$log does not say '$p': $(tail -n 8 "$T/log.$log")"; done
}

# A committed base: steps 10 and 20 by 2 ranks; each case damages a copy of it.
BASE=$T/base
ok_run "$BASE" base 2 --save 10,20
[ "$(cat "$BASE/latest")" = 20 ] || fail "base: latest is not 20"
copy() { rm -rf "$T/$1"; cp -a "$BASE" "$T/$1"; }
first_chunk() { # MANIFEST: "offset bytes" of the first chunk listed (rank 0's first piece)
  sed -n 's/.*offset: \([0-9]*\), bytes: \([0-9]*\).*/\1 \2/p' "$1" | head -n 1
}

# -- 1. SIGKILL of a rank during a save: the job fails, step 10 stays committed and loads.
K=$T/kill
ok_run "$K" kill_save 2 --save 10
DTRAIN_CKPT_TEST_DELAY_MS=3000 launch "$K" kill 2 --save 20 --async --kill-rank 1 --kill-step 20
[ $RC != 0 ] || fail "the job with a SIGKILLed rank exited 0"
says kill "SIGKILL during the save of step 20"
[ ! -e "$K/step_00000020" ] || fail "kill: step 20 was committed although rank 1 died before agreeing"
[ "$(cat "$K/latest")" = 10 ] || fail "kill: latest changed to $(cat "$K/latest")"
ok_run "$K" kill_load 2 --load-expect 10
loaded kill_load 2 10
ls -a "$K" | grep -q '^\.tmp_step' && fail "kill: the stale temporary directory was not removed at create"
echo "ok: SIGKILL during a save: step 20 not committed, step 10 loaded, stale .tmp_step removed"

# -- 2. truncated shard
copy trunc
f=$T/trunc/step_00000020/rank_00001.dtck
truncate -s $(( $(stat -c %s "$f") / 2 )) "$f"
ok_run "$T/trunc" trunc 2 --load-expect 10
loaded trunc 2 10
says trunc "rank_00001.dtck" "skipping step 20"
echo "ok: truncated shard: named, step 20 skipped, step 10 loaded"

# -- 3. flipped bytes inside a chunk
copy flip
read -r off bytes <<< "$(first_chunk "$T/flip/step_00000020/manifest.yaml")"
f=$T/flip/step_00000020/rank_00000.dtck
at=$((off + bytes / 2))
b=$(od -An -tu1 -j $at -N1 "$f" | tr -d ' ')
printf "$(printf '\\%03o' $(( (b + 1) % 256 )))" | dd of="$f" bs=1 seek=$at conv=notrunc status=none
ok_run "$T/flip" flip 2 --load-expect 10
loaded flip 2 10
says flip "rank_00000.dtck" "checksum" "offset $off"
echo "ok: flipped byte at offset $at: checksum mismatch named with file and chunk, step 10 loaded"

# -- 4. missing manifest
copy nomani
rm "$T/nomani/step_00000020/manifest.yaml"
ok_run "$T/nomani" nomani 2 --load-expect 10
loaded nomani 2 10
says nomani "step_00000020/manifest.yaml"
echo "ok: missing manifest: named, step 10 loaded"

# -- 5. `latest` pointing nowhere, and `latest` garbage
copy lat
echo 999 > "$T/lat/latest"
ok_run "$T/lat" lat 2 --load-expect 20
loaded lat 2 20
says lat "latest names step 999"
printf 'garbage' > "$T/lat/latest"
ok_run "$T/lat" lat2 2 --load-expect 20
loaded lat2 2 20
says lat2 "not a step number"
echo "ok: latest naming a missing step / garbage: warned, newest step directory (20) loaded"

# -- 6. disk full: a small tmpfs in a private mount namespace; step 2 does not fit
mkdir -p "$T/full"
RC=0
unshare -m bash -c "mount -t tmpfs -o size=1536k tmpfs '$T/full' &&
  timeout -k 5 120 '$DTRAIN' launch --nproc-per-node 2 -- '$CW' --dir '$T/full/ck' --save 1,2,3 --pad-step 2 \
    --chunk-bytes 65536 \
    --fail-ok --load-expect 3 > '$T/log.fulllog' 2>&1; echo \$? > '$T/full.rc'; ls -a '$T/full/ck' > '$T/full.ls'" || RC=$?
[ $RC = 0 ] || fail "disk full: unshare/mount failed ($RC)"
[ "$(cat "$T/full.rc")" = 0 ] || { tail -n 30 "$T/log.fulllog"; fail "disk full: the program did not go on"; }
says fulllog "save step 2 failed" "No space left on device" "rank 0: saved step 1" "rank 0: saved step 3"
loaded fulllog 2 3
grep -q step_00000002 "$T/full.ls" && fail "disk full: step 2 exists: $(cat "$T/full.ls")"
grep -q '^\.tmp_step' "$T/full.ls" && fail "disk full: a temporary directory was left: $(cat "$T/full.ls")"
grep -q step_00000001 "$T/full.ls" || fail "disk full: step 1 was removed"
echo "ok: disk full: save of step 2 failed with ENOSPC, nothing left behind, step 3 saved and loaded"

# -- 7. read-only directory: tmpfs remounted read-only after step 1
mkdir -p "$T/ro"
RC=0
unshare -m bash -c "mount -t tmpfs -o size=16m tmpfs '$T/ro' &&
  timeout -k 5 120 '$DTRAIN' launch --nproc-per-node 2 -- '$CW' --dir '$T/ro/ck' --save 1 > '$T/ro1.log' 2>&1 &&
  mount -o remount,ro '$T/ro' &&
  timeout -k 5 120 '$DTRAIN' launch --nproc-per-node 2 -- '$CW' --dir '$T/ro/ck' --save 2 --fail-ok \
    --load-expect 1 > '$T/log.rolog' 2>&1; echo \$? > '$T/ro.rc'; ls -a '$T/ro/ck' > '$T/ro.ls'" || RC=$?
[ $RC = 0 ] || { cat "$T/ro1.log" 2>/dev/null | tail; fail "read-only: unshare/mount/first save failed ($RC)"; }
[ "$(cat "$T/ro.rc")" = 0 ] || { tail -n 30 "$T/log.rolog"; fail "read-only: the program did not go on"; }
says rolog "save step 2 failed" "Read-only file system"
loaded rolog 2 1
grep -q step_00000001 "$T/ro.ls" || fail "read-only: step 1 vanished"
echo "ok: read-only directory: save failed naming EROFS, step 1 loaded"

# -- 8. newer formats: a manifest, then a shard
copy newm
sed -i 's/^format: 1$/format: 2/' "$T/newm/step_00000020/manifest.yaml"
ok_run "$T/newm" newm 2 --load-expect 10
loaded newm 2 10
says newm "format 2 is newer"
copy news
printf '\002' | dd of="$T/news/step_00000020/rank_00001.dtck" bs=1 seek=8 conv=notrunc status=none
ok_run "$T/news" news 2 --load-expect 10
loaded news 2 10
says news "rank_00001.dtck" "newer"
echo "ok: manifest / shard of a newer format: refused with 'newer', step 10 loaded"

# -- 9. another job's checkpoint: refused, nothing touched
J=$T/job
ok_run "$J" jsave 2 --save 5 --job alpha
ok_run "$J" jload 2 --job beta --load-expect error
says jload "belongs to job 'alpha'" "as expected"
ok_run "$J" jload2 2 --job alpha --load-expect 5
loaded jload2 2 5
echo "ok: another job's checkpoint refused naming the job; the right job loads it"

# -- 10. nothing there: NOT_FOUND, nothing touched
ok_run "$T/none" none 2 --load-expect none
says none "as expected"
echo "ok: empty directory: NOT_FOUND, registered memory untouched"

# -- 11. a FIFO in place of a shard, of a manifest, of `latest` (issue 19: opening one waited for a writer
# forever, so `dtrain ckpt verify` and the resume hung): refused at once as not a regular file
copy fifo
rm "$T/fifo/step_00000020/rank_00001.dtck" && mkfifo "$T/fifo/step_00000020/rank_00001.dtck"
rm "$T/fifo/latest" && mkfifo "$T/fifo/latest"
RC=0
timeout 20 "$DTRAIN" ckpt verify "$T/fifo" --step 20 > "$T/log.fifo_verify" 2>&1 || RC=$?
[ $RC = 1 ] || fail "fifo: dtrain ckpt verify exited $RC (124: it hung), want 1: $(cat "$T/log.fifo_verify")"
says fifo_verify "rank_00001.dtck: not a regular file"
ok_run "$T/fifo" fifo 2 --load-expect 10
loaded fifo 2 10
says fifo "rank_00001.dtck: not a regular file"
copy fifo2
rm "$T/fifo2/step_00000020/manifest.yaml" && mkfifo "$T/fifo2/step_00000020/manifest.yaml"
ok_run "$T/fifo2" fifo2 2 --load-expect 10
loaded fifo2 2 10
says fifo2 "manifest.yaml: not a regular file"
echo "ok: a FIFO as a shard, a manifest or latest: refused at once as not a regular file, step 10 loaded"
