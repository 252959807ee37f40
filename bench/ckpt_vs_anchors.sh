#!/usr/bin/env bash
# ckpt_vs_anchors.sh — dtrain's checkpoint codec next to its anchors, in one run on the same bytes:
# ckpt_perf codec (byte planes + zstd, one thread, per tensor kind; libzstd level 1 in-process beside
# it), the zstd CLI (`zstd -1 -T1` on the raw bytes ckpt_perf dumped: ratio and CPU-time GB/s, file
# I/O included) and torch.save of the same state (bench/torch_save.py, Debian's /usr/bin/python3:
# raw bytes, fsynced). Then the checkpointer itself: ckpt_perf save (sync save vs async blocking time,
# one rank) and ckpt_perf reshard (save with 4 ranks under dtrain launch, load into 4 and into 2,
# every element checked).
#
#   bench/ckpt_vs_anchors.sh [--build DIR] [--size 64M] [--threshold]
#
# Speeds are GB/s of raw bytes per second of CPU time (per core); the machine may be shared. Exit
# status: 0, or 1 when a run failed, a round trip was wrong, or (--threshold) a target was missed.
# About a minute on 2 cores at the default size.
set -euo pipefail
SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${DTRAIN_BUILD:-$SRC/build}
SIZE=64M
THRESHOLD=()
PY=/usr/bin/python3
while (($#)); do
  case $1 in
    --build) BUILD=$2; shift 2 ;;
    --size) SIZE=$2; shift 2 ;;
    --threshold) THRESHOLD=(--threshold); shift ;;
    -h | --help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "ckpt_vs_anchors.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
CP=$BUILD/bin/ckpt_perf
[[ -x $CP ]] || { echo "ckpt_vs_anchors.sh: build $BUILD first (ckpt_perf)" >&2; exit 2; }
command -v zstd > /dev/null || { echo "ckpt_vs_anchors.sh: the zstd CLI is missing (apt-get install zstd)" >&2; exit 2; }
[[ -x $PY ]] || { echo "ckpt_vs_anchors.sh: $PY missing (python3-torch)" >&2; exit 2; }
TMP=$(mktemp -d "${TMPDIR:-/tmp}/ckpt_vs_anchors.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
rc=0

echo "# ckpt_vs_anchors: size $SIZE per tensor, $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "## dtrain codec (ckpt_perf codec)"
"$CP" codec --size "$SIZE" --dump "$TMP/t" --json "$TMP/codec.json" "${THRESHOLD[@]}" || rc=1

echo "## side by side (ratio; compress / decompress GB/s per core)"
printf '%18s | %7s %7s %7s | %7s %7s %7s | %7s %7s %7s\n' tensor dtrain comp decomp zstd-1 comp decomp \
  "zstdCLI" comp decomp
# CPU seconds (user + sys) of one command, its output discarded.
cpu_of() { /usr/bin/time -f '%U %S' -o "$TMP/time" "$@" > /dev/null && awk '{print $1 + $2}' "$TMP/time"; }
for f in "$TMP"/t/*.bin; do
  name=$(basename "$f" .bin)
  bytes=$(stat -c %s "$f")
  ccpu=$(cpu_of zstd -1 -T1 -q -f -o "$f.zst" "$f")
  dcpu=$(cpu_of zstd -d -T1 -q -c "$f.zst")
  zbytes=$(stat -c %s "$f.zst")
  "$PY" - "$TMP/codec.json" "$name" "$bytes" "$zbytes" "$ccpu" "$dcpu" << 'EOF' || rc=1
import json, sys
js, name, raw, z, c, d = sys.argv[1], sys.argv[2], *map(float, sys.argv[3:])
row = next(r for r in json.load(open(js))["rows"] if r["tensor"] == name)
gbps = lambda s: raw / max(s, 1e-3) / 1e9
print(f"{name:>18} | {row['ratio']:7.3f} {row['comp_gbps']:7.3f} {row['decomp_gbps']:7.3f} | "
      f"{row['zstd_ratio']:7.3f} {row['zstd_comp_gbps']:7.3f} {row['zstd_decomp_gbps']:7.3f} | "
      f"{raw / z:7.3f} {gbps(c):7.3f} {gbps(d):7.3f}")
EOF
  rm -f "$f.zst"
done

echo "## torch.save of the same state (bench/torch_save.py; stores raw bytes)"
"$PY" "$SRC/bench/torch_save.py" "$TMP/t" --out "$TMP/state.pt" || rc=1

echo "## dtrain checkpointer, one rank (ckpt_perf save)"
"$CP" save --size "$SIZE" --dir "$TMP/ckpt" || rc=1
echo "## resharding (ckpt_perf reshard: 4 ranks save, 4 and 2 ranks load)"
DTRAIN=$BUILD/bin/dtrain
if [[ -x $DTRAIN ]]; then
  for phase in "save 4" "load 4" "load 2"; do
    set -- $phase
    timeout 300 "$DTRAIN" launch --nproc-per-node "$2" -- "$CP" reshard --phase "$1" --dir "$TMP/reshard" \
      --size "$SIZE" 2>&1 | grep -v '^dtrain: run' || rc=1
  done
else
  echo "(skipped: $DTRAIN not built)"
fi
exit $rc
