/* The communicator core's lifecycle: create (argument checks, backend choice, a store prefix unique to
 * this instance, backend init, progress thread), split (the color/key exchange over the store),
 * abort, destroy and the accessors. Operations live in comm_ops.c, the flight recorder in
 * comm_recorder.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "collectives/comm_core.h"
#include "common/check.h"
#include "common/clock.h"
#include "common/log.h"
#include "common/param.h"

static const dtr__backend *backend_for(dtr_backend b) {
  switch (b) {
    case DTR_BACKEND_HOST:
      return &dtr__backend_host;
#ifdef DTRAIN_HAVE_CUDA
    case DTR_BACKEND_NCCL:
      return &dtr__backend_nccl;
#endif
#ifdef DTRAIN_HAVE_MPI
    case DTR_BACKEND_MPI:
      return &dtr__backend_mpi;
#endif
    default:
      return NULL;
  }
}

/* Size 1 needs no peers: on backends whose buffers are host memory the core does every operation as
 * a local copy. nccl buffers live on the GPU, so nccl always goes through its backend. */
static int runs_locally(const dtr_comm *c) {
  return c->size == 1 && c->backend_kind != DTR_BACKEND_NCCL;
}

/* A communicator with its core allocated and locks initialised; no backend state yet. */
static dtr_comm *comm_alloc(int rank, int size) {
  dtr_comm *c = calloc(1, sizeof *c);
  dtr__comm_core *k = calloc(1, sizeof *k);
  int *wr = calloc((size_t)(size > 0 ? size : 1), sizeof *wr);
  if (!c || !k || !wr) {
    free(c);
    free(k);
    free(wr);
    return NULL;
  }
  c->rank = rank;
  c->size = size;
  c->world_ranks = wr;
  c->core = k;
  atomic_init(&c->aborted, 0);
  pthread_mutex_init(&c->mu, NULL);
  pthread_mutex_init(&k->mu, NULL);
  pthread_cond_init(&k->work, NULL);
  pthread_cond_init(&k->idle, NULL);
  atomic_init(&k->err_gen, 0u);
  k->t_created = dtr__coarse_ms();
  return c;
}

/* Release everything; c may be half-built (any stage of create or split). */
static void comm_free(dtr_comm *c) {
  if (!c) return;
  dtr__comm_core *k = dtr__core(c);
  if (k) {
    dtr__core_stop(c);
    if (k->be_ready && c->be && c->be->destroy) c->be->destroy(c);
    dtr_store_close(k->dbg_store);
    pthread_cond_destroy(&k->idle);
    pthread_cond_destroy(&k->work);
    pthread_mutex_destroy(&k->mu);
    free(k);
  }
  pthread_mutex_destroy(&c->mu);
  free(c->world_ranks);
  free(c);
}

/* Debug mode needs a store connection of its own: operations may run on the progress thread, and the
 * caller's client is not thread-safe. It comes from the worker environment (DTRAIN_STORE). */
static dtr_result open_debug_store(dtr_comm *c) {
  char e[512];
  int t = c->timeout_ms < 30000 ? c->timeout_ms : 30000;
  dtr_result rc = dtr_store_connect_env(t, &dtr__core(c)->dbg_store, e, sizeof e);
  if (rc)
    return dtr__comm_fail(c, rc,
                          "DTRAIN_COMM_DEBUG=1 needs its own store connection from DTRAIN_STORE and "
                          "DTRAIN_JOB_TOKEN: %s",
                          e);
  return DTR_OK;
}

/* Backend state, then the progress thread. On failure c->err says why. */
static dtr_result comm_start(dtr_comm *c) {
  dtr__comm_core *k = dtr__core(c);
  k->local = runs_locally(c);
  if (c->debug && c->size > 1 && (c->store || c->backend_kind != DTR_BACKEND_MPI))
    DTR_CHECK(open_debug_store(c));
  if (!k->local && !k->be_ready) {
    DTR_CHECK(c->be->init(c));
    k->be_ready = 1;
  }
  return dtr__core_start(c);
}

static int name_ok(const char *name) {
  size_t n = strlen(name);
  if (n == 0 || n > 64) return 0;
  for (size_t i = 0; i < n; i++)
    if ((unsigned char)name[i] <= ' ' || name[i] == '#' || name[i] == 0x7f) return 0;
  return 1;
}

dtr_result dtr_comm_create(dtr_store *store, int rank, int size, const dtr_comm_config *cfg, dtr_comm **out,
                           char *err, size_t errcap) {
  if (err && errcap) err[0] = '\0';
  if (!out) return dtr__fail(err, errcap, DTR_ERR_INVALID, "dtr_comm_create: out is NULL");
  *out = NULL;
  dtr_comm_config def = dtr_comm_config_default();
  if (!cfg) cfg = &def;
  const char *name = cfg->name ? cfg->name : "world";
  if (!name_ok(name))
    return dtr__fail(
        err, errcap, DTR_ERR_INVALID,
        "dtr_comm_create: bad communicator name \"%.80s\" (1-64 printable characters, no spaces or '#')",
        name);
  if (size < 1)
    return dtr__fail(err, errcap, DTR_ERR_INVALID, "dtr_comm_create %s: size %d must be at least 1", name,
                     size);
  if (rank < 0 || rank >= size)
    return dtr__fail(err, errcap, DTR_ERR_INVALID, "dtr_comm_create %s: rank %d is outside 0..%d", name, rank,
                     size - 1);
  if ((unsigned)cfg->backend > (unsigned)DTR_BACKEND_MPI)
    return dtr__fail(err, errcap, DTR_ERR_INVALID, "dtr_comm_create %s: unknown backend %d", name,
                     (int)cfg->backend);
  const dtr__backend *be = backend_for(cfg->backend);
  if (!be)
    return dtr__fail(err, errcap, DTR_ERR_UNSUPPORTED,
                     "dtr_comm_create %s: backend \"%s\" is not in this build (%s)", name,
                     dtr_backend_name(cfg->backend),
                     cfg->backend == DTR_BACKEND_NCCL ? "built without CUDA/NCCL" : "built without MPI");
  if (!store && cfg->backend != DTR_BACKEND_MPI)
    return dtr__fail(err, errcap, DTR_ERR_INVALID,
                     "dtr_comm_create %s: the %s backend needs a store (only mpi may pass NULL)", name,
                     dtr_backend_name(cfg->backend));
  if (cfg->timeout_ms < 0)
    return dtr__fail(err, errcap, DTR_ERR_INVALID, "dtr_comm_create %s: timeout_ms %d is negative", name,
                     cfg->timeout_ms);

  dtr_comm *c = comm_alloc(rank, size);
  if (!c) return dtr__fail(err, errcap, DTR_ERR_NOMEM, "dtr_comm_create %s: out of memory", name);
  c->backend_kind = cfg->backend;
  c->be = be;
  c->store = store;
  snprintf(c->name, sizeof c->name, "%s", name);
  int64_t t = cfg->timeout_ms > 0 ? cfg->timeout_ms
                                  : dtr__param_int("DTRAIN_COMM_TIMEOUT_MS", DTR_COMM_DEFAULT_TIMEOUT_MS);
  c->timeout_ms = t > 0 && t <= INT32_MAX ? (int)t : DTR_COMM_DEFAULT_TIMEOUT_MS;
  c->cuda_device = cfg->cuda_device;
  c->debug = dtr__param_int("DTRAIN_COMM_DEBUG", 0) != 0;
  snprintf(c->diag_dir, sizeof c->diag_dir, "%s", dtr__param_str("DTRAIN_DIAG_DIR", ""));
  for (int i = 0; i < size; i++) c->world_ranks[i] = i;

  /* The k-th communicator named X created on every rank gets generation k everywhere, so its keys
   * never collide with an earlier (possibly destroyed) one's. */
  const char *run = dtr__param_str("DTRAIN_RUN_ID", "local");
  const char *att = dtr__param_str("DTRAIN_ATTEMPT", "0");
  dtr_result rc = DTR_OK;
  int64_t gen = 1;
  if (store) {
    char key[512];
    snprintf(key, sizeof key, "comm/%s/a%s/%s/gen/%d", run, att, name, rank);
    rc = dtr_store_add(store, key, 1, &gen);
    if (rc) {
      dtr__fail(err, errcap, rc, "dtr_comm_create %s: store add %s: %s", name, key,
                dtr_store_last_error(store));
      comm_free(c);
      return rc;
    }
  }
  int pn =
      snprintf(c->prefix, sizeof c->prefix, "comm/%s/a%s/%s#%lld/", run, att, name, (long long)(gen - 1));
  if (pn < 0 || pn >= (int)sizeof c->prefix) {
    comm_free(c);
    return dtr__fail(err, errcap, DTR_ERR_INVALID, "dtr_comm_create %s: DTRAIN_RUN_ID is too long", name);
  }

  rc = comm_start(c);
  if (rc) {
    dtr__fail(err, errcap, rc, "dtr_comm_create %s (rank %d of %d, %s backend): %s", name, rank, size,
              be->name, c->err);
    comm_free(c);
    return rc;
  }
  DTR_DEBUG("comm %s: rank %d of %d on %s, prefix %s, timeout %d ms%s", c->name, rank, size, be->name,
            c->prefix, c->timeout_ms, c->debug ? ", debug" : "");
  *out = c;
  return DTR_OK;
}

/* ---------------------------------------------------------------- split */

typedef struct member {
  int color, key, prank;
} member;

static int member_cmp(const void *a, const void *b) {
  const member *x = a, *y = b;
  if (x->key != y->key) return x->key < y->key ? -1 : 1;
  return x->prank < y->prank ? -1 : x->prank > y->prank;
}

/* Everyone's (color, key), through the store, or (mpi without a store) an all-gather on the parent. */
static dtr_result exchange_colors(dtr_comm *p, int gen, int color, int key, member *all) {
  if (!p->store) {
    int mine[2] = {color, key}, *got = malloc(sizeof(int) * 2 * (size_t)p->size);
    if (!got) return dtr__comm_fail(p, DTR_ERR_NOMEM, "dtr_comm_split: out of memory");
    dtr__op op = {.kind = DTR__OP_ALL_GATHER,
                  .seq = p->next_seq++,
                  .send = mine,
                  .recv = got,
                  .count = 2,
                  .dtype = DTR_I32,
                  .redop = DTR_SUM,
                  .root = -1};
    dtr_result rc = dtr__core(p)->local ? DTR_OK : p->be->run(p, &op, dtr__now_ms() + p->timeout_ms);
    if (dtr__core(p)->local) memcpy(got, mine, sizeof mine);
    for (int r = 0; rc == DTR_OK && r < p->size; r++) all[r] = (member){got[2 * r], got[2 * r + 1], r};
    free(got);
    return rc;
  }
  char k[512], v[64];
  snprintf(k, sizeof k, "%ssplit%d/%d", p->prefix, gen, p->rank);
  snprintf(v, sizeof v, "%d %d", color, key);
  dtr_result rc = dtr_store_set(p->store, k, v, strlen(v));
  if (rc) return dtr__comm_fail(p, rc, "dtr_comm_split: store set %s: %s", k, dtr_store_last_error(p->store));
  int64_t deadline = dtr__now_ms() + p->timeout_ms;
  for (int r = 0; r < p->size; r++) {
    void *val = NULL;
    size_t len = 0;
    snprintf(k, sizeof k, "%ssplit%d/%d", p->prefix, gen, r);
    int left = dtr__ms_left(deadline);
    rc = dtr_store_get(p->store, k, left > 0 ? left : 1, &val, &len);
    if (rc == DTR_ERR_TIMEOUT)
      return dtr__comm_fail(p, rc, "dtr_comm_split of %s timed out after %d ms: rank %d never called it",
                            p->name, p->timeout_ms, r);
    if (rc)
      return dtr__comm_fail(p, rc, "dtr_comm_split: store get %s: %s", k, dtr_store_last_error(p->store));
    int pc, pk;
    if (sscanf((char *)val, "%d %d", &pc, &pk) != 2) {
      free(val);
      return dtr__comm_fail(p, DTR_ERR_PROTOCOL, "dtr_comm_split: %s holds \"%.40s\", not \"color key\"", k,
                            (char *)val);
    }
    free(val);
    all[r] = (member){pc, pk, r};
  }
  return DTR_OK;
}

dtr_result dtr_comm_split(dtr_comm *parent, int color, int key, dtr_comm **out) {
  if (!out)
    return parent ? dtr__comm_fail(parent, DTR_ERR_INVALID, "dtr_comm_split: out is NULL") : DTR_ERR_INVALID;
  *out = NULL;
  if (!parent) return DTR_ERR_INVALID;
  dtr_comm *p = parent;
  dtr__comm_core *pk = dtr__core(p);
  if (atomic_load(&p->aborted))
    return dtr__comm_fail(p, DTR_ERR_ABORTED, "dtr_comm_split: communicator %s is aborted (cause: %s)",
                          p->name, pk->abort_reason[0] ? pk->abort_reason : "unknown");
  dtr__core_hold(p); /* asynchronous operations first; then nobody else is inside the backend */
  int gen = pk->split_gen++;
  dtr_comm *child = NULL;
  member *all = calloc((size_t)p->size, sizeof *all);
  dtr_result rc =
      all ? exchange_colors(p, gen, color, key, all) : dtr__comm_fail(p, DTR_ERR_NOMEM, "out of memory");
  if (rc) goto done;

  /* This rank's group, ordered by (key, parent rank). */
  int n = 0;
  for (int r = 0; r < p->size; r++)
    if (color >= 0 && all[r].color == color) all[n++] = all[r];
  qsort(all, (size_t)n, sizeof *all, member_cmp);
  int me = -1;
  for (int i = 0; i < n; i++)
    if (all[i].prank == p->rank) me = i;

  int native = p->be->split && pk->be_ready;
  if (color < 0) {
    /* Not a member, but a native split is collective over the whole parent. */
    if (native) {
      dtr_comm *scratch = comm_alloc(-1, 0);
      if (!scratch) {
        rc = dtr__comm_fail(p, DTR_ERR_NOMEM, "out of memory");
        goto done;
      }
      scratch->size = 0;
      scratch->backend_kind = p->backend_kind;
      scratch->be = p->be;
      scratch->parent = p;
      scratch->timeout_ms = p->timeout_ms;
      scratch->cuda_device = p->cuda_device;
      rc = p->be->split(p, scratch, color, key);
      if (rc && scratch->err[0])
        dtr__comm_fail(p, rc, "dtr_comm_split of %s (color %d): %s", p->name, color, scratch->err);
      if (scratch->impl && p->be->destroy) p->be->destroy(scratch);
      comm_free(scratch);
    }
    goto done;
  }

  child = comm_alloc(me, n);
  if (!child || me < 0) {
    rc = dtr__comm_fail(p, child ? DTR_ERR_INTERNAL : DTR_ERR_NOMEM, "dtr_comm_split: %s",
                        child ? "this rank is missing from its own group" : "out of memory");
    goto done;
  }
  child->backend_kind = p->backend_kind;
  child->be = p->be;
  child->store = p->store;
  child->parent = p;
  child->timeout_ms = p->timeout_ms;
  child->cuda_device = p->cuda_device;
  child->debug = p->debug;
  memcpy(child->diag_dir, p->diag_dir, sizeof child->diag_dir);
  snprintf(child->name, sizeof child->name, "%.100s/s%dc%d", p->name, gen, color);
  int pn = snprintf(child->prefix, sizeof child->prefix, "%ss%dc%d/", p->prefix, gen, color);
  if (pn < 0 || pn >= (int)sizeof child->prefix) {
    rc = dtr__comm_fail(p, DTR_ERR_INVALID, "dtr_comm_split: the store prefix of %s's child grew too long",
                        p->name);
    goto done;
  }
  for (int i = 0; i < n; i++) child->world_ranks[i] = p->world_ranks[all[i].prank];
  dtr__core(child)->local = runs_locally(child);
  if (native) {
    /* Collective over the parent even where the child has one member. */
    rc = p->be->split(p, child, color, key);
    if (rc == DTR_OK) dtr__core(child)->be_ready = 1;
  }
  if (rc == DTR_OK) {
    /* comm_start: debug store, init (unless done natively or local), progress thread. */
    rc = comm_start(child);
  }
  /* The backend may have written either communicator's error; keep whichever holds the detail. */
  if (rc && child->err[0])
    dtr__comm_fail(p, rc, "dtr_comm_split of %s into %s: %s", p->name, child->name, child->err);

done:
  dtr__core_release(p);
  free(all);
  if (rc) {
    comm_free(child);
    return rc;
  }
  *out = child;
  return DTR_OK;
}

/* ---------------------------------------------------------------- abort, destroy, accessors */

void dtr_comm_abort(dtr_comm *c) {
  if (!c) return;
  dtr__core_mark_aborted(c, "dtr_comm_abort was called");
  dtr__comm_core *k = dtr__core(c);
  if (k->dbg_store) dtr_store_abort(k->dbg_store);
  if (k->be_ready && c->be && c->be->abort) c->be->abort(c);
}

void dtr_comm_destroy(dtr_comm *c) {
  comm_free(c);
}

int dtr_comm_rank(const dtr_comm *c) {
  return c ? c->rank : -1;
}
int dtr_comm_size(const dtr_comm *c) {
  return c ? c->size : 0;
}
dtr_backend dtr_comm_backend(const dtr_comm *c) {
  return c ? c->backend_kind : DTR_BACKEND_HOST;
}
int dtr_comm_cuda_device(const dtr_comm *c) {
  return c && c->backend_kind == DTR_BACKEND_NCCL ? c->cuda_device : -1;
}
const char *dtr_comm_last_error(const dtr_comm *c) {
  return c ? c->err : "communicator is NULL";
}

dtr_result dtr_comm_set_cuda_stream(dtr_comm *c, void *stream) {
  if (!c) return DTR_ERR_INVALID;
  if (!c->be || !c->be->stream_event || !c->be->event_release)
    return dtr__comm_fail(c, DTR_ERR_UNSUPPORTED,
                          "dtr_comm_set_cuda_stream on communicator %s: the %s backend moves host memory and "
                          "orders nothing after a CUDA stream (only nccl does)",
                          c->name, dtr_backend_name(c->backend_kind));
  c->cuda_stream = stream;
  return DTR_OK;
}
