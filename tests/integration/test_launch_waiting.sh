#!/usr/bin/env bash
# Waiting is never silent (issue 19: an agent that could not reach the store, or waited for nodes, said
# nothing for up to 15 minutes): with DTRAIN_WAIT_REPORT_MS=500 an agent says every half second what it
# waits for and how long it has left, (1) for a store that does not answer, (2) for the nodes of a
# round that never fills; each still gives up at --rdzv-timeout.
# ctest-labels: launch
# ctest-timeout: 60
source "$(dirname "${BASH_SOURCE[0]}")/launch_lib.sh"
export DTRAIN_WAIT_REPORT_MS=500 DTRAIN_JOB_TOKEN=waiting-test

# ---- 1. a store nobody answers at (a port nobody listens on, of an address that is not this machine's)
port=$(free_port)
t0=$SECONDS
timeout 30 "$DTRAIN" launch --nnodes 2 --rdzv-endpoint "127.0.0.2:$port" --rdzv-timeout 3 -- "$W" sleep 1 \
  > "$T/out" 2> "$T/err"
rc=$?
[ $rc = 1 ] || fail "unreachable store: exit $rc, want 1: $(cat "$T/err")"
n=$(grep -c "waiting [0-9]* s for the rendezvous store at 127.0.0.2:$port (.*); giving up in [0-9]* s" "$T/err")
[ "$n" -ge 3 ] || fail "unreachable store: $n progress lines in 3 s, want >= 3: $(cat "$T/err")"
[ $((SECONDS - t0)) -le 10 ] || fail "unreachable store: gave up after $((SECONDS - t0)) s, not at the 3 s timeout"
echo "ok: waiting for an unreachable store: $n lines in 3 s, then exit 1"

# ---- 2. a round that never fills (one agent of two)
port=$(free_port)
timeout 30 "$DTRAIN" launch --nnodes 2 --rdzv-endpoint "127.0.0.1:$port" --rdzv-id lonely --rdzv-timeout 3 \
  -- "$W" sleep 1 > "$T/out" 2> "$T/err"
rc=$?
[ $rc = 1 ] || fail "lonely node: exit $rc, want 1: $(cat "$T/err")"
n=$(grep -c "waiting [0-9]* s for nodes to join round 0 of run lonely: 1 here, 2 needed; giving up in [0-9]* s" "$T/err")
[ "$n" -ge 3 ] || fail "lonely node: $n progress lines in 3 s, want >= 3: $(cat "$T/err")"
grep -q "rendezvous timed out after 3 s: 1 of the 2 nodes needed joined" "$T/err" || fail "lonely node: $(cat "$T/err")"
echo "ok: waiting for nodes: $n lines in 3 s, then the rendezvous timeout"
echo PASS
