#!/usr/bin/env bash
# Communicator failure paths on the host backend (coll_fault): (a) a rank that never arrives makes
# the others time out after the deadline with an error naming it; (b) a rank that exits in the middle
# of large all-reduces is reported by the survivors within the deadline instead of hanging; (c)
# dtr_comm_abort from another thread unblocks a blocked all-reduce; (d) DTRAIN_COMM_DEBUG=1 turns
# mismatched counts into DTR_ERR_INVALID naming both; (e) a rank 0 killed while its new segment's
# name is in /dev/shm leaves nothing there once the next job has started. Every rank prints its
# verdict and exits 0/1, so the launch's exit status (the first failing rank's code, --max-restarts 0)
# is the verdict.
# ctest-labels: coll
# ctest-timeout: 180
source "$(dirname "${BASH_SOURCE[0]}")/launch_lib.sh"
CF=$BUILD/bin/coll_fault
[ -x "$CF" ] || fail "$CF not built"

run_fault() { # NAME NPROC MAX_SECONDS -- coll_fault args
  local t0=$SECONDS
  run_coll_fault "$@"
  echo "ok: $1 ($((SECONDS - t0)) s)"; grep " ok: " "$T/$1.out" | head -4
}

# (a) deadline: rank 2 of 3 never calls the all-reduce; comm timeout 1500 ms
run_fault deadline 3 40 -- deadline --timeout-ms 1500
expect_verdicts deadline "deadline ok: timeout after [0-9]+ ms naming rank 2" 0 1
for r in 0 1; do # comm.h: on expiry the flight recorder (the last operations) is printed
  cat "$T/deadline.out" "$T/deadline.err" | grep -q "^\[0:$r\] .*flight recorder" \
    || fail "deadline: rank $r printed no flight recorder"
done

# (b) rank 1 of 3 leaves in the middle of a series of 16 MiB all-reduces
run_fault peer-exit 3 60 -- peer-exit --timeout-ms 1500
expect_verdicts peer-exit "peer-exit ok: all-reduce #[0-9]+ failed after" 0 2

# (c) abort from another thread, timeout 60 s so only the abort can end the wait
run_fault abort 2 40 -- abort
expect_verdicts abort "abort ok: unblocked" 0

# (d) debug mode: mismatched counts
export DTRAIN_COMM_DEBUG=1
run_fault mismatch 2 40 -- mismatch --timeout-ms 10000
unset DTRAIN_COMM_DEBUG
expect_verdicts mismatch "mismatch ok: invalid" 0 1
# (e) rank 0 dies (SIGKILL) while the segment's name is in /dev/shm and nobody else could unlink it:
# right after creating it, and after publishing it before the others mapped it. The name may stay
# while the job dies; the next job's creator removes it (no live process holds its lock), and that
# job works. DTRAIN_HOST_TEST_CRASH is the library's fault-injection hook.
for when in created published; do
  rc=0
  DTRAIN_HOST_TEST_CRASH=$when timeout -k 5 40 "$DTRAIN" launch --nproc-per-node 3 --max-restarts 0 -- \
    "$CF" create --timeout-ms 3000 > "$T/crash-$when.out" 2> "$T/crash-$when.err" || rc=$?
  [ $rc != 0 ] || fail "crash-$when: the job passed although rank 0 was to die"
  seg=$(sed -n "s/.*DTRAIN_HOST_TEST_CRASH=$when: rank 0 (pid [0-9]*) dies holding segment \/\(dtrain\.[0-9]*\.[0-9a-f]*\.lk\)$/\1/p" \
    "$T/crash-$when.err" | head -n 1)
  [ -n "$seg" ] || { tail -n 20 "$T/crash-$when.err"; fail "crash-$when: rank 0 did not die at the hook"; }
  left=no
  [ -e "/dev/shm/$seg" ] && left=yes
  run_fault "after-$when" 3 40 -- create --timeout-ms 10000
  [ -e "/dev/shm/$seg" ] && fail "crash-$when: /dev/shm/$seg is still there after the next job"
  echo "ok: crash-$when: /dev/shm/$seg left by the dead job: $left; removed by the next one"
done
echo "PASS"
