#!/usr/bin/env bash
# Failures: a crash with --max-restarts 1 restarts every worker (restart counters count up, --log-dir
# keeps one file per rank and attempt) and the job succeeds; without restarts dtrain exits with the
# rank's code and the error file names the rank; a rank killed by a signal gives 128+signal. Two
# agents on this machine (--nnodes 2): a crash on node 1 restarts node 0's workers too.
# ctest-labels: launch
# ctest-timeout: 120
source "$(dirname "${BASH_SOURCE[0]}")/launch_lib.sh"

# ---- crash once, restart, succeed
timeout 60 "$DTRAIN" launch --nproc-per-node 3 --max-restarts 1 --rdzv-id rs1 --log-dir "$T/logs" \
  -- "$W" crash-once 1 > "$T/out" 2> "$T/err" || fail "crash+restart should succeed, exit $?: $(cat "$T/err")"
grep -q '^\[0:1\] rank 1 crashing on purpose with code 3$' "$T/out" || fail "no crash line"
for r in 0 1 2; do grep -q "^\[0:$r\] rank $r done (restart 1)$" "$T/out" || fail "rank $r did not finish restart 1"; done
grep -q "restarting every worker (restart 1 of 1)" "$T/err" || fail "no restart message: $(cat "$T/err")"
for a in 0 1; do for r in 0 1 2; do for s in stdout stderr; do
  [ -f "$T/logs/rs1/attempt_$a/rank_$r.$s" ] || fail "missing log file attempt_$a/rank_$r.$s"
done; done; done
grep -qx "rank 1 crashing on purpose with code 3" "$T/logs/rs1/attempt_0/rank_1.stdout" || fail "attempt_0 log"
grep -qx "rank 1 done (restart 1)" "$T/logs/rs1/attempt_1/rank_1.stdout" || fail "attempt_1 log"
[ -e "$T/logs/rs1/error.json" ] && fail "error.json written for a successful job"

# ---- restart counters in the environment
timeout 60 "$DTRAIN" launch --nproc-per-node 2 --max-restarts 2 -- /bin/sh -c \
  'echo "rc=$DTRAIN_RESTART_COUNT/$TORCHELASTIC_RESTART_COUNT"; [ "$DTRAIN_RESTART_COUNT" = 2 ] || [ "$RANK" = 1 ] || exit 5' \
  > "$T/out" 2> "$T/err" || fail "exit $? with two restarts: $(cat "$T/err")"
for c in 0 1 2; do grep -q "^\[0:0\] rc=$c/$c$" "$T/out" || fail "restart count $c missing: $(cat "$T/out")"; done

# ---- crash without restarts: exit code is the rank's, error file names it
timeout 60 "$DTRAIN" launch --nproc-per-node 3 --error-file "$T/e/err.json" -- "$W" crash-once 2 7 \
  > "$T/out" 2> "$T/err"; rc=$?
[ $rc = 7 ] || fail "exit code $rc, want 7 (the rank's code)"
grep -q "first failure: rank 2 (local rank 2 on node 0" "$T/err" || fail "report: $(cat "$T/err")"
grep -q "| rank 2 crashing on purpose with code 7" "$T/err" || fail "report lacks the last lines"
/usr/bin/python3 - "$T/e/err.json" <<'PY' || fail "error file"
import json, sys
d = json.load(open(sys.argv[1]))
assert d["rank"] == 2 and d["exit_code"] == 7 and d["signal"] == 0 and d["node_rank"] == 0, d
assert d["dtrain_exit_code"] == 7 and "rank 2 crashing on purpose with code 7" in d["last_lines"], d
PY
timeout 60 "$DTRAIN" launch --nproc-per-node 2 -- "$W" crash-once 1 > /dev/null 2>&1; rc=$?
[ $rc = 3 ] || fail "crash-once 1 without restarts: exit $rc, want 3"
# default error file under --log-dir
timeout 60 "$DTRAIN" launch --nproc-per-node 1 --rdzv-id ef --log-dir "$T/l2" -- "$W" exit 4 > /dev/null 2>&1
[ $? = 4 ] || fail "exit 4 expected"
grep -q '"exit_code": 4' "$T/l2/ef/error.json" || fail "no error.json under --log-dir"

# ---- killed by a signal: 128+9
timeout 60 "$DTRAIN" launch --nproc-per-node 2 --error-file "$T/k.json" -- /bin/sh -c \
  '[ "$RANK" = 1 ] && kill -9 $$; sleep 20' > "$T/out" 2> "$T/err"; rc=$?
[ $rc = 137 ] || fail "exit code $rc, want 137"
grep -q "was killed by SIGKILL (signal 9)" "$T/err" || fail "report: $(cat "$T/err")"
grep -q '"signal": 9' "$T/k.json" && grep -q '"rank": 1' "$T/k.json" || fail "error file: $(cat "$T/k.json")"

# ---- two agents (nodes) on this machine: node 1's crash restarts everyone
export DTRAIN_JOB_TOKEN=restart-test-$RANDOM
port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
L=("$DTRAIN" launch --nnodes 2 --nproc-per-node 2 --rdzv-endpoint 127.0.0.1:$port --rdzv-id two
   --max-restarts 1 --rdzv-timeout 30 -- "$W" crash-once 3)
timeout 60 "${L[@]}" > "$T/n0" 2> "$T/n0.err" & PIDS+=($!); a0=$!
timeout 60 "${L[@]}" > "$T/n1" 2> "$T/n1.err" & PIDS+=($!); a1=$!
wait $a0; r0=$?; wait $a1; r1=$?
[ $r0 = 0 ] && [ $r1 = 0 ] || fail "two agents: exit $r0/$r1: $(cat "$T/n0.err" "$T/n1.err")"
cat "$T/n0" "$T/n1" > "$T/both"
grep -q "rank 3 crashing on purpose" "$T/both" || fail "no crash on rank 3"
for r in 0 1 2 3; do grep -q "rank $r done (restart 1)" "$T/both" || fail "rank $r not restarted"; done
grep -q '^\[0:[01]\] ' "$T/n0" || grep -q '^\[0:[01]\] ' "$T/n1" || fail "no node-0 prefixes"
grep -q '^\[1:[23]\] ' "$T/both" || fail "no node-1 prefixes"
echo "PASS"
