#!/usr/bin/env bash
# launch_vs_anchors.sh — dtrain launch next to torchrun and mpirun, in one table: start-to-finish of a
# 4-rank barrier job and restart latency after one crashed rank (crash stamp -> every restarted rank
# past its barrier). dtrain and mpirun figures come from launch_perf; torchrun runs bench/torch_barrier.py
# under /usr/bin/torchrun (Debian python3-torch), 3 start runs and 2 restart runs by default, medians.
#
#   bench/launch_vs_anchors.sh [--build DIR] [--torch-repeats N] [--torch-restart-repeats N]
#                              [-- launch_perf options...]
#
# Exit status: launch_perf's (so `-- --threshold` makes this script fail when dtrain is over budget),
# or 1 when an anchor could not be measured at all (a failed torchrun run is reported and left out of its
# median). Takes about 1.5-3 minutes on a 2-core machine, nearly all of it torch imports.
set -euo pipefail
SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${DTRAIN_BUILD:-$SRC/build}
TORCH_REPEATS=3
TORCH_RESTART_REPEATS=2
TORCH_TIMEOUT=60
NPROC=4
PY=/usr/bin/python3
TORCHRUN=/usr/bin/torchrun
LP_ARGS=()
while (($#)); do
  case $1 in
    --build) BUILD=$2; shift 2 ;;
    --torch-repeats) TORCH_REPEATS=$2; shift 2 ;;
    --torch-restart-repeats) TORCH_RESTART_REPEATS=$2; shift 2 ;;
    --) shift; LP_ARGS=("$@"); break ;;
    -h | --help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "launch_vs_anchors.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
LP=$BUILD/bin/launch_perf
[[ -x $LP ]] || { echo "launch_vs_anchors.sh: $LP not built (cmake --build $BUILD --target launch_perf)" >&2; exit 2; }
[[ -x $TORCHRUN ]] || { echo "launch_vs_anchors.sh: $TORCHRUN missing (apt-get install python3-torch)" >&2; exit 2; }
TMP=$(mktemp -d "${TMPDIR:-/tmp}/launch_vs_anchors.XXXXXX")
trap 'rm -rf "$TMP"' EXIT

now_ns() { date +%s%N; }
median() { sort -g | awk '{v[NR] = $1} END {if (NR == 0) print "nan"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }

# Debian's torch 1.13 under Python 3.11 cannot parse the default "-r 0 -t 0" (Std.from_str returns None
# for 0), so torchrun crashes unless the redirects are given: send stdout to its per-rank log files.
TR=("$TORCHRUN" --standalone --nproc_per_node "$NPROC" -r 1 -t 1 --log_dir "$TMP/torchrun-logs")

# ---- dtrain and mpirun
echo "# launch_perf ${LP_ARGS[*]}"
lp_rc=0
"$LP" --nproc "$NPROC" --json "$TMP/lp.json" "${LP_ARGS[@]}" || lp_rc=$?
[[ -s $TMP/lp.json ]] || { echo "launch_vs_anchors.sh: launch_perf wrote no results" >&2; exit 1; }
read -r d_start m_start d_restart < <("$PY" -c '
import json, sys
r = json.load(open(sys.argv[1]))["results"]
g = lambda k: r[k].get("median_ms", "nan")
print(g("dtrain_start"), g("mpirun_start"), g("dtrain_restart"))' "$TMP/lp.json")

# ---- torchrun start-to-finish
anchor_rc=0
: >"$TMP/t_start"
for ((i = 0; i < TORCH_REPEATS; i++)); do
  t0=$(now_ns)
  if timeout -k 5 "$TORCH_TIMEOUT" "${TR[@]}" "$SRC/bench/torch_barrier.py" >"$TMP/tr.log" 2>&1; then
    echo $((($(now_ns) - t0) / 1000)) | awk '{print $1 / 1000}' >>"$TMP/t_start"
  else
    echo "launch_vs_anchors.sh: torchrun start run $i failed:" >&2
    tail -n 5 "$TMP/tr.log" >&2
  fi
done
t_start=$(median <"$TMP/t_start")
[[ -s $TMP/t_start ]] || anchor_rc=1

# ---- torchrun restart latency (same stamps as launch_perf's restart worker)
: >"$TMP/t_restart"
for ((i = 0; i < TORCH_RESTART_REPEATS; i++)); do
  rm -f "$TMP/stamps"
  if timeout -k 5 "$TORCH_TIMEOUT" "${TR[@]}" --max_restarts 1 --monitor_interval 1 "$SRC/bench/torch_barrier.py" \
    --stamps "$TMP/stamps" --crash-rank $((NPROC - 1)) >"$TMP/tr.log" 2>&1 &&
    lat=$(awk -v n="$NPROC" '$2 == 0 && $4 == "crash" {c = $3} $2 == 1 && $4 == "passed" {p++; if ($3 > l) l = $3}
          END {if (c == "" || p != n) exit 1; printf "%.1f\n", (l - c) / 1e6}' "$TMP/stamps"); then
    echo "$lat" >>"$TMP/t_restart"
  else
    echo "launch_vs_anchors.sh: torchrun restart run $i failed or left incomplete stamps" >&2
    tail -n 5 "$TMP/tr.log" >&2
  fi
done
t_restart=$(median <"$TMP/t_restart")
[[ -s $TMP/t_restart ]] || anchor_rc=1

# ---- one table
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (a + 0 > 0 && b + 0 > 0) printf "%.1fx", a / b; else print "n/a"}'; }
fmt() { awk -v a="$1" 'BEGIN {if (a + 0 > 0) printf "%.1f", a; else print "n/a"}'; }
echo
echo "# dtrain launch vs anchors, $NPROC local ranks, medians in ms" \
  "(dtrain, mpirun: see launch_perf above; torchrun: $(wc -l <"$TMP/t_start") of $TORCH_REPEATS start runs," \
  "$(wc -l <"$TMP/t_restart") of $TORCH_RESTART_REPEATS restart runs succeeded)"
printf "#  %-18s %10s %10s %10s %16s %14s\n" measurement dtrain torchrun mpirun torchrun/dtrain mpirun/dtrain
printf "   %-18s %10s %10s %10s %16s %14s\n" start-to-finish "$(fmt "$d_start")" "$(fmt "$t_start")" \
  "$(fmt "$m_start")" "$(ratio "$t_start" "$d_start")" "$(ratio "$m_start" "$d_start")"
printf "   %-18s %10s %10s %10s %16s %14s\n" restart-latency "$(fmt "$d_restart")" "$(fmt "$t_restart")" \
  n/a "$(ratio "$t_restart" "$d_restart")" n/a
((lp_rc != 0)) && exit "$lp_rc"
exit "$anchor_rc"
