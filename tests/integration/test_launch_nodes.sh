#!/usr/bin/env bash
# Several agents on this machine (one per "node", meeting at a local --rdzv-endpoint): explicit
# --node-rank wins; a node whose agent is SIGKILLed stops heartbeating and the others stop with a
# report naming it; the agent hosting the store dying ends the others with "lost the rendezvous
# store"; with --nnodes 1:2 a late node is admitted by restarting the running one.
# ctest-labels: launch
# ctest-timeout: 120
source "$(dirname "${BASH_SOURCE[0]}")/launch_lib.sh"
export DTRAIN_JOB_TOKEN=nodes-test-$RANDOM

# ---- explicit node ranks win over the join order
port=$(free_port)
for nr in 1 0; do
  "$DTRAIN" launch --nnodes 2 --node-rank $nr --nproc-per-node 2 --rdzv-endpoint 127.0.0.1:$port --rdzv-id nr \
    --rdzv-timeout 20 -- "$W" barrier > "$T/nr$nr" 2> "$T/nr$nr.err" & PIDS+=($!)
  eval "pid$nr=\$!"
  sleep 0.2
done
wait_exit $pid1 30 || fail "node-rank 1 agent failed: $(cat "$T/nr1.err")"
wait_exit $pid0 30 || fail "node-rank 0 agent failed: $(cat "$T/nr0.err")"
grep -q "node 1 of 2, ranks 2-3 of 4" "$T/nr1.err" || fail "--node-rank 1 not honoured: $(cat "$T/nr1.err")"
grep -q "node 0 of 2, ranks 0-1 of 4" "$T/nr0.err" || fail "--node-rank 0 not honoured: $(cat "$T/nr0.err")"

# ---- SIGTERM to one agent stops the whole job: every agent exits 128+15, no restart
port=$(free_port)
L=("$DTRAIN" launch --nnodes 2 --nproc-per-node 1 --rdzv-endpoint 127.0.0.1:$port --rdzv-id stop --rdzv-timeout 20
   --max-restarts 3 -- "$W" sleep 30)
"${L[@]}" > "$T/s0" 2> "$T/s0.err" & PIDS+=($!); s0=$!
sleep 0.3
"${L[@]}" > "$T/s1" 2> "$T/s1.err" & PIDS+=($!); s1=$!
wait_grep "$T/s0.err" "attempt 0"
wait_grep "$T/s1.err" "attempt 0"
kill -TERM $s1
wait_exit $s1 20; r1=$?
wait_exit $s0 20; r0=$?
[ $r0 = 143 ] && [ $r1 = 143 ] || fail "stop: agents exit $r0/$r1, want 143/143: $(cat "$T/s0.err" "$T/s1.err")"
grep -q "attempt 1" "$T/s0.err" "$T/s1.err" && fail "a stop must not restart"

# ---- a dead node (its agent SIGKILLed) is noticed through the heartbeats
export DTRAIN_HEARTBEAT_TIMEOUT_MS=1000
port=$(free_port)
L=("$DTRAIN" launch --nnodes 2 --nproc-per-node 1 --rdzv-endpoint 127.0.0.1:$port --rdzv-id hb --rdzv-timeout 20
   --error-file "$T/hb.json" -- "$W" sleep 30)
"${L[@]}" > "$T/h0" 2> "$T/h0.err" & PIDS+=($!); host=$!
sleep 0.3
"${L[@]}" > "$T/h1" 2> "$T/h1.err" & PIDS+=($!); other=$!
wait_grep "$T/h1.err" "attempt 0"
wait_grep "$T/h0.err" "attempt 0"
dead=$(sed -n 's/.*attempt 0: node \([01]\) of 2.*/\1/p' "$T/h1.err")
{ kill -9 $other; wait $other; } 2>/dev/null
t0=$(date +%s%N)
wait_exit $host 20; rc=$?
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
[ $rc = 1 ] || fail "surviving agent exit $rc, want 1: $(cat "$T/h0.err")"
grep -q "first failure: node $dead (host .*) stopped heartbeating" "$T/h0.err" || fail "report: $(cat "$T/h0.err")"
grep -q '"kind": "node"' "$T/hb.json" || fail "error file: $(cat "$T/hb.json")"
[ $ms -lt 8000 ] || fail "dead node noticed after $ms ms (heartbeat timeout 1000 ms)"

# ---- the agent hosting the store dies: the others stop with a clear error
port=$(free_port)
L=("$DTRAIN" launch --nnodes 2 --nproc-per-node 1 --rdzv-endpoint 127.0.0.1:$port --rdzv-id lost --rdzv-timeout 20
   -- "$W" sleep 30)
"${L[@]}" > "$T/l0" 2> "$T/l0.err" & PIDS+=($!); host=$!
sleep 0.3
"${L[@]}" > "$T/l1" 2> "$T/l1.err" & PIDS+=($!); other=$!
wait_grep "$T/l1.err" "attempt 0"
{ kill -9 $host; wait $host; } 2>/dev/null
wait_exit $other 20; rc=$?
[ $rc = 1 ] || fail "agent that lost the store exit $rc, want 1"
grep -q "lost the rendezvous store at 127.0.0.1:$port" "$T/l1.err" || fail "message: $(cat "$T/l1.err")"
unset DTRAIN_HEARTBEAT_TIMEOUT_MS

# ---- elastic: --nnodes 1:2, the second node arrives late and is admitted
port=$(free_port)
L=("$DTRAIN" launch --nnodes 1:2 --nproc-per-node 1 --rdzv-endpoint 127.0.0.1:$port --rdzv-id el --rdzv-timeout 20
   --rdzv-conf last_call_timeout=0.3 -- /bin/sh -c 'echo "ws=$WORLD_SIZE"; sleep 2')
"${L[@]}" > "$T/e0" 2> "$T/e0.err" & PIDS+=($!); first=$!
wait_grep "$T/e0" "ws=1"
"${L[@]}" > "$T/e1" 2> "$T/e1.err" & PIDS+=($!); second=$!
wait_exit $first 30 || fail "first elastic agent failed: $(cat "$T/e0.err")"
wait_exit $second 30 || fail "late elastic agent failed: $(cat "$T/e1.err")"
grep -q "ws=2" "$T/e0" && grep -q "ws=2" "$T/e1" || fail "the late node was not admitted: $(cat "$T/e0" "$T/e1")"
grep -q "restarting the workers to admit it" "$T/e0.err" || fail "no admission notice: $(cat "$T/e0.err")"
echo "PASS"
