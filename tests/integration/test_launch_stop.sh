#!/usr/bin/env bash
# Stop requests (preemption) without Slurm daemons: USR2 to one agent of two reaches every worker of both
# nodes through DTRAIN_STOP_FILE (not as a signal) and every agent exits 86; a worker that ignores the
# file is stopped after --stop-timeout; a worker that exits 86 by itself stops the job without spending a
# restart; workers that finish with 0 make the job done (0). Then the Slurm end of a stop, in a faked
# batch job with a fake scontrol on PATH: requeue of the job (an array task's id), the limit reached (87),
# no scontrol (88, saying what it would have run), SIGTERM after scancel (85, not requeued) and after
# the time limit (requeued). tests/slurm/ does the same against real Slurm daemons.
# ctest-labels: launch
# ctest-timeout: 120
source "$(dirname "${BASH_SOURCE[0]}")/launch_lib.sh"
export DTRAIN_JOB_TOKEN=stop-test-$RANDOM
for v in $(env | grep -o '^SLURM_[A-Z_]*'); do unset "$v"; done
unset ENVIRONMENT

# A worker that polls its stop file: "saw-stop", then exit 86 (saved and stopped), for at most 20 s.
POLL='echo ready; i=0; while [ $i -lt 400 ] && [ ! -e "$DTRAIN_STOP_FILE" ]; do sleep 0.05; i=$((i+1)); done
[ -e "$DTRAIN_STOP_FILE" ] || exit 9; echo "saw-stop $DTRAIN_STOP_FILE"; exit 86'
wait_count() { # file count pattern: up to 10 s
  for _ in $(seq 100); do [ "$(grep -c "$3" "$1" 2>/dev/null)" -ge "$2" ] && return 0; sleep 0.1; done
  fail "timed out waiting for $2 lines '$3' in $1: $(cat "$1" 2>/dev/null)"
}

# ---- two nodes: USR2 to node 1's agent; every worker of both nodes sees its own node's stop file
port=$(free_port)
L=("$DTRAIN" launch --nnodes 2 --nproc-per-node 2 --rdzv-endpoint 127.0.0.1:$port --rdzv-id pre --rdzv-timeout 20
   --max-restarts 2 -- /bin/sh -c "trap 'echo got-usr2; exit 0' USR2; $POLL")
"${L[@]}" > "$T/n0" 2> "$T/n0.err" & PIDS+=($!); n0=$!
sleep 0.3
"${L[@]}" > "$T/n1" 2> "$T/n1.err" & PIDS+=($!); n1=$!
wait_count "$T/n0" 2 ready
wait_count "$T/n1" 2 ready
t0=$(date +%s%N)
kill -USR2 $n1
wait_exit $n1 20; r1=$?
wait_exit $n0 20; r0=$?
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
[ $r0 = 86 ] && [ $r1 = 86 ] || fail "two nodes: agents exit $r0/$r1, want 86/86: $(cat "$T/n0.err" "$T/n1.err")"
[ "$(grep -c saw-stop "$T/n0")" = 2 ] && [ "$(grep -c saw-stop "$T/n1")" = 2 ] \
  || fail "not every worker saw the stop file: $(cat "$T/n0" "$T/n1")"
! grep -q got-usr2 "$T/n0" "$T/n1" || fail "USR2 was forwarded to a worker"
f0=$(grep -o 'saw-stop .*' "$T/n0" | sort -u | wc -l); f1=$(grep -o 'saw-stop .*' "$T/n1" | sort -u)
[ "$f0" = 1 ] || fail "node 0's workers saw different stop files"
[ -e "${f1#saw-stop }" ] && fail "node 1's stop file ${f1#saw-stop } outlived its agent"
grep -q "got SIGUSR2: asking every rank to stop" "$T/n1.err" || fail "no word of the request: $(cat "$T/n1.err")"
grep -q "node 1 asked every rank to stop" "$T/n0.err" || fail "node 0 did not hear of it: $(cat "$T/n0.err")"
grep -q "attempt 1" "$T/n0.err" "$T/n1.err" && fail "a stop request must not restart the job"
[ $ms -lt 5000 ] || fail "stopping two nodes took $ms ms"
echo "ok: USR2 on node 1 stopped both nodes' workers through the stop file in $ms ms"

# ---- a worker that ignores the request is stopped after --stop-timeout
"$DTRAIN" launch --nproc-per-node 1 --stop-timeout 1 --grace-period 1 -- /bin/sh -c \
  'echo ready; i=0; while [ $i -lt 400 ]; do sleep 0.05; i=$((i+1)); done' > "$T/i" 2> "$T/i.err" & PIDS+=($!); a=$!
wait_count "$T/i" 1 ready
t0=$(date +%s%N)
kill -USR1 $a; wait_exit $a 20; rc=$?
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
[ $rc = 86 ] || fail "ignored request: exit $rc, want 86: $(cat "$T/i.err")"
grep -q "still running 1 s after the stop request" "$T/i.err" || fail "no stop-timeout warning: $(cat "$T/i.err")"
[ $ms -ge 900 ] && [ $ms -lt 4000 ] || fail "--stop-timeout 1 but the agent took $ms ms"

# ---- a worker that stops by itself (exit 86: a signal of its own) stops the job; no restart is spent
"$DTRAIN" launch --nproc-per-node 3 --max-restarts 3 -- /bin/sh -c \
  "if [ \"\$LOCAL_RANK\" = 1 ]; then echo ready; sleep 0.3; echo self-stop; exit 86; fi; $POLL" \
  > "$T/w" 2> "$T/w.err" & PIDS+=($!); a=$!
wait_exit $a 20; rc=$?
[ $rc = 86 ] || fail "self-stop: exit $rc, want 86: $(cat "$T/w.err")"
[ "$(grep -c saw-stop "$T/w")" = 2 ] || fail "self-stop: the other workers did not see the stop file: $(cat "$T/w")"
grep -q "rank 1 stopped on request" "$T/w.err" || fail "self-stop: $(cat "$T/w.err")"
grep -q "restart" "$T/w.err" && fail "self-stop spent a restart: $(cat "$T/w.err")"

# ---- workers that had finished (exit 0) when the request came: the job is done
"$DTRAIN" launch --nproc-per-node 2 -- /bin/sh -c \
  'echo ready; i=0; while [ $i -lt 400 ] && [ ! -e "$DTRAIN_STOP_FILE" ]; do sleep 0.05; i=$((i+1)); done; exit 0' \
  > "$T/d" 2> "$T/d.err" & PIDS+=($!); a=$!
wait_count "$T/d" 2 ready
kill -USR2 $a; wait_exit $a 20; rc=$?
[ $rc = 0 ] || fail "finished workers: exit $rc, want 0: $(cat "$T/d.err")"

# ---- the Slurm end of a stop, in a faked batch job: a fake scontrol records what it is asked
mkdir -p "$T/bin"
cat > "$T/bin/scontrol" <<'SH'
#!/bin/sh
echo "$*" >> "$FAKE_SCONTROL_LOG"
case "$1" in
  show) echo "JobId=$4 JobName=x JobState=COMPLETING Reason=$FAKE_REASON Dependency=(null) Restarts=0" ;;
  requeue) [ -n "$FAKE_REFUSE" ] && { echo "Requested operation is presently disabled for job $2"; exit 1; } ;;
esac
exit 0
SH
chmod +x "$T/bin/scontrol"
export FAKE_SCONTROL_LOG=$T/scontrol.log
# slurm_job NAME RESTARTS [VAR=VALUE...] -- SIGNAL: a one-node batch job's `dtrain launch` (the batch
# script's own, SLURM_PROCID 0), stopped with SIGNAL once its worker runs; its exit code in RC
slurm_job() {
  local name=$1 restarts=$2 sig
  shift 2
  local extra=()
  while [ "$1" != -- ]; do extra+=("$1"); shift; done
  sig=$2
  : > "$FAKE_SCONTROL_LOG"
  env SLURM_JOB_ID=4242 SLURM_JOB_NAME=train.sbatch ENVIRONMENT=BATCH SLURM_PROCID=0 SLURM_JOB_NODELIST=localhost \
    SLURM_JOB_NUM_NODES=1 SLURM_RESTART_COUNT=$restarts PATH="$T/bin:$PATH" "${extra[@]}" \
    "$DTRAIN" launch --nproc-per-node 1 --max-requeues 3 -- /bin/sh -c "$POLL" > "$T/$name" 2> "$T/$name.err" &
  PIDS+=($!); local a=$!
  wait_count "$T/$name" 1 ready
  kill -"$sig" $a; wait_exit $a 20; RC=$?
}
slurm_job rq 1 SLURM_ARRAY_JOB_ID=4200 SLURM_ARRAY_TASK_ID=7 -- USR2
[ $RC = 86 ] || fail "requeue: exit $RC, want 86: $(cat "$T/rq.err")"
[ "$(cat "$FAKE_SCONTROL_LOG")" = "requeue 4200_7" ] || fail "requeue: scontrol got '$(cat "$FAKE_SCONTROL_LOG")'"
grep -q "requeueing job 4200_7 (requeue 2 of 3)" "$T/rq.err" || fail "requeue: $(cat "$T/rq.err")"

slurm_job lim 3 -- USR2
[ $RC = 87 ] || fail "limit: exit $RC, want 87: $(cat "$T/lim.err")"
[ -s "$FAKE_SCONTROL_LOG" ] && fail "limit: scontrol was called: $(cat "$FAKE_SCONTROL_LOG")"
grep -q "requeued 3 times already (SLURM_RESTART_COUNT=3; the limit is 3" "$T/lim.err" || fail "limit: $(cat "$T/lim.err")"

mkdir -p "$T/empty" && ln -s "$(command -v sleep)" "$T/empty/sleep" # no scontrol here
slurm_job nosc 0 PATH="$T/empty" -- USR2
[ $RC = 88 ] || fail "no scontrol: exit $RC, want 88: $(cat "$T/nosc.err")"
grep -q "scontrol is not on PATH.*would have run: scontrol requeue 4242" "$T/nosc.err" || fail "no scontrol: $(cat "$T/nosc.err")"

slurm_job refused 0 FAKE_REFUSE=1 -- USR2
[ $RC = 88 ] || fail "refused: exit $RC, want 88: $(cat "$T/refused.err")"
grep -q "presently disabled" "$T/refused.err" || fail "refused: scontrol's answer not shown: $(cat "$T/refused.err")"

slurm_job cancel 0 FAKE_REASON=None -- TERM
[ $RC = 85 ] || fail "scancel: exit $RC, want 85: $(cat "$T/cancel.err")"
[ "$(grep -c saw-stop "$T/cancel")" = 1 ] || fail "scancel: the worker did not stop through its file: $(cat "$T/cancel")"
grep -q "^requeue" "$FAKE_SCONTROL_LOG" && fail "scancel: the job was requeued"
grep -q "Slurm is ending job 4242 (None): not requeued" "$T/cancel.err" || fail "scancel: $(cat "$T/cancel.err")"

slurm_job tl 0 FAKE_REASON=TimeLimit -- TERM
[ $RC = 86 ] || fail "time limit: exit $RC, want 86: $(cat "$T/tl.err")"
[ "$(tail -1 "$FAKE_SCONTROL_LOG")" = "requeue 4242" ] || fail "time limit: scontrol got '$(cat "$FAKE_SCONTROL_LOG")'"
grep -q "stopped by the time limit: requeueing job 4242" "$T/tl.err" || fail "time limit: $(cat "$T/tl.err")"
echo "PASS"
