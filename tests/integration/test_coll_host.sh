#!/usr/bin/env bash
# The host (shared-memory) backend against coll_check's serial reference: every collective, type,
# reduction, size, in-place and out-of-place, split groups, two communicators, async overlap and
# determinism, BIT-IDENTICAL to a rank-ordered reduction, on 1, 2, 3, 4 ranks, and 8 ranks with --quick;
# then 3 ranks with the smallest rounds, and with step counters about to wrap.
# ctest-labels: coll
# ctest-timeout: 300
source "$(dirname "${BASH_SOURCE[0]}")/launch_lib.sh"
CC=$BUILD/bin/coll_check
[ -x "$CC" ] || fail "$CC not built"

run_check() { # NPROC [coll_check args...]
  local n=$1; shift
  local t0=$SECONDS rc=0
  timeout -k 5 150 "$DTRAIN" launch --nproc-per-node "$n" -- "$CC" --backend host --seed $((1000 + n)) \
    --timeout-ms 30000 --max-seconds 140 "$@" > "$T/out.$n" 2> "$T/err.$n" || rc=$?
  if [ $rc != 0 ]; then
    echo "---- stdout ($n ranks)"; tail -n 40 "$T/out.$n"; echo "---- stderr ($n ranks)"; tail -n 60 "$T/err.$n"
    fail "coll_check on $n ranks exited $rc (repro: $DTRAIN launch --nproc-per-node $n -- $CC --backend host --seed $((1000 + n)) $*)"
  fi
  for ((r = 0; r < n; r++)); do
    grep -Eq "^\[0:$r\] coll_check rank $r: [0-9]+ checks, 0 failed" "$T/out.$n" \
      || fail "rank $r of $n printed no passing summary: $(grep "rank $r:" "$T/out.$n" "$T/err.$n" | head -5)"
  done
  local checks
  checks=$(sed -n "s/^\[0:0\] coll_check rank 0: \([0-9]*\) checks.*/\1/p" "$T/out.$n")
  # every op x type x reduction x size must have been checked, not skipped: at least 400 checks
  [ "${checks:-0}" -ge 400 ] || fail "only ${checks:-0} checks ran on $n ranks"
  echo "ok: $n ranks, $checks checks per rank, $((SECONDS - t0)) s"
}

run_check 1
run_check 2
run_check 3
run_check 4
run_check 8 --quick
# rounds of 4 KiB: the unpipelined collectives take many rounds, with blocks of 1365 bytes per rank
# (not a multiple of any element size), so every round boundary and ragged last round is checked
DTRAIN_SHM_ROUND_BYTES=4096 run_check 3 --quick
# step counters that start 296 steps before they wrap: the job crosses the wrap, and its first use of
# each buffer and eager entry finds a last release (0) that looks 2^31 or more steps ahead
DTRAIN_HOST_TEST_STEP0=4294967000 run_check 3 --quick
echo "PASS"
