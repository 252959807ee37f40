#!/usr/bin/env bash
# The mpi backend under mpirun: coll_check's serial reference for every collective, type, reduction and
# size on 1, 2 and 4 ranks (bit-identical, floats included); the same on 2 and 4
# ranks with DTRAIN_MPI_MAX_COUNT=1000, so every operation is cut into many pieces and pipeline chunks
# (the path counts above INT_MAX take); coll_mpi_smoke on 3 ranks (odd size, a rank outside every split
# group, u8 wrap-around, integer AVG, reductions bit-identical to the serial reference) and on 4 ranks
# with the small DTRAIN_MPI_MAX_COUNT; a rank that never arrives (DTR_ERR_TIMEOUT after the deadline,
# naming it, then DTR_ERR_ABORTED); a rank SIGKILLed during all-reduces (the survivors fail within the
# deadline, naming it); dtr_comm_abort from another thread; and a rank/size that disagrees with
# MPI_COMM_WORLD.
# ctest-labels: mpi coll
# ctest-timeout: 500
source "$(dirname "${BASH_SOURCE[0]}")/launch_lib.sh"
CC=$BUILD/bin/coll_check
SMOKE=$BUILD/bin/coll_mpi_smoke
[ -x "$CC" ] || fail "$CC not built"
[ -x "$SMOKE" ] || fail "$SMOKE not built"
command -v mpirun > /dev/null || fail "mpirun not found: install openmpi-bin (scripts/ installs it)"
features=$("$DTRAIN" --version | head -n1)
grep -qw mpi <<< "$features" || fail "this build has no MPI (configure found no Open MPI): $features"

# Root in containers: Open MPI refuses root without these; CMA (process_vm_readv) is often blocked, so
# shared memory copies go through a bounce buffer; one machine, so self + shared memory only.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_btl_vader_single_copy_mechanism=none OMPI_MCA_btl=self,vader
MPIRUN=(mpirun --allow-run-as-root --oversubscribe --bind-to none)

# ---- coll_check on 1, 2, 4 ranks, then chunked: MAX is DTRAIN_MPI_MAX_COUNT ("" = default)
coll_check() { # NPROC MAX
  local n=$1 max=$2 t0=$SECONDS rc=0 tag="$1${2:+.max$2}"
  local env=()
  [ -n "$max" ] && env=(-x DTRAIN_MPI_MAX_COUNT="$max")
  timeout -k 5 160 "${MPIRUN[@]}" "${env[@]}" -np "$n" "$CC" --backend mpi --seed $((2000 + n)) --timeout-ms 30000 \
    --max-seconds 140 > "$T/out.$tag" 2> "$T/err.$tag" || rc=$?
  if [ $rc != 0 ]; then
    echo "---- stdout ($n ranks)"; tail -n 40 "$T/out.$tag"
    echo "---- stderr ($n ranks)"; tail -n 60 "$T/err.$tag"
    fail "coll_check --backend mpi on $n ranks${max:+ with DTRAIN_MPI_MAX_COUNT=$max} exited $rc" \
      "(repro: ${max:+DTRAIN_MPI_MAX_COUNT=$max }mpirun -np $n $CC --backend mpi --seed $((2000 + n)))"
  fi
  for ((r = 0; r < n; r++)); do
    grep -Eq "^coll_check rank $r: [0-9]+ checks, 0 failed" "$T/out.$tag" \
      || fail "rank $r of $n printed no passing summary: $(grep "rank $r" "$T/out.$tag" "$T/err.$tag" | head -5)"
  done
  checks=$(sed -n "s/^coll_check rank 0: \([0-9]*\) checks.*/\1/p" "$T/out.$tag")
  [ "${checks:-0}" -ge 400 ] || fail "only ${checks:-0} checks ran on $n ranks"
  echo "ok: coll_check, $n ranks${max:+, DTRAIN_MPI_MAX_COUNT=$max}, $checks checks per rank, $((SECONDS - t0)) s"
}
for n in 1 2 4; do coll_check "$n" ""; done
# 1000 bytes per MPI call: 4099 f64 elements take 33 pieces; reductions run in 125-element chunks
for n in 2 4; do coll_check "$n" 1000; done

# ---- the smoke test on an odd size (split leaves the last rank out), then chunked on 4 ranks
smoke() { # NPROC MAX
  local rc=0 tag="$1${2:+.max$2}" env=()
  [ -n "$2" ] && env=(-x DTRAIN_MPI_MAX_COUNT="$2" -x DTRAIN_LOG_LEVEL=info)
  timeout -k 5 60 "${MPIRUN[@]}" "${env[@]}" -np "$1" "$SMOKE" > "$T/smoke.$tag.out" 2> "$T/smoke.$tag.err" || rc=$?
  [ $rc = 0 ] && grep -q "$1 rank(s), backend mpi: all checks passed" "$T/smoke.$tag.out" \
    || fail "coll_mpi_smoke on $1 ranks${2:+ with DTRAIN_MPI_MAX_COUNT=$2} exited $rc: $(grep -h FAIL "$T/smoke.$tag.err" | head -10)"
  if [ -n "$2" ]; then # the setting took effect on every rank
    [ "$(grep -c "communicator world: at most $2 bytes per MPI call" "$T/smoke.$tag.err")" = "$1" ] \
      || fail "DTRAIN_MPI_MAX_COUNT=$2 was not applied on every rank: $(head -5 "$T/smoke.$tag.err")"
  fi
  echo "ok: coll_mpi_smoke, $1 ranks${2:+, DTRAIN_MPI_MAX_COUNT=$2} (reductions bit-identical to the serial reference)"
}
smoke 3 ""
smoke 4 1000

# ---- faults. The ranks leave with _exit (MPI cannot finalize an abandoned operation), so mpirun reports
# an abnormal end: judge by each rank's own verdict line.
fault() { # MODE NPROC [MPIRUN OPTIONS...]
  local t0=$SECONDS mode=$1 np=$2
  shift 2
  timeout -k 5 60 "${MPIRUN[@]}" "$@" -np "$np" "$SMOKE" --fault "$mode" > "$T/$mode.out" 2> "$T/$mode.err"
  set -- "$mode" "$np"
  for ((r = 0; r < $2; r++)); do
    grep -q "^coll_mpi_smoke rank $r: $1 ok" "$T/$1.out" || {
      echo "---- stdout"; cat "$T/$1.out"; echo "---- stderr"; tail -n 30 "$T/$1.err"
      fail "fault $1: rank $r did not report ok"
    }
  done
  echo "ok: fault $1, $2 ranks, $((SECONDS - t0)) s"
}
fault deadline 3
[ "$(grep -c "did not complete within 1500 ms; still waiting on: recv from 2" "$T/deadline.out")" = 2 ] \
  || fail "the timeout text of ranks 0 and 1 does not name rank 2: $(grep deadline "$T/deadline.out")"
grep -q "flight recorder of communicator world" "$T/deadline.err" \
  || fail "no flight recorder printed on timeout"
fault abort 2
# a rank killed mid-job: mpirun would end the survivors at once; told not to, they must fail by the deadline
fault dead 3 --mca orte_abort_on_non_zero_status 0

# ---- rank/size that MPI_COMM_WORLD contradicts: a singleton MPI process told it is rank 1 of 2
rc=0
env -u OMPI_COMM_WORLD_RANK -u OMPI_COMM_WORLD_SIZE RANK=1 WORLD_SIZE=2 timeout -k 5 30 "$SMOKE" \
  > "$T/bad.out" 2> "$T/bad.err" || rc=$?
[ $rc != 0 ] || fail "a rank/size mismatch with MPI_COMM_WORLD was accepted"
grep -q "invalid argument.*created as rank 1 of 2, but MPI_COMM_WORLD says rank 0 of 1" "$T/bad.err" \
  || fail "mismatch message: $(cat "$T/bad.err")"
echo "ok: rank/size mismatch refused"
