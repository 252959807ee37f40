#!/usr/bin/env bash
# Data-parallel gradient buckets (dp_sync_check) on 2 and 4 ranks under dtrain launch, over shared memory
# and over the TCP transport: buffers of several sizes, bucket sizes that do and do not divide them, ranges
# marked in backward order, overlap on and off: bit-identical to a serial rank-ordered average; the first
# bucket's all-reduce started before the last range is marked (the helper's started count, no timing);
# wait-time accounting; gradient accumulation; bad ranges refused.
# ctest-labels: runtime
# ctest-timeout: 300
source "$(dirname "${BASH_SOURCE[0]}")/launch_lib.sh"
H=$BUILD/bin/dp_sync_check
[ -x "$H" ] || fail "$H not built"

run() { # NPROC TAG [env...]
  local n=$1 tag=$2; shift 2
  local t0=$SECONDS rc=0
  env "$@" timeout -k 5 150 "$DTRAIN" launch --nproc-per-node "$n" -- "$H" --max-seconds 140 > "$T/$tag.out" 2>&1 \
    || rc=$?
  [ $rc = 0 ] || fail "dp_sync_check on $n ranks ($tag) exited $rc: $(grep -v 'dtrain warning' "$T/$tag.out" | tail -n 30)"
  for ((r = 0; r < n; r++)); do
    grep -Eq "^\[0:$r\] dp_sync_check rank $r: [0-9]+ checks, 0 failed \($n ranks\)" "$T/$tag.out" \
      || fail "rank $r of $n ($tag): no passing summary: $(grep -E "rank $r|MISMATCH" "$T/$tag.out" | head -5)"
  done
  local checks
  checks=$(sed -n "s/^\[0:0\] dp_sync_check rank 0: \([0-9]*\) checks.*/\1/p" "$T/$tag.out")
  [ "${checks:-0}" -ge 50000 ] || fail "only ${checks:-0} checks ran on $n ranks ($tag)"
  # the bad-range cases must have been refused with a message naming the range
  grep -q "\[55, 65) overlaps \[50, 60)" "$T/$tag.out" || fail "no message for a range marked twice"
  echo "ok: $n ranks ($tag), $checks checks per rank, $((SECONDS - t0)) s"
}

run 2 shm
run 4 shm
run 2 tcp DTRAIN_HOST_TRANSPORT=tcp
echo "PASS"
