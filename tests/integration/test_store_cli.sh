#!/usr/bin/env bash
# `dtrain store` from the shell: it starts and serves, a second one on the same port fails with one
# clear line, a missing token or unknown flag is refused, a wrong token and garbage bytes are logged
# (with the client's address, never the token) while the store keeps serving, SIGTERM stops it.
# ctest-timeout: 60
set -uo pipefail
PROBE="$DTRAIN_BUILD/bin/store_cli_probe"
tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; rm -rf "$tmp"; }
trap cleanup EXIT
fail() { echo "FAIL: $*"; for f in "$tmp"/*.log; do echo "--- $f"; cat "$f"; done; exit 1; }

export DTRAIN_JOB_TOKEN="tok-$RANDOM-$RANDOM-secret"

# Start a store on a kernel-picked port; sets $port from its "listening on" line.
start_store() {
  local log=$1; shift
  "$DTRAIN" store --host 127.0.0.1 --port 0 "$@" 2>"$log" &
  pids+=($!)
  last_pid=$!
  for _ in $(seq 100); do
    port=$(sed -n 's/^dtrain store: listening on 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$log")
    [ -n "$port" ] && return 0
    sleep 0.05
  done
  fail "store did not report its port"
}

start_store "$tmp/store.log"
main_pid=$last_pid
export DTRAIN_STORE=127.0.0.1:$port

# Serves a client.
"$PROBE" set greeting hello || fail "set failed"
[ "$("$PROBE" get greeting)" = hello ] || fail "get did not return the value"
[ "$("$PROBE" add ctr 3)" = 3 ] || fail "add did not return 3"

# Wrong token: refused (exit 6 = DTR_ERR_AUTH), logged with the address, token never printed.
out=$(DTRAIN_JOB_TOKEN=wrong-token-xyz "$PROBE" get greeting 2>&1); rc=$?
[ $rc -eq 6 ] || fail "wrong token gave exit $rc, want 6: $out"
echo "$out" | grep -q "wrong job token" || fail "client message does not say 'wrong job token': $out"
sleep 0.2
grep -q "refused client 127\.0\.0\.1:[0-9]*: wrong job token" "$tmp/store.log" || fail "refusal not logged with address"
grep -q -e "$DTRAIN_JOB_TOKEN" -e wrong-token-xyz "$tmp/store.log" && fail "a token appeared in the store log"

# Garbage bytes: that connection is dropped and logged; the store keeps serving.
exec 3<>"/dev/tcp/127.0.0.1/$port"
printf 'GET / HTTP/1.0\r\n\r\n' >&3
timeout 5 cat <&3 >/dev/null
exec 3>&-
sleep 0.2
grep -q "closing connection from 127\.0\.0\.1:[0-9]*: not a dtrain store client" "$tmp/store.log" ||
  fail "garbage not logged"
[ "$("$PROBE" get greeting)" = hello ] || fail "store stopped serving after garbage"

# A second store on the same port: one clear line, non-zero exit, no hang.
out=$(timeout 10 "$DTRAIN" store --host 127.0.0.1 --port "$port" 2>&1); rc=$?
[ $rc -ne 0 ] && [ $rc -ne 124 ] || fail "second store on a taken port exited $rc"
[ "$out" = "dtrain store: cannot listen on 127.0.0.1:$port: Address already in use" ] ||
  fail "second store said: $out"

# No token anywhere: the error names both sources.
out=$(env -u DTRAIN_JOB_TOKEN timeout 10 "$DTRAIN" store --port 0 2>&1); rc=$?
[ $rc -ne 0 ] && [ $rc -ne 124 ] || fail "store without a token exited $rc"
echo "$out" | grep -q -- "--token-file" && echo "$out" | grep -q DTRAIN_JOB_TOKEN || fail "missing-token message: $out"

# Unknown flag: usage error naming the flag.
out=$(timeout 10 "$DTRAIN" store --frobnicate 2>&1); rc=$?
[ $rc -eq 2 ] || fail "unknown flag exited $rc, want 2"
echo "$out" | grep -q -- "--frobnicate" || fail "unknown-flag message: $out"

# --token-file: the token comes from the file (DTRAIN_JOB_TOKEN ignored by the server).
printf 'file-token-123\n' >"$tmp/token"
start_store "$tmp/store2.log" --token-file "$tmp/token"
file_pid=$last_pid
DTRAIN_STORE=127.0.0.1:$port DTRAIN_JOB_TOKEN=file-token-123 "$PROBE" set k v || fail "token-file store refused its token"
DTRAIN_STORE=127.0.0.1:$port "$PROBE" set k v 2>/dev/null && fail "token-file store accepted the env token"
kill -INT "$file_pid"

# SIGTERM: a clean exit 0 within a few seconds.
kill -TERM "$main_pid"
for _ in $(seq 100); do kill -0 "$main_pid" 2>/dev/null || break; sleep 0.05; done
kill -0 "$main_pid" 2>/dev/null && fail "store still running 5 s after SIGTERM"
wait "$main_pid"; rc=$?
[ $rc -eq 0 ] || fail "store exited $rc after SIGTERM"
echo "PASS: dtrain store CLI"
