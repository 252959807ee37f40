#!/usr/bin/env bash
# The pipeline executor (pp_check: a synthetic stage whose every message says which virtual stage and
# micro-batch wrote it): gpipe, 1f1b and interleaved on 2-4 stages, messages larger than a pair's
# shared-memory ring, a random delay on one stage, the TCP transport; every activation and gradient must
# arrive at the right stage in order. Then a stage that stalls: the others must fail within the
# communicator's deadline with a message naming their stage, the micro-batch and the stage they wait for.
# ctest-labels: pp
# ctest-timeout: 300
source "$(dirname "${BASH_SOURCE[0]}")/launch_lib.sh"
H=$BUILD/bin/pp_check
[ -x "$H" ] || fail "pp_check not built"

run() { # NAME NPROC ENV -- pp_check args
  local name=$1 n=$2 env=$3 rc=0
  shift 4
  env $env timeout -k 5 100 "$DTRAIN" launch --nproc-per-node "$n" --max-restarts 0 -- "$H" "$@" \
    > "$T/$name.out" 2> "$T/$name.err" || rc=$?
  [ $rc = 0 ] || { cat "$T/$name.out"; tail -n 30 "$T/$name.err"; fail "$name: launch exited $rc"; }
  for ((r = 0; r < n; r++)); do
    grep -Eq "^\[0:$r\] pp_check stage $r: [0-9]+ steps, [0-9]+ messages ok" "$T/$name.out" \
      || { cat "$T/$name.out"; fail "$name: stage $r gave no passing verdict"; }
  done
  echo "ok: $name"
}
run 1f1b-2 2 "" -- --schedule 1f1b --micro 4
run gpipe-3 3 "" -- --schedule gpipe --micro 5 --delay-stage 1 --delay-ms 10
run 1f1b-4-big 4 "" -- --schedule 1f1b --micro 8 --act 200000 --delay-stage 2 --delay-ms 5
run interleaved-2 2 "" -- --schedule interleaved --micro 4 --chunks 2 --delay-stage 0 --delay-ms 10
run interleaved-4 4 "" -- --schedule interleaved --micro 8 --chunks 2 --delay-stage 3 --delay-ms 10
run interleaved-3x3 3 "" -- --schedule interleaved --micro 6 --chunks 3 --act 100000
run 1f1b-3-tcp 3 DTRAIN_HOST_TRANSPORT=tcp -- --schedule 1f1b --micro 6 --act 300000 --delay-stage 0 --delay-ms 5
# the executor's stages agree with the schedule's slot count: 1f1b holds p - stage micro-batches
grep -q "pp_check stage 0: 2 steps, 16 messages ok (4 slots)" "$T/1f1b-4-big.out" || fail "1f1b stage 0 of 4 should hold 4 slots"
grep -q "pp_check stage 3: 2 steps, 16 messages ok (1 slots)" "$T/1f1b-4-big.out" || fail "1f1b stage 3 of 4 should hold 1 slot"

# stage 1 stalls at the forward of micro-batch 2: stages 0 and 2 time out naming what they waited for
rc=0; t0=$SECONDS
DTRAIN_COMM_TIMEOUT_MS=3000 timeout -k 5 60 "$DTRAIN" launch --nproc-per-node 3 --max-restarts 0 -- "$H" \
  --schedule 1f1b --micro 6 --stall-stage 1 --stall-micro 2 > "$T/stall.out" 2> "$T/stall.err" || rc=$?
[ $rc != 0 ] || fail "stall: the job succeeded with a stalled stage"
(( SECONDS - t0 < 30 )) || fail "stall: took $((SECONDS - t0)) s with a 3 s deadline"
cat "$T/stall.out" "$T/stall.err" > "$T/stall.all"
# both neighbours time out at about the same moment and the first to exit stops the job: one of them
# reports, and what it reports is what it waited for (stage 2: the activation of micro-batch 2)
grep -Eq "pipeline stage (2: receiving the activation of micro-batch 2|0: receiving the gradient of micro-batch [01]) from stage 1" \
  "$T/stall.all" || { cat "$T/stall.all"; fail "stall: no neighbour named what it waited for"; }
if grep -q "pipeline stage 2: receiving" "$T/stall.all"; then
  grep -q "pipeline stage 2: receiving the activation of micro-batch 2 from stage 1" "$T/stall.all" \
    || fail "stall: stage 2 named the wrong message: $(grep 'pipeline stage 2' "$T/stall.all")"
fi
echo PASS
