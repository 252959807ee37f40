#!/usr/bin/env bash
# The namespace harness itself: quick setup, nodes reach each other through the switch and nothing else,
# and every process and namespace is gone after a normal exit, a SIGTERM and a fault inside the test.
# ctest-timeout: 60
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PY=/usr/bin/python3
fail() {
  echo "FAIL: $*" >&2
  exit 1
}

# ---- 1. a child test that exits normally, one killed by SIGTERM, one that fails under set -e
child_script() { # $1: how the child ends
  cat <<EOF
set -euo pipefail
source "$HERE/netns.sh"
ns_setup 2
echo "prefix \$NS_PREFIX"
ns_tmpdir
echo "tmp \$NS_TMP"
ns_spawn 0 setsid sleep 300 </dev/null >/dev/null 2>&1
ns_spawn 1 bash -c 'sleep 300 & sleep 300' </dev/null >/dev/null 2>&1
echo ready
case "$1" in
  normal) exit 0 ;;
  fails) false ;;
  term) sleep 30 & echo "sleeper \$!"; ns_at_exit "kill \$!"; wait \$! ;;
esac
EOF
}

for how in normal fails term; do
  out=$(mktemp)
  bash -c "$(child_script $how)" >"$out" 2>&1 &
  cpid=$!
  for ((i = 0; i < 100; i++)); do
    grep -q ready "$out" && break
    sleep 0.05
  done
  grep -q ready "$out" || { cat "$out"; fail "child ($how) never got ready"; }
  prefix=$(awk '/^prefix/{print $2}' "$out")
  [[ -n $prefix ]] || fail "child ($how) printed no prefix"
  [[ $how == term ]] && kill -TERM "$cpid"
  rc=0
  timeout 10 tail --pid="$cpid" -f /dev/null || fail "child ($how) did not exit within 10 s"
  wait "$cpid" || rc=$?
  case $how in
    normal) [[ $rc == 0 ]] || fail "normal child exited $rc" ;;
    fails) [[ $rc == 1 ]] || fail "failing child exited $rc, expected 1 (status lost in the trap?)" ;;
    term) [[ $rc == 143 ]] || fail "terminated child exited $rc, expected 143" ;;
  esac
  left=$(ip netns list | awk '{print $1}' | grep "^$prefix" || true)
  [[ -z $left ]] || fail "child ($how) left namespaces behind: $left"
  ctmp=$(awk '/^tmp/{print $2}' "$out")
  [[ -n $ctmp && ! -e $ctmp ]] || fail "child ($how) left its temporary directory '$ctmp'"
  # The sleeps carried a unique argument nowhere, so look for any sleep 300 whose parent chain was ours:
  # simplest is that no process still sits in a namespace called $prefix*, which ip can no longer show,
  # so check /proc for processes whose netns differs from ours and whose cmdline is "sleep 300".
  mine=$(readlink /proc/self/ns/net)
  for p in $(pgrep -x sleep || true); do
    ns=$(readlink "/proc/$p/ns/net" 2>/dev/null || true)
    if [[ -n $ns && $ns != "$mine" && $(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null) == "sleep 300 " ]]; then
      fail "child ($how) left a process behind in a dead namespace: pid $p"
    fi
  done
  rm -f "$out"
  echo "ok: cleanup after a child that ended '$how' (rc $rc)"
done

# ---- 2. a child killed with SIGKILL cannot clean up; the next ns_setup reaps what it left
out=$(mktemp)
bash -c "$(child_script term)" >"$out" 2>&1 &
cpid=$!
for ((i = 0; i < 100; i++)); do
  grep -q ready "$out" && break
  sleep 0.05
done
prefix=$(awk '/^prefix/{print $2}' "$out")
kill -KILL "$cpid"
wait "$cpid" 2>/dev/null || true
kill "$(awk '/^sleeper/{print $2}' "$out")" 2>/dev/null || true
ctmp=$(awk '/^tmp/{print $2}' "$out")
[[ $ctmp == */dtrain-cluster.* ]] && rm -rf "$ctmp"
rm -f "$out"
[[ -n $prefix && -n $(ip netns list | grep "^$prefix" || true) ]] || fail "the SIGKILLed child left nothing to reap?"

# ---- 3. topology and connectivity
source "$HERE/netns.sh"
ns_setup 3
left=$(ip netns list | awk '{print $1}' | grep "^$prefix" || true)
[[ -z $left ]] || fail "ns_setup did not reap the stale namespaces $left"
echo "ok: stale namespaces reaped"
echo "setup of 3 nodes took ${NS_SETUP_MS} ms"
# The target is well under 1 s (typically 30-100 ms); 1.5 s leaves room for a loaded CI machine.
((NS_SETUP_MS < 1500)) || fail "setup took ${NS_SETUP_MS} ms (want < 1500; usually < 100)"
ip -o addr show | grep -q "$NS_SUBNET\." && fail "the root namespace has a $NS_SUBNET.x address"
ip -o link show | grep -q "$NS_PREFIX" && fail "an interface of ours appeared in the root namespace"
for k in 0 1 2; do
  ns_exec $k ip -o -4 addr show dev "$NS_IFNAME" | grep -q "inet $(ns_addr $k)/24" ||
    fail "node $k lacks address $(ns_addr $k) on $NS_IFNAME"
  ns_exec $k ip -o link show lo | grep -q "UP" || fail "lo is down in node $k"
done

ns_tmpdir
tmp=$NS_TMP
port=29400
ns_spawn 0 "$PY" -c "
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('$(ns_addr 0)', $port)); s.listen(8); open('$tmp/listening', 'w').close()
for _ in range(2):
    c, a = s.accept(); c.sendall(('hello ' + a[0] + '\n').encode()); c.close()
" >"$tmp/listener.log" 2>&1
ns_wait_port 1 "$(ns_addr 0)" $port 10 || fail "node 1 cannot reach node 0:$port"
# ns_wait_port made one connection; the next answer names the peer address as node 0 saw it.
got=$(ns_exec 2 timeout 5 bash -c "exec 3<>/dev/tcp/$(ns_addr 0)/$port; head -n1 <&3") ||
  fail "node 2 cannot reach node 0:$port"
[[ $got == "hello $(ns_addr 2)" ]] || fail "node 0 saw node 2 as '$got', expected 'hello $(ns_addr 2)'"
# Nodes have no way out: no default route, no interface but lo and veth0 (probing from the root
# namespace would send packets to the real network, so isolation is checked from the inside).
[[ -z $(ns_exec 1 ip route show default) ]] || fail "node 1 has a default route"
ifs=$(ns_exec 1 ip -o link show | awk -F': ' '{print $2}' | sed 's/@.*//' | sort | xargs)
[[ $ifs == "lo $NS_IFNAME" ]] || fail "node 1 has interfaces '$ifs', expected 'lo $NS_IFNAME'"
echo "ok: 3 nodes, addresses, connectivity through the switch, isolation"

# ---- 4. ns_kill_all reaches grandchildren that left the process group
ns_spawn 1 bash -c 'setsid sleep 300 </dev/null >/dev/null 2>&1 & exec sleep 300' >/dev/null 2>&1
sleep 0.2
[[ $(ns_pids 1 | wc -l) -ge 2 ]] || fail "expected at least 2 processes in node 1, got: $(ns_pids 1 | xargs)"
ns_kill_all 500 || fail "ns_kill_all left processes: $(ns_all_pids | xargs)"
[[ -z $(ns_all_pids) ]] || fail "processes survived ns_kill_all"
echo "ok: ns_kill_all"
echo "PASS"
