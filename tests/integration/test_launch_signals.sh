#!/usr/bin/env bash
# Signals: SIGTERM to the agent reaches every worker (which may clean up) and dtrain exits 128+15;
# USR1 is not forwarded but asks for a stop (test_launch_stop.sh has the rest); a worker ignoring SIGTERM is SIGKILLed after --grace-period; and after
# `kill -9` of the agent no process of the job survives, grandchildren included.
# ctest-labels: launch
# ctest-timeout: 90
source "$(dirname "${BASH_SOURCE[0]}")/launch_lib.sh"
cleanup_extra() {
  [ -f "$T/gc" ] && for p in $(cat "$T/gc"); do kill -9 "$p" 2>/dev/null; done
}
wait_lines() { # file count pattern: up to 10 s
  local n
  for _ in $(seq 100); do
    n=$(grep -c "$3" "$1" 2>/dev/null)
    [ "${n:-0}" -ge "$2" ] && return 0
    sleep 0.1
  done
  fail "timed out waiting for $2 lines '$3' in $1: $(cat "$1" 2>/dev/null)"
}

# ---- SIGTERM reaches every worker; exit 128+15
"$DTRAIN" launch --nproc-per-node 3 --grace-period 5 -- "$W" trap-term "$T/term" > "$T/out" 2> "$T/err" &
agent=$!; PIDS+=($agent)
wait_lines "$T/out" 3 ready
t0=$(date +%s%N)
kill -TERM $agent; wait_exit $agent 20; rc=$?
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
[ $rc = 143 ] || fail "exit $rc after SIGTERM, want 143: $(cat "$T/err")"
[ "$(sort "$T/term")" = "$(printf 'term 0\nterm 1\nterm 2')" ] || fail "workers saw: $(cat "$T/term" 2>/dev/null)"
[ $ms -lt 3000 ] || fail "stopping took $ms ms although every worker exits on SIGTERM"

# ---- USR1 is not forwarded (a worker would die of it): it asks for a stop through DTRAIN_STOP_FILE
"$DTRAIN" launch --nproc-per-node 2 -- /bin/sh -c \
  'trap "echo got-usr1; exit 0" USR1; echo ready; i=0; while [ $i -lt 200 ] && [ ! -e "$DTRAIN_STOP_FILE" ]; do sleep 0.05; i=$((i+1)); done; [ -e "$DTRAIN_STOP_FILE" ] && echo saw-stop && exit 86; exit 9' \
  > "$T/u" 2> "$T/u.err" & agent=$!; PIDS+=($agent)
wait_lines "$T/u" 2 ready
kill -USR1 $agent; wait_exit $agent 20; rc=$?
[ $rc = 86 ] || fail "USR1: exit $rc, want 86 (stopped on request): $(cat "$T/u.err")"
[ "$(grep -c saw-stop "$T/u")" = 2 ] || fail "USR1: not every worker saw the stop file: $(cat "$T/u")"
! grep -q got-usr1 "$T/u" || fail "USR1 was forwarded to a worker: $(cat "$T/u")"

# ---- a worker that ignores SIGTERM is SIGKILLed after the grace period
"$DTRAIN" launch --nproc-per-node 2 --grace-period 1 -- /bin/sh -c \
  'trap "" TERM; echo ready; i=0; while [ $i -lt 400 ]; do sleep 0.05; i=$((i+1)); done' > "$T/g" 2> "$T/g.err" &
agent=$!; PIDS+=($agent)
wait_lines "$T/g" 2 ready
t0=$(date +%s%N)
kill -INT $agent; wait_exit $agent 20; rc=$?
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
[ $rc = 130 ] || fail "exit $rc after SIGINT, want 130"
[ $ms -ge 900 ] && [ $ms -lt 4000 ] || fail "grace period 1 s but the agent took $ms ms"
grep -q "sending SIGKILL" "$T/g.err" || fail "no SIGKILL notice: $(cat "$T/g.err")"

# ---- kill -9 of the agent: workers and their children die too
"$DTRAIN" launch --nproc-per-node 2 -- "$W" spawn-grandchild "$T/gc" > "$T/o" 2> "$T/o.err" &
agent=$!; PIDS+=($agent)
wait_lines "$T/gc" 2 .
wait_lines "$T/o" 2 "spawned grandchild"
workers=$(pgrep -P $agent -f launch_worker)
[ -n "$workers" ] || fail "no worker processes found under the agent"
kill -9 $agent; wait $agent 2>/dev/null
for _ in $(seq 40); do
  left=""
  for p in $(cat "$T/gc") $workers; do alive $p && left="$left $p"; done
  [ -z "$left" ] && break
  sleep 0.05
done
[ -z "$left" ] || fail "still alive 2 s after kill -9 of the agent:$left"
echo "PASS"
