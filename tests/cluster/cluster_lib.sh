# tests/cluster/cluster_lib.sh — what the multi-node tests share on top of netns.sh: finding the binaries,
# starting one `dtrain launch` agent per namespace node, bounded waits, failing with every log shown, and
# reading the `[<node>:<rank>] KEY=VALUE` lines that launch_worker prints.

CLUSTER_HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$CLUSTER_HERE/netns.sh"

: "${DTRAIN:?DTRAIN (the dtrain CLI) must be set; run through ctest}"
: "${DTRAIN_BUILD:?DTRAIN_BUILD must be set; run through ctest}"
WORKER=$DTRAIN_BUILD/bin/launch_worker
[[ -x $DTRAIN ]] || { echo "FAIL: $DTRAIN is not executable" >&2; exit 1; }
[[ -x $WORKER ]] || { echo "FAIL: $WORKER is not built" >&2; exit 1; }

TMP=""
declare -A AGENT_PID=()

# Print every log of this test (the tail of each), then fail.
fail() {
  echo "FAIL: $*" >&2
  local f
  if [[ -n $TMP ]]; then
    for f in "$TMP"/*.log; do
      [[ -e $f ]] || continue
      echo "----- $(basename "$f") (last 60 lines)" >&2
      tail -n 60 "$f" >&2
    done
  fi
  exit 1
}

ok() { echo "ok: $*"; }

# cluster_start NNODES TIME_LIMIT_S: namespaces, a time limit, a temp dir and one job token for all nodes.
cluster_start() {
  ns_setup "$1"
  ns_time_limit "$2"
  ns_tmpdir
  TMP=$NS_TMP
  export DTRAIN_JOB_TOKEN="cluster-test-$$-$RANDOM$RANDOM"
  echo "cluster: $1 nodes (${NS_SETUP_MS} ms to set up), prefix $NS_PREFIX, logs in $TMP"
}

# agent_start K TAG launch-args...: start `dtrain launch launch-args` in node K, output in $TMP/TAG.log.
# AGENT_PID[TAG] is the agent's own pid.
agent_start() {
  local k=$1 tag=$2
  shift 2
  echo "+ node $k: dtrain launch $*" >"$TMP/$tag.log"
  ns_spawn "$k" "$DTRAIN" launch "$@" </dev/null >>"$TMP/$tag.log" 2>&1
  AGENT_PID[$tag]=$NS_LAST_PID
}

# node_start K TAG launch-args...: like agent_start, but the agent (and so its workers) in a fresh IPC and
# UTS namespace with host name node<K>: a node then shares no memory with the others (the host backend
# must take TCP between them) and a cut link cuts every path, as on separate machines. Tests of a node's
# loss use it. AGENT_PID[TAG] is the agent's own pid (unshare and bash exec it).
node_start() { node_cmd "$1" "$2" launch "${@:3}"; }

# node_cmd K TAG SUBCOMMAND args...: node_start for any dtrain subcommand (`run` for a recipe).
node_cmd() {
  local k=$1 tag=$2
  shift 2
  command -v unshare >/dev/null || fail "unshare (util-linux) is not installed"
  echo "+ node $k: dtrain $*" >"$TMP/$tag.log"
  ns_spawn "$k" unshare --ipc --uts -- bash -c 'hostname "$0" && exec "$@"' "node$k" "$DTRAIN" "$@" \
    </dev/null >>"$TMP/$tag.log" 2>&1
  AGENT_PID[$tag]=$NS_LAST_PID
}

# link_down K / link_up K: cut (restore) node K's only link, its port on the switch.
link_down() { ip -n "$NS_SWITCH" link set "p$1" down; }
link_up() { ip -n "$NS_SWITCH" link set "p$1" up; }

# agent_wait TAG TIMEOUT_S: wait for the agent and set AGENT_RC to its exit status (124 if it ran past
# TIMEOUT_S, in which case it is killed). Not in $(...): only this shell can wait for its children.
agent_wait() {
  local tag=$1 tmo=$2 pid=${AGENT_PID[$1]} i
  AGENT_RC=0
  for ((i = 0; i < tmo * 20; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
  done
  if kill -0 "$pid" 2>/dev/null; then
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    AGENT_RC=124
    return
  fi
  wait "$pid" 2>/dev/null || AGENT_RC=$?
}

# wait_for_log FILE REGEX TIMEOUT_S: wait until FILE has a line matching REGEX (grep -E).
wait_for_log() {
  local file=$1 re=$2 tmo=$3 i
  for ((i = 0; i < tmo * 20; i++)); do
    grep -Eq -- "$re" "$file" 2>/dev/null && return 0
    sleep 0.05
  done
  return 1
}

# worker_env FILES...: one "PREFIX_NODE PREFIX_RANK KEY VALUE" line for every KEY=VALUE token on a worker
# output line (`[<node>:<rank>] ...`) in FILES.
worker_env() {
  awk '
    match($0, /^\[[^]:]*:[0-9]+\] /) {
      pre = substr($0, 2, RLENGTH - 3); rest = substr($0, RLENGTH + 1)
      n = split(pre, p, ":"); node = p[1]; rank = p[2]
      m = split(rest, tok, /[ \t]+/)
      for (i = 1; i <= m; i++)
        if (match(tok[i], /^[A-Z_][A-Z0-9_]*=/)) print node, rank, substr(tok[i], 1, RLENGTH - 1), substr(tok[i], RLENGTH + 1)
    }' "$@"
}

# env_get TABLE RANK KEY: the value of KEY reported by the worker whose RANK is RANK (from a worker_env
# table), empty if none.
env_get() {
  awk -v r="$2" -v k="$3" '
    $3 == "RANK" && $4 == r { mine[$1 ":" $2] = 1 }
    { pr[NR] = $1 ":" $2; key[NR] = $3; val[NR] = $4 }
    END { for (i = 1; i <= NR; i++) if ((pr[i] in mine) && key[i] == k) { print val[i]; exit } }' "$1"
}

# no_workers_left: true when no process runs in any node (the agents included).
no_workers_left() { [[ -z $(ns_all_pids) ]]; }
