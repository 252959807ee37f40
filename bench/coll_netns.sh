#!/usr/bin/env bash
# coll_netns.sh — the host backend's transports between network-namespace nodes, next to what the link
# itself carries: a 64 MiB f32 sum all-reduce (coll_perf --backend host; each agent in its own IPC/UTS
# namespace, so ranks of different nodes must use TCP) in these configurations:
#   2 nodes x 1 rank   flat direct all-reduce, and the chain (DTRAIN_HOST_CHAIN_MIN_NODES=2)
#   3 nodes x 1 rank   direct, chain with results back along it, chain with results sent directly
#   4 nodes x 1 rank   direct and chain
#   2 nodes x 2 ranks  hierarchical (shared memory + chain per rail), and the flat mesh (DTRAIN_HOST_HIER=0)
#   3 nodes x 2 ranks  the same (--only 3x2; not in the default set)
#   2 nodes x 4 ranks  the same (--only 2x4; not in the default set)
# and iperf3 between node 1 and node 0 (-t 3, one stream; and --bidir). busbw = algbw x 2(n-1)/n: what
# each rank's link carries per direction, comparable with iperf3's one-way figure. An all-reduce loads
# both directions of every link at once, and on a machine with few cores the veth pair's throughput is
# bound by the CPU, shared by the two directions: so for the N x 1 rows the table also gives the payload
# all links carry together (N x busbw, both directions) against iperf3 --bidir's sum of both directions
# (for 2 x 1, the same link measured the same way).
#
#   sudo bench/coll_netns.sh [--build DIR] [--iters N] [--size 64M] [--only 2x1|3x1|4x1|2x2|3x2|2x4] [--op allreduce]
#
# --op broadcast (etc.) measures another collective in the same configurations (the hierarchical
# broadcast: N-1 TCP sends from the root, then the segment). --op allgather / reducescatter compare
# the hierarchical algorithms with the flat mesh on 2x2 (and 3x2, 2x4); --size is then the whole recv (all-
# gather) or send (reduce-scatter) buffer, as coll_perf counts it. Run with --only 2x2 for those: the
# 1-rank-per-node configurations have no hierarchical all-gather or reduce-scatter.
#
# Needs root (network namespaces) and iperf3. Only addresses inside the namespaces it creates are used.
# Exit status 0, or 1 when a run failed or reported wrong results.
set -euo pipefail
SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${DTRAIN_BUILD:-$SRC/build}
ITERS=10
SIZE=64M
ONLY=""
OP=allreduce
while (($#)); do
  case $1 in
    --build) BUILD=$2; shift 2 ;;
    --iters) ITERS=$2; shift 2 ;;
    --size) SIZE=$2; shift 2 ;;
    --only) ONLY=$2; shift 2 ;;
    --op) OP=$2; shift 2 ;;
    -h | --help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "coll_netns.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
DTRAIN=$BUILD/bin/dtrain
PERF=$BUILD/bin/coll_perf
[[ -x $DTRAIN && -x $PERF ]] || { echo "coll_netns.sh: build first ($BUILD/bin/{dtrain,coll_perf})" >&2; exit 1; }
command -v iperf3 >/dev/null || { echo "coll_netns.sh: iperf3 is not installed" >&2; exit 1; }
set +e
source "$SRC/tests/cluster/netns.sh"
set -e
ns_setup 4
ns_time_limit 600
ns_tmpdir
T=$NS_TMP
ADDR0=$(ns_addr 0)
export DTRAIN_JOB_TOKEN="coll-netns-$$-$RANDOM"
PORT=29700
FAILED=0
ROWS=()

# perf TAG NNODES NPROC [VAR=value ...]: one coll_perf run; appends "TAG busbw wrong" to ROWS.
perf() {
  local tag=$1 nn=$2 k=$3 node rc=0
  shift 3
  local pids=()
  PORT=$((PORT + 1))
  for ((node = 0; node < nn; node++)); do
    ns_spawn "$node" env "$@" unshare --ipc --uts -- bash -c 'hostname "$0" && exec "$@"' "node$node" "$DTRAIN" \
      launch --nnodes "$nn" --nproc-per-node "$k" --rdzv-endpoint "$ADDR0:$PORT" --rdzv-timeout 30 --rdzv-id "b$PORT" \
      -- "$PERF" --op "$OP" --backend host --min-bytes "$SIZE" --max-bytes "$SIZE" -n "$ITERS" -w 2 -c \
      --json "$T/$tag.$node.json" </dev/null >"$T/$tag.$node.log" 2>&1
    pids+=("$NS_LAST_PID")
  done
  for p in "${pids[@]}"; do wait "$p" || rc=$?; done
  if ((rc != 0)); then
    echo "coll_netns.sh: $tag: coll_perf failed (rc $rc)" >&2
    tail -n 20 "$T/$tag".*.log >&2
    FAILED=1
    ROWS+=("$tag failed -")
    return 0
  fi
  local row
  row=$(python3 - "$T/$tag.0.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
print("%.3f %.3f %d" % (d["max_busbw"], d["avg_busbw"], d["wrong"]))
PY
)
  ((${row##* } == 0)) || FAILED=1
  ROWS+=("$tag $row")
  echo "== $tag ($*): max/avg busbw, #wrong: $row" >&2
}

want() { [[ -z $ONLY && $1 != 3x2 && $1 != 2x4 || $ONLY == "$1" ]]; }
if want 2x1; then
  perf 2x1-direct 2 1
  perf 2x1-chain 2 1 DTRAIN_HOST_CHAIN_MIN_NODES=2 DTRAIN_HOST_CHAIN_MIN_BYTES=0
fi
if want 3x1; then
  perf 3x1-direct 3 1 DTRAIN_HOST_CHAIN_MIN_NODES=99
  perf 3x1-chain 3 1 DTRAIN_HOST_CHAIN_MIN_NODES=3 DTRAIN_HOST_CHAIN_MIN_BYTES=0
  perf 3x1-chain-direct-result 3 1 DTRAIN_HOST_CHAIN_MIN_NODES=3 DTRAIN_HOST_CHAIN_MIN_BYTES=0 DTRAIN_HOST_CHAIN_DIRECT=1
fi
if want 4x1; then
  perf 4x1-direct 4 1 DTRAIN_HOST_CHAIN_MIN_NODES=99
  perf 4x1-chain 4 1 DTRAIN_HOST_CHAIN_MIN_NODES=4 DTRAIN_HOST_CHAIN_MIN_BYTES=0
fi
if want 3x2; then
  perf 3x2-hier 3 2 DTRAIN_HOST_HIER_MIN_BYTES=0 DTRAIN_HOST_HIER_RS_MIN_BYTES=0
  perf 3x2-flat 3 2 DTRAIN_HOST_HIER=0
fi
if want 2x4; then
  perf 2x4-hier 2 4 DTRAIN_HOST_HIER_MIN_BYTES=0 DTRAIN_HOST_HIER_RS_MIN_BYTES=0
  perf 2x4-flat 2 4 DTRAIN_HOST_HIER=0
fi
if want 2x2; then
  perf 2x2-hier 2 2 DTRAIN_HOST_HIER_MIN_BYTES=0 DTRAIN_HOST_HIER_RS_MIN_BYTES=0
  perf 2x2-flat 2 2 DTRAIN_HOST_HIER=0
fi

# iperf3 between the same namespaces, node 1 -> node 0.
ns_spawn 0 iperf3 -s -B "$ADDR0" -p 5299 >"$T/iperf_s.log" 2>&1
sleep 0.5 # (a probe connection would count as iperf3's client)
ns_exec 1 iperf3 -c "$ADDR0" -p 5299 -t 3 -J >"$T/iperf.json"
iperf=$(python3 -c 'import json,sys; print("%.3f" % (json.load(open(sys.argv[1]))["end"]["sum_received"]["bits_per_second"] / 8e9))' "$T/iperf.json")
bidir="?" bidir_sum="?"
if ns_exec 1 iperf3 -c "$ADDR0" -p 5299 -t 3 --bidir -J >"$T/iperf_bidir.json" 2>/dev/null; then
  read -r bidir bidir_sum < <(python3 -c 'import json,sys; e=json.load(open(sys.argv[1]))["end"]; a=e["sum_received"]["bits_per_second"]/8e9; b=e["sum_received_bidir_reverse"]["bits_per_second"]/8e9; print("%.3f %.3f" % (min(a, b), a + b))' "$T/iperf_bidir.json" 2>/dev/null || echo "? ?")
fi

echo
echo "$OP ($SIZE f32 sum, $ITERS iterations), host backend between namespace nodes"
printf '%-26s %10s %10s %7s %9s %11s %9s\n' config max_busbw avg_busbw '#wrong' '% iperf3' 'both_dirs' '% bidir'
pct() { python3 -c "import sys; print('%.0f' % (100 * float(sys.argv[1]) / float(sys.argv[2])))" "$1" "$2" 2>/dev/null || echo "-"; }
for row in "${ROWS[@]}"; do
  read -r tag mx av wr <<<"$row"
  both="-" pb="-"
  shape=${tag%%-*}
  if [[ $shape =~ ^([0-9]+)x1$ && $mx != failed ]]; then # N x 1: N links' payload, both directions
    both=$(python3 -c "import sys; print('%.3f' % (int(sys.argv[1]) * float(sys.argv[2])))" "${BASH_REMATCH[1]}" "$mx")
    pb=$(pct "$both" "$bidir_sum")
  fi
  printf '%-26s %10s %10s %7s %9s %11s %9s\n' "$tag" "$mx" "${av:--}" "${wr:--}" "$(pct "$mx" "$iperf")" "$both" "$pb"
done
echo "iperf3 -t 3 node 1 -> node 0: $iperf GB/s; --bidir: $bidir GB/s the slower direction, $bidir_sum GB/s both together"
exit $FAILED
