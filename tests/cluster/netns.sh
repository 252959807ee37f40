# tests/cluster/netns.sh — a sourced harness that turns this machine into a small cluster: N network
# namespaces ("nodes") joined through veth pairs to a bridge that lives in its own "switch" namespace, so
# the root namespace is left alone except for the /run/netns entries. Everything is torn down on exit.
#
#   source "$DTRAIN_SRC/tests/cluster/netns.sh"
#   ns_setup 2                          # nodes 0 and 1: 10.213.0.1 and 10.213.0.2 on interface veth0
#   ns_exec 1 some-command args         # run in node 1, in the foreground
#   ns_spawn 0 agent args >log 2>&1     # run in node 0, in the background; the pid is in NS_LAST_PID
#   ns_pids 0                           # every process whose network namespace is node 0
#   ns_kill_all                         # SIGTERM, then SIGKILL, everything in every node
#
# Bash runs a trap only after the foreground command returns: start long commands with ns_spawn (or `&`)
# and `wait` for them, so that a SIGTERM is acted on at once.
#
# Names carry a per-run suffix (dtr<pid><rnd>...) so concurrent tests never meet. An EXIT/INT/TERM trap
# kills every process in the namespaces and deletes them (the veths and the bridge go with them). A test
# killed with SIGKILL cannot run its trap: the next run reaps namespaces whose owner shell is gone.
#
# Settings: NS_SUBNET (default 10.213.0; node K gets NS_SUBNET.(K+1)/24), DTRAIN_KEEP_TMP=1 keeps ns_tmpdir.

NS_SUBNET=${NS_SUBNET:-10.213.0}
NS_IFNAME=veth0                     # the node's interface name inside each node namespace
NS_PREFIX="dtr$$x$((RANDOM % 100))" # owner pid first: ns__reap_stale relies on it
NS_SWITCH=""
NS_NODES=()
NS_BG_PIDS=()
NS_LAST_PID=""
NS_TMP=""
NS_AT_EXIT=()
NS_DONE=0

ns__die() {
  echo "netns.sh: $*" >&2
  exit 1
}

ns__ms() { date +%s%3N; }

# Delete namespaces left behind by a run whose shell no longer exists (ctest kills a timed-out test with
# SIGKILL, which no trap survives). Only names of our own shape, dtr<pid>x<n>{s,n<k>}, are touched.
ns__reap_stale() {
  local ns pid p
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}'); do
    [[ $ns =~ ^dtr([0-9]+)x[0-9]+(s|n[0-9]+)$ ]] || continue
    pid=${BASH_REMATCH[1]}
    [[ -d /proc/$pid ]] && continue
    for p in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$p" 2>/dev/null; done
    ip netns del "$ns" 2>/dev/null && echo "netns.sh: reaped stale namespace $ns" >&2
  done
}

# ns_setup N: create the switch and N nodes. Takes a few tens of milliseconds.
ns_setup() {
  local n=${1:?ns_setup N}
  local k ns t0
  [[ $(id -u) == 0 ]] || ns__die "needs root (CAP_NET_ADMIN) to create network namespaces"
  command -v ip >/dev/null || ns__die "iproute2 (ip) is not installed"
  ((n >= 1 && n <= 200)) || ns__die "ns_setup: bad node count $n"
  t0=$(ns__ms)
  trap 'ns__on_exit' EXIT
  trap 'ns__on_signal 130' INT
  trap 'ns__on_signal 143' TERM
  ns__reap_stale
  NS_SWITCH="${NS_PREFIX}s"
  ip netns add "$NS_SWITCH" || ns__die "cannot create namespace $NS_SWITCH"
  ip -n "$NS_SWITCH" link set lo up
  ip -n "$NS_SWITCH" link add br0 type bridge || ns__die "cannot create a bridge in $NS_SWITCH"
  ip -n "$NS_SWITCH" link set br0 up
  for ((k = 0; k < n; k++)); do
    ns="${NS_PREFIX}n$k"
    ip netns add "$ns" || ns__die "cannot create namespace $ns"
    NS_NODES+=("$ns")
    ip -n "$ns" link set lo up
    # Both ends are born in namespaces we own: the switch port p<k> and the node's veth0.
    ip -n "$NS_SWITCH" link add "p$k" type veth peer name "$NS_IFNAME" netns "$ns" ||
      ns__die "cannot create the veth pair of node $k"
    ip -n "$NS_SWITCH" link set "p$k" master br0 up
    ip -n "$ns" addr add "$NS_SUBNET.$((k + 1))/24" dev "$NS_IFNAME"
    ip -n "$ns" link set "$NS_IFNAME" up
  done
  NS_SETUP_MS=$(($(ns__ms) - t0))
}

ns_count() { echo "${#NS_NODES[@]}"; }
ns_name() { echo "${NS_NODES[$1]:?no node $1}"; }
ns_addr() {
  [[ -n ${NS_NODES[$1]:-} ]] || ns__die "no node $1"
  echo "$NS_SUBNET.$(($1 + 1))"
}

# ns_exec K cmd...: run cmd in node K, in the foreground; returns its status.
ns_exec() {
  local ns=${NS_NODES[$1]:?ns_exec: no node $1}
  shift
  ip netns exec "$ns" "$@"
}

# ns_spawn K cmd...: start cmd in node K in the background. NS_LAST_PID is cmd's own pid (ip execs it),
# so signals sent to it reach the program itself. Redirect output at the call site.
ns_spawn() {
  local ns=${NS_NODES[$1]:?ns_spawn: no node $1}
  shift
  ip netns exec "$ns" "$@" &
  NS_LAST_PID=$!
  NS_BG_PIDS+=("$NS_LAST_PID")
}

# ns_pids K: the pids of every live process whose network namespace is node K (one a line).
ns_pids() {
  local ns=${NS_NODES[$1]:?ns_pids: no node $1}
  ip netns pids "$ns" 2>/dev/null
}

# ns_all_pids: every live process in any node or the switch.
ns_all_pids() {
  local ns
  for ns in "${NS_NODES[@]}" ${NS_SWITCH:+"$NS_SWITCH"}; do ip netns pids "$ns" 2>/dev/null; done
}

# ns_kill_all [GRACE_MS]: SIGTERM everything in every node, SIGKILL what is left after GRACE_MS
# (default 1000), and reap our own background children. Bounded in time.
ns_kill_all() {
  local grace=${1:-1000} p i left
  for p in $(ns_all_pids) "${NS_BG_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
  for ((i = 0; i < grace / 50; i++)); do
    left=$(ns_all_pids)
    [[ -z $left ]] && break
    sleep 0.05
  done
  for ((i = 0; i < 20; i++)); do
    left=$(ns_all_pids)
    [[ -z $left ]] && break
    for p in $left; do kill -KILL "$p" 2>/dev/null; done
    sleep 0.05
  done
  for p in "${NS_BG_PIDS[@]}"; do kill -KILL "$p" 2>/dev/null; done
  for p in "${NS_BG_PIDS[@]}"; do wait "$p" 2>/dev/null; done
  NS_BG_PIDS=()
  [[ -z $(ns_all_pids) ]]
}

# ns_wait_port K HOST PORT TIMEOUT_S: wait until something in the cluster accepts TCP connections on
# HOST:PORT, as seen from node K. Bounded by TIMEOUT_S.
ns_wait_port() {
  local k=$1 host=$2 port=$3 tmo=${4:-10}
  ns_exec "$k" timeout "$tmo" bash -c \
    "until (exec 3<>/dev/tcp/$host/$port) 2>/dev/null; do sleep 0.05; done"
}

# ns_tmpdir: create the per-run temporary directory NS_TMP, removed on exit unless DTRAIN_KEEP_TMP=1.
# Call it directly, not in $(...): a subshell's NS_TMP would never be cleaned up.
ns_tmpdir() {
  if [[ -z $NS_TMP ]]; then
    NS_TMP=$(mktemp -d "${TMPDIR:-/tmp}/dtrain-cluster.XXXXXX") || ns__die "mktemp failed"
  fi
}

# ns_at_exit CMD: run CMD (eval'ed) during cleanup, before the namespaces go.
ns_at_exit() { NS_AT_EXIT+=("$1"); }

# ns_time_limit SECONDS: SIGTERM this test after SECONDS so that its trap still cleans up (ctest's own
# timeout uses SIGKILL). Set it below the ctest-timeout.
ns_time_limit() {
  local secs=$1 me=$$ p sp
  (
    trap - EXIT INT
    sleep "$secs" >/dev/null 2>&1 &
    sp=$!
    trap 'kill $sp 2>/dev/null; exit 0' TERM # cleanup stops us: take the sleep along (it holds no pipe)
    wait "$sp" || exit 0
    echo "netns.sh: time limit: test ran past ${secs}s, terminating it" >&2
    # The shell runs its trap only once its foreground command returns: kill what runs in the nodes first.
    for p in $(ns_all_pids); do kill -KILL "$p" 2>/dev/null; done
    kill -TERM "$me"
  ) </dev/null >/dev/null 2>&2 &
  NS_TIME_LIMIT=$!
}

ns_cleanup() {
  local ns h
  ((NS_DONE)) && return 0
  NS_DONE=1
  for h in "${NS_AT_EXIT[@]}"; do eval "$h" || true; done
  [[ -n ${NS_TIME_LIMIT:-} ]] && kill "$NS_TIME_LIMIT" 2>/dev/null && wait "$NS_TIME_LIMIT" 2>/dev/null
  ns_kill_all 500 || echo "netns.sh: some processes in the namespaces would not die" >&2
  for ns in "${NS_NODES[@]}" ${NS_SWITCH:+"$NS_SWITCH"}; do
    ip netns del "$ns" 2>/dev/null || echo "netns.sh: could not delete namespace $ns" >&2
  done
  if [[ -n $NS_TMP && ${DTRAIN_KEEP_TMP:-0} != 1 ]]; then
    rm -rf "$NS_TMP"
  elif [[ -n $NS_TMP ]]; then
    echo "netns.sh: kept $NS_TMP" >&2
  fi
  return 0
}

ns__on_exit() {
  local rc=$?
  ns_cleanup
  exit "$rc"
}

ns__on_signal() {
  trap - INT TERM
  ns_cleanup
  exit "$1"
}
