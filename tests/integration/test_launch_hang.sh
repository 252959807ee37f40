#!/usr/bin/env bash
# Hung ranks and failure classes on one machine (issue 19):
#  1. a rank that stops reporting progress (launch_worker progress: rank 1 stalls at step 10) is named
#     within --worker-timeout + 1 s with its pid, phase and step, killed, and the job restarts and
#     finishes; without restarts the agent exits 1 and the error file says "hung";
#  2. a program that never reports (sleep) is never judged, however long it is quiet;
#  3. a Python program that writes the page itself (the documented format, mmap + struct) is watched;
#  4. a rank that exits 80 stops the job at once (exit 80, its reason in the report, no restart spent);
#  5. the same failure at the same step twice stops the job with 81 instead of spending the restarts;
#  6. the built-in trainer SIGSTOPped mid-run: named as stopped within the timeout + 1 s, its threads'
#     stacks dumped into the log directory, the job restarts and ends with the uninterrupted run's weights.
# ctest-labels: launch faults
# ctest-timeout: 240
source "$(dirname "${BASH_SOURCE[0]}")/launch_lib.sh"

# json_get FILE KEY: one value of the error file
json_get() { /usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"; }

# ---- 1. a stalled rank is named, killed, the job restarts
timeout 60 "$DTRAIN" launch --nproc-per-node 2 --worker-timeout 1 --max-restarts 1 -- "$W" progress 40 50 1 10 \
  > "$T/out" 2> "$T/err" || fail "a stalled rank with a restart left: exit $?: $(cat "$T/err")"
grep -q "rank 1 (local rank 1 on node 0, host .*, pid [0-9]*) made no progress for 1\.[0-9] s (limit 1 s) in phase 'stuck here' at step 10" "$T/err" ||
  fail "the stalled rank is not named with its pid, phase and step: $(cat "$T/err")"
grep -q "last line of rank 1: rank 1: stuck at step 10 on purpose" "$T/err" || fail "no last line: $(cat "$T/err")"
grep -q "restarting every worker (restart 1 of 1)" "$T/err" || fail "no restart: $(cat "$T/err")"
for r in 0 1; do grep -q "^\[0:$r\] rank $r: 40 steps done (restart 1)" "$T/out" || fail "rank $r did not finish"; done
echo "ok: a rank that stopped reporting was named (pid, phase, step), killed, and the job restarted and finished"

timeout 60 "$DTRAIN" launch --nproc-per-node 2 --worker-timeout 1 --error-file "$T/hung.json" -- \
  "$W" progress 40 50 0 5 > "$T/out" 2> "$T/err"
rc=$?
[ $rc = 1 ] || fail "a stalled rank without restarts: exit $rc, want 1: $(cat "$T/err")"
[ "$(json_get "$T/hung.json" kind)" = hung ] || fail "error file kind: $(cat "$T/hung.json")"
[ "$(json_get "$T/hung.json" rank)" = 0 ] && [ "$(json_get "$T/hung.json" step)" = 5 ] ||
  fail "error file rank/step: $(cat "$T/hung.json")"
idle=$(json_get "$T/hung.json" idle_s)
/usr/bin/python3 -c "import sys; sys.exit(not (1.0 <= $idle <= 2.0))" ||
  fail "detected after $idle s of silence, want within the 1 s timeout + 1 s"
grep -q "no thread dump of rank 0 (the program does not offer one)" "$T/err" || fail "dump line: $(cat "$T/err")"
echo "ok: without restarts: exit 1, error file kind hung, rank 0 at step 5, detected after ${idle} s (timeout 1 s)"

# ---- 2. a program that never reports is never judged
timeout 30 "$DTRAIN" launch --nproc-per-node 2 --worker-timeout 0.5 --worker-start-timeout 0.5 -- "$W" sleep 2 \
  > "$T/out" 2> "$T/err" || fail "a quiet program that never reports was stopped: exit $?: $(cat "$T/err")"
grep -q "made no progress" "$T/err" && fail "a program without progress reports was judged: $(cat "$T/err")"
echo "ok: a program that never reports progress ran 2 s past a 0.5 s timeout untouched"

# ---- 3. the page written by hand from Python (docs/environment.md, "Progress page")
cat > "$T/page.py" <<'PY'
import mmap, os, struct, sys, time
f = open(os.environ["DTRAIN_PROGRESS_FILE"], "r+b")
m = mmap.mmap(f.fileno(), 4096)
assert m[0:4] == b"DTPG" and struct.unpack_from("<II", m, 4) == (1, 4096), "not a version 1 page"
struct.pack_into("<I", m, 32, os.getpid())
def report(step, phase):
    m[64:128] = phase.encode()[:63].ljust(64, b"\0")
    struct.pack_into("<q", m, 24, step)
    struct.pack_into("<I", m, 12, struct.unpack_from("<I", m, 12)[0] | 1 | 4)  # ATTACHED | STEPPED
    struct.pack_into("<Q", m, 16, struct.unpack_from("<Q", m, 16)[0] + 1)    # the counter, last
for step in range(1, 6):
    report(step, "python step")
    time.sleep(0.05)
print("python rank %s: stalling at step 5" % os.environ["RANK"], flush=True)
time.sleep(20)
PY
timeout 60 "$DTRAIN" launch --nproc-per-node 1 --worker-timeout 1 -- python3 "$T/page.py" > "$T/out" 2> "$T/err"
rc=$?
[ $rc = 1 ] || fail "python: exit $rc, want 1: $(cat "$T/err")"
grep -q "rank 0 .* made no progress for 1\.[0-9] s (limit 1 s) in phase 'python step' at step 5" "$T/err" ||
  fail "python: not named: $(cat "$T/err")"
echo "ok: a Python program writing the page by hand was watched and named"

# ---- 4. exit 80: permanent, no restart
timeout 60 "$DTRAIN" launch --nproc-per-node 2 --max-restarts 3 --error-file "$T/perm.json" -- /bin/sh -c \
  '[ "$RANK" = 1 ] && exec "$0" fail-at 3 80 "the data file is gone"; exec "$0" sleep 20' "$W" \
  > "$T/out" 2> "$T/err"
rc=$?
[ $rc = 80 ] || fail "exit 80 from a rank: the agent exited $rc, want 80: $(cat "$T/err")"
grep -q "restarting every worker" "$T/err" && fail "a restart was spent on a permanent failure: $(cat "$T/err")"
grep -q "rank 1 .* exited with code 80 (a permanent failure: no restart) at step 3: the data file is gone" "$T/err" ||
  fail "the report lacks the reason: $(cat "$T/err")"
[ "$(json_get "$T/perm.json" reason)" = "the data file is gone" ] || fail "error file reason: $(cat "$T/perm.json")"
echo "ok: a rank's exit 80 stopped the job at once (exit 80, the reason reported, none of 3 restarts spent)"

# ---- 5. the same failure at the same step, twice: 81
timeout 60 "$DTRAIN" launch --nproc-per-node 2 --max-restarts 5 -- "$W" fail-at 4 3 > "$T/out" 2> "$T/err"
rc=$?
[ $rc = 81 ] || fail "a failure repeating at the same step: exit $rc, want 81: $(cat "$T/err")"
n=$(grep -c "restarting every worker" "$T/err")
[ "$n" = 1 ] || fail "$n restarts spent, want 1 (stop at the second identical failure): $(cat "$T/err")"
grep -q "the same failure as before the last restart: stopping instead of spending the 4 restarts left" "$T/err" ||
  fail "the 81 is not explained: $(cat "$T/err")"
echo "ok: the same failure at step 4 twice stopped the job with 81 after one restart (4 of 5 kept)"

# ---- 6. the built-in trainer SIGSTOPped: dump, restart, same weights as an uninterrupted run
cat > "$T/r.yaml" <<'YAML'
job: {name: hang}
launch: {nproc_per_node: 2, max_restarts: 2}
model: {block_size: 11, n_layer: 1, n_head: 2, n_embd: 32}
data: {kind: addition, digits: 3}
train: {steps: 3000, global_batch: 16, micro_batch: 4, warmup_steps: 2, log_every: 500, threads: 1}
checkpoint: {every: 500}
YAML
timeout 120 "$DTRAIN" run "$T/r.yaml" job.run_dir="$T/ref" > "$T/ref.out" 2>&1 || fail "reference run: $(tail "$T/ref.out")"
ref=$(grep -o 'weights_xxh64=.*' "$T/ref/summary.txt")
"$DTRAIN" run "$T/r.yaml" job.run_dir="$T/stop" launch.worker_timeout=2 --log-dir "$T/logs" --rdzv-id stop \
  > "$T/stop.out" 2>&1 &
PIDS+=($!)
victim=""
for _ in $(seq 1800); do # 90 s: an ASan build trains slowly
  grep -q "checkpoint step 500 committed" "$T/stop.out" 2>/dev/null &&
    victim=$(pgrep -f "dtrain train $T/r.yaml" | tail -1) && [ -n "$victim" ] && break
  sleep 0.05
done
[ -n "$victim" ] || fail "the trainer never got past step 500: $(tail "$T/stop.out")"
kill -STOP "$victim"
t0=$(date +%s%N)
wait_grep "$T/stop.out" "made no progress"
dt=$((($(date +%s%N) - t0) / 1000000))
wait_exit "${PIDS[-1]}" 120 || fail "the run after the SIGSTOP failed: $(tail -20 "$T/stop.out")"
grep -q "made no progress for 2\.[0-9] s (limit 2 s) at step [0-9]*" "$T/stop.out" ||
  fail "the stopped rank is not named: $(grep dtrain "$T/stop.out" | head)"
grep -q "pid $victim) was stopped (SIGSTOP or a debugger)" "$T/stop.out" || fail "not called stopped: $(grep dtrain "$T/stop.out")"
dump=$(ls "$T"/logs/stop/attempt_0/rank_*.threads.txt 2>/dev/null | head -1)
[ -n "$dump" ] && grep -q "^--- thread" "$dump" && grep -q "end of thread dump" "$dump" ||
  fail "no thread dump in the log directory: $(ls "$T/logs/stop/attempt_0")"
grep -q "restarting every worker (restart 1 of 2)" "$T/stop.out" || fail "no restart"
[ "$(grep -o 'weights_xxh64=.*' "$T/stop/summary.txt")" = "$ref" ] ||
  fail "final weights differ from the uninterrupted run: $(cat "$T/stop/summary.txt") vs $ref"
[ $dt -le 3500 ] || fail "the stop was reported ${dt} ms after SIGSTOP, want within the 2 s timeout + 1.5 s"
echo "ok: a SIGSTOPped trainer rank was named within ${dt} ms (timeout 2 s), its $(grep -c '^--- thread' "$dump") threads dumped to $dump, and the restarted job ended with the uninterrupted run's weights"
echo PASS
