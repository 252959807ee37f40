#!/usr/bin/env bash
# dtr_init under every launcher, and the mesh groups it builds (runtime_check: each group's all-gather and
# all-reduce of world ranks against the Megatron layout):
#  - dtrain launch --nproc-per-node 8: dp2 x tp2 x pp2, dp4 x tp2 x pp1, dp1 x tp1 x pp8, dp8, tp8 in one
#    process each (init/finalize repeated); a mesh that does not multiply to 8 fails with a clear error;
#  - a hand-made torchrun environment (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT): rank 0 hosts the store
#    on MASTER_PORT+1, two processes started here; and with DTRAIN_STORE_PORT;
#  - mpirun -np 4 (Open MPI) with the host backend (rank 0 hosts the store) and with the mpi backend;
#  - a hand-made Slurm environment (SLURM_PROCID, ..., SLURM_JOB_NODELIST=localhost) for 2 processes;
#  - a single process with no launcher.
# ctest-labels: runtime mpi
# ctest-timeout: 400
source "$(dirname "${BASH_SOURCE[0]}")/launch_lib.sh"
RC=$BUILD/bin/runtime_check
[ -x "$RC" ] || fail "$RC not built"

# expect_ok FILE NPROC LAUNCHER MESH...: every rank printed its identity and a passing line per mesh
expect_ok() {
  local f=$1 n=$2 kind=$3; shift 3
  for ((r = 0; r < n; r++)); do
    grep -Eq "runtime_check rank $r: launcher $kind world $n " "$f" \
      || fail "rank $r of $n: no '$kind' identity line in $f: $(head -c 3000 "$f")"
    for m in "$@"; do
      grep -Eq "runtime_check rank $r: mesh $m at \([0-9]+,[0-9]+,[0-9]+\): [0-9]+ checks, 0 failed" "$f" \
        || fail "rank $r of $n ($kind), mesh $m: no passing line: $(grep -E "rank $r:|MISMATCH|failed" "$f" | head -8)"
    done
  done
  ! grep -q MISMATCH "$f" || fail "mismatches in $f: $(grep MISMATCH "$f" | head -5)"
}

# ---- dtrain launch, 8 ranks
t0=$SECONDS rc=0
timeout -k 5 150 "$DTRAIN" launch --nproc-per-node 8 -- "$RC" --mesh 2x2x2 --mesh 4x2x1 --mesh 1x1x8 --mesh 0x1x1 \
  --mesh 1x8x1 --timeout-ms 60000 --max-seconds 140 > "$T/launch.out" 2>&1 || rc=$?
[ $rc = 0 ] || fail "runtime_check under dtrain launch exited $rc: $(tail -n 30 "$T/launch.out")"
expect_ok "$T/launch.out" 8 dtrain 2x2x2 4x2x1 1x1x8 8x1x1 1x8x1
# spot check of the layout in the output: dp2 x tp2 x pp2 puts rank 6 at dp 1, tp 0, pp 1
grep -q "rank 6: mesh 2x2x2 at (1,0,1)" "$T/launch.out" || fail "rank 6 is not at (dp 1, tp 0, pp 1) in 2x2x2"
grep -q "rank 5: mesh 4x2x1 at (2,1,0)" "$T/launch.out" || fail "rank 5 is not at (dp 2, tp 1, pp 0) in 4x2x1"
echo "ok: dtrain launch, 8 ranks, 5 meshes, $((SECONDS - t0)) s"

# ---- a mesh that does not fit: every rank fails at once with the sizes in the message
rc=0
timeout -k 5 60 "$DTRAIN" launch --nproc-per-node 8 --max-restarts 0 -- "$RC" --mesh 3x2x2 --max-seconds 40 \
  > "$T/bad.out" 2>&1 || rc=$?
[ $rc != 0 ] || fail "mesh 3x2x2 on 8 ranks was accepted"
grep -q "dp 3 x tp 2 x pp 2 = 12 does not equal the world size 8" "$T/bad.out" \
  || fail "bad mesh message: $(tail -n 10 "$T/bad.out")"
echo "ok: bad mesh refused: $(grep -m1 -o 'mesh: dp 3.*' "$T/bad.out")"

# ---- torchrun-style environment, two processes started here (no DTRAIN_STORE, no launcher)
clean_env=(env -u DTRAIN_STORE -u DTRAIN_JOB_TOKEN -u RANK -u WORLD_SIZE -u MASTER_ADDR -u MASTER_PORT
  -u OMPI_COMM_WORLD_RANK -u OMPI_COMM_WORLD_SIZE -u SLURM_PROCID -u DTRAIN_STORE_PORT)
torchrun_pair() { # TAG EXTRA-ENV...
  local tag=$1; shift
  local port pids=() rc=0
  port=$(free_port)
  for r in 0 1; do
    "${clean_env[@]}" RANK=$r WORLD_SIZE=2 LOCAL_RANK=$r LOCAL_WORLD_SIZE=2 GROUP_RANK=0 GROUP_WORLD_SIZE=1 \
      MASTER_ADDR=127.0.0.1 MASTER_PORT=$port "$@" timeout -k 5 60 "$RC" --mesh 2x1x1 --mesh 1x2x1 --mesh 1x1x2 \
      --timeout-ms 30000 --max-seconds 50 > "$T/$tag.$r" 2>&1 &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p" || rc=$?; done
  cat "$T/$tag.0" "$T/$tag.1" > "$T/$tag.out"
  [ $rc = 0 ] || fail "torchrun-style pair ($tag) exited $rc: $(cat "$T/$tag.out")"
  expect_ok "$T/$tag.out" 2 torchrun 2x1x1 1x2x1 1x1x2
  echo "$port"
}
port=$(torchrun_pair torchrun | tail -n1)
grep -q "rank 1: launcher torchrun world 2 local 1/2 node 0/1 store 127.0.0.1:$((port + 1)) ours 1" "$T/torchrun.out" \
  || fail "torchrun store is not MASTER_ADDR:MASTER_PORT+1 ($((port + 1))): $(grep launcher "$T/torchrun.out")"
echo "ok: torchrun-style environment, 2 processes, store on MASTER_PORT+1"
sp=$(free_port)
torchrun_pair torchrun_sp DTRAIN_STORE_PORT=$sp DTRAIN_JOB_TOKEN=tok-$$ > /dev/null
grep -q "store 127.0.0.1:$sp ours 1" "$T/torchrun_sp.out" || fail "DTRAIN_STORE_PORT=$sp not used"
echo "ok: torchrun-style environment with DTRAIN_STORE_PORT and DTRAIN_JOB_TOKEN"

# ---- Open MPI
if ! command -v mpirun > /dev/null; then fail "mpirun not found: install openmpi-bin (scripts/ installs it)"; fi
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_btl_vader_single_copy_mechanism=none OMPI_MCA_btl=self,vader
MPIRUN=("${clean_env[@]}" mpirun --allow-run-as-root --oversubscribe --bind-to none)
rc=0
timeout -k 5 90 "${MPIRUN[@]}" -np 4 -x DTRAIN_STORE_PORT=$(free_port) "$RC" --backend host --mesh 2x2x1 \
  --mesh 1x2x2 --mesh 0x1x1 --max-seconds 80 > "$T/mpi_host.out" 2>&1 || rc=$?
[ $rc = 0 ] || fail "mpirun -np 4 (host backend) exited $rc: $(tail -n 30 "$T/mpi_host.out")"
expect_ok "$T/mpi_host.out" 4 mpirun 2x2x1 1x2x2 4x1x1
grep -q "rank 3: launcher mpirun world 4 local 3/4 node 0/1 store 127.0.0.1:" "$T/mpi_host.out" \
  || fail "mpirun identity: $(grep launcher "$T/mpi_host.out")"
echo "ok: mpirun -np 4, host backend (rank 0 hosts the store)"
# the port derived from Open MPI's job id (no DTRAIN_STORE_PORT)
rc=0
timeout -k 5 90 "${MPIRUN[@]}" -np 2 "$RC" --backend host --mesh 2x1x1 --max-seconds 80 > "$T/mpi_derived.out" 2>&1 \
  || rc=$?
[ $rc = 0 ] || fail "mpirun -np 2 (host backend, derived port) exited $rc: $(tail -n 30 "$T/mpi_derived.out")"
expect_ok "$T/mpi_derived.out" 2 mpirun 2x1x1
grep -Eq "store 127.0.0.1:2[0-9]{4} ours 1" "$T/mpi_derived.out" || fail "derived port not in [20000, 30000)"
echo "ok: mpirun -np 2, host backend, store port derived from the job id"
if "$DTRAIN" --version | head -n1 | grep -qw mpi; then
  rc=0
  timeout -k 5 90 "${MPIRUN[@]}" -np 4 "$RC" --backend mpi --mesh 2x2x1 --max-seconds 80 > "$T/mpi_mpi.out" 2>&1 \
    || rc=$?
  [ $rc = 0 ] || fail "mpirun -np 4 (mpi backend) exited $rc: $(tail -n 30 "$T/mpi_mpi.out")"
  expect_ok "$T/mpi_mpi.out" 4 mpirun 2x2x1
  echo "ok: mpirun -np 4, mpi backend (no store)"
else
  fail "this build has no MPI (configure found no Open MPI)"
fi

# ---- Slurm environment for 2 tasks on one node
jobid=$((RANDOM * 7 + $$))
pids=() rc=0
sport=$(free_port)
for r in 0 1; do
  "${clean_env[@]}" SLURM_PROCID=$r SLURM_NTASKS=2 SLURM_LOCALID=$r SLURM_NODEID=0 SLURM_NNODES=1 \
    SLURM_TASKS_PER_NODE=2 SLURM_JOB_NODELIST=localhost SLURM_JOB_ID=$jobid SLURM_STEP_ID=0 \
    DTRAIN_STORE_PORT=$sport timeout -k 5 60 "$RC" --mesh 0x1x2 --mesh 2x1x1 --max-seconds 50 > "$T/slurm.$r" 2>&1 &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p" || rc=$?; done
cat "$T/slurm.0" "$T/slurm.1" > "$T/slurm.out"
[ $rc = 0 ] || fail "Slurm-environment pair exited $rc: $(cat "$T/slurm.out")"
expect_ok "$T/slurm.out" 2 slurm 1x1x2 2x1x1
grep -q "rank 1: launcher slurm world 2 local 1/2 node 0/1 store localhost:$sport ours 1" "$T/slurm.out" \
  || fail "Slurm identity: $(grep launcher "$T/slurm.out")"
echo "ok: Slurm environment, 2 tasks, store on the first node of SLURM_JOB_NODELIST"

# ---- no launcher: one process
rc=0
"${clean_env[@]}" timeout -k 5 30 "$RC" --mesh 1x1x1 > "$T/single.out" 2>&1 || rc=$?
[ $rc = 0 ] || fail "single process exited $rc: $(cat "$T/single.out")"
expect_ok "$T/single.out" 1 single 1x1x1
echo "ok: single process"

# ---- a bad environment names the variable
rc=0
"${clean_env[@]}" RANK=2 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=1 timeout -k 5 30 "$RC" > "$T/badenv.out" 2>&1 \
  || rc=$?
[ $rc != 0 ] && grep -q "RANK=2 is not below WORLD_SIZE=2" "$T/badenv.out" \
  || fail "bad torchrun environment: rc $rc: $(cat "$T/badenv.out")"
echo "ok: bad environment refused: $(grep -o 'torchrun-style environment.*' "$T/badenv.out")"
echo "PASS"
