# tests/slurm/slurm_lib.sh — a real Slurm on this machine for the slurm tests: munged, slurmctld and one
# slurmd per "node", every node a network namespace (tests/cluster/netns.sh) with IPC, UTS and mount
# namespaces of its own (hostname node<K>, and an /etc/hosts bind-mounted over the machine's that names
# every node, as a cluster's DNS would), all from a slurm.conf generated in a temporary directory. The
# namespaces give every daemon private ports, so parallel runs and a system Slurm never meet. Everything
# stops on exit (netns.sh's trap; munged, which lives outside the namespaces, by its pid).
#
#   source "$(dirname "${BASH_SOURCE[0]}")/slurm_lib.sh"
#   slurm_start NNODES CPUS TIME_LIMIT_S   # node0 .. node<N-1>, CPUS each; slurmctld on node 0
#   sl K cmd...                          # run a command on node K (sbatch, srun, scontrol, ...)
#   sl_submit [sbatch args] SCRIPT [args] # sbatch on node 0; the job id in SL_JOB
#   sl_field ID FIELD                    # a field of `scontrol show job` (JobState, Restarts, ExitCode, ...)
#   sl_wait_state ID REGEX TIMEOUT_S     # until JobState matches REGEX
#   sl_wait_file FILE REGEX TIMEOUT_S    # until FILE has a matching line
#   sl_node_down K                       # node K's link down and every process in it killed
#   sl_procs_left PATTERN                # pids of processes whose command line matches PATTERN in any node
#
# Bounded everywhere: every wait has a count and a time. Slurm's own delays are shortened in the config
# (a requeued job may start again after cred_expire=5 s instead of 120; the scheduler runs every 2 s).

SLURM_HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$SLURM_HERE/../cluster/netns.sh"

: "${DTRAIN:?DTRAIN (the dtrain CLI) must be set; run through ctest}"
: "${DTRAIN_SRC:?DTRAIN_SRC must be set; run through ctest}"
for tool in slurmctld slurmd munged sbatch srun scontrol sinfo nsenter unshare; do
  command -v "$tool" >/dev/null || { echo "FAIL: $tool is not installed (scripts/install-deps.sh)" >&2; exit 1; }
done

SL_TMP=""
SL_CONF=""
SL_NNODES=0
SL_MUNGED_PID=""
declare -a SL_NODE_PID=()

fail() {
  echo "FAIL: $*" >&2
  local f
  if [[ -n $SL_TMP ]]; then
    for f in "$SL_TMP"/*.log "$SL_TMP"/*.out "$SL_TMP"/*/slurm-*.out; do
      [[ -e $f ]] || continue
      echo "----- ${f#"$SL_TMP"/} (last 25 lines)" >&2
      tail -n 25 "$f" >&2
    done
  fi
  exit 1
}

ok() { echo "ok: $*"; }

sl__stop() {
  local k
  for k in "${!SL_NODE_PID[@]}"; do kill -TERM "${SL_NODE_PID[$k]}" 2>/dev/null; done
  [[ -n $SL_MUNGED_PID ]] && kill -TERM "$SL_MUNGED_PID" 2>/dev/null
  return 0
}

# sl__spawn K TAG CMD...: CMD in node K's network namespace and fresh IPC, UTS (hostname node<K>) and mount
# (the cluster's /etc/hosts) namespaces, in the background, output in $SL_TMP/TAG.log; NS_LAST_PID is CMD's.
# nsenter rather than `ip netns exec`, which mounts a sysfs of its own over /sys and so hides
# /sys/fs/cgroup, without which slurmd does not start.
sl__spawn() {
  local k=$1 tag=$2
  shift 2
  nsenter --net="/run/netns/$(ns_name "$k")" unshare --ipc --uts --mount --propagation private -- \
    bash -c 'hostname "$0" && mount --bind "$1" /etc/hosts && shift && exec "$@"' "node$k" "$SL_TMP/hosts" "$@" \
    </dev/null >"$SL_TMP/$tag.log" 2>&1 &
  NS_LAST_PID=$!
  NS_BG_PIDS+=("$NS_LAST_PID")
}

# slurm_start NNODES CPUS TIME_LIMIT_S: munged, slurmctld and NNODES slurmd, every node idle; or fail.
slurm_start() {
  local n=$1 cpus=$2 limit=$3 k i t0=$SECONDS
  SL_NNODES=$n
  ns_setup "$n"
  ns_time_limit "$limit"
  ns_tmpdir
  SL_TMP=$NS_TMP
  chmod 700 "$SL_TMP"
  ns_at_exit sl__stop
  # munge: a key of our own, a socket in the temporary directory
  mkdir -m 755 "$SL_TMP/munge"
  head -c 128 /dev/urandom >"$SL_TMP/munge/key" && chmod 400 "$SL_TMP/munge/key"
  munged --foreground --key-file="$SL_TMP/munge/key" --socket="$SL_TMP/munge/sock" \
    --pid-file="$SL_TMP/munge/pid" --log-file="$SL_TMP/munged.log" --seed-file="$SL_TMP/munge/seed" --force \
    </dev/null >>"$SL_TMP/munged.log" 2>&1 &
  SL_MUNGED_PID=$!
  for ((i = 0; i < 100; i++)); do [[ -S $SL_TMP/munge/sock ]] && break; sleep 0.05; done
  [[ -S $SL_TMP/munge/sock ]] || fail "munged did not start"
  : >"$SL_TMP/hosts"
  echo "127.0.0.1 localhost" >>"$SL_TMP/hosts"
  for ((k = 0; k < n; k++)); do echo "$(ns_addr "$k") node$k" >>"$SL_TMP/hosts"; done
  mkdir -p "$SL_TMP/state"
  for ((k = 0; k < n; k++)); do mkdir -p "$SL_TMP/spool/node$k"; done
  SL_CONF=$SL_TMP/slurm.conf
  cat >"$SL_CONF" <<CONF
ClusterName=dtrtest$$
SlurmctldHost=node0($(ns_addr 0))
SlurmctldPort=6817
SlurmdPort=6818
AuthType=auth/munge
AuthInfo=socket=$SL_TMP/munge/sock,cred_expire=5
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$SL_TMP/state
SlurmdSpoolDir=$SL_TMP/spool/%n
SlurmctldPidFile=$SL_TMP/slurmctld.pid
SlurmdPidFile=$SL_TMP/slurmd-%n.pid
SlurmctldLogFile=$SL_TMP/slurmctld.log
SlurmdLogFile=$SL_TMP/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
ReturnToService=2
KillWait=5
MinJobAge=3600
SlurmdTimeout=10
SchedulerParameters=sched_interval=2,bf_interval=1
SlurmdParameters=config_overrides
PartitionName=debug Nodes=node[0-$((n - 1))] Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
CONF
  for ((k = 0; k < n; k++)); do
    echo "NodeName=node$k NodeAddr=$(ns_addr "$k") CPUs=$cpus RealMemory=2000" >>"$SL_CONF"
  done
  export SLURM_CONF=$SL_CONF
  sl__spawn 0 slurmctld.out slurmctld -D -f "$SL_CONF"
  for ((k = 0; k < n; k++)); do
    sl__spawn "$k" "slurmd-node$k.out" slurmd -D -f "$SL_CONF" -N "node$k"
    SL_NODE_PID[$k]=$NS_LAST_PID
  done
  for ((i = 0; i < 200; i++)); do
    [[ $(sl 0 sinfo -h -o '%T %D' 2>/dev/null) == "idle $n" ]] && break
    sleep 0.1
  done
  [[ $(sl 0 sinfo -h -o '%T %D' 2>/dev/null) == "idle $n" ]] ||
    fail "the Slurm nodes are not idle after 20 s: $(sl 0 sinfo 2>&1)"
  echo "slurm: $n node(s) x $cpus CPUs idle after $((SECONDS - t0)) s; logs in $SL_TMP"
}

# sl K CMD...: run CMD in node K's namespaces (as a job's processes there see them), with SLURM_CONF.
sl() {
  local k=$1
  shift
  nsenter -t "${SL_NODE_PID[$k]:?no node $k}" --net --uts --ipc --mount --wd="$PWD" -- env SLURM_CONF="$SL_CONF" "$@"
}

# sl_submit [sbatch args...] SCRIPT [script args...]: submit from node 0; SL_JOB is the job id.
sl_submit() {
  SL_JOB=$(sl 0 sbatch --parsable "$@") || fail "sbatch $* failed: $SL_JOB"
  SL_JOB=${SL_JOB%%;*}
  [[ $SL_JOB =~ ^[0-9]+$ ]] || fail "sbatch $*: no job id ($SL_JOB)"
}

# sl_field ID FIELD: FIELD's value in `scontrol show job -o ID` (empty when the job is unknown).
sl_field() {
  sl 0 scontrol show job -o "$1" 2>/dev/null | tr ' ' '\n' | sed -n "s/^$2=//p" | head -1
}

# sl_wait_state ID REGEX TIMEOUT_S: wait until the job's JobState matches REGEX; fail after TIMEOUT_S.
sl_wait_state() {
  local id=$1 re=$2 tmo=$3 i st=""
  for ((i = 0; i < tmo * 4; i++)); do
    st=$(sl_field "$id" JobState)
    [[ $st =~ ^($re)$ ]] && return 0
    sleep 0.25
  done
  fail "job $id: state '$st' after ${tmo} s, waited for '$re'"
}

# sl_wait_file FILE REGEX TIMEOUT_S: wait until FILE has a line matching REGEX (grep -E); fail after it.
sl_wait_file() {
  local f=$1 re=$2 tmo=$3 i
  for ((i = 0; i < tmo * 10; i++)); do
    grep -Eq -- "$re" "$f" 2>/dev/null && return 0
    sleep 0.1
  done
  fail "no line matching '$re' in $f after ${tmo} s: $(tail -n 20 "$f" 2>/dev/null)"
}

# sl_node_down K: take node K down as a crash would: its link first (no goodbye reaches anyone), then
# every process in it, slurmd included.
sl_node_down() {
  local k=$1 p
  ip -n "$(ns_name "$k")" link set "$NS_IFNAME" down
  for p in $(ns_pids "$k"); do kill -KILL "$p" 2>/dev/null; done
}

# sl_procs_left PATTERN: the pids of live processes in any node whose command line matches PATTERN (a
# grep -E regex); empty when none.
sl_procs_left() {
  local p
  for p in $(ns_all_pids); do
    [[ -r /proc/$p/cmdline ]] || continue
    tr '\0' ' ' <"/proc/$p/cmdline" | grep -Eq -- "$1" && echo "$p"
  done
}

# sl_digest RUN_DIR: the weights digest of a finished run (summary.txt), empty when there is none.
sl_digest() { sed -n 's/^weights_xxh64=//p' "$1/summary.txt" 2>/dev/null; }

# sl_reference RUN_DIR RECIPE [overrides...]: train RECIPE here, outside Slurm (4 ranks as in the job),
# into RUN_DIR: the uninterrupted run a preempted job must match; fails when it does not finish.
sl_reference() {
  local dir=$1 recipe=$2
  shift 2
  (cd "$DTRAIN_SRC" && timeout 300 "$DTRAIN" run "$recipe" job.run_dir="$dir" "$@") >"$SL_TMP/reference.log" 2>&1 ||
    fail "the reference run of $recipe $* failed: $(tail -n 20 "$SL_TMP/reference.log")"
  [[ -n $(sl_digest "$dir") ]] || fail "the reference run wrote no digest"
}

# sl_now_ms: wall-clock milliseconds (the figures the tests print).
sl_now_ms() { date +%s%3N; }

# sl_wait_gone PATTERN TIMEOUT_S: wait until no process in any node matches PATTERN; fail after it.
sl_wait_gone() {
  local re=$1 tmo=$2 i left
  for ((i = 0; i < tmo * 50; i++)); do
    left=$(sl_procs_left "$re")
    [[ -z $left ]] && return 0
    sleep 0.02
  done
  fail "still running after ${tmo} s: $(for p in $left; do tr '\0' ' ' <"/proc/$p/cmdline"; echo; done)"
}

# sl_dtrain_sbatch RECIPE [overrides...] (one of them job.run_dir=DIR): `dtrain sbatch` on node 0, from
# this directory; SL_JOB is the job id, SL_OUT its output file (DIR/slurm-<id>.out, the default).
sl_dtrain_sbatch() {
  local run="" a
  for a in "$@"; do [[ $a == job.run_dir=* ]] && run=${a#job.run_dir=}; done
  [[ -n $run ]] || fail "sl_dtrain_sbatch: give job.run_dir="
  sl 0 "$DTRAIN" sbatch "$@" >"$SL_TMP/sbatch.log" 2>&1 || fail "dtrain sbatch $*: $(cat "$SL_TMP/sbatch.log")"
  SL_JOB=$(sed -n 's/^Submitted batch job \([0-9]*\).*/\1/p' "$SL_TMP/sbatch.log")
  [[ -n $SL_JOB ]] || fail "dtrain sbatch printed no job id: $(cat "$SL_TMP/sbatch.log")"
  SL_OUT=$run/slurm-$SL_JOB.out
}
