# Sourced by the single-machine `dtrain launch` tests: paths from ctest's environment, a scratch
# directory, cleanup of every background agent (PIDS) and of what a test adds to cleanup_extra, and
# the small waiting helpers they share. Every wait here is bounded in time.
set -u
DTRAIN=${DTRAIN:?set by ctest}; BUILD=${DTRAIN_BUILD:?set by ctest}; SRC=${DTRAIN_SRC:?set by ctest}
W=$BUILD/bin/launch_worker
T=$(mktemp -d); PIDS=()
cleanup_extra() { :; }
cleanup() {
  for p in "${PIDS[@]}"; do { kill -9 "$p"; wait "$p"; } 2>/dev/null; done
  cleanup_extra
  rm -rf "$T"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; exit 1; }
free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# alive PID: exists and is not a zombie (reparented zombies wait for init to reap them)
alive() { local s; s=$(ps -o stat= -p "$1" 2>/dev/null) && [ -n "$s" ] && [[ $s != Z* ]]; }
# wait_exit PID SECONDS: the agent's exit code, or fail after SECONDS (agents run without `timeout`
# so that signals reach them directly)
wait_exit() {
  for _ in $(seq $(( $2 * 20 ))); do kill -0 "$1" 2>/dev/null || break; sleep 0.05; done
  kill -0 "$1" 2>/dev/null && { kill -9 "$1"; fail "agent $1 still running after $2 s"; }
  wait "$1"
}
# run_coll_fault NAME NPROC MAX_SECONDS -- coll_fault args: $CF on NPROC ranks of one launch (no
# restarts), output in $T/NAME.out and $T/NAME.err; fails when the launch exits non-zero (every rank
# exits with its verdict) or any rank printed FAILED.
run_coll_fault() {
  local name=$1 n=$2 max=$3 t0=$SECONDS rc=0
  shift 4
  timeout -k 5 "$max" "$DTRAIN" launch --nproc-per-node "$n" --max-restarts 0 -- "$CF" "$@" \
    > "$T/$name.out" 2> "$T/$name.err" || rc=$?
  if [ $rc != 0 ]; then
    echo "---- stdout"; cat "$T/$name.out"; echo "---- stderr"; tail -n 40 "$T/$name.err"
    fail "$name: launch exited $rc after $((SECONDS - t0)) s (repro: ${DTRAIN_COMM_DEBUG:+DTRAIN_COMM_DEBUG=1 }$DTRAIN launch --nproc-per-node $n -- $CF $*)"
  fi
  if grep -q "FAILED" "$T/$name.out"; then fail "$name: $(grep FAILED "$T/$name.out")"; fi
}
# expect_verdicts NAME PATTERN RANK...: each RANK printed "coll_fault rank R: PATTERN" (an extended
# regular expression) in run_coll_fault NAME's output; otherwise fail, showing that output.
expect_verdicts() {
  local name=$1 pat=$2 r
  shift 2
  for r in "$@"; do
    grep -Eq "^\[0:$r\] coll_fault rank $r: $pat" "$T/$name.out" \
      || fail "$name: rank $r gave no verdict matching '$pat': $(cat "$T/$name.out")"
  done
}
# wait_grep FILE PATTERN: up to 10 s
wait_grep() {
  for _ in $(seq 100); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
  fail "timed out waiting for '$2' in $1: $(cat "$1" 2>/dev/null)"
}
