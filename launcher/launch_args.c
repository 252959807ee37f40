/* Parsing and validation of `dtrain launch` flags. torchrun users type --nproc_per_node as often as
 * --nproc-per-node, and `--flag=value` as often as `--flag value`, so every spelling is accepted; every
 * rejection names the flag and the offending value. */
#define _GNU_SOURCE
#include "launcher/launch_args.h"

#include <errno.h>
#include <float.h>
#include <math.h>
#include <sched.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/check.h"
#include "common/device.h"
#include "common/log.h"
#include "common/param.h"
#include "common/sock.h"

/* The one table of launch flags. `dtrain launch` parses with it; `dtrain run` reads the same flags
 * (dtr__launch_flag_read) and turns those with a recipe key into overrides of the recipe. */
#define SETS(m) .field = offsetof(dtr_launch_args, m), .field_size = sizeof(((dtr_launch_args *)0)->m)

static const dtr__launch_flag flags[] = {
    {"nnodes", 0, DTR__LAUNCH_NNODES, SETS(nnodes_min) /* and nnodes_max */, .recipe_key = "launch.nnodes"},
    {"nproc-per-node", 0, DTR__LAUNCH_NPROC, SETS(nproc_per_node), .recipe_key = "launch.nproc_per_node"},
    {"node-rank", 0, DTR__LAUNCH_INT, SETS(node_rank), .lo = 0, .hi = 1 << 20,
     .what = "a non-negative integer", .recipe_key = "launch.node_rank"},
    {"rdzv-endpoint", 0, DTR__LAUNCH_STRING, SETS(rdzv_endpoint), .recipe_key = "launch.rdzv_endpoint"},
    {"rdzv-id", 0, DTR__LAUNCH_ID, SETS(rdzv_id), .recipe_key = "launch.rdzv_id"},
    {"rdzv-backend", 0, DTR__LAUNCH_CHOICE, SETS(rdzv_backend), .choices = "c10d static dtrain",
     .what = "supported (dtrain's own store serves c10d, static, dtrain)"},
    {"rdzv-conf", 0, DTR__LAUNCH_RDZV_CONF, SETS(rdzv_timeout) /* and last_call */},
    {"rdzv-timeout", 0, DTR__LAUNCH_SECONDS, SETS(rdzv_timeout), .lo = DBL_TRUE_MIN /* above 0 */, .hi = 1e9,
     .what = "a positive number of seconds"},
    {"standalone", 0, DTR__LAUNCH_SWITCH, SETS(standalone)},
    {"max-restarts", 0, DTR__LAUNCH_INT, SETS(max_restarts), .lo = 0, .hi = 1000000,
     .what = "a non-negative integer", .recipe_key = "launch.max_restarts"},
    {"monitor-interval", 0, DTR__LAUNCH_SECONDS, SETS(monitor_interval), .lo = 0.001, .hi = 3600,
     .what = "a number of seconds between 0.001 and 3600"},
    {"log-dir", 0, DTR__LAUNCH_STRING, SETS(log_dir)},
    {"tee", 't', DTR__LAUNCH_INT, SETS(tee), .lo = 0, .hi = 3,
     .what = "0-3 (0 none, 1 stdout, 2 stderr, 3 both)"},
    {"redirects", 'r', DTR__LAUNCH_INT, SETS(redirects), .lo = 0, .hi = 3,
     .what = "0-3 (0 none, 1 stdout, 2 stderr, 3 both)"},
    {"master-addr", 0, DTR__LAUNCH_STRING, SETS(master_addr)},
    {"master-port", 0, DTR__LAUNCH_INT, SETS(master_port), .lo = 1, .hi = 65535, .what = "a port (1-65535)"},
    {"grace-period", 0, DTR__LAUNCH_SECONDS, SETS(grace_period), .lo = 0, .hi = 1e9,
     .what = "a non-negative number of seconds"},
    {"stop-timeout", 0, DTR__LAUNCH_SECONDS, SETS(stop_timeout), .lo = 0, .hi = 1e9,
     .what = "a non-negative number of seconds"},
    {"max-requeues", 0, DTR__LAUNCH_INT, SETS(max_requeues), .lo = 0, .hi = 1000000,
     .what = "a non-negative integer", .recipe_key = "slurm.max_requeues"},
    {"worker-timeout", 0, DTR__LAUNCH_SECONDS, SETS(worker_timeout), .lo = 0, .hi = 1e9,
     .what = "a non-negative number of seconds (0: off)", .recipe_key = "launch.worker_timeout"},
    {"worker-start-timeout", 0, DTR__LAUNCH_SECONDS, SETS(worker_start_timeout), .lo = 0, .hi = 1e9,
     .what = "a non-negative number of seconds (0: off)", .recipe_key = "launch.worker_start_timeout"},
    {"error-file", 0, DTR__LAUNCH_STRING, SETS(error_file)},
    {"role", 0, DTR__LAUNCH_STRING, SETS(role)},
    {"no-python", 0, DTR__LAUNCH_SWITCH, SETS(no_python), .launch_only = 1},
    {"module", 'm', DTR__LAUNCH_SWITCH, SETS(module), .launch_only = 1},
    {"start-method", 0, DTR__LAUNCH_CHOICE, .choices = "spawn fork forkserver",
     .what = "spawn, fork or forkserver"},
    {"help", 'h', DTR__LAUNCH_SWITCH, SETS(help), .launch_only = 1},     /* `dtrain run` has its own -h */
    {"dry-run", 0, DTR__LAUNCH_SWITCH, SETS(dry_run), .launch_only = 1}, /* and its own --dry-run */
};

void dtr__launch_usage(FILE *f) {
  fputs(
      "usage: dtrain launch [flags] [--] PROGRAM [ARGS...]\n"
      "\n"
      "Start PROGRAM once per local rank on this node, after meeting the other nodes' agents in a\n"
      "rendezvous store; a drop-in for torchrun (dash and underscore spellings, --flag VALUE and\n"
      "--flag=VALUE are all accepted). A PROGRAM ending in .py runs under $DTRAIN_PYTHON (default python3)\n"
      "unless --no-python is given.\n"
      "\n"
      "Job shape:\n"
      "  --nnodes N|MIN:MAX        number of nodes (default 1); MIN:MAX waits up to the last-call period\n"
      "                            (DTRAIN_RDZV_LAST_CALL_MS, default 1000) for more than MIN nodes\n"
      "  --nproc-per-node N|cpu|gpu|auto\n"
      "                            workers on this node (default 1); cpu = CPU count (the CPUs this\n"
      "                            process may use; in a Slurm job at most SLURM_CPUS_ON_NODE), gpu = GPU\n"
      "                            count, auto = GPU count, or CPU count without GPUs\n"
      "  --node-rank R             ask for node rank R (default: assigned by address and host name)\n"
      "  --role NAME               ROLE_NAME for the workers (default \"default\")\n"
      "\n"
      "Rendezvous:\n"
      "  --standalone              single node: host a private store on 127.0.0.1 (an ephemeral port)\n"
      "  --rdzv-endpoint HOST[:PORT]\n"
      "                            the store (default port 29400). When HOST is this machine the agent\n"
      "                            hosts the store there unless the port is already taken by this job's\n"
      "                            store (`dtrain store` or another agent); otherwise it connects to it\n"
      "  --rdzv-id ID              job id shared by all nodes (default: random for one node, \"none\")\n"
      "  --rdzv-timeout SECONDS    give up joining or reaching the store after this (default 900)\n"
      "  --rdzv-backend NAME       accepted for torchrun compatibility: c10d, static or dtrain\n"
      "  --rdzv-conf K=V,...       join_timeout=S (same as --rdzv-timeout), last_call_timeout=S\n"
      "  --master-addr ADDR, --master-port PORT\n"
      "                            torchrun's static style: without --rdzv-endpoint, ADDR:PORT (default\n"
      "                            port 29400) is the rendezvous endpoint; workers get MASTER_ADDR=ADDR\n"
      "                            and a MASTER_PORT that node 0 found free, never PORT itself\n"
      "  With no --rdzv-endpoint and --nnodes 1, the launch is --standalone.\n"
      "\n"
      "Failures and signals:\n"
      "  --max-restarts N          restart the whole job up to N times after a worker fails (default 0)\n"
      "  --monitor-interval SECONDS\n"
      "                            heartbeat period of the agent (default 0.1); a node whose agent is\n"
      "                            silent for DTRAIN_HEARTBEAT_TIMEOUT_MS (default 2500) is declared dead,\n"
      "                            and so is the store when it does not answer for as long: the agents\n"
      "                            then move to its standby on another node (docs/store.md)\n"
      "  --grace-period SECONDS    SIGTERM to SIGKILL delay when stopping workers (default 5)\n"
      "  --worker-timeout SECONDS  a rank whose progress reports (DTRAIN_PROGRESS_FILE; the built-in "
      "trainer\n"
      "                            and dtr_progress_step make them) stop this long, while it does not wait\n"
      "                            in a collective for others, is hung: its threads are dumped, it is\n"
      "                            killed and the job restarts (default 180; 0: off)\n"
      "  --worker-start-timeout SECONDS\n"
      "                            the same limit before a rank's first step and in its slow phases\n"
      "                            (start-up, checkpoint loads and saves; default 900; 0: off)\n"
      "  --error-file PATH         write the first failure as JSON here (default $TORCHELASTIC_ERROR_FILE,\n"
      "                            or LOG_DIR/RUN_ID/error.json with --log-dir)\n"
      "  --stop-timeout SECONDS    after a stop request, workers still running this long are stopped with\n"
      "                            SIGTERM (default 60)\n"
      "  --max-requeues N          in a Slurm batch job, requeue a preempted job while its requeue count\n"
      "                            (SLURM_RESTART_COUNT) is below N (default 3)\n"
      "  USR1 and USR2 (and TERM inside a Slurm job) ask every rank to stop at its next step boundary and\n"
      "  save (DTRAIN_STOP_FILE; exit 86, or 85 after TERM); they are not forwarded. TERM (outside Slurm),\n"
      "  INT, HUP and QUIT are forwarded and stop the whole job at once (exit 128+signal).\n"
      "\n"
      "Output:\n"
      "  --log-dir DIR             also keep DIR/RUN_ID/attempt_N/rank_K.{stdout,stderr}\n"
      "  -r, --redirects 0-3       with --log-dir, keep these streams off the console (1 stdout, 2 stderr,\n"
      "                            3 both; default 0)\n"
      "  -t, --tee 0-3             streams that go to the console as well as to the files (default 3)\n"
      "  Every console line is prefixed with [NODE:RANK].\n"
      "\n"
      "Other:\n"
      "  --no-python               run PROGRAM as is even when it ends in .py\n"
      "  -m, --module              run `python -m PROGRAM`\n"
      "  --start-method NAME       accepted and ignored (workers are always fork+exec'ed)\n"
      "  --dry-run                 check the flags and PROGRAM, print what would start; start nothing\n"
      "  -h, --help                this text\n"
      "\n"
      "Workers get torchrun's environment (RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, GROUP_RANK,\n"
      "GROUP_WORLD_SIZE, ROLE_RANK, ROLE_WORLD_SIZE, ROLE_NAME, MASTER_ADDR, MASTER_PORT,\n"
      "TORCHELASTIC_RESTART_COUNT, TORCHELASTIC_MAX_RESTARTS, TORCHELASTIC_RUN_ID, OMP_NUM_THREADS=1 if\n"
      "unset) plus DTRAIN_STORE, DTRAIN_RUN_ID, DTRAIN_RESTART_COUNT, DTRAIN_ATTEMPT, DTRAIN_JOB_TOKEN,\n"
      "DTRAIN_NODE_RANK, DTRAIN_NNODES, DTRAIN_PROGRESS_FILE (the progress page, docs/environment.md),\n"
      "DTRAIN_STOP_FILE and, with --log-dir, DTRAIN_DIAG_DIR. The job token comes from DTRAIN_JOB_TOKEN;\n"
      "without it one node uses a random token and several nodes derive one from --rdzv-id (not secret:\n"
      "set DTRAIN_JOB_TOKEN), or inside Slurm from the job id and ~/.dtrain/secret (docs/slurm.md).\n"
      "Inside a Slurm job (srun --ntasks-per-node=1 dtrain launch ...) the nodes, the endpoint (the first\n"
      "node, a port from the job id) and the id (the job id) come from Slurm unless given.\n"
      "\n"
      "Exit status: 0 when every rank exited 0; the first failed rank's code (128+N for signal N) once\n"
      "the restarts are used up (1 for a hung rank or a lost node); 80 when a rank exited 80 (a permanent\n"
      "failure: the job stops at once, no restart); 81 when the same failure repeated at the same step;\n"
      "82 when this node is cut off from the job's majority (it stops so that the others go on); 85-88\n"
      "after a stop request (docs/slurm.md); 1 for dtrain's own errors; 2 for bad flags; 126/127 for a\n"
      "non-executable or missing PROGRAM.\n",
      f);
}

static int parse_int(const char *v, long lo, long hi, long *out) {
  if (!v || !*v) return -1;
  char *end;
  errno = 0;
  long x = strtol(v, &end, 10);
  if (errno || *end || x < lo || x > hi) return -1;
  *out = x;
  return 0;
}

static int parse_seconds(const char *v, double lo, double *out) {
  if (!v || !*v) return -1;
  char *end;
  errno = 0;
  double x = strtod(v, &end);
  if (errno || *end || !isfinite(x) || x < lo || x > 1e9) return -1;
  *out = x;
  return 0;
}

/* The CPUs this process may use: its affinity mask (a cpuset, Slurm's task binding), and inside a Slurm
 * job no more than the node's allocation (SLURM_CPUS_ON_NODE): on a shared node the machine's count
 * would start ranks on cores other jobs own. */
static int usable_cpus(void) {
  cpu_set_t set;
  long c = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : sysconf(_SC_NPROCESSORS_ONLN);
  long slurm = dtr__param_int("SLURM_CPUS_ON_NODE", 0);
  if (slurm > 0 && slurm < c) c = slurm;
  return c > 0 ? (int)c : 1;
}

dtr_result dtr__launch_parse_nproc(const char *v, int *out, char *err, size_t cap) {
  long n;
  if (strcmp(v, "cpu") == 0) {
    *out = usable_cpus();
    return DTR_OK;
  }
  if (strcmp(v, "gpu") == 0 || strcmp(v, "auto") == 0) {
    int g = dtr__cuda_device_count();
    if (g > 0) {
      *out = g;
      return DTR_OK;
    }
    if (strcmp(v, "gpu") == 0)
      return dtr__fail(err, cap, DTR_ERR_INVALID,
                       "--nproc-per-node gpu: no GPU found (try a number or 'cpu')");
    *out = usable_cpus();
    return DTR_OK;
  }
  if (parse_int(v, 0, 1L << 20, &n) != 0)
    return dtr__fail(err, cap, DTR_ERR_INVALID,
                     "--nproc-per-node: '%s' is not a number of workers, 'cpu', 'gpu' or 'auto'", v);
  if (n < 1) return dtr__fail(err, cap, DTR_ERR_INVALID, "--nproc-per-node must be at least 1 (got '%s')", v);
  if (n > 4096) return dtr__fail(err, cap, DTR_ERR_INVALID, "--nproc-per-node %s is more than 4096", v);
  *out = (int)n;
  return DTR_OK;
}

static dtr_result parse_nnodes(const char *v, int *mn, int *mx, char *err, size_t cap) {
  long a, b;
  const char *colon = strchr(v, ':');
  if (!colon) {
    if (parse_int(v, 1, 1L << 20, &a) != 0) goto bad;
    *mn = *mx = (int)a;
    return DTR_OK;
  }
  char left[32];
  size_t l = (size_t)(colon - v);
  if (l == 0 || l >= sizeof left) goto bad;
  memcpy(left, v, l);
  left[l] = '\0';
  if (parse_int(left, 1, 1L << 20, &a) != 0 || parse_int(colon + 1, 1, 1L << 20, &b) != 0) goto bad;
  if (a > b) return dtr__fail(err, cap, DTR_ERR_INVALID, "--nnodes %s: MIN is larger than MAX", v);
  *mn = (int)a;
  *mx = (int)b;
  return DTR_OK;
bad:
  return dtr__fail(err, cap, DTR_ERR_INVALID, "--nnodes: '%s' is not N or MIN:MAX with 1 <= MIN <= MAX", v);
}

static dtr_result copy_str(char *dst, size_t dcap, const char *v, const char *fname, char *err, size_t cap) {
  if (!*v) return dtr__fail(err, cap, DTR_ERR_INVALID, "--%s needs a non-empty value", fname);
  if (strlen(v) >= dcap) return dtr__fail(err, cap, DTR_ERR_INVALID, "--%s value is too long", fname);
  strcpy(dst, v);
  return DTR_OK;
}

static dtr_result parse_rdzv_conf(const char *v, dtr_launch_args *a, char *err, size_t cap) {
  char buf[DTR_LAUNCH_MAX_STR];
  if (strlen(v) >= sizeof buf) return dtr__fail(err, cap, DTR_ERR_INVALID, "--rdzv-conf value is too long");
  strcpy(buf, v);
  char *save = NULL;
  for (char *kv = strtok_r(buf, ",", &save); kv; kv = strtok_r(NULL, ",", &save)) {
    char *eq = strchr(kv, '=');
    if (!eq) return dtr__fail(err, cap, DTR_ERR_INVALID, "--rdzv-conf: '%s' is not KEY=VALUE", kv);
    *eq = '\0';
    double s;
    if (strcmp(kv, "join_timeout") == 0 || strcmp(kv, "last_call_timeout") == 0) {
      if (parse_seconds(eq + 1, 0, &s) != 0)
        return dtr__fail(err, cap, DTR_ERR_INVALID, "--rdzv-conf: %s='%s' is not a number of seconds", kv,
                         eq + 1);
      if (kv[0] == 'j')
        a->rdzv_timeout = s;
      else
        a->last_call = s;
    }
    /* other torchrun keys (read_timeout, is_host, timeout, ...) have no meaning here: ignored */
  }
  return DTR_OK;
}

static void set_defaults(dtr_launch_args *a) {
  memset(a, 0, sizeof *a);
  a->nnodes_min = a->nnodes_max = 1;
  a->nproc_per_node = 1;
  a->node_rank = -1;
  a->max_restarts = 0;
  a->monitor_interval = 0.1;
  a->rdzv_timeout = 900;
  a->last_call = -1;
  a->grace_period = 5;
  a->stop_timeout = 60;
  a->max_requeues = 3;
  a->worker_timeout = DTR_LAUNCH_DEFAULT_WORKER_TIMEOUT;
  a->worker_start_timeout = DTR_LAUNCH_DEFAULT_WORKER_START_TIMEOUT;
  a->tee = 3;
  a->redirects = 0;
  a->master_port = -1;
  strcpy(a->role, "default");
  strcpy(a->rdzv_backend, "c10d");
}

static int is_choice(const char *choices, const char *v) {
  size_t vl = strlen(v);
  for (const char *c = choices; *c;) {
    size_t cl = strcspn(c, " ");
    if (cl == vl && strncmp(c, v, vl) == 0) return 1;
    c += cl;
    c += strspn(c, " ");
  }
  return 0;
}

static dtr_result check_id(const char *v, char *err, size_t cap) {
  for (const char *p = v; *p; p++)
    if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '-' ||
          *p == '_' || *p == '.'))
      return dtr__fail(err, cap, DTR_ERR_INVALID,
                       "--rdzv-id: '%s' may only contain letters, digits, '.', '_' and '-'", v);
  if (strcmp(v, ".") == 0 || strcmp(v, "..") == 0)
    return dtr__fail(err, cap, DTR_ERR_INVALID, "--rdzv-id: '%s' is not a usable id", v);
  return DTR_OK;
}

/* Check one flag's value (NULL for a switch) against its table entry and store it in *a. */
static dtr_result apply(dtr_launch_args *a, const dtr__launch_flag *f, const char *v, char *err, size_t cap) {
  char *member = (char *)a + f->field;
  long n;
  double s;
  switch (f->value) {
    case DTR__LAUNCH_SWITCH:
      *(int *)member = 1;
      return DTR_OK;
    case DTR__LAUNCH_STRING:
      return copy_str(member, f->field_size, v, f->name, err, cap);
    case DTR__LAUNCH_ID:
      DTR_CHECK(copy_str(member, f->field_size, v, f->name, err, cap));
      return check_id(v, err, cap);
    case DTR__LAUNCH_CHOICE:
      if (!is_choice(f->choices, v))
        return dtr__fail(err, cap, DTR_ERR_INVALID, "--%s: '%s' is not %s", f->name, v, f->what);
      if (f->field_size) snprintf(member, f->field_size, "%s", v);
      return DTR_OK;
    case DTR__LAUNCH_INT:
      if (parse_int(v, (long)f->lo, (long)f->hi, &n) != 0)
        return dtr__fail(err, cap, DTR_ERR_INVALID, "--%s: '%s' is not %s", f->name, v, f->what);
      *(int *)member = (int)n;
      return DTR_OK;
    case DTR__LAUNCH_SECONDS:
      if (parse_seconds(v, f->lo, &s) != 0 || s > f->hi)
        return dtr__fail(err, cap, DTR_ERR_INVALID, "--%s: '%s' is not %s", f->name, v, f->what);
      *(double *)member = s;
      return DTR_OK;
    case DTR__LAUNCH_NPROC:
      return dtr__launch_parse_nproc(v, (int *)member, err, cap);
    case DTR__LAUNCH_NNODES:
      return parse_nnodes(v, &a->nnodes_min, &a->nnodes_max, err, cap);
    case DTR__LAUNCH_RDZV_CONF:
      return parse_rdzv_conf(v, a, err, cap);
  }
  return DTR_ERR_INTERNAL;
}

static dtr_result validate(dtr_launch_args *a, char *err, size_t cap) {
  if (a->prog_argc == 0)
    return dtr__fail(err, cap, DTR_ERR_INVALID,
                     "no program to run (usage: dtrain launch [flags] -- PROGRAM ARGS...)");
  if (a->standalone) {
    if (a->nnodes_max != 1)
      return dtr__fail(err, cap, DTR_ERR_INVALID, "--standalone runs one node, but --nnodes asks for %d:%d",
                       a->nnodes_min, a->nnodes_max);
    if (a->rdzv_endpoint[0]) {
      a->warned_standalone_endpoint = 1;
      a->rdzv_endpoint[0] = '\0';
    }
  }
  if (a->rdzv_endpoint[0]) {
    char perr[256];
    const char *ep = a->rdzv_endpoint;
    int has_port = ep[0] == '[' ? strstr(ep, "]:") != NULL : strchr(ep, ':') != NULL;
    if (has_port) {
      if (dtr__parse_hostport(ep, a->rdzv_host, sizeof a->rdzv_host, &a->rdzv_port, perr, sizeof perr) !=
          DTR_OK)
        return dtr__fail(err, cap, DTR_ERR_INVALID, "--rdzv-endpoint: %s", perr);
    } else {
      size_t l = strlen(ep);
      if (ep[0] == '[') {
        if (l < 3 || ep[l - 1] != ']')
          return dtr__fail(err, cap, DTR_ERR_INVALID, "--rdzv-endpoint: '%s' is not HOST[:PORT]", ep);
        memcpy(a->rdzv_host, ep + 1, l - 2);
        a->rdzv_host[l - 2] = '\0';
      } else {
        strcpy(a->rdzv_host, ep);
      }
      a->rdzv_port = DTR_LAUNCH_DEFAULT_RDZV_PORT;
    }
    if (!a->rdzv_host[0])
      return dtr__fail(err, cap, DTR_ERR_INVALID, "--rdzv-endpoint: '%s' has no host", ep);
    if (a->rdzv_port == 0)
      return dtr__fail(err, cap, DTR_ERR_INVALID, "--rdzv-endpoint: '%s' needs a real port, not 0", ep);
  }
  if (a->node_rank >= a->nnodes_max)
    return dtr__fail(err, cap, DTR_ERR_INVALID, "--node-rank %d is not below --nnodes %d", a->node_rank,
                     a->nnodes_max);
  if (a->redirects && !a->log_dir[0])
    return dtr__fail(err, cap, DTR_ERR_INVALID, "--redirects %d needs --log-dir (where would the output go?)",
                     a->redirects);
  if (a->module && a->no_python)
    return dtr__fail(err, cap, DTR_ERR_INVALID, "--module and --no-python cannot be combined");
  return DTR_OK;
}

static const dtr__launch_flag *find_long(const char *name, size_t len) {
  char norm[64];
  if (len >= sizeof norm) return NULL;
  for (size_t i = 0; i < len; i++) norm[i] = name[i] == '_' ? '-' : name[i];
  norm[len] = '\0';
  for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++)
    if (strcmp(flags[i].name, norm) == 0) return &flags[i];
  return NULL;
}

static const dtr__launch_flag *find_short(char c) {
  for (size_t i = 0; c && i < sizeof flags / sizeof flags[0]; i++)
    if (flags[i].shortname == c) return &flags[i];
  return NULL;
}

dtr_result dtr__launch_flag_read(int argc, char **argv, int *i, int for_run, const dtr__launch_flag **out,
                                 const char **value, char *err, size_t cap) {
  const char *arg = argv[*i];
  const dtr__launch_flag *f;
  const char *val = NULL;
  *out = NULL;
  *value = NULL;
  if (arg[1] == '-') {
    const char *name = arg + 2;
    const char *eq = strchr(name, '=');
    f = find_long(name, eq ? (size_t)(eq - name) : strlen(name));
    if (eq) val = eq + 1;
  } else {
    f = find_short(arg[1]);
    if (f && arg[2] != '\0') { /* -t3, -t=3; a switch takes nothing after its letter */
      if (f->value == DTR__LAUNCH_SWITCH) return DTR_OK;
      val = arg[2] == '=' ? arg + 3 : arg + 2;
    }
  }
  if (!f || (for_run && f->launch_only)) return DTR_OK;
  if (val && f->value == DTR__LAUNCH_SWITCH)
    return dtr__fail(err, cap, DTR_ERR_INVALID, "--%s takes no value (got '%s')", f->name, arg);
  if (!val && f->value != DTR__LAUNCH_SWITCH) {
    if (*i + 1 >= argc) return dtr__fail(err, cap, DTR_ERR_INVALID, "--%s needs a value", f->name);
    val = argv[++*i];
  }
  *out = f;
  *value = val;
  return DTR_OK;
}

dtr_result dtr__launch_args_parse(int argc, char **argv, dtr_launch_args *a, char *err, size_t cap) {
  set_defaults(a);
  int i = 1;
  for (; i < argc; i++) {
    const char *arg = argv[i];
    if (strcmp(arg, "--") == 0) {
      i++;
      break;
    }
    if (arg[0] != '-' || arg[1] == '\0') break; /* the program: torchrun takes it positionally too */
    const dtr__launch_flag *f;
    const char *val;
    dtr_result rc = dtr__launch_flag_read(argc, argv, &i, 0, &f, &val, err, cap);
    if (rc) return rc;
    if (!f) {
      /* a long flag is named without its =VALUE */
      size_t shown = arg[1] == '-' ? strcspn(arg, "=") : strlen(arg);
      return dtr__fail(err, cap, DTR_ERR_INVALID, "unknown flag '%.*s' (see dtrain launch --help)",
                       (int)(shown > 200 ? 200 : shown), arg);
    }
    rc = apply(a, f, val, err, cap);
    if (rc) return rc;
    if (a->help) return DTR_OK;
  }
  a->prog_argc = argc - i;
  a->prog_argv = argc > i ? argv + i : NULL;
  return validate(a, err, cap);
}
