#!/usr/bin/env bash
# The pipeline bubble as executed, beside its formula: pp_bubble (the real executor, uniform sleeping
# stages, real activation transfers) on 4 ranks for 1f1b and interleaved (v=2) at m = 4, 8, 16, and
# gpipe at m = 8; then the time line of gpipe, 1f1b and interleaved at m = 8 as pictures.
#   bench/pp_bubble.sh [--build DIR] [--fwd-ms F] [--bwd-ms B] [--threshold R]
# --threshold R: exit 1 when a measured idle fraction exceeds R x its formula (the issue's target: 1.2).
set -euo pipefail
build=build; fwd=20; bwd=40; threshold=""
while [ $# -gt 0 ]; do
  case $1 in
    --build) build=$2; shift 2 ;;
    --fwd-ms) fwd=$2; shift 2 ;;
    --bwd-ms) bwd=$2; shift 2 ;;
    --threshold) threshold=$2; shift 2 ;;
    *) echo "pp_bubble.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
D=$build/bin/dtrain; B=$build/bin/pp_bubble
[ -x "$D" ] && [ -x "$B" ] || { echo "pp_bubble.sh: build $build first" >&2; exit 2; }
echo "pp_bubble: 4 stages, forward $fwd ms and backward $bwd ms of compute per stage and micro-batch ($(date -u +%F))"
run() { "$D" launch --nproc-per-node 4 --max-restarts 0 -- "$B" --fwd-ms "$fwd" --bwd-ms "$bwd" --steps 2 "$@" 2>/dev/null \
          | sed -n 's/^\[0:0\] //p'; }
worst=0
for cfg in "1f1b 4 1" "1f1b 8 1" "1f1b 16 1" "interleaved 4 2" "interleaved 8 2" "interleaved 16 2" "gpipe 8 1"; do
  set -- $cfg
  line=$(run --schedule "$1" --micro "$2" --chunks "$3")
  echo "$line"
  r=$(sed -n 's/.*ratio \([0-9.]*\).*/\1/p' <<< "$line")
  worst=$(awk -v a="$worst" -v b="$r" 'BEGIN { print (b > a ? b : a) }')
done
echo "largest ratio of measured to formula: $worst"
for cfg in "gpipe 8 1" "1f1b 8 1" "interleaved 8 2"; do
  set -- $cfg
  echo; run --schedule "$1" --micro "$2" --chunks "$3" --picture
done
if [ -n "$threshold" ] && awk -v a="$worst" -v t="$threshold" 'BEGIN { exit !(a > t) }'; then
  echo "pp_bubble.sh: ratio $worst above the threshold $threshold"; exit 1
fi
