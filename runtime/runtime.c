/* dtr_init / dtr_finalize: identity from the environment, the job's store (joined, or hosted by rank 0
 * when the launcher brought none), the world communicator and the dp/tp/pp groups of the mesh, and on
 * request an nccl communicator over the DP group for gradients in GPU memory (device: the local rank).
 *
 * Store rule for launchers without a store (torchrun-style, Slurm, mpirun; docs/environment.md,
 * "Runtime identity"): rank 0 listens on every address at DTRAIN_STORE_PORT, else MASTER_PORT + 1,
 * else a port derived from the job id; every rank (rank 0 too, so that the TCP transport learns the
 * address the others reach) connects to MASTER_ADDR, else the first Slurm node, else 127.0.0.1 when
 * all ranks share this node. The token is DTRAIN_JOB_TOKEN, else derived from the job id. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "common/check.h"
#include "common/device.h"
#include "common/param.h"
#include "runtime/runtime_internal.h"

struct dtr_runtime {
  dtr_identity id;
  dtr_mesh mesh;
  dtr_store *store;
  dtr_store_server *server; /* the store this rank hosts, or NULL */
  dtr_comm *world, *dp, *tp, *pp;
  dtr_comm *dp_nccl; /* cfg.nccl_dp: the DP group again, on nccl, for GPU buffers */
  int cuda_device;
  int store_timeout_ms;
};

dtr_runtime_config dtr_runtime_config_default(void) {
  dtr_runtime_config c = {.backend = DTR_BACKEND_HOST,
                          .dp = 0,
                          .tp = 1,
                          .pp = 1,
                          .timeout_ms = 0,
                          .store_timeout_ms = 0,
                          .nccl_dp = 0,
                          .cuda_device = -1};
  return c;
}

static const char *launcher_name(dtr_launcher_kind k) {
  static const char *n[] = {"single process", "dtrain launch", "torchrun-style", "Open MPI", "Slurm"};
  return (unsigned)k < 5 ? n[k] : "?";
}

/* Keys of the finalize handshake in a store this job's rank 0 hosts. */
#define DONE_KEY "dtrain/runtime/done/%d"

/* A single process (no launcher, or a launcher's world of one) on the host backend still needs a store
 * for its one-rank communicator: a private one on loopback, port picked by the kernel, random token. */
static dtr_result host_private_store(dtr_runtime *rt, char *err, size_t errcap) {
  unsigned char raw[16];
  char token[64];
  if (getrandom(raw, sizeof raw, 0) != (ssize_t)sizeof raw)
    return dtr__fail(err, errcap, DTR_ERR_SYSTEM, "dtr_init: getrandom failed for a private store token");
  for (int i = 0; i < 16; i++) snprintf(token + 2 * i, 3, "%02x", raw[i]);
  DTR_CHECK(dtr_store_server_create("127.0.0.1", 0, token, &rt->server, err, errcap));
  DTR_CHECK(dtr_store_server_start(rt->server));
  return dtr_store_connect("127.0.0.1", dtr_store_server_port(rt->server), token, rt->store_timeout_ms,
                           &rt->store, err, errcap);
}

/* torchrun-style, Slurm, mpirun: rank 0 hosts the store, everybody connects. */
static dtr_result host_job_store(dtr_runtime *rt, char *err, size_t errcap) {
  const dtr_identity *id = &rt->id;
  if (!id->store_host[0])
    return dtr__fail(
        err, errcap, DTR_ERR_INVALID,
        "dtr_init (%s): the ranks span %d nodes and no store address is known: set MASTER_ADDR to rank "
        "0's host (and DTRAIN_STORE_PORT), or use the mpi backend",
        launcher_name(id->launcher), id->nnodes);
  if (id->store_port <= 0)
    return dtr__fail(
        err, errcap, DTR_ERR_INVALID,
        "dtr_init (%s): no store port: set DTRAIN_STORE_PORT (or MASTER_PORT; the store takes MASTER_PORT+1)",
        launcher_name(id->launcher));
  char token[DTR_STORE_MAX_TOKEN + 1];
  dtr__identity_token(NULL, id, token, sizeof token);
  if (id->rank == 0) {
    char e2[300] = "";
    dtr_result rc = dtr_store_server_create(NULL, id->store_port, token, &rt->server, e2, sizeof e2);
    if (rc == DTR_ERR_ADDRINUSE)
      return dtr__fail(
          err, errcap, rc,
          "dtr_init (%s): rank 0 cannot host the store on port %d: it is taken (%s); choose another "
          "with DTRAIN_STORE_PORT",
          launcher_name(id->launcher), id->store_port, e2);
    if (rc)
      return dtr__fail(err, errcap, rc, "dtr_init: hosting the store on port %d: %s", id->store_port, e2);
    DTR_CHECK(dtr_store_server_start(rt->server));
  }
  char e2[400] = "";
  /* A store that closes a fresh connection is most likely the previous dtr_init's, going away on this
   * port: try again until the deadline (refused connections dtr_store_connect retries itself). */
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  dtr_result rc;
  while (1) {
    rc = dtr_store_connect(id->store_host, id->store_port, token, rt->store_timeout_ms, &rt->store, e2,
                           sizeof e2);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    long ms = (t1.tv_sec - t0.tv_sec) * 1000L + (t1.tv_nsec - t0.tv_nsec) / 1000000L;
    if (rc != DTR_ERR_CONNECTION || ms >= rt->store_timeout_ms) break;
    nanosleep(&(struct timespec){0, 50 * 1000 * 1000}, NULL);
  }
  if (rc)
    return dtr__fail(err, errcap, rc,
                     "dtr_init (%s, rank %d): cannot reach the store rank 0 hosts at %s:%d: %s",
                     launcher_name(id->launcher), id->rank, id->store_host, id->store_port, e2);
  return DTR_OK;
}

/* The identity's local rank, not the comm's own LOCAL_RANK fallback: mpirun and srun do not set
 * LOCAL_RANK, and every nccl communicator of this rank must sit on one device. A rank that sees a
 * single device has it to itself (CUDA_VISIBLE_DEVICES per rank, as Slurm's --gpus-per-task does):
 * device 0. The CUDA runtime is asked only where nccl is used. */
static int pick_cuda_device(const dtr_runtime_config *cfg, const dtr_identity *id) {
  if (cfg->cuda_device >= 0) return cfg->cuda_device;
  int nccl = cfg->nccl_dp || cfg->backend == DTR_BACKEND_NCCL;
  if (nccl && id->local_rank > 0 && dtr__cuda_device_count() == 1) return 0;
  return id->local_rank;
}

static dtr_result split(dtr_runtime *rt, int color, int key, dtr_comm **out, const char *what, char *err,
                        size_t errcap) {
  dtr_result rc = dtr_comm_split(rt->world, color, key, out);
  if (rc)
    return dtr__fail(err, errcap, rc, "dtr_init: building the %s groups: %s", what,
                     dtr_comm_last_error(rt->world));
  return DTR_OK;
}

dtr_result dtr_init(const dtr_runtime_config *cfg_in, dtr_runtime **out, char *err, size_t errcap) {
  if (!out) return dtr__fail(err, errcap, DTR_ERR_INVALID, "dtr_init: out is NULL");
  *out = NULL;
  dtr_runtime_config cfg = cfg_in ? *cfg_in : dtr_runtime_config_default();
  if (cfg.tp == 0) cfg.tp = 1;
  if (cfg.pp == 0) cfg.pp = 1;
  dtr_runtime *rt = calloc(1, sizeof *rt);
  if (!rt) return dtr__fail(err, errcap, DTR_ERR_NOMEM, "dtr_init: out of memory");
  rt->store_timeout_ms = cfg.store_timeout_ms > 0 ? cfg.store_timeout_ms : 60000;
  dtr_result rc;
  char e2[400] = "";

  DTR_CHECK_GOTO(dtr_identity_from_env(NULL, &rt->id, err, errcap), rc, fail);
  /* The mesh before any connection: a bad shape fails at once, identically on every rank. */
  rc = dtr_mesh_make(rt->id.world_size, cfg.dp, cfg.tp, cfg.pp, rt->id.rank, &rt->mesh, e2, sizeof e2);
  if (rc) {
    dtr__fail(err, errcap, rc, "dtr_init (%s, rank %d of %d): %s", launcher_name(rt->id.launcher),
              rt->id.rank, rt->id.world_size, e2);
    goto fail;
  }

  /* The store: the launcher's (dtrain), a private one (single process), ours (rank 0 hosts), or none
   * (mpi backend, which finds its peers through MPI). */
  if (rt->id.launcher == DTR_LAUNCHER_DTRAIN) {
    rc = dtr_store_connect_env(rt->store_timeout_ms, &rt->store, e2, sizeof e2);
    if (rc) {
      dtr__fail(err, errcap, rc, "dtr_init (dtrain launch, rank %d): cannot reach the store: %s", rt->id.rank,
                e2);
      goto fail;
    }
  } else if (cfg.backend == DTR_BACKEND_MPI) {
    /* no store */
  } else if (rt->id.launcher == DTR_LAUNCHER_SINGLE || rt->id.world_size == 1) {
    DTR_CHECK_GOTO(host_private_store(rt, err, errcap), rc, fail);
  } else {
    DTR_CHECK_GOTO(host_job_store(rt, err, errcap), rc, fail);
  }

  rt->cuda_device = pick_cuda_device(&cfg, &rt->id);
  dtr_comm_config cc = dtr_comm_config_default();
  cc.backend = cfg.backend;
  cc.timeout_ms = cfg.timeout_ms;
  cc.cuda_device = rt->cuda_device;
  cc.name = "world";
  rc = dtr_comm_create(rt->store, rt->id.rank, rt->id.world_size, &cc, &rt->world, e2, sizeof e2);
  if (rc) {
    dtr__fail(err, errcap, rc, "dtr_init (%s, rank %d of %d): world communicator: %s",
              launcher_name(rt->id.launcher), rt->id.rank, rt->id.world_size, e2);
    goto fail;
  }
  /* Megatron order: rank = pp_rank*(dp*tp) + dp_rank*tp + tp_rank. Each group is named (colored) by the
   * other two coordinates and ordered by its own. */
  const dtr_mesh *m = &rt->mesh;
  DTR_CHECK_GOTO(
      split(rt, m->pp_rank * m->tp + m->tp_rank, m->dp_rank, &rt->dp, "data-parallel", err, errcap), rc,
      fail);
  DTR_CHECK_GOTO(
      split(rt, m->pp_rank * m->dp + m->dp_rank, m->tp_rank, &rt->tp, "tensor-parallel", err, errcap), rc,
      fail);
  DTR_CHECK_GOTO(
      split(rt, m->dp_rank * m->tp + m->tp_rank, m->pp_rank, &rt->pp, "pipeline-parallel", err, errcap), rc,
      fail);
  if (cfg.nccl_dp) {
    /* Created, not split: the parent is on another backend. Named by its color so that the store keys
     * of different DP groups never meet. */
    char name[64];
    snprintf(name, sizeof name, "dp_nccl.%d", m->pp_rank * m->tp + m->tp_rank);
    dtr_comm_config nc = dtr_comm_config_default();
    nc.backend = DTR_BACKEND_NCCL;
    nc.timeout_ms = cfg.timeout_ms;
    nc.cuda_device = rt->cuda_device;
    nc.name = name;
    rc = dtr_comm_create(rt->store, m->dp_rank, m->dp, &nc, &rt->dp_nccl, e2, sizeof e2);
    if (rc) {
      dtr__fail(err, errcap, rc, "dtr_init (%s, rank %d of %d): the nccl data-parallel communicator: %s",
                launcher_name(rt->id.launcher), rt->id.rank, rt->id.world_size, e2);
      goto fail;
    }
  }
  DTR_DEBUG("dtr_init: %s rank %d of %d (node %d of %d), mesh dp %d x tp %d x pp %d at (%d, %d, %d)",
            launcher_name(rt->id.launcher), rt->id.rank, rt->id.world_size, rt->id.node_rank, rt->id.nnodes,
            m->dp, m->tp, m->pp, m->dp_rank, m->tp_rank, m->pp_rank);
  *out = rt;
  return DTR_OK;
fail:
  dtr_finalize(rt);
  return rc;
}

void dtr_finalize(dtr_runtime *rt) {
  if (!rt) return;
  dtr_comm_destroy(rt->dp_nccl);
  dtr_comm_destroy(rt->pp);
  dtr_comm_destroy(rt->tp);
  dtr_comm_destroy(rt->dp);
  int complete = rt->world != NULL;
  dtr_comm_destroy(rt->world);
  /* Rank 0's store must outlive the other ranks' last use of it: they say goodbye, and rank 0 waits
   * for them (bounded) before closing it. After a failed init nobody waits. */
  if (rt->store && rt->server && rt->id.world_size > 1 && complete) {
    int n = rt->id.world_size - 1;
    char(*keys)[48] = malloc(sizeof *keys * (size_t)n);
    const char **kp = malloc(sizeof *kp * (size_t)n);
    if (keys && kp) {
      for (int r = 1; r <= n; r++) {
        snprintf(keys[r - 1], sizeof keys[0], DONE_KEY, r);
        kp[r - 1] = keys[r - 1];
      }
      for (int at = 0; at < n; at += DTR_STORE_MAX_WAIT_KEYS) {
        int cnt = n - at < DTR_STORE_MAX_WAIT_KEYS ? n - at : DTR_STORE_MAX_WAIT_KEYS;
        if (dtr_store_wait(rt->store, kp + at, cnt, rt->store_timeout_ms) != DTR_OK) {
          DTR_WARN("dtr_finalize: not every rank said goodbye before closing the store: %s",
                   dtr_store_last_error(rt->store));
          break;
        }
      }
    }
    free(keys);
    free(kp);
  } else if (rt->store && !rt->server && rt->id.store_is_ours && complete) {
    char key[48];
    snprintf(key, sizeof key, DONE_KEY, rt->id.rank);
    if (dtr_store_set(rt->store, key, "1", 1) != DTR_OK) {
      DTR_DEBUG("dtr_finalize: goodbye to the store failed: %s", dtr_store_last_error(rt->store));
    } else {
      /* Stay until rank 0 has closed its store (our connection breaks): a dtr_init right after this
       * one would otherwise find the old store still listening on the same port. The key is never set. */
      void *v = NULL;
      size_t len = 0;
      if (dtr_store_get(rt->store, "dtrain/runtime/never", rt->store_timeout_ms, &v, &len) == DTR_OK) free(v);
    }
  }
  dtr_store_close(rt->store);
  dtr_store_server_destroy(rt->server);
  free(rt);
}

const dtr_identity *dtr_runtime_identity(const dtr_runtime *rt) {
  return rt ? &rt->id : NULL;
}
const dtr_mesh *dtr_runtime_mesh(const dtr_runtime *rt) {
  return rt ? &rt->mesh : NULL;
}
dtr_store *dtr_runtime_store(dtr_runtime *rt) {
  return rt ? rt->store : NULL;
}
dtr_comm *dtr_runtime_world(dtr_runtime *rt) {
  return rt ? rt->world : NULL;
}
dtr_comm *dtr_runtime_dp(dtr_runtime *rt) {
  return rt ? rt->dp : NULL;
}
dtr_comm *dtr_runtime_tp(dtr_runtime *rt) {
  return rt ? rt->tp : NULL;
}
dtr_comm *dtr_runtime_pp(dtr_runtime *rt) {
  return rt ? rt->pp : NULL;
}
dtr_comm *dtr_runtime_dp_nccl(dtr_runtime *rt) {
  return rt ? rt->dp_nccl : NULL;
}
int dtr_runtime_cuda_device(const dtr_runtime *rt) {
  return rt ? rt->cuda_device : -1;
}
