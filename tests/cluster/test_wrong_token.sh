#!/usr/bin/env bash
# A node with the wrong DTRAIN_JOB_TOKEN: the store on node 0 refuses it (logging its address, never a
# token), its agent says so and exits non-zero at once, no worker starts anywhere, and node 0's agent gives
# up when the rendezvous times out instead of hanging.
# ctest-timeout: 60
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/cluster_lib.sh"
cluster_start 2 50

ADDR0=$(ns_addr 0)
RDZV_TIMEOUT=4
ARGS=(--nnodes 2 --nproc-per-node 1 --rdzv-endpoint "$ADDR0:29400" --rdzv-id tok --rdzv-timeout $RDZV_TIMEOUT)
GOOD=$DTRAIN_JOB_TOKEN
BAD="not-the-token-$RANDOM$RANDOM"

agent_start 0 good "${ARGS[@]}" -- "$WORKER" env
t0=$(date +%s%N)
DTRAIN_JOB_TOKEN=$BAD agent_start 1 bad "${ARGS[@]}" -- "$WORKER" env
agent_wait bad 10
rc_bad=$AGENT_RC
dt_bad=$((($(date +%s%N) - t0) / 1000000))
agent_wait good $((RDZV_TIMEOUT + 10))
rc_good=$AGENT_RC
dt_good=$((($(date +%s%N) - t0) / 1000000))

[[ $rc_bad != 0 && $rc_bad != 124 ]] || fail "the agent with the wrong token exited $rc_bad, expected a failure"
((dt_bad < 5000)) || fail "the agent with the wrong token took ${dt_bad} ms to give up (want < 5 s)"
grep -qi "token" "$TMP/bad.log" || fail "the refused agent did not say that its token was refused"
[[ $rc_good != 0 && $rc_good != 124 ]] || fail "node 0's agent exited $rc_good, expected a rendezvous failure"
grep -q "$(ns_addr 1)" "$TMP/good.log" || fail "the store did not log the refused client's address"
grep -qF -- "$GOOD" "$TMP/good.log" "$TMP/bad.log" && fail "a log shows the job token"
grep -qF -- "$BAD" "$TMP/good.log" "$TMP/bad.log" && fail "a log shows the wrong token"
grep -Eq '^\[[^]:]*:[0-9]+\] ' "$TMP/good.log" "$TMP/bad.log" && fail "a worker started"
echo "wrong token: refused agent exited $rc_bad after ${dt_bad} ms; node 0 exited $rc_good after ${dt_good} ms"
ok "wrong token refused, no worker started, both agents failed in bounded time"
no_workers_left || fail "processes still running in the nodes: $(ns_all_pids | xargs)"
echo PASS
