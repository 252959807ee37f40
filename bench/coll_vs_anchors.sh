#!/usr/bin/env bash
# coll_vs_anchors.sh — dtrain's host all-reduce next to Open MPI and Gloo, in one table: f32 sum
# all-reduce busbw (GB/s, 2(n-1)/n x algbw, slowest rank's mean per iteration) at 16, 64 and 256 MiB on
# 2 and 4 ranks, for dtrain host (coll_perf under dtrain launch), dtrain's mpi backend (coll_perf
# --backend mpi under mpirun), raw MPI_Allreduce (coll_perf --anchor-mpi under mpirun) and Gloo
# (bench/gloo_allreduce.py, torch.distributed under dtrain launch with Debian's /usr/bin/python3), with
# the ratios host/MPI, mpi/MPI (dtrain's mpi backend against the raw MPI_Allreduce it runs beside) and
# host/Gloo; then the 8-byte all-reduce latency on 4 ranks. Every run verifies
# its results once per size (#wrong must be 0). All four reduce in place (coll_perf --inplace,
# MPI_IN_PLACE), as torch.distributed's all_reduce always does and as the trainer reduces its gradients;
# --out-of-place gives dtrain and MPI separate send and receive buffers instead (Gloo stays in place).
# The four run in turn, --rounds times (default 3), and each cell is the median of its rounds, so a
# burst of load on a shared machine moves one round, not one column; --rounds 1 shows single runs.
# --op reducescatter|allgather|alltoall|broadcast|reduce|sendrecv measures that operation instead
# against its MPI call (MPI_Reduce_scatter_block, MPI_Allgather, ...), out of place; Gloo then has no
# column (its script times all-reduce only), and sizes are those of coll_perf (the whole receive buffer
# for all-gather, the whole send buffer for reduce-scatter and all-to-all).
#
#   bench/coll_vs_anchors.sh [--build DIR] [--iters N] [--rounds R] [--ranks "2 4"] [--sizes 16M,64M,256M]
#                            [--out-of-place] [--op OP]
#
# Exit status: 0, or 1 when a run failed or reported wrong results. About 1-2 minutes per round on 2 cores.
set -euo pipefail
SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${DTRAIN_BUILD:-$SRC/build}
ITERS=5
ROUNDS=3
RANKS="2 4"
SIZES=16M,64M,256M
PLACE=(--inplace)
OP=allreduce
PY=/usr/bin/python3
while (($#)); do
  case $1 in
    --build) BUILD=$2; shift 2 ;;
    --iters) ITERS=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --ranks) RANKS=$2; shift 2 ;;
    --sizes) SIZES=$2; shift 2 ;;
    --out-of-place) PLACE=(); shift ;;
    --op) OP=$2; shift 2 ;;
    -h | --help) sed -n '2,23p' "$0"; exit 0 ;;
    *) echo "coll_vs_anchors.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
[[ $OP == allreduce ]] || PLACE=() # coll_perf --inplace is for all-reduce only
LATB=8 # latency size: 8 bytes, or 8 bytes per rank block for the ops whose size counts all 4 blocks
[[ $OP == allgather || $OP == reducescatter || $OP == alltoall ]] && LATB=32
DTRAIN=$BUILD/bin/dtrain
CP=$BUILD/bin/coll_perf
[[ -x $CP && -x $DTRAIN ]] || { echo "coll_vs_anchors.sh: build $BUILD first (coll_perf, dtrain)" >&2; exit 2; }
MPIRUN=(mpirun --allow-run-as-root --oversubscribe --bind-to none)
command -v mpirun > /dev/null || { echo "coll_vs_anchors.sh: mpirun missing (apt-get install openmpi-bin)" >&2; exit 2; }
TMP=$(mktemp -d "${TMPDIR:-/tmp}/coll_vs_anchors.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
min=${SIZES%%,*}; max=${SIZES##*,}
rc=0

run() { # NAME TIMEOUT CMD... : run one measurement, keep its log, note a failure
  local name=$1 tmo=$2; shift 2
  if ! timeout -k 5 "$tmo" "$@" > "$TMP/$name.log" 2>&1; then
    echo "coll_vs_anchors.sh: $name failed: $*" >&2; tail -n 8 "$TMP/$name.log" >&2; rc=1
  fi
}

echo "# coll_vs_anchors: f32 sum $OP $([[ ${#PLACE[@]} -gt 0 ]] && echo "in place" || echo "out of place$([[ $OP == allreduce ]] && echo " (Gloo in place)")"), sizes $SIZES, $ITERS iterations (+1 warm-up) per size, median of $ROUNDS rounds, $(nproc) cores"
for ((k = 0; k < ROUNDS; k++)); do
  for n in $RANKS; do
    # sizes are powers of 4 apart (16M, 64M, 256M)
    CPARGS=(--op "$OP" -b "$min" -e "$max" -f 4 -n "$ITERS" -w 1 --check "${PLACE[@]}")
    run host_${n}_$k 120 "$DTRAIN" launch --nproc-per-node "$n" -- "$CP" --backend host "${CPARGS[@]}" \
      --json "$TMP/host_${n}_$k.json"
    run mpi_${n}_$k 120 "${MPIRUN[@]}" -np "$n" "$CP" --backend mpi "${CPARGS[@]}" --json "$TMP/mpi_${n}_$k.json"
    run raw_${n}_$k 120 "${MPIRUN[@]}" -np "$n" "$CP" --anchor-mpi "${CPARGS[@]}" --json "$TMP/raw_${n}_$k.json"
    [[ $OP == allreduce ]] && run gloo_${n}_$k 180 "$DTRAIN" launch --nproc-per-node "$n" -- "$PY" \
      "$SRC/bench/gloo_allreduce.py" --sizes "$SIZES" --iters "$ITERS" --warmup 1 --json "$TMP/gloo_${n}_$k.json"
  done
  # 8-byte latency, 4 ranks
  LAT=(--op "$OP" -b $LATB -e $LATB -n 2000 -w 200 --check "${PLACE[@]}")
  run lat_host_$k 60 "$DTRAIN" launch --nproc-per-node 4 -- "$CP" --backend host "${LAT[@]}" --json "$TMP/lat_host_$k.json"
  run lat_mpi_$k 60 "${MPIRUN[@]}" -np 4 "$CP" --backend mpi "${LAT[@]}" --json "$TMP/lat_mpi_$k.json"
  run lat_raw_$k 60 "${MPIRUN[@]}" -np 4 "$CP" --anchor-mpi "${LAT[@]}" --json "$TMP/lat_raw_$k.json"
  [[ $OP == allreduce ]] && run lat_gloo_$k 120 "$DTRAIN" launch --nproc-per-node 4 -- "$PY" \
    "$SRC/bench/gloo_allreduce.py" --sizes 8 --iters 500 --warmup 50 --json "$TMP/lat_gloo_$k.json"
done

"$PY" - "$TMP" "$RANKS" "$ROUNDS" "$OP" "$LATB" <<'PYEOF' || rc=1
import json, os, statistics, sys
tmp, ranks, rounds, opname, latb = sys.argv[1], sys.argv[2].split(), int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
mpi = {"allreduce": "MPI_Allreduce", "reducescatter": "MPI_Reduce_scatter_block", "allgather": "MPI_Allgather",
       "alltoall": "MPI_Alltoall", "broadcast": "MPI_Bcast", "reduce": "MPI_Reduce",
       "sendrecv": "MPI_Sendrecv"}.get(opname, "MPI")
def load(name):
    """{size: row} with busbw and time_us the medians over the rounds that have the size; wrong summed."""
    runs = []
    for k in range(rounds):
        try:
            runs.append({r["size"]: r for r in json.load(open(os.path.join(tmp, "%s_%d.json" % (name, k))))["results"]})
        except Exception:
            pass
    out = {}
    for size in set().union(*runs) if runs else ():
        rows = [r[size] for r in runs if size in r]
        out[size] = {"busbw": statistics.median(r["busbw"] for r in rows),
                     "time_us": statistics.median(r["time_us"] for r in rows),
                     "wrong": sum(r.get("wrong", 0) for r in rows)}
    return out
bad = 0
def cell(rows, size, key="busbw", fmt="%8.3f"):
    global bad
    r = rows.get(size)
    if r is None:
        return "%8s" % "n/a"
    if r.get("wrong", 0):
        bad = 1
        return "%8s" % "WRONG"
    return fmt % r[key]
def ratio(a, b, size):
    ra, rb = a.get(size), b.get(size)
    if not ra or not rb or not rb["busbw"]:
        return "%6s" % "n/a"
    return "%6.2f" % (ra["busbw"] / rb["busbw"])
print()
print("busbw (GB/s)       dtrain-host  dtrain-mpi  %13s    gloo   host/MPI  mpi/MPI  host/gloo" % mpi[:13])
for n in ranks:
    h, m, r, g = load("host_" + n), load("mpi_" + n), load("raw_" + n), load("gloo_" + n)
    for size in sorted(set(h) | set(r) | set(g)):
        print("%d ranks %5d MiB   %8s    %8s    %8s     %8s  %6s   %6s     %6s" % (int(n), size >> 20, cell(h, size),
              cell(m, size), cell(r, size), cell(g, size), ratio(h, r, size), ratio(m, r, size), ratio(h, g, size)))
print()
print("%d-byte %s latency, 4 ranks (us, slowest rank's mean)" % (latb, opname))
lh, lm, lr, lg = load("lat_host"), load("lat_mpi"), load("lat_raw"), load("lat_gloo")
f = "%8.2f"
print("  dtrain-host %s   dtrain-mpi %s   %s %s   gloo %s" % (cell(lh, latb, "time_us", f), cell(lm, latb, "time_us", f), mpi,
      cell(lr, latb, "time_us", f), cell(lg, latb, "time_us", f)))
if lh.get(latb) and lr.get(latb):
    print("  host/MPI latency ratio %.2f" % (lh[latb]["time_us"] / lr[latb]["time_us"]))
if lm.get(latb) and lr.get(latb):
    print("  mpi/MPI latency ratio %.2f" % (lm[latb]["time_us"] / lr[latb]["time_us"]))
sys.exit(bad)
PYEOF
exit $rc
