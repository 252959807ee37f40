#!/usr/bin/env bash
# preempt_time.sh — how long a preemption takes, dtrain's part (docs/slurm.md, "Figures"). For each recipe,
# on 4 ranks of this machine: `dtrain run` is started, and once it has trained K steps SIGUSR2 goes to its
# agent (what Slurm's --signal=B:USR2 does through srun). Measured, in ms from the signal:
#   saved  rank 0 reports that every rank stopped after the same step and the checkpoint is committed
#          (write_ms: of which the synchronous save itself, as rank 0 timed it; the rest is the step in
#          flight when the request came, and the agreement)
#   gone   the agent has exited, and with it every rank (the job's last process)
# Then the same command is started again (what the requeued job runs) and measured, in ms from its start:
#   first  rank 0 reports its first step after the resume (process start, rendezvous, checkpoint load,
#          one step): dtrain's part of "requeue to first step"; Slurm's own part (the requeued job waits
#          cred_expire, 120 s by default, then for the scheduler) comes on top.
# Each recipe runs --repeats times; the table shows every trial and the median. --threshold MS sets the
# exit status to 1 when a median "gone" is above MS (the issue's target: 5000).
#
#   bench/preempt_time.sh [--build DIR] [--repeats N] [--threshold MS] [RECIPE:K ...]
#
# Default: recipes/gpt-tiny.yaml:200 recipes/gpt-small.yaml:8 (gpt-small steps take ~0.6 s on 2 cores:
# the stop waits for the step in flight, then saves 3.2M parameters and their AdamW moments).
set -euo pipefail
SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${DTRAIN_BUILD:-$SRC/build}
REPEATS=3
THRESHOLD=
RECIPES=()
while (($#)); do
  case $1 in
    --build) BUILD=$2; shift 2 ;;
    --repeats) REPEATS=$2; shift 2 ;;
    --threshold) THRESHOLD=$2; shift 2 ;;
    -h | --help) sed -n '2,20p' "$0"; exit 0 ;;
    -*) echo "preempt_time.sh: unknown argument $1" >&2; exit 2 ;;
    *) RECIPES+=("$1"); shift ;;
  esac
done
((${#RECIPES[@]})) || RECIPES=(recipes/gpt-tiny.yaml:200 recipes/gpt-small.yaml:8)
DTRAIN=$BUILD/bin/dtrain
[[ -x $DTRAIN ]] || { echo "preempt_time.sh: $DTRAIN not built (cmake --build $BUILD)" >&2; exit 2; }
TMP=$(mktemp -d "${TMPDIR:-/tmp}/preempt_time.XXXXXX")
AGENT=""
trap '[[ -n $AGENT ]] && kill -KILL "$AGENT" 2>/dev/null; rm -rf "$TMP"' EXIT
now_ms() { date +%s%3N; }

# wait_line FILE REGEX SECONDS: 0 when FILE gets a matching line in time (polled every 10 ms)
wait_line() {
  local i
  for ((i = 0; i < $3 * 100; i++)); do
    grep -Eq -- "$2" "$1" 2>/dev/null && return 0
    sleep 0.01
  done
  return 1
}

median() { sort -n | awk '{v[NR] = $1} END {print NR ? v[int((NR + 1) / 2)] : "-"}'; }

printf "%-24s %5s %6s %8s %8s %8s %8s\n" recipe trial step write_ms saved_ms gone_ms first_ms
status=0
for spec in "${RECIPES[@]}"; do
  recipe=${spec%:*} k=${spec##*:}
  name=$(basename "$recipe" .yaml)
  : >"$TMP/saved" && : >"$TMP/gone" && : >"$TMP/first"
  for ((t = 1; t <= REPEATS; t++)); do
    run=$TMP/$name-$t
    (cd "$SRC" && exec "$DTRAIN" run "$recipe" job.run_dir="$run" train.log_every=1 train.eval_every=0 \
      launch.nproc_per_node=4) >"$run.out" 2>"$run.err" &
    AGENT=$!
    wait_line "$run.out" "step +$k/" 300 || { echo "$name: no step $k: $(tail -3 "$run.err")" >&2; exit 1; }
    t0=$(now_ms)
    kill -USR2 "$AGENT"
    wait_line "$run.out" "every rank stopped after step" 60 || { echo "$name: no stop" >&2; exit 1; }
    t_saved=$(now_ms)
    rc=0
    wait "$AGENT" || rc=$?
    t_gone=$(now_ms)
    AGENT=""
    [[ $rc == 86 ]] || { echo "$name: exit $rc, want 86: $(tail -3 "$run.err")" >&2; exit 1; }
    step=$(grep -o 'every rank stopped after step [0-9]*' "$run.out" | grep -o '[0-9]*$')
    write=$(sed -n 's/.*checkpoint step [0-9]* saved in \([0-9.]*\) s.*/\1/p' "$run.out" | awk '{printf "%d", $1 * 1000}')
    # the requeued job's command: resume and train one more step
    t1=$(now_ms)
    (cd "$SRC" && exec "$DTRAIN" run "$recipe" job.run_dir="$run" train.log_every=1 train.eval_every=0 \
      launch.nproc_per_node=4) >"$run.2.out" 2>"$run.2.err" &
    AGENT=$!
    wait_line "$run.2.out" "step +$((step + 1))/" 300 || { echo "$name: no resumed step" >&2; exit 1; }
    t_first=$(now_ms)
    kill -KILL "$AGENT" 2>/dev/null
    wait "$AGENT" 2>/dev/null || true
    AGENT=""
    echo $((t_saved - t0)) >>"$TMP/saved"
    echo $((t_gone - t0)) >>"$TMP/gone"
    echo $((t_first - t1)) >>"$TMP/first"
    printf "%-24s %5d %6d %8d %8d %8d %8d\n" "$name" "$t" "$step" "$write" $((t_saved - t0)) $((t_gone - t0)) \
      $((t_first - t1))
  done
  g=$(median <"$TMP/gone")
  printf "%-24s %5s %6s %8s %8s %8s %8s\n" "$name" median "" "" "$(median <"$TMP/saved")" "$g" \
    "$(median <"$TMP/first")"
  [[ -n $THRESHOLD ]] && ((g > THRESHOLD)) && status=1
done
exit $status
