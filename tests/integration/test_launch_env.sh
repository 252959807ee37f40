#!/usr/bin/env bash
# `dtrain --version/--help`, and the worker environment contract of DESIGN.md under
# `dtrain launch` with its [NODE:RANK] prefixes; two concurrent jobs get different MASTER_PORTs.
# ctest-labels: launch
# ctest-timeout: 60
source "$(dirname "${BASH_SOURCE[0]}")/launch_lib.sh"

# ---- global flags
out=$(timeout 10 "$DTRAIN" --version) || fail "--version exit $?"
[[ $(head -n1 <<<"$out") =~ ^dtrain\ 0\.1\.0\ \(features:\ [a-z\ ]+\)$ ]] || fail "--version printed '$out'"
[[ $(sed -n 2p <<<"$out") =~ ^libraries:\ .*\;\ GPUs\ visible:\ [0-9]+$ ]] || fail "--version second line: '$out'"
timeout 10 "$DTRAIN" --help | grep -q "launch" || fail "dtrain --help does not list launch"
timeout 10 "$DTRAIN" launch --help > "$T/h" || fail "launch --help exit $?"
grep -q -- "--nproc-per-node" "$T/h" && grep -q -- "--rdzv-endpoint" "$T/h" || fail "launch --help lacks flags"
timeout 10 "$DTRAIN" frobnicate 2> "$T/e"; rc=$?
[ $rc = 2 ] || fail "unknown subcommand exit $rc"
[ "$(wc -l < "$T/e")" = 1 ] && grep -q "frobnicate" "$T/e" || fail "unknown subcommand message: $(cat "$T/e")"
timeout 10 "$DTRAIN" > /dev/null 2>&1; [ $? = 2 ] || fail "no subcommand should exit 2"

# ---- the contract, 3 ranks
export DTRAIN_JOB_TOKEN=tok-$RANDOM-secret
unset OMP_NUM_THREADS
timeout 30 "$DTRAIN" launch --nproc-per-node 3 --rdzv-id envtest -- "$W" env > "$T/out" 2> "$T/err" \
  || fail "launch exit $?: $(cat "$T/err")"
grep -q "$DTRAIN_JOB_TOKEN" "$T/out" "$T/err" && fail "the job token was printed"
[ "$(wc -l < "$T/out")" = $((3 * 23)) ] || fail "expected 69 lines, got $(wc -l < "$T/out")"
grep -qv '^\[0:[0-2]\] [A-Z_]*=' "$T/out" && fail "a line without a [0:R] prefix: $(grep -v '^\[0:[0-2]\] ' "$T/out" | head -1)"
val() { grep "^\[0:$1\] $2=" "$T/out" | head -1 | cut -d= -f2-; }
mp=$(val 0 MASTER_PORT)
for r in 0 1 2; do
  for kv in RANK=$r LOCAL_RANK=$r WORLD_SIZE=3 LOCAL_WORLD_SIZE=3 GROUP_RANK=0 GROUP_WORLD_SIZE=1 ROLE_RANK=$r \
            ROLE_WORLD_SIZE=3 ROLE_NAME=default MASTER_ADDR=127.0.0.1 MASTER_PORT=$mp TORCHELASTIC_RESTART_COUNT=0 \
            TORCHELASTIC_MAX_RESTARTS=0 TORCHELASTIC_RUN_ID=envtest TORCHELASTIC_USE_AGENT_STORE=False \
            OMP_NUM_THREADS=1 DTRAIN_RUN_ID=envtest DTRAIN_RESTART_COUNT=0 DTRAIN_JOB_TOKEN='<set>' \
            DTRAIN_NODE_RANK=0 DTRAIN_NNODES=1; do
    [ "$(val $r "${kv%%=*}")" = "${kv#*=}" ] || fail "rank $r: ${kv%%=*}='$(val $r "${kv%%=*}")', want '${kv#*=}'"
  done
  [[ $(val $r DTRAIN_STORE) =~ ^127\.0\.0\.1:[0-9]+$ ]] || fail "rank $r DTRAIN_STORE='$(val $r DTRAIN_STORE)'"
done
[[ $mp =~ ^[0-9]+$ ]] && [ "$mp" != 29500 ] || fail "MASTER_PORT '$mp'"
[ "$(val 0 DTRAIN_STORE)" != "127.0.0.1:$mp" ] || fail "MASTER_PORT must not be the store's port"

# ---- OMP_NUM_THREADS is only a default; --max-restarts and --role reach the workers
OMP_NUM_THREADS=4 timeout 30 "$DTRAIN" launch --nproc-per-node 1 --max-restarts 2 --role trainer -- "$W" env \
  > "$T/out2" 2>/dev/null || fail "second launch failed"
grep -q '^\[0:0\] OMP_NUM_THREADS=4$' "$T/out2" || fail "OMP_NUM_THREADS was overridden"
grep -q '^\[0:0\] TORCHELASTIC_MAX_RESTARTS=2$' "$T/out2" || fail "TORCHELASTIC_MAX_RESTARTS"
grep -q '^\[0:0\] ROLE_NAME=trainer$' "$T/out2" || fail "ROLE_NAME"

# ---- two concurrent jobs on one machine: different MASTER_PORTs (and no collision on 29500)
timeout 30 "$DTRAIN" launch --nproc-per-node 1 -- /bin/sh -c 'echo MP=$MASTER_PORT; sleep 1' > "$T/j1" 2>/dev/null &
p1=$!
timeout 30 "$DTRAIN" launch --nproc-per-node 1 -- /bin/sh -c 'echo MP=$MASTER_PORT; sleep 1' > "$T/j2" 2>/dev/null &
p2=$!
wait $p1 || fail "job 1 failed"
wait $p2 || fail "job 2 failed"
m1=$(sed -n 's/^\[0:0\] MP=//p' "$T/j1"); m2=$(sed -n 's/^\[0:0\] MP=//p' "$T/j2")
[[ $m1 =~ ^[0-9]+$ && $m2 =~ ^[0-9]+$ ]] || fail "MASTER_PORTs '$m1' '$m2'"
[ "$m1" != "$m2" ] || fail "two jobs got the same MASTER_PORT $m1"
echo "PASS"
