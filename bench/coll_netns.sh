#!/usr/bin/env bash
# coll_netns.sh — the host backend's TCP transport between two network-namespace nodes, next to what
# the link itself carries: a 64 MiB f32 sum all-reduce (coll_perf --backend host, 2 nodes x 1 rank, each
# agent in its own IPC/UTS namespace so the ranks must use TCP) and iperf3 between the same two
# namespaces (-t 3, one stream). For 2 ranks all-reduce busbw = algbw x 2(n-1)/n = algbw: every rank
# sends and receives the size once, so busbw is directly comparable with iperf3's throughput (the veth
# link is full duplex and iperf3 drives one direction; the all-reduce drives both at once).
#
#   sudo bench/coll_netns.sh [--build DIR] [--iters N] [--size 64M]
#
# Needs root (network namespaces) and iperf3. Only addresses inside the namespaces it creates are used.
# Exit status 0, or 1 when a run failed or reported wrong results.
set -euo pipefail
SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${DTRAIN_BUILD:-$SRC/build}
ITERS=10
SIZE=64M
while (($#)); do
  case $1 in
    --build) BUILD=$2; shift 2 ;;
    --iters) ITERS=$2; shift 2 ;;
    --size) SIZE=$2; shift 2 ;;
    -h | --help) sed -n '2,12p' "$0"; exit 0 ;;
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
ns_setup 2
ns_watchdog 170
ns_tmpdir
T=$NS_TMP
ADDR0=$(ns_addr 0)
export DTRAIN_JOB_TOKEN="coll-netns-$$-$RANDOM"

# all-reduce: one agent per node, coll_perf rank 0's table on node 0.
pids=()
for k in 0 1; do
  ns_spawn "$k" unshare --ipc --uts -- bash -c 'hostname "$0" && exec "$@"' "node$k" "$DTRAIN" launch \
    --nnodes 2 --nproc-per-node 1 --rdzv-endpoint "$ADDR0:29700" --rdzv-timeout 30 --rdzv-id bench -- \
    "$PERF" --op allreduce --backend host --min-bytes "$SIZE" --max-bytes "$SIZE" -n "$ITERS" -w 2 -c \
    --json "$T/perf$k.json" </dev/null >"$T/node$k.log" 2>&1
  pids+=("$NS_LAST_PID")
done
rc=0
for p in "${pids[@]}"; do wait "$p" || rc=$?; done
if ((rc != 0)); then
  echo "coll_netns.sh: coll_perf failed (rc $rc)" >&2
  tail -n 30 "$T"/node*.log >&2
  exit 1
fi
echo "== coll_perf --op allreduce --backend host, 2 nodes x 1 rank (TCP over veth), $SIZE f32 sum"
grep -v '^+' "$T/node0.log" | sed 's/^\[[0-9:]*\] //'
read -r busbw wrong < <(python3 - "$T/perf0.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
print("%.3f" % d["max_busbw"], d["wrong"])
PY
)

# iperf3 between the same namespaces, node 1 -> node 0.
ns_spawn 0 iperf3 -s -B "$ADDR0" -p 5299 >"$T/iperf_s.log" 2>&1
sleep 0.5 # (a probe connection would count as iperf3's client)
ns_exec 1 iperf3 -c "$ADDR0" -p 5299 -t 3 -J >"$T/iperf.json"
iperf=$(python3 -c 'import json,sys; print("%.3f" % (json.load(open(sys.argv[1]))["end"]["sum_received"]["bits_per_second"] / 8e9))' "$T/iperf.json")
echo "== iperf3 -c $ADDR0 -t 3 (node 1 -> node 0): $iperf GB/s"
# Context: the all-reduce moves data both ways at once; iperf3 --bidir shows what the link (and, on a
# small machine, the CPUs running both stacks) carries per direction then.
if ns_exec 1 iperf3 -c "$ADDR0" -p 5299 -t 3 --bidir -J >"$T/iperf_bidir.json" 2>/dev/null; then
  bidir=$(python3 -c 'import json,sys; e=json.load(open(sys.argv[1]))["end"]; print("%.3f" % (min(e["sum_received"]["bits_per_second"], e["sum_received_bidir_reverse"]["bits_per_second"]) / 8e9))' "$T/iperf_bidir.json" 2>/dev/null || echo "?")
  echo "== iperf3 --bidir (both directions at once): $bidir GB/s per direction (the slower one)"
fi
ratio=$(python3 -c "print('%.0f' % (100 * float('$busbw') / float('$iperf')))")
echo "all-reduce busbw $busbw GB/s = ${ratio}% of iperf3 $iperf GB/s (target >= 80%), #wrong $wrong"
[[ $wrong == 0 ]] || exit 1
