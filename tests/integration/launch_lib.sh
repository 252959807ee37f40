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
# wait_grep FILE PATTERN: up to 10 s
wait_grep() {
  for _ in $(seq 100); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
  fail "timed out waiting for '$2' in $1: $(cat "$1" 2>/dev/null)"
}
