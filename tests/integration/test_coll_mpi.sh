#!/usr/bin/env bash
# The mpi backend under mpirun: coll_check's serial reference for every collective, type, reduction and
# size on 1, 2 and 4 ranks (floats within coll_ref.h's tolerance, the rest exact); coll_mpi_smoke on 3
# ranks (odd size, a rank outside every split group, u8 wrap-around, integer AVG); a rank that never
# arrives (DTR_ERR_TIMEOUT after the deadline, then DTR_ERR_ABORTED); dtr_comm_abort from another
# thread; and a rank/size that disagrees with MPI_COMM_WORLD.
# ctest-labels: mpi coll
# ctest-timeout: 300
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

# ---- coll_check on 1, 2, 4 ranks
for n in 1 2 4; do
  t0=$SECONDS rc=0
  timeout -k 5 160 "${MPIRUN[@]}" -np "$n" "$CC" --backend mpi --seed $((2000 + n)) --timeout-ms 30000 \
    --max-seconds 140 > "$T/out.$n" 2> "$T/err.$n" || rc=$?
  if [ $rc != 0 ]; then
    echo "---- stdout ($n ranks)"; tail -n 40 "$T/out.$n"
    echo "---- stderr ($n ranks)"; tail -n 60 "$T/err.$n"
    fail "coll_check --backend mpi on $n ranks exited $rc" \
      "(repro: mpirun -np $n $CC --backend mpi --seed $((2000 + n)))"
  fi
  for ((r = 0; r < n; r++)); do
    grep -Eq "^coll_check rank $r: [0-9]+ checks, 0 failed" "$T/out.$n" \
      || fail "rank $r of $n printed no passing summary: $(grep "rank $r" "$T/out.$n" "$T/err.$n" | head -5)"
  done
  checks=$(sed -n "s/^coll_check rank 0: \([0-9]*\) checks.*/\1/p" "$T/out.$n")
  [ "${checks:-0}" -ge 400 ] || fail "only ${checks:-0} checks ran on $n ranks"
  echo "ok: coll_check, $n ranks, $checks checks per rank, $((SECONDS - t0)) s"
done

# ---- the smoke test on an odd size (split leaves the last rank out)
rc=0
timeout -k 5 60 "${MPIRUN[@]}" -np 3 "$SMOKE" > "$T/smoke.out" 2> "$T/smoke.err" || rc=$?
[ $rc = 0 ] && grep -q "3 rank(s), backend mpi: all checks passed" "$T/smoke.out" \
  || fail "coll_mpi_smoke on 3 ranks exited $rc: $(grep -h FAIL "$T/smoke.err" | head -10)"
echo "ok: coll_mpi_smoke, 3 ranks"

# ---- faults. The ranks leave with _exit (MPI cannot finalize an abandoned operation), so mpirun reports
# an abnormal end: judge by each rank's own verdict line.
fault() { # MODE NPROC
  local t0=$SECONDS
  timeout -k 5 60 "${MPIRUN[@]}" -np "$2" "$SMOKE" --fault "$1" > "$T/$1.out" 2> "$T/$1.err"
  for ((r = 0; r < $2; r++)); do
    grep -q "^coll_mpi_smoke rank $r: $1 ok" "$T/$1.out" || {
      echo "---- stdout"; cat "$T/$1.out"; echo "---- stderr"; tail -n 30 "$T/$1.err"
      fail "fault $1: rank $r did not report ok"
    }
  done
  echo "ok: fault $1, $2 ranks, $((SECONDS - t0)) s"
}
fault deadline 3
grep -q "MPI cannot tell which ranks had not arrived" "$T/deadline.out" \
  || fail "timeout text lacks the reason"
grep -q "flight recorder of communicator world" "$T/deadline.err" \
  || fail "no flight recorder printed on timeout"
fault abort 2

# ---- rank/size that MPI_COMM_WORLD contradicts: a singleton MPI process told it is rank 1 of 2
rc=0
env -u OMPI_COMM_WORLD_RANK -u OMPI_COMM_WORLD_SIZE RANK=1 WORLD_SIZE=2 timeout -k 5 30 "$SMOKE" \
  > "$T/bad.out" 2> "$T/bad.err" || rc=$?
[ $rc != 0 ] || fail "a rank/size mismatch with MPI_COMM_WORLD was accepted"
grep -q "invalid argument.*created as rank 1 of 2, but MPI_COMM_WORLD says rank 0 of 1" "$T/bad.err" \
  || fail "mismatch message: $(cat "$T/bad.err")"
echo "ok: rank/size mismatch refused"
