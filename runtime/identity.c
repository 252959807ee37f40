/* Who this process is: rank, world size, node and where the job's store lives, read from whichever
 * launcher started it (dtrain launch, torchrun-style, Open MPI's mpirun, Slurm's srun) or none. Pure:
 * reads an environment array (or this process's), starts nothing. Also Slurm's hostlist syntax. */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/check.h"
#include "common/param.h"
#include "runtime/runtime_internal.h"

const char *dtr_launcher_name(dtr_launcher_kind k) {
  static const char *const names[] = {"single", "dtrain", "torchrun", "mpirun", "slurm"};
  return (unsigned)k < sizeof names / sizeof names[0] ? names[k] : "?launcher";
}

/* Store ports derived from a job id fall in [DERIVED_PORT_BASE, DERIVED_PORT_BASE + DERIVED_PORT_SPAN):
 * below the Linux ephemeral range (32768+) so the kernel never hands one out to a client socket. */
#define DERIVED_PORT_BASE 20000
#define DERIVED_PORT_SPAN 10000
#define MAX_HOSTS 65536

static dtr_result failv(char *err, size_t errcap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static dtr_result failv(char *err, size_t errcap, const char *fmt, ...) {
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  return dtr__fail(err, errcap, DTR_ERR_INVALID, "%s", msg);
}

/* Strict decimal integer in [lo, hi]. */
static int parse_int(const char *s, long lo, long hi, int *out) {
  if (!s || !*s) return 0;
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno || *end || end == s || v < lo || v > hi) return 0;
  *out = (int)v;
  return 1;
}

static uint32_t fnv1a(const char *s) {
  uint32_t h = 2166136261u;
  for (; *s; s++) h = (h ^ (unsigned char)*s) * 16777619u;
  return h;
}

/* The store port for launchers that bring none: DTRAIN_STORE_PORT, else MASTER_PORT + 1 (MASTER_PORT
 * itself belongs to torchrun's agent store or the program's own TCPStore), else one derived from the
 * job id (jobid NULL: 0, "not known"). */
static dtr_result store_port(char *const *envp, const char *jobid, const char *who, int *port, char *err,
                             size_t errcap) {
  int p;
  if (dtr__param_env(envp, "DTRAIN_STORE_PORT")) {
    DTR_CHECK(dtr__param_env_int(envp, "DTRAIN_STORE_PORT", 1, 65535, 0, 0, &p, who, err, errcap));
    *port = p;
    return DTR_OK;
  }
  if (dtr__param_env(envp, "MASTER_PORT")) {
    DTR_CHECK(dtr__param_env_int(envp, "MASTER_PORT", 1, 65534, 0, 0, &p, who, err, errcap));
    *port = p + 1;
    return DTR_OK;
  }
  *port = jobid ? DERIVED_PORT_BASE + (int)(fnv1a(jobid) % DERIVED_PORT_SPAN) : 0;
  return DTR_OK;
}

static dtr_result set_host(dtr_identity *id, const char *host, const char *var, const char *who, char *err,
                           size_t errcap) {
  size_t n = strlen(host);
  if (n == 0 || n >= sizeof id->store_host)
    return failv(err, errcap, "%s environment: %s='%.64s' is not a host name", who, var, host);
  memcpy(id->store_host, host, n + 1);
  return DTR_OK;
}

/* DTRAIN_STORE is host:port, host:port with an IPv6 host in brackets ([::1]:29400). */
static dtr_result parse_store(const char *v, dtr_identity *id, char *err, size_t errcap) {
  const char *colon = strrchr(v, ':');
  const char *h = v, *he = colon;
  if (v[0] == '[') {
    const char *rb = strchr(v, ']');
    if (!rb || rb[1] != ':')
      return failv(err, errcap, "dtrain environment: DTRAIN_STORE='%.64s' is not [host]:port", v);
    h = v + 1, he = rb, colon = rb + 1;
  }
  if (!colon || he == h || (size_t)(he - h) >= sizeof id->store_host)
    return failv(err, errcap, "dtrain environment: DTRAIN_STORE='%.64s' is not host:port", v);
  if (!parse_int(colon + 1, 1, 65535, &id->store_port))
    return failv(err, errcap, "dtrain environment: DTRAIN_STORE='%.64s' has no port in [1, 65535]", v);
  memcpy(id->store_host, h, (size_t)(he - h));
  id->store_host[he - h] = 0;
  return DTR_OK;
}

/* Slurm's tasks-per-node list, e.g. "2(x3),1": the count for node `node`. */
static int tasks_on_node(const char *list, int node, int *out) {
  const char *p = list;
  int at = 0;
  while (*p) {
    char *end;
    long c = strtol(p, &end, 10), rep = 1;
    if (end == p || c < 1) return 0;
    p = end;
    if (*p == '(') {
      if (p[1] != 'x') return 0;
      rep = strtol(p + 2, &end, 10);
      if (end == p + 2 || *end != ')' || rep < 1) return 0;
      p = end + 1;
    }
    if (node < at + rep) {
      *out = (int)c;
      return 1;
    }
    at += (int)rep;
    if (*p == ',')
      p++;
    else if (*p)
      return 0;
  }
  return 0;
}

static dtr_result check_ranges(const dtr_identity *id, const char *who, const char *rank_var,
                               const char *world_var, const char *local_var, const char *node_var, char *err,
                               size_t errcap) {
  if (id->rank >= id->world_size)
    return failv(err, errcap, "%s environment: %s=%d is not below %s=%d", who, rank_var, id->rank, world_var,
                 id->world_size);
  if (id->local_rank >= id->local_world_size)
    return failv(err, errcap, "%s environment: %s=%d is not below the %d ranks on this node", who, local_var,
                 id->local_rank, id->local_world_size);
  if (id->local_world_size > id->world_size)
    return failv(err, errcap, "%s environment: %d ranks on this node but %s=%d", who, id->local_world_size,
                 world_var, id->world_size);
  if (id->node_rank >= id->nnodes)
    return failv(err, errcap, "%s environment: %s=%d is not below the %d nodes", who, node_var, id->node_rank,
                 id->nnodes);
  return DTR_OK;
}

static dtr_result from_dtrain(char *const *envp, dtr_identity *id, char *err, size_t errcap) {
  const char *w = "dtrain";
  id->launcher = DTR_LAUNCHER_DTRAIN;
  DTR_CHECK(parse_store(dtr__param_env(envp, "DTRAIN_STORE"), id, err, errcap));
  DTR_CHECK(dtr__param_env_int(envp, "RANK", 0, INT_MAX, 0, 0, &id->rank, w, err, errcap));
  DTR_CHECK(dtr__param_env_int(envp, "WORLD_SIZE", 1, INT_MAX, 0, 0, &id->world_size, w, err, errcap));
  DTR_CHECK(dtr__param_env_int(envp, "LOCAL_RANK", 0, INT_MAX, id->rank, 1, &id->local_rank, w, err, errcap));
  DTR_CHECK(dtr__param_env_int(envp, "LOCAL_WORLD_SIZE", 1, INT_MAX, id->world_size, 1, &id->local_world_size,
                               w, err, errcap));
  const char *nr = dtr__param_env(envp, "DTRAIN_NODE_RANK") ? "DTRAIN_NODE_RANK" : "GROUP_RANK";
  const char *nn = dtr__param_env(envp, "DTRAIN_NNODES") ? "DTRAIN_NNODES" : "GROUP_WORLD_SIZE";
  DTR_CHECK(dtr__param_env_int(envp, nr, 0, INT_MAX, 0, 1, &id->node_rank, w, err, errcap));
  DTR_CHECK(dtr__param_env_int(envp, nn, 1, INT_MAX, 1, 1, &id->nnodes, w, err, errcap));
  id->store_is_ours = 0;
  return check_ranges(id, w, "RANK", "WORLD_SIZE", "LOCAL_RANK", nr, err, errcap);
}

static dtr_result from_torchrun(char *const *envp, dtr_identity *id, char *err, size_t errcap) {
  const char *w = "torchrun-style";
  id->launcher = DTR_LAUNCHER_TORCHRUN;
  DTR_CHECK(dtr__param_env_int(envp, "RANK", 0, INT_MAX, 0, 0, &id->rank, w, err, errcap));
  DTR_CHECK(dtr__param_env_int(envp, "WORLD_SIZE", 1, INT_MAX, 0, 0, &id->world_size, w, err, errcap));
  DTR_CHECK(dtr__param_env_int(envp, "LOCAL_RANK", 0, INT_MAX, id->rank, 1, &id->local_rank, w, err, errcap));
  DTR_CHECK(dtr__param_env_int(envp, "LOCAL_WORLD_SIZE", 1, INT_MAX, id->world_size, 1, &id->local_world_size,
                               w, err, errcap));
  DTR_CHECK(dtr__param_env_int(envp, "GROUP_RANK", 0, INT_MAX, 0, 1, &id->node_rank, w, err, errcap));
  DTR_CHECK(dtr__param_env_int(envp, "GROUP_WORLD_SIZE", 1, INT_MAX, 1, 1, &id->nnodes, w, err, errcap));
  DTR_CHECK(check_ranges(id, w, "RANK", "WORLD_SIZE", "LOCAL_RANK", "GROUP_RANK", err, errcap));
  const char *addr = dtr__param_env(envp, "MASTER_ADDR");
  if (!addr && id->world_size > 1) return failv(err, errcap, "%s environment: MASTER_ADDR is not set", w);
  DTR_CHECK(set_host(id, addr ? addr : "127.0.0.1", "MASTER_ADDR", w, err, errcap));
  if (!dtr__param_env(envp, "MASTER_PORT") && !dtr__param_env(envp, "DTRAIN_STORE_PORT") &&
      id->world_size > 1)
    return failv(err, errcap, "%s environment: MASTER_PORT is not set (nor DTRAIN_STORE_PORT)", w);
  DTR_CHECK(store_port(envp, NULL, w, &id->store_port, err, errcap));
  id->store_is_ours = 1;
  return DTR_OK;
}

static dtr_result from_mpirun(char *const *envp, dtr_identity *id, char *err, size_t errcap) {
  const char *w = "Open MPI";
  id->launcher = DTR_LAUNCHER_MPIRUN;
  DTR_CHECK(dtr__param_env_int(envp, "OMPI_COMM_WORLD_RANK", 0, INT_MAX, 0, 0, &id->rank, w, err, errcap));
  DTR_CHECK(
      dtr__param_env_int(envp, "OMPI_COMM_WORLD_SIZE", 1, INT_MAX, 0, 0, &id->world_size, w, err, errcap));
  DTR_CHECK(dtr__param_env_int(envp, "OMPI_COMM_WORLD_LOCAL_RANK", 0, INT_MAX, 0, 1, &id->local_rank, w, err,
                               errcap));
  DTR_CHECK(dtr__param_env_int(envp, "OMPI_COMM_WORLD_LOCAL_SIZE", 1, INT_MAX, id->world_size, 1,
                               &id->local_world_size, w, err, errcap));
  /* Open MPI names no node index; with its default by-slot mapping (every node full before the next)
   * rank / local size is it. */
  id->node_rank = id->rank / id->local_world_size;
  id->nnodes = (id->world_size + id->local_world_size - 1) / id->local_world_size;
  DTR_CHECK(check_ranges(id, w, "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK",
                         "OMPI_COMM_WORLD_RANK", err, errcap));
  /* The store (backend host only): MASTER_ADDR, else loopback when every rank is on this node; left
   * empty (dtr_init then asks for MASTER_ADDR) when the ranks span nodes. */
  const char *addr = dtr__param_env(envp, "MASTER_ADDR");
  if (addr)
    DTR_CHECK(set_host(id, addr, "MASTER_ADDR", w, err, errcap));
  else if (id->local_world_size == id->world_size)
    snprintf(id->store_host, sizeof id->store_host, "127.0.0.1");
  const char *job = dtr__param_env(envp, "OMPI_MCA_ess_base_jobid");
  if (!job) job = dtr__param_env(envp, "PMIX_NAMESPACE");
  DTR_CHECK(store_port(envp, job, w, &id->store_port, err, errcap));
  id->store_is_ours = 1;
  return DTR_OK;
}

static dtr_result from_slurm(char *const *envp, dtr_identity *id, char *err, size_t errcap) {
  const char *w = "Slurm";
  id->launcher = DTR_LAUNCHER_SLURM;
  const char *nt = !dtr__param_env(envp, "SLURM_NTASKS") && dtr__param_env(envp, "SLURM_NPROCS")
                       ? "SLURM_NPROCS"
                       : "SLURM_NTASKS";
  const char *nn = dtr__param_env(envp, "SLURM_STEP_NUM_NODES") ? "SLURM_STEP_NUM_NODES" : "SLURM_NNODES";
  DTR_CHECK(dtr__param_env_int(envp, "SLURM_PROCID", 0, INT_MAX, 0, 0, &id->rank, w, err, errcap));
  DTR_CHECK(dtr__param_env_int(envp, nt, 1, INT_MAX, 0, 0, &id->world_size, w, err, errcap));
  DTR_CHECK(dtr__param_env_int(envp, "SLURM_LOCALID", 0, INT_MAX, 0, 1, &id->local_rank, w, err, errcap));
  DTR_CHECK(dtr__param_env_int(envp, "SLURM_NODEID", 0, INT_MAX, 0, 1, &id->node_rank, w, err, errcap));
  DTR_CHECK(dtr__param_env_int(envp, nn, 1, INT_MAX, 1, 1, &id->nnodes, w, err, errcap));
  const char *tpn_var = dtr__param_env(envp, "SLURM_STEP_TASKS_PER_NODE") ? "SLURM_STEP_TASKS_PER_NODE"
                                                                          : "SLURM_TASKS_PER_NODE";
  const char *tpn = dtr__param_env(envp, tpn_var);
  if (tpn) {
    if (!tasks_on_node(tpn, id->node_rank, &id->local_world_size))
      return failv(err, errcap, "Slurm environment: %s='%.64s' is malformed or names no count for node %d",
                   tpn_var, tpn, id->node_rank);
  } else {
    id->local_world_size = id->nnodes == 1 ? id->world_size : id->local_rank + 1;
  }
  DTR_CHECK(check_ranges(id, w, "SLURM_PROCID", nt, "SLURM_LOCALID", "SLURM_NODEID", err, errcap));

  /* Rank 0 runs on the first node of the step; MASTER_ADDR overrides (a name the nodes resolve). */
  const char *nl_var = dtr__param_env(envp, "SLURM_STEP_NODELIST")  ? "SLURM_STEP_NODELIST"
                       : dtr__param_env(envp, "SLURM_JOB_NODELIST") ? "SLURM_JOB_NODELIST"
                                                                    : "SLURM_NODELIST";
  const char *nl = dtr__param_env(envp, nl_var);
  if (nl) { /* validated even when MASTER_ADDR wins: a bad list is a bad environment */
    int n = 0;
    char e2[300] = "";
    dtr_result rc = dtr_hostlist_expand(nl, NULL, 0, &n, e2, sizeof e2); /* count first */
    char(*names)[256] = rc == DTR_OK ? malloc(sizeof *names * (size_t)n) : NULL;
    if (rc == DTR_OK && !names) return dtr__fail(err, errcap, DTR_ERR_NOMEM, "out of memory");
    if (rc == DTR_OK) rc = dtr_hostlist_expand(nl, names, n, &n, e2, sizeof e2);
    if (rc != DTR_OK) {
      free(names);
      return failv(err, errcap, "Slurm environment: %s: %s", nl_var, e2);
    }
    if (n < id->nnodes) {
      free(names);
      return failv(err, errcap, "Slurm environment: %s='%.64s' names %d hosts but %s=%d", nl_var, nl, n, nn,
                   id->nnodes);
    }
    if (!dtr__param_env(envp, "MASTER_ADDR")) memcpy(id->store_host, names[0], sizeof id->store_host);
    free(names);
  }
  const char *addr = dtr__param_env(envp, "MASTER_ADDR");
  if (addr) DTR_CHECK(set_host(id, addr, "MASTER_ADDR", w, err, errcap));
  if (!id->store_host[0] && id->nnodes == 1) snprintf(id->store_host, sizeof id->store_host, "127.0.0.1");
  char job[160] = "", *jobp = NULL;
  const char *jid = dtr__param_env(envp, "SLURM_JOB_ID"), *sid = dtr__param_env(envp, "SLURM_STEP_ID");
  if (!jid) jid = dtr__param_env(envp, "SLURM_JOBID");
  if (!sid) sid = dtr__param_env(envp, "SLURM_STEPID");
  if (jid) {
    snprintf(job, sizeof job, "%.64s.%.64s", jid, sid ? sid : "0");
    jobp = job;
  }
  DTR_CHECK(store_port(envp, jobp, w, &id->store_port, err, errcap));
  id->store_is_ours = 1;
  return DTR_OK;
}

dtr_result dtr_identity_from_env(char *const *envp, dtr_identity *out, char *err, size_t errcap) {
  if (!out) return dtr__fail(err, errcap, DTR_ERR_INVALID, "dtr_identity_from_env: out is NULL");
  memset(out, 0, sizeof *out);
  dtr_identity id = {.launcher = DTR_LAUNCHER_SINGLE, .world_size = 1, .local_world_size = 1, .nnodes = 1};
  dtr_result rc;
  if (dtr__param_env(envp, "DTRAIN_STORE"))
    rc = from_dtrain(envp, &id, err, errcap);
  else if (dtr__param_env(envp, "RANK") || dtr__param_env(envp, "WORLD_SIZE"))
    rc = from_torchrun(envp, &id, err, errcap);
  else if (dtr__param_env(envp, "OMPI_COMM_WORLD_RANK") || dtr__param_env(envp, "OMPI_COMM_WORLD_SIZE"))
    rc = from_mpirun(envp, &id, err, errcap);
  else if (dtr__param_env(envp, "SLURM_PROCID"))
    rc = from_slurm(envp, &id, err, errcap);
  else
    rc = DTR_OK;
  if (rc == DTR_OK) *out = id;
  return rc;
}

void dtr__identity_token(char *const *envp, const dtr_identity *id, char *buf, size_t cap) {
  const char *t = dtr__param_env(envp, "DTRAIN_JOB_TOKEN");
  if (t && strlen(t) <= DTR_STORE_MAX_TOKEN) {
    snprintf(buf, cap, "%s", t);
    return;
  }
  const char *job = dtr__param_env(envp, "TORCHELASTIC_RUN_ID");
  if (!job) job = dtr__param_env(envp, "SLURM_JOB_ID");
  if (!job) job = dtr__param_env(envp, "OMPI_MCA_ess_base_jobid");
  if (!job) job = dtr__param_env(envp, "PMIX_NAMESPACE");
  snprintf(buf, cap, "dtrain-%s-%.64s-%.64s-%d", dtr_launcher_name(id->launcher), job ? job : "nojob",
           id->store_host, id->store_port);
}

/* ---------------------------------------------------------------- Slurm hostlists */

typedef struct expander {
  char (*names)[256];
  int cap, n;
  char *err;
  size_t errcap;
} expander;

static dtr_result emit(expander *x, const char *name, const char *item) {
  if (!*name) return failv(x->err, x->errcap, "hostlist: empty host name in '%.64s'", item);
  if (x->names) {
    if (x->n >= x->cap)
      return failv(x->err, x->errcap, "hostlist: more than %d names (at '%.64s')", x->cap, item);
    snprintf(x->names[x->n], 256, "%s", name);
  } else if (x->n >= MAX_HOSTS) {
    return failv(x->err, x->errcap, "hostlist: more than %d names (at '%.64s')", MAX_HOSTS, item);
  }
  x->n++;
  return DTR_OK;
}

/* Expand `rest` (one item, brackets possibly nested one after another: "r[1-2]-n[01-02]") after the
 * already expanded prefix. */
static dtr_result expand_item(expander *x, const char *item, char *prefix, size_t plen, const char *rest) {
  const char *lb = strchr(rest, '[');
  const char *rb0 = strchr(rest, ']');
  if (!lb) {
    if (rb0) return failv(x->err, x->errcap, "hostlist: ']' without '[' in '%.64s'", item);
    size_t rl = strlen(rest);
    if (plen + rl >= 256) return failv(x->err, x->errcap, "hostlist: name longer than 255 in '%.64s'", item);
    memcpy(prefix + plen, rest, rl + 1);
    return emit(x, prefix, item);
  }
  if (rb0 && rb0 < lb) return failv(x->err, x->errcap, "hostlist: ']' without '[' in '%.64s'", item);
  const char *rb = strchr(lb, ']');
  if (!rb) return failv(x->err, x->errcap, "hostlist: '[' without ']' in '%.64s'", item);
  if (memchr(lb + 1, '[', (size_t)(rb - lb - 1)))
    return failv(x->err, x->errcap, "hostlist: nested '[' in '%.64s'", item);
  size_t head = (size_t)(lb - rest);
  if (plen + head >= 256) return failv(x->err, x->errcap, "hostlist: name longer than 255 in '%.64s'", item);
  memcpy(prefix + plen, rest, head);
  plen += head;
  if (rb == lb + 1) return failv(x->err, x->errcap, "hostlist: empty range '[]' in '%.64s'", item);
  /* ranges: "01-04,07" */
  const char *p = lb + 1;
  while (p < rb) {
    const char *q = p;
    while (q < rb && *q != ',') q++;
    /* one range p..q: LO or LO-HI, decimal, LO's width pads */
    const char *dash = memchr(p, '-', (size_t)(q - p));
    const char *lo_e = dash ? dash : q;
    size_t width = (size_t)(lo_e - p);
    if (width == 0 || width > 9 || (dash && (q - dash - 1 == 0 || q - dash - 1 > 9)))
      return failv(x->err, x->errcap, "hostlist: bad range '%.*s' in '%.64s'", (int)(q - p), p, item);
    for (const char *c = p; c < q; c++)
      if (c != dash && !isdigit((unsigned char)*c))
        return failv(x->err, x->errcap, "hostlist: bad range '%.*s' in '%.64s' (digits expected)",
                     (int)(q - p), p, item);
    long lo = strtol(p, NULL, 10), hi = dash ? strtol(dash + 1, NULL, 10) : lo;
    if (hi < lo)
      return failv(x->err, x->errcap, "hostlist: range '%.*s' runs backwards in '%.64s'", (int)(q - p), p,
                   item);
    if (hi - lo >= MAX_HOSTS)
      return failv(x->err, x->errcap, "hostlist: range '%.*s' is too long in '%.64s'", (int)(q - p), p, item);
    for (long v = lo; v <= hi; v++) {
      char num[16];
      int nl = snprintf(num, sizeof num, "%0*ld", (int)width, v);
      if (plen + (size_t)nl >= 256)
        return failv(x->err, x->errcap, "hostlist: name longer than 255 in '%.64s'", item);
      memcpy(prefix + plen, num, (size_t)nl + 1);
      DTR_CHECK(expand_item(x, item, prefix, plen + (size_t)nl, rb + 1));
    }
    if (q < rb && q + 1 == rb)
      return failv(x->err, x->errcap, "hostlist: empty range after ',' in '%.64s'", item);
    p = q < rb ? q + 1 : q;
  }
  return DTR_OK;
}

dtr_result dtr_hostlist_expand(const char *list, char (*names)[256], int cap, int *n, char *err,
                               size_t errcap) {
  if (n) *n = 0;
  if (!list || !n) return dtr__fail(err, errcap, DTR_ERR_INVALID, "hostlist: list or n is NULL");
  if (!*list) return dtr__fail(err, errcap, DTR_ERR_INVALID, "hostlist: empty list");
  expander x = {names, cap, 0, err, errcap};
  char item[1024], prefix[256];
  const char *p = list;
  while (1) {
    /* one item: up to a ',' outside brackets */
    const char *q = p;
    int depth = 0;
    while (*q && !(*q == ',' && depth == 0)) {
      if (*q == '[') depth++;
      if (*q == ']') depth--;
      if (isspace((unsigned char)*q))
        return dtr__fail(err, errcap, DTR_ERR_INVALID, "hostlist: white space in '%.64s'", list);
      q++;
    }
    size_t len = (size_t)(q - p);
    if (len == 0)
      return dtr__fail(err, errcap, DTR_ERR_INVALID, "hostlist: empty name at offset %d of '%.64s'",
                       (int)(p - list), list);
    if (len >= sizeof item)
      return dtr__fail(err, errcap, DTR_ERR_INVALID, "hostlist: item too long in '%.64s'", list);
    memcpy(item, p, len);
    item[len] = 0;
    DTR_CHECK(expand_item(&x, item, prefix, 0, item));
    if (!*q) break;
    p = q + 1;
  }
  *n = x.n;
  return DTR_OK;
}
