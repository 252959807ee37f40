#!/usr/bin/env bash
# Communicator failure paths on the host backend (coll_fault): (a) a rank that never arrives makes
# the others time out after the deadline with an error naming it; (b) a rank that exits in the middle
# of large all-reduces is reported by the survivors within the deadline instead of hanging; (c)
# dtr_comm_abort from another thread unblocks a blocked all-reduce; (d) DTRAIN_COMM_DEBUG=1 turns
# mismatched counts into DTR_ERR_INVALID naming both. Every rank prints its verdict and exits 0/1, so
# the launch's exit status (the first failing rank's code, --max-restarts 0) is the verdict.
# ctest-labels: coll
# ctest-timeout: 180
source "$(dirname "${BASH_SOURCE[0]}")/launch_lib.sh"
CF=$BUILD/bin/coll_fault
[ -x "$CF" ] || fail "$CF not built"

run_fault() { # NAME NPROC MAX_SECONDS -- coll_fault args
  local name=$1 n=$2 max=$3; shift 4
  local t0=$SECONDS rc=0
  timeout -k 5 "$max" "$DTRAIN" launch --nproc-per-node "$n" --max-restarts 0 -- "$CF" "$@" \
    > "$T/$name.out" 2> "$T/$name.err" || rc=$?
  if [ $rc != 0 ]; then
    echo "---- stdout"; cat "$T/$name.out"; echo "---- stderr"; tail -n 40 "$T/$name.err"
    fail "$name: launch exited $rc after $((SECONDS - t0)) s (repro: ${DTRAIN_COMM_DEBUG:+DTRAIN_COMM_DEBUG=1 }$DTRAIN launch --nproc-per-node $n -- $CF $*)"
  fi
  grep -q "FAILED" "$T/$name.out" && fail "$name: $(grep FAILED "$T/$name.out")"
  echo "ok: $name ($((SECONDS - t0)) s)"; grep " ok: " "$T/$name.out" | head -4
}

# (a) deadline: rank 2 of 3 never calls the all-reduce; comm timeout 1500 ms
run_fault deadline 3 40 -- deadline --timeout-ms 1500
for r in 0 1; do
  grep -Eq "^\[0:$r\] coll_fault rank $r: deadline ok: timeout after [0-9]+ ms naming rank 2" "$T/deadline.out" \
    || fail "deadline: rank $r gave no verdict: $(cat "$T/deadline.out")"
  # comm.h: on expiry the flight recorder (the last operations) is printed
  cat "$T/deadline.out" "$T/deadline.err" | grep -q "^\[0:$r\] .*flight recorder" \
    || fail "deadline: rank $r printed no flight recorder"
done

# (b) rank 1 of 3 leaves in the middle of a series of 16 MiB all-reduces
run_fault peer-exit 3 60 -- peer-exit --timeout-ms 1500
for r in 0 2; do
  grep -Eq "^\[0:$r\] coll_fault rank $r: peer-exit ok: all-reduce #[0-9]+ failed after" "$T/peer-exit.out" \
    || fail "peer-exit: rank $r gave no verdict: $(cat "$T/peer-exit.out")"
done

# (c) abort from another thread, timeout 60 s so only the abort can end the wait
run_fault abort 2 40 -- abort
grep -Eq "^\[0:0\] coll_fault rank 0: abort ok: unblocked" "$T/abort.out" || fail "abort: no verdict: $(cat "$T/abort.out")"

# (d) debug mode: mismatched counts
export DTRAIN_COMM_DEBUG=1
run_fault mismatch 2 40 -- mismatch --timeout-ms 10000
unset DTRAIN_COMM_DEBUG
for r in 0 1; do
  grep -Eq "^\[0:$r\] coll_fault rank $r: mismatch ok: invalid" "$T/mismatch.out" \
    || fail "mismatch: rank $r gave no verdict: $(cat "$T/mismatch.out")"
done
echo "PASS"
