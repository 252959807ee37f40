#!/usr/bin/env bash
# An unmodified PyTorch gloo program (init_process_group(init_method="env://"), all_reduce, all_gather)
# across two namespace nodes under `dtrain launch`: 2 nodes x 1 rank, then 2 nodes x 2 ranks. The sum
# must be exact on every rank and the all_gather must show both nodes' group ranks.
# Uses Debian's python3-torch through /usr/bin/python3 (a python3 earlier on PATH may lack torch).
# ctest-labels: torch
# ctest-timeout: 240
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/cluster_lib.sh"
PY=/usr/bin/python3
SCRIPT=$CLUSTER_HERE/torch_allreduce_mn.py
"$PY" -c 'import torch.distributed as d; assert d.is_available() and d.is_gloo_available()' ||
  { echo "FAIL: $PY cannot import torch.distributed with gloo (install python3-torch)" >&2; exit 1; }
cluster_start 2 230

ADDR0=$(ns_addr 0)
# Gloo picks its address from the hostname unless told which interface to use; in a namespace node the
# hostname resolves to the host's loopback, so point it at the node's veth.
export GLOO_SOCKET_IFNAME=$NS_IFNAME

# run_torch TAG NPROC PORT: the job on both nodes; both agents exit 0; every rank prints a correct line.
run_torch() {
  local tag=$1 nproc=$2 port=$3 world=$(($2 * 2)) k rc r line want_sum expect_pairs=""
  for k in 1 0; do
    agent_start $k "$tag-node$k" --nnodes 2 --nproc-per-node "$nproc" --rdzv-endpoint "$ADDR0:$port" \
      --rdzv-id "$tag" --rdzv-timeout 60 -- "$PY" "$SCRIPT"
  done
  for k in 0 1; do
    agent_wait "$tag-node$k" 150; rc=$AGENT_RC
    [[ $rc == 0 ]] || fail "$tag: node $k's agent exited $rc"
  done
  # sum over ranks r of (i + 1000 r), i < 1000: world * 499500 + 1000 * 1000 * world (world-1) / 2
  want_sum=$(awk -v w=$world 'BEGIN {printf "%.1f", w * 499500 + 1000 * 1000 * w * (w - 1) / 2}')
  for ((r = 0; r < world; r++)); do expect_pairs+="${expect_pairs:+,}$r/$((r / nproc))"; done
  for ((r = 0; r < world; r++)); do
    k=$((r / nproc))
    line=$(grep -h "TORCH_ALLREDUCE rank=$r " "$TMP/$tag-node$k.log" || true)
    [[ -n $line ]] || fail "$tag: rank $r printed no result on node $k"
    [[ $(grep -c "TORCH_ALLREDUCE rank=$r " "$TMP/$tag-node0.log" "$TMP/$tag-node1.log" |
      awk -F: '{s += $2} END {print s}') == 1 ]] || fail "$tag: rank $r reported more than once"
    [[ $line == *" world=$world "* ]] || fail "$tag: rank $r: $line (world should be $world)"
    [[ $line == *" group_rank=$k "* ]] || fail "$tag: rank $r: $line (group rank should be $k)"
    [[ $line == *" wrong=0 "* ]] || fail "$tag: rank $r: all_reduce result wrong: $line"
    [[ $line == *" sum=$want_sum "* ]] || fail "$tag: rank $r: $line (sum should be $want_sum)"
    [[ $line == *" gathered=$expect_pairs "* ]] || fail "$tag: rank $r: $line (gathered should be $expect_pairs)"
    [[ $line == *" ok=1" ]] || fail "$tag: rank $r: $line"
  done
  echo "$tag: $world ranks agree, sum $want_sum"
}

run_torch torch1x2 1 29400
ok "gloo all_reduce, 2 nodes x 1 rank"
run_torch torch2x2 2 29401
ok "gloo all_reduce, 2 nodes x 2 ranks"
no_workers_left || fail "processes still running in the nodes: $(ns_all_pids | xargs)"
echo PASS
