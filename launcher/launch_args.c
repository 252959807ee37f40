/* Parsing and validation of `dtrain launch` flags. torchrun users type --nproc_per_node as often as
 * --nproc-per-node, and `--flag=value` as often as `--flag value`, so every spelling is accepted; every
 * rejection names the flag and the offending value. */
#define _GNU_SOURCE
#include "launcher/launch_args.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/check.h"
#include "common/device.h"
#include "common/log.h"
#include "common/sock.h"

enum kind { K_BOOL, K_STR };

enum flag_id {
  F_NNODES,
  F_NPROC,
  F_NODE_RANK,
  F_RDZV_ENDPOINT,
  F_RDZV_ID,
  F_RDZV_BACKEND,
  F_RDZV_CONF,
  F_RDZV_TIMEOUT,
  F_STANDALONE,
  F_MAX_RESTARTS,
  F_MONITOR_INTERVAL,
  F_LOG_DIR,
  F_TEE,
  F_REDIRECTS,
  F_MASTER_ADDR,
  F_MASTER_PORT,
  F_GRACE,
  F_ERROR_FILE,
  F_ROLE,
  F_NO_PYTHON,
  F_MODULE,
  F_START_METHOD,
  F_HELP,
};

typedef struct flag {
  const char *name; /* dash spelling without the leading "--" */
  char shortname;   /* 0 when none */
  enum kind kind;
  enum flag_id id;
} flag;

static const flag flags[] = {
    {"nnodes", 0, K_STR, F_NNODES},
    {"nproc-per-node", 0, K_STR, F_NPROC},
    {"node-rank", 0, K_STR, F_NODE_RANK},
    {"rdzv-endpoint", 0, K_STR, F_RDZV_ENDPOINT},
    {"rdzv-id", 0, K_STR, F_RDZV_ID},
    {"rdzv-backend", 0, K_STR, F_RDZV_BACKEND},
    {"rdzv-conf", 0, K_STR, F_RDZV_CONF},
    {"rdzv-timeout", 0, K_STR, F_RDZV_TIMEOUT},
    {"standalone", 0, K_BOOL, F_STANDALONE},
    {"max-restarts", 0, K_STR, F_MAX_RESTARTS},
    {"monitor-interval", 0, K_STR, F_MONITOR_INTERVAL},
    {"log-dir", 0, K_STR, F_LOG_DIR},
    {"tee", 't', K_STR, F_TEE},
    {"redirects", 'r', K_STR, F_REDIRECTS},
    {"master-addr", 0, K_STR, F_MASTER_ADDR},
    {"master-port", 0, K_STR, F_MASTER_PORT},
    {"grace-period", 0, K_STR, F_GRACE},
    {"error-file", 0, K_STR, F_ERROR_FILE},
    {"role", 0, K_STR, F_ROLE},
    {"no-python", 0, K_BOOL, F_NO_PYTHON},
    {"module", 'm', K_BOOL, F_MODULE},
    {"start-method", 0, K_STR, F_START_METHOD},
    {"help", 'h', K_BOOL, F_HELP},
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
      "                            workers on this node (default 1); cpu = CPU count, gpu = GPU count,\n"
      "                            auto = GPU count, or CPU count without GPUs\n"
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
      "                            silent for DTRAIN_HEARTBEAT_TIMEOUT_MS (default 5000) is declared dead\n"
      "  --grace-period SECONDS    SIGTERM to SIGKILL delay when stopping workers (default 5)\n"
      "  --error-file PATH         write the first failure as JSON here (default $TORCHELASTIC_ERROR_FILE,\n"
      "                            or LOG_DIR/RUN_ID/error.json with --log-dir)\n"
      "  TERM, INT, HUP and QUIT stop the whole job (exit 128+signal); USR1 and USR2 are forwarded.\n"
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
      "  -h, --help                this text\n"
      "\n"
      "Workers get torchrun's environment (RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, GROUP_RANK,\n"
      "GROUP_WORLD_SIZE, ROLE_RANK, ROLE_WORLD_SIZE, ROLE_NAME, MASTER_ADDR, MASTER_PORT,\n"
      "TORCHELASTIC_RESTART_COUNT, TORCHELASTIC_MAX_RESTARTS, TORCHELASTIC_RUN_ID, OMP_NUM_THREADS=1 if\n"
      "unset) plus DTRAIN_STORE, DTRAIN_RUN_ID, DTRAIN_RESTART_COUNT, DTRAIN_ATTEMPT, DTRAIN_JOB_TOKEN,\n"
      "DTRAIN_NODE_RANK and DTRAIN_NNODES. The job token comes from DTRAIN_JOB_TOKEN; without it one node\n"
      "uses a random token and several nodes derive one from --rdzv-id (not secret: set DTRAIN_JOB_TOKEN).\n"
      "\n"
      "Exit status: 0 when every rank exited 0; the first failed rank's code (128+N for signal N);\n"
      "1 for dtrain's own errors; 2 for bad flags; 126/127 for a non-executable or missing PROGRAM.\n",
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

dtr_result dtr__launch_parse_nproc(const char *v, int *out, char *err, size_t cap) {
  long n;
  if (strcmp(v, "cpu") == 0) {
    long c = sysconf(_SC_NPROCESSORS_ONLN);
    *out = c > 0 ? (int)c : 1;
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
    long c = sysconf(_SC_NPROCESSORS_ONLN);
    *out = c > 0 ? (int)c : 1;
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
  a->tee = 3;
  a->redirects = 0;
  a->master_port = -1;
  strcpy(a->role, "default");
  strcpy(a->rdzv_backend, "c10d");
}

/* Apply one flag with its value (NULL for booleans). */
static dtr_result apply(dtr_launch_args *a, const flag *f, const char *v, char *err, size_t cap) {
  long n;
  double s;
  switch (f->id) {
    case F_NNODES:
      return parse_nnodes(v, &a->nnodes_min, &a->nnodes_max, err, cap);
    case F_NPROC:
      return dtr__launch_parse_nproc(v, &a->nproc_per_node, err, cap);
    case F_NODE_RANK:
      if (parse_int(v, 0, 1L << 20, &n) != 0)
        return dtr__fail(err, cap, DTR_ERR_INVALID, "--node-rank: '%s' is not a non-negative integer", v);
      a->node_rank = (int)n;
      return DTR_OK;
    case F_RDZV_ENDPOINT:
      return copy_str(a->rdzv_endpoint, sizeof a->rdzv_endpoint, v, f->name, err, cap);
    case F_RDZV_ID: {
      DTR_CHECK(copy_str(a->rdzv_id, sizeof a->rdzv_id, v, f->name, err, cap));
      for (const char *p = v; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '-' ||
              *p == '_' || *p == '.'))
          return dtr__fail(err, cap, DTR_ERR_INVALID,
                           "--rdzv-id: '%s' may only contain letters, digits, '.', '_' and '-'", v);
      if (strcmp(v, ".") == 0 || strcmp(v, "..") == 0)
        return dtr__fail(err, cap, DTR_ERR_INVALID, "--rdzv-id: '%s' is not a usable id", v);
      return DTR_OK;
    }
    case F_RDZV_BACKEND:
      if (strcmp(v, "c10d") && strcmp(v, "static") && strcmp(v, "dtrain"))
        return dtr__fail(
            err, cap, DTR_ERR_INVALID,
            "--rdzv-backend: '%s' is not supported (dtrain's own store serves c10d, static, dtrain)", v);
      strcpy(a->rdzv_backend, v);
      return DTR_OK;
    case F_RDZV_CONF:
      return parse_rdzv_conf(v, a, err, cap);
    case F_RDZV_TIMEOUT:
      if (parse_seconds(v, 0, &s) != 0 || s <= 0)
        return dtr__fail(err, cap, DTR_ERR_INVALID,
                         "--rdzv-timeout: '%s' is not a positive number of seconds", v);
      a->rdzv_timeout = s;
      return DTR_OK;
    case F_STANDALONE:
      a->standalone = 1;
      return DTR_OK;
    case F_MAX_RESTARTS:
      if (parse_int(v, 0, 1000000, &n) != 0)
        return dtr__fail(err, cap, DTR_ERR_INVALID, "--max-restarts: '%s' is not a non-negative integer", v);
      a->max_restarts = (int)n;
      return DTR_OK;
    case F_MONITOR_INTERVAL:
      if (parse_seconds(v, 0, &s) != 0 || s < 0.001 || s > 3600)
        return dtr__fail(err, cap, DTR_ERR_INVALID,
                         "--monitor-interval: '%s' is not a number of seconds between 0.001 and 3600", v);
      a->monitor_interval = s;
      return DTR_OK;
    case F_LOG_DIR:
      return copy_str(a->log_dir, sizeof a->log_dir, v, f->name, err, cap);
    case F_TEE:
    case F_REDIRECTS:
      if (parse_int(v, 0, 3, &n) != 0)
        return dtr__fail(err, cap, DTR_ERR_INVALID,
                         "--%s: '%s' is not 0-3 (0 none, 1 stdout, 2 stderr, 3 both)", f->name, v);
      if (f->id == F_TEE)
        a->tee = (int)n;
      else
        a->redirects = (int)n;
      return DTR_OK;
    case F_MASTER_ADDR:
      return copy_str(a->master_addr, sizeof a->master_addr, v, f->name, err, cap);
    case F_MASTER_PORT:
      if (parse_int(v, 1, 65535, &n) != 0)
        return dtr__fail(err, cap, DTR_ERR_INVALID, "--master-port: '%s' is not a port (1-65535)", v);
      a->master_port = (int)n;
      return DTR_OK;
    case F_GRACE:
      if (parse_seconds(v, 0, &s) != 0)
        return dtr__fail(err, cap, DTR_ERR_INVALID,
                         "--grace-period: '%s' is not a non-negative number of seconds", v);
      a->grace_period = s;
      return DTR_OK;
    case F_ERROR_FILE:
      return copy_str(a->error_file, sizeof a->error_file, v, f->name, err, cap);
    case F_ROLE:
      return copy_str(a->role, sizeof a->role, v, f->name, err, cap);
    case F_NO_PYTHON:
      a->no_python = 1;
      return DTR_OK;
    case F_MODULE:
      a->module = 1;
      return DTR_OK;
    case F_START_METHOD:
      if (strcmp(v, "spawn") && strcmp(v, "fork") && strcmp(v, "forkserver"))
        return dtr__fail(err, cap, DTR_ERR_INVALID, "--start-method: '%s' is not spawn, fork or forkserver",
                         v);
      return DTR_OK;
    case F_HELP:
      a->help = 1;
      return DTR_OK;
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

static const flag *find_long(const char *name, size_t len) {
  char norm[64];
  if (len >= sizeof norm) return NULL;
  for (size_t i = 0; i < len; i++) norm[i] = name[i] == '_' ? '-' : name[i];
  norm[len] = '\0';
  for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++)
    if (strcmp(flags[i].name, norm) == 0) return &flags[i];
  return NULL;
}

static const flag *find_short(char c) {
  for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++)
    if (flags[i].shortname == c) return &flags[i];
  return NULL;
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
    const flag *f;
    const char *val = NULL;
    if (arg[1] == '-') {
      const char *name = arg + 2;
      const char *eq = strchr(name, '=');
      size_t len = eq ? (size_t)(eq - name) : strlen(name);
      f = find_long(name, len);
      if (!f) {
        return dtr__fail(err, cap, DTR_ERR_INVALID, "unknown flag '%.*s' (see dtrain launch --help)",
                         (int)(len + 2 > 200 ? 200 : len + 2), arg);
      }
      if (eq) {
        if (f->kind == K_BOOL)
          return dtr__fail(err, cap, DTR_ERR_INVALID, "--%s takes no value (got '%s')", f->name, arg);
        val = eq + 1;
      }
    } else {
      f = arg[2] == '\0' ? find_short(arg[1]) : NULL;
      if (!f && arg[2] != '\0' && find_short(arg[1]) && find_short(arg[1])->kind == K_STR) {
        f = find_short(arg[1]); /* -t3 */
        val = arg + 2;
      }
      if (!f)
        return dtr__fail(err, cap, DTR_ERR_INVALID, "unknown flag '%.200s' (see dtrain launch --help)", arg);
    }
    if (f->kind == K_STR && !val) {
      if (i + 1 >= argc) return dtr__fail(err, cap, DTR_ERR_INVALID, "--%s needs a value", f->name);
      val = argv[++i];
    }
    dtr_result rc = apply(a, f, val, err, cap);
    if (rc) return rc;
    if (a->help) return DTR_OK;
  }
  a->prog_argc = argc - i;
  a->prog_argv = argc > i ? argv + i : NULL;
  return validate(a, err, cap);
}
