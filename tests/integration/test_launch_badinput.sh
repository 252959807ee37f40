#!/usr/bin/env bash
# Bad input to `dtrain launch`: each case exits non-zero (never by a signal, never by hanging) with
# one line on stderr that names the culprit, and nothing is left running.
# ctest-labels: launch
# ctest-timeout: 90
source "$(dirname "${BASH_SOURCE[0]}")/launch_lib.sh"

# expect WANT_RC PATTERN -- dtrain args...: exit code, one stderr line matching PATTERN, within 20 s
expect() {
  local want=$1 pat=$2; shift 3
  local t0=$(date +%s)
  timeout 20 "$DTRAIN" "$@" > "$T/out" 2> "$T/err" < /dev/null; local rc=$?
  [ $rc != 124 ] || fail "hung: dtrain $*"
  [ $rc -lt 128 ] || fail "crashed (exit $rc): dtrain $*"
  [ "$want" = any ] && [ $rc != 0 ] || [ $rc = "$want" ] || fail "exit $rc, want $want: dtrain $* ($(cat "$T/err"))"
  [ "$(grep -cv '^$' "$T/err")" = 1 ] || fail "want exactly one line on stderr for dtrain $*, got: $(cat "$T/err")"
  grep -q -- "$pat" "$T/err" || fail "message does not name '$pat': $(cat "$T/err")"
  echo "ok ($rc, $(( $(date +%s) - t0 )) s): $(cat "$T/err")"
}

expect 2 "'--bogus'" -- launch --bogus --nproc-per-node 2 -- "$W" env
expect 2 "--nproc-per-node: 'oops'" -- launch --nproc-per-node=oops -- "$W" env
expect 2 "--nproc-per-node must be at least 1" -- launch --nproc-per-node 0 -- "$W" env
expect 2 "--nnodes" -- launch --nnodes 2:1 -- "$W" env
expect 2 "no program" -- launch --nproc-per-node 2
expect 2 "--rdzv-endpoint" -- launch --nnodes 2 -- "$W" env
expect 2 "--max-restarts" -- launch --max-restarts many -- "$W" env
expect 127 "/nonexistent/program" -- launch --nproc-per-node 2 -- /nonexistent/program
expect 127 "no-such-program-dtrain" -- launch -- no-such-program-dtrain --flag
printf '#!/bin/sh\necho hi\n' > "$T/noexec.sh"; chmod 644 "$T/noexec.sh"
expect 126 "noexec.sh" -- launch --nproc-per-node 2 -- "$T/noexec.sh"
expect 126 "$T" -- launch -- "$T"
expect 127 "missing.py" -- launch -- "$T/missing.py"
expect 1 "--log-dir: cannot create /proc/no-such-dir" -- launch --log-dir /proc/no-such-dir -- "$W" env

export DTRAIN_JOB_TOKEN=bad-input-test  # no "token not set" warning line
# unreachable endpoint: a clear error once --rdzv-timeout passes (TEST-NET-1 is never routed)
t0=$(date +%s%N)
expect 1 "192.0.2.1:29400" -- launch --nnodes 2 --rdzv-endpoint 192.0.2.1:29400 --rdzv-timeout 2 -- "$W" env
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
[ $ms -lt 8000 ] || fail "unreachable endpoint took $ms ms with --rdzv-timeout 2"
grep -q "cannot reach the rendezvous store" "$T/err" || fail "unreachable: $(cat "$T/err")"
expect 1 "no-such-host.invalid" -- launch --nnodes 2 --rdzv-endpoint no-such-host.invalid:29400 --rdzv-timeout 2 -- "$W" env

# Ctrl-C while waiting for an unreachable store ends the wait at once (128+2)
"$DTRAIN" launch --nnodes 2 --rdzv-endpoint 192.0.2.1:29400 --rdzv-timeout 60 -- "$W" env 2> "$T/int.err" &
PIDS+=($!); ag=$!
sleep 0.5
kill -INT $ag
for _ in $(seq 60); do kill -0 $ag 2>/dev/null || break; sleep 0.05; done
kill -0 $ag 2>/dev/null && fail "SIGINT did not end the wait for an unreachable store within 3 s"
wait $ag; rc=$?
[ $rc = 130 ] || fail "SIGINT while connecting: exit $rc, want 130 ($(cat "$T/int.err"))"

# a port held by something that is not a dtrain store
port=$(free_port)
/usr/bin/python3 -c '
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(8)
t = time.time() + 30
s.settimeout(1)
conns = []
while time.time() < t:
    try:
        c, _ = s.accept(); c.sendall(b"HTTP/1.0 400 Bad Request\r\n\r\n" * 8); conns.append(c)
    except socket.timeout:
        pass
' $port & PIDS+=($!)
for i in $(seq 50); do /usr/bin/python3 -c "import socket,sys; socket.create_connection(('127.0.0.1',$port),1)" 2>/dev/null && break; sleep 0.1; done
expect 1 "127.0.0.1:$port is taken by something that is not this job's dtrain store" -- \
  launch --nnodes 2 --rdzv-endpoint 127.0.0.1:$port --rdzv-timeout 3 -- "$W" env

# a wrong job token against a running store (another job's agent hosting it)
port=$(free_port)
DTRAIN_JOB_TOKEN=right-token timeout 60 "$DTRAIN" launch --nnodes 2 --rdzv-endpoint 127.0.0.1:$port --rdzv-id tok \
  --rdzv-timeout 30 -- "$W" env > "$T/a.out" 2> "$T/a.err" & PIDS+=($!); host_pid=$!
for i in $(seq 50); do grep -q . "$T/a.err" 2>/dev/null || /usr/bin/python3 -c "import socket; socket.create_connection(('127.0.0.1',$port),1)" 2>/dev/null && break; sleep 0.1; done
DTRAIN_JOB_TOKEN=wrong-token expect 1 "refused this job's token" -- \
  launch --nnodes 2 --rdzv-endpoint 127.0.0.1:$port --rdzv-id tok --rdzv-timeout 5 -- "$W" env
grep -q "127.0.0.1:$port" "$T/err" || fail "wrong token message does not name the endpoint"
grep -q "right-token\|wrong-token" "$T/err" "$T/a.err" && fail "a token was printed"
# the hosting agent is still waiting for its second node; SIGTERM ends it cleanly (128+15)
kill -TERM $host_pid; wait $host_pid; rc=$?
[ $rc = 143 ] || fail "agent waiting in rendezvous exit $rc after SIGTERM, want 143"

# a rendezvous that never fills up times out with a message naming the run
port=$(free_port)
expect 1 "rendezvous timed out" -- launch --nnodes 2 --rdzv-endpoint 127.0.0.1:$port --rdzv-id lonely \
  --rdzv-timeout 1 -- "$W" env
echo "PASS"
