/* The nccl backend: GPU buffers (device or managed pointers), one NCCL communicator and one CUDA stream
 * per dtrain communicator. Communicators are created and split in NCCL's nonblocking mode so that every
 * wait (init, split, each operation) can honour the deadline and the abort flag: on expiry or abort the
 * NCCL communicator is aborted (ncclCommAbort), which also stops its kernels.
 *
 * Numerics are NCCL's: f16/bf16 are reduced in their own type at each step of NCCL's ring or tree, and
 * integer AVG divides a sum that wraps in the element type (ncclAvg). The result is identical on every
 * rank for a fixed topology, but may differ in the last place from the host backend. */
#ifdef DTRAIN_HAVE_CUDA

#include <cuda_runtime_api.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "collectives/comm_internal.h"
#include "common/check.h"
#include "common/clock.h"
#include "common/cuda_check.h"
#include "common/log.h"
#include "common/nccl_dl.h"
#include "common/param.h"

typedef struct nccl_impl {
  ncclComm_t comm;     /* NULL once aborted */
  cudaStream_t stream; /* every operation of this communicator, in issue order */
  float *dbar;         /* one float on the device: the barrier all-reduces it */
  int device;
} nccl_impl;

/* ---------------------------------------------------------------- errors: one converter each */

static dtr_result cuda_result(dtr_comm *c, cudaError_t e, const char *call) {
  if (e == cudaSuccess) return DTR_OK;
  int namelen = (int)strcspn(call, "(");
  char why[256];
  dtr_result rc = dtr__from_cuda(e, why, sizeof why);
  return dtr__comm_fail(c, rc, "cuda: %.*s failed on rank %d of %s: %s", namelen, call, c->rank, c->name,
                        why);
}
#define DTR_CUDA(c, call) cuda_result((c), (call), #call)

/* ncclInProgress is success in nonblocking mode: the caller then waits with wait_ready. */
static dtr_result nccl_result(dtr_comm *c, ncclResult_t r, const char *call) {
  if (r == ncclSuccess || r == ncclInProgress) return DTR_OK;
  int namelen = (int)strcspn(call, "(");
  dtr_result rc;
  switch (r) {
    case ncclInvalidArgument:
    case ncclInvalidUsage:
      rc = DTR_ERR_INVALID;
      break;
    case ncclRemoteError:
      rc = DTR_ERR_CONNECTION;
      break;
    case ncclSystemError:
    case ncclUnhandledCudaError:
      rc = DTR_ERR_SYSTEM;
      break;
    default:
      rc = DTR_ERR_INTERNAL;
      break;
  }
  const char *detail = ncclGetLastError(NULL);
  return dtr__comm_fail(c, rc, "nccl: %.*s failed on rank %d of %s: %s%s%s", namelen, call, c->rank, c->name,
                        ncclGetErrorString(r), detail && *detail ? ": " : "", detail ? detail : "");
}
#define DTR_NCCL(c, call) nccl_result((c), (call), #call)

/* ---------------------------------------------------------------- waiting */

static void backoff(long spins) {
  if (spins < 256) return;
  if (spins < 4096) {
    sched_yield();
    return;
  }
  struct timespec ts = {0, spins < 32768 ? 20000 : 200000};
  nanosleep(&ts, NULL);
}

/* Abort the NCCL communicator (kernels stop; later operations fail) and forget it. */
static void kill_comm(nccl_impl *m) {
  if (m && m->comm) {
    ncclCommAbort(m->comm);
    m->comm = NULL;
  }
}

/* Poll a nonblocking NCCL communicator until its pending call (init, split, enqueue, finalize) is done.
 * what names the call for messages. On deadline or abort the communicator is aborted. */
static dtr_result wait_ready(dtr_comm *c, ncclComm_t comm, int64_t deadline, const char *what,
                             int check_abort) {
  for (long spins = 0;; spins++) {
    ncclResult_t st = ncclInProgress;
    dtr_result rc = DTR_NCCL(c, ncclCommGetAsyncError(comm, &st));
    if (rc != DTR_OK) return rc;
    if (st == ncclSuccess) return DTR_OK;
    if (st != ncclInProgress) {
      ncclCommAbort(comm);
      return nccl_result(c, st, what);
    }
    if (check_abort && atomic_load(&c->aborted)) {
      ncclCommAbort(comm);
      return dtr__comm_fail(c, DTR_ERR_ABORTED, "nccl: %s on %s aborted", what, c->name);
    }
    if (deadline >= 0 && dtr__now_ms() >= deadline) {
      ncclCommAbort(comm);
      return dtr__comm_fail(
          c, DTR_ERR_TIMEOUT,
          "nccl: %s on %s (rank %d of %d) did not finish within %d ms; NCCL cannot tell which "
          "ranks had not arrived; the NCCL communicator was aborted",
          what, c->name, c->rank, c->size, c->timeout_ms);
    }
    backoff(spins);
  }
}

/* ---------------------------------------------------------------- lifecycle */

static dtr_result pick_device(dtr_comm *c, int *dev) {
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess || n == 0) {
    (void)cudaGetLastError();
    return dtr__comm_fail(c, DTR_ERR_UNSUPPORTED, "nccl: no CUDA device visible to rank %d of %s%s%s",
                          c->rank, c->name, e != cudaSuccess ? ": " : "",
                          e != cudaSuccess ? cudaGetErrorString(e) : "");
  }
  int d = c->cuda_device >= 0 ? c->cuda_device : (int)dtr__param_int("LOCAL_RANK", 0);
  if (d < 0 || d >= n)
    return dtr__comm_fail(
        c, DTR_ERR_INVALID, "nccl: rank %d of %s wants CUDA device %d (%s) but only %d device(s) are visible",
        c->rank, c->name, d, c->cuda_device >= 0 ? "from the config" : "from LOCAL_RANK", n);
  *dev = d;
  c->cuda_device = d; /* resolved: dtr_comm_cuda_device, and the children split from c */
  return DTR_OK;
}

static ncclConfig_t nonblocking_config(const dtr_comm *c) {
  ncclConfig_t cfg = NCCL_CONFIG_INITIALIZER;
  cfg.blocking = 0;
  cfg.commName = c->name; /* shows in NCCL's logs; c->name outlives the NCCL communicator */
  return cfg;
}

/* The per-communicator CUDA resources, once the NCCL communicator is ready. */
static dtr_result finish_setup(dtr_comm *c, nccl_impl *m) {
  DTR_CHECK(DTR_CUDA(c, cudaStreamCreateWithFlags(&m->stream, cudaStreamNonBlocking)));
  DTR_CHECK(DTR_CUDA(c, cudaMalloc((void **)&m->dbar, sizeof(float))));
  DTR_CHECK(DTR_CUDA(c, cudaMemset(m->dbar, 0, sizeof(float))));
  return DTR_OK;
}

static void nccl_destroy(dtr_comm *c);

/* Rank 0 makes the unique id and publishes it at <prefix>nccl_id; the others fetch it (the store is
 * only touched here, on the caller's thread). */
static dtr_result exchange_id(dtr_comm *c, ncclUniqueId *id) {
  char key[512];
  snprintf(key, sizeof key, "%snccl_id", c->prefix);
  if (!c->store)
    return dtr__comm_fail(c, DTR_ERR_INVALID, "nccl: communicator %s needs a store to exchange its NCCL id",
                          c->name);
  if (c->rank == 0) {
    DTR_CHECK(DTR_NCCL(c, ncclGetUniqueId(id)));
    dtr_result rc = dtr_store_set(c->store, key, id, sizeof *id);
    if (rc != DTR_OK)
      return dtr__comm_fail(c, rc, "nccl: publishing %s failed: %s", key, dtr_store_last_error(c->store));
    return DTR_OK;
  }
  void *val = NULL;
  size_t len = 0;
  dtr_result rc = dtr_store_get(c->store, key, c->timeout_ms, &val, &len);
  if (rc != DTR_OK)
    return dtr__comm_fail(c, rc, "nccl: rank %d could not get %s from the store (rank 0 publishes it): %s",
                          c->rank, key, dtr_store_last_error(c->store));
  if (len != sizeof *id) {
    free(val);
    return dtr__comm_fail(c, DTR_ERR_PROTOCOL, "nccl: %s holds %zu bytes, expected a %zu-byte ncclUniqueId",
                          key, len, sizeof *id);
  }
  memcpy(id, val, sizeof *id);
  free(val);
  return DTR_OK;
}

static dtr_result nccl_init(dtr_comm *c) {
  dtr_result rc = DTR_OK;
  char why[1024];
  /* the first nccl communicator of the process opens NCCL (common/nccl_dl.h) */
  if (dtr__nccl_load(why, sizeof why) != DTR_OK)
    return dtr__comm_fail(c, DTR_ERR_UNSUPPORTED, "nccl: communicator %s: %s", c->name, why);
  nccl_impl *m = calloc(1, sizeof *m);
  if (!m) return dtr__comm_fail(c, DTR_ERR_NOMEM, "nccl: out of memory creating %s", c->name);
  c->impl = m;
  const int64_t deadline = dtr__now_ms() + c->timeout_ms;
  ncclUniqueId id;
  DTR_CHECK_GOTO(pick_device(c, &m->device), rc, fail);
  DTR_CHECK_GOTO(DTR_CUDA(c, cudaSetDevice(m->device)), rc, fail);
  DTR_CHECK_GOTO(exchange_id(c, &id), rc, fail);
  ncclConfig_t cfg = nonblocking_config(c);
  DTR_CHECK_GOTO(DTR_NCCL(c, ncclCommInitRankConfig(&m->comm, c->size, id, c->rank, &cfg)), rc, fail);
  rc = wait_ready(c, m->comm, deadline, "ncclCommInitRankConfig", 1);
  if (rc != DTR_OK) {
    m->comm = NULL; /* wait_ready aborted it */
    goto fail;
  }
  DTR_CHECK_GOTO(finish_setup(c, m), rc, fail);
  return DTR_OK;
fail:
  nccl_destroy(c);
  return rc;
}

/* ncclCommSplit over the parent; every parent rank takes part (color < 0: NCCL_SPLIT_NOCOLOR, no child;
 * the core then passes a scratch child of size 0). Runs on the caller's thread after the core drained
 * the parent's queue. In nonblocking mode NCCL runs the split as an asynchronous job of the parent and
 * writes the new handle only when it finishes, so the handle lives in heap memory that is deliberately
 * leaked if we stop waiting (timeout or abort) before the job is done. */
static dtr_result nccl_split(dtr_comm *parent, dtr_comm *child, int color, int key) {
  nccl_impl *pm = parent->impl;
  if (!pm->comm)
    return dtr__comm_fail(parent, DTR_ERR_ABORTED, "nccl: cannot split %s: it was aborted", parent->name);
  const int64_t deadline = dtr__now_ms() + parent->timeout_ms;
  DTR_CHECK(DTR_CUDA(parent, cudaSetDevice(pm->device)));
  nccl_impl *m = calloc(1, sizeof *m);
  if (!m) return dtr__comm_fail(parent, DTR_ERR_NOMEM, "nccl: out of memory splitting %s", parent->name);
  m->device = pm->device;
  ncclConfig_t cfg = nonblocking_config(color >= 0 ? child : parent);
  dtr_result rc =
      DTR_NCCL(parent, ncclCommSplit(pm->comm, color < 0 ? NCCL_SPLIT_NOCOLOR : color, key, &m->comm, &cfg));
  if (rc != DTR_OK) {
    free(m);
    return rc;
  }
  rc = wait_ready(parent, pm->comm, deadline, "ncclCommSplit", 1);
  if (rc != DTR_OK) {
    pm->comm = NULL; /* aborted by wait_ready; m stays allocated: the split job may still write into it */
    return rc;
  }
  if (m->comm) {
    rc = wait_ready(parent, m->comm, deadline, "ncclCommSplit (child)", 1);
    if (rc != DTR_OK) {
      free(m); /* the job is finished: nothing writes into m any more */
      return rc;
    }
  }
  if (color < 0) {
    if (m->comm) ncclCommDestroy(m->comm);
    free(m);
    return DTR_OK;
  }
  if (!m->comm) {
    free(m);
    return dtr__comm_fail(parent, DTR_ERR_INTERNAL, "nccl: split of %s with color %d gave no communicator",
                          parent->name, color);
  }
  int r = -1, n = 0;
  ncclCommUserRank(m->comm, &r);
  ncclCommCount(m->comm, &n);
  if (child->size > 0 && (r != child->rank || n != child->size)) {
    ncclCommAbort(m->comm);
    free(m);
    return dtr__comm_fail(parent, DTR_ERR_INTERNAL,
                          "nccl: split of %s (color %d key %d): NCCL placed this rank at %d of %d, the core "
                          "expected %d of %d",
                          parent->name, color, key, r, n, child->rank, child->size);
  }
  child->impl = m;
  rc = finish_setup(child, m);
  if (rc != DTR_OK) {
    dtr__comm_fail(parent, rc, "%s", dtr_comm_last_error(child));
    nccl_destroy(child);
  }
  return rc;
}

/* Not collective: a healthy communicator is finalized (flushing its work) for a bounded time, then
 * destroyed; an aborted or unresponsive one is aborted, which never waits for peers. */
static void nccl_destroy(dtr_comm *c) {
  nccl_impl *m = c->impl;
  if (!m) return;
  cudaSetDevice(m->device);
  if (m->comm) {
    if (atomic_load(&c->aborted)) {
      kill_comm(m);
    } else {
      int bound = c->timeout_ms > 0 && c->timeout_ms < 10000 ? c->timeout_ms : 10000;
      dtr_result rc = DTR_NCCL(c, ncclCommFinalize(m->comm));
      if (rc != DTR_OK) {
        kill_comm(m);
      } else if ((rc = wait_ready(c, m->comm, dtr__now_ms() + bound, "ncclCommFinalize", 0)) != DTR_OK) {
        m->comm = NULL; /* wait_ready aborted it */
      } else {
        ncclCommDestroy(m->comm);
        m->comm = NULL;
      }
      if (rc != DTR_OK)
        DTR_WARN("nccl: %s: finalize failed (%s); the NCCL communicator was aborted", c->name,
                 dtr_strerror(rc));
    }
  }
  if (m->dbar) cudaFree(m->dbar);
  if (m->stream) cudaStreamDestroy(m->stream);
  free(m);
  c->impl = NULL;
}

/* ---------------------------------------------------------------- running one operation */

static dtr_result nccl_type(dtr_comm *c, dtr_dtype t, ncclDataType_t *out) {
  switch (t) {
    case DTR_F32:
      *out = ncclFloat32;
      return DTR_OK;
    case DTR_F64:
      *out = ncclFloat64;
      return DTR_OK;
    case DTR_F16:
      *out = ncclFloat16;
      return DTR_OK;
    case DTR_BF16:
      *out = ncclBfloat16;
      return DTR_OK;
    case DTR_I32:
      *out = ncclInt32;
      return DTR_OK;
    case DTR_I64:
      *out = ncclInt64;
      return DTR_OK;
    case DTR_U8:
      *out = ncclUint8;
      return DTR_OK;
  }
  return dtr__comm_fail(c, DTR_ERR_INVALID, "nccl: unknown dtype %d", (int)t);
}

static dtr_result nccl_op(dtr_comm *c, dtr_redop op, ncclRedOp_t *out) {
  switch (op) {
    case DTR_SUM:
      *out = ncclSum;
      return DTR_OK;
    case DTR_AVG:
      *out = ncclAvg;
      return DTR_OK;
    case DTR_MAX:
      *out = ncclMax;
      return DTR_OK;
    case DTR_MIN:
      *out = ncclMin;
      return DTR_OK;
    case DTR_PROD:
      *out = ncclProd;
      return DTR_OK;
  }
  return dtr__comm_fail(c, DTR_ERR_INVALID, "nccl: unknown reduction %d", (int)op);
}

/* Issue op on m->stream. *scratch receives a stream-ordered allocation to release after completion. */
static dtr_result enqueue(dtr_comm *c, nccl_impl *m, const dtr__op *op, void **scratch) {
  ncclDataType_t dt = ncclFloat32;
  ncclRedOp_t rop = ncclSum;
  const size_t es = dtr_dtype_size(op->dtype);
  if (op->kind != DTR__OP_BARRIER && op->kind != DTR__OP_P2P) DTR_CHECK(nccl_type(c, op->dtype, &dt));
  switch (op->kind) {
    case DTR__OP_ALL_REDUCE:
      DTR_CHECK(nccl_op(c, op->redop, &rop));
      return DTR_NCCL(c, ncclAllReduce(op->send, op->recv, op->count, dt, rop, m->comm, m->stream));
    case DTR__OP_REDUCE_SCATTER: /* in place when recv == send + rank*count: NCCL's own rule */
      DTR_CHECK(nccl_op(c, op->redop, &rop));
      return DTR_NCCL(c, ncclReduceScatter(op->send, op->recv, op->count, dt, rop, m->comm, m->stream));
    case DTR__OP_ALL_GATHER: {
      const char *send = op->send;
      char *mine = (char *)op->recv + (size_t)c->rank * op->count * es;
      if (send != mine && send < (char *)op->recv + (size_t)c->size * op->count * es &&
          send + op->count * es > (const char *)op->recv) {
        /* Overlapping but not NCCL's in-place form (send == recv on rank > 0): move it into place. */
        DTR_CHECK(
            DTR_CUDA(c, cudaMemcpyAsync(mine, send, op->count * es, cudaMemcpyDeviceToDevice, m->stream)));
        send = mine;
      }
      return DTR_NCCL(c, ncclAllGather(send, op->recv, op->count, dt, m->comm, m->stream));
    }
    case DTR__OP_BROADCAST: {
      void *buf = op->recv ? op->recv : (void *)op->send;
      return DTR_NCCL(c, ncclBroadcast(buf, buf, op->count, dt, op->root, m->comm, m->stream));
    }
    case DTR__OP_REDUCE:
      DTR_CHECK(nccl_op(c, op->redop, &rop));
      return DTR_NCCL(c, ncclReduce(op->send, op->recv, op->count, dt, rop, op->root, m->comm, m->stream));
    case DTR__OP_ALL_TO_ALL: {
      const void *send = op->send;
      if (send == op->recv && op->count > 0) {
        /* ncclAlltoAll is not in-place: send from a stream-ordered copy. */
        size_t bytes = (size_t)c->size * op->count * es;
        DTR_CHECK(DTR_CUDA(c, cudaMallocAsync(scratch, bytes, m->stream)));
        DTR_CHECK(DTR_CUDA(c, cudaMemcpyAsync(*scratch, send, bytes, cudaMemcpyDeviceToDevice, m->stream)));
        send = *scratch;
      }
      return DTR_NCCL(c, ncclAlltoAll(send, op->recv, op->count, dt, m->comm, m->stream));
    }
    case DTR__OP_BARRIER:
      return DTR_NCCL(c, ncclAllReduce(m->dbar, m->dbar, 1, ncclFloat32, ncclSum, m->comm, m->stream));
    case DTR__OP_P2P: {
      dtr_result rc = DTR_NCCL(c, ncclGroupStart());
      if (rc != DTR_OK) return rc;
      for (int i = 0; i < op->np2p && rc == DTR_OK; i++) {
        const dtr_p2p *q = &op->p2p[i];
        ncclDataType_t qt = ncclUint8;
        rc = nccl_type(c, q->dtype, &qt);
        if (rc != DTR_OK) break;
        rc = q->is_send ? DTR_NCCL(c, ncclSend(q->buf, q->count, qt, q->peer, m->comm, m->stream))
                        : DTR_NCCL(c, ncclRecv(q->buf, q->count, qt, q->peer, m->comm, m->stream));
      }
      /* Every group that was started must be ended, even after a failed call inside it. */
      dtr_result end = DTR_NCCL(c, ncclGroupEnd());
      return rc != DTR_OK ? rc : end;
    }
  }
  return dtr__comm_fail(c, DTR_ERR_INVALID, "nccl: unknown operation kind %d", (int)op->kind);
}

static dtr_result nccl_run(dtr_comm *c, const dtr__op *op, int64_t deadline) {
  nccl_impl *m = c->impl;
  if (!m->comm || atomic_load(&c->aborted)) {
    kill_comm(m);
    return dtr__comm_fail(c, DTR_ERR_ABORTED, "nccl: %s #%llu on %s: communicator was aborted",
                          dtr__op_kind_name(op->kind), (unsigned long long)op->seq, c->name);
  }
  DTR_CHECK(DTR_CUDA(c, cudaSetDevice(m->device))); /* the progress thread has its own current device */
  void *scratch = NULL;
  char what[96];
  snprintf(what, sizeof what, "%s #%llu", dtr__op_kind_name(op->kind), (unsigned long long)op->seq);
  /* dtr_comm_set_cuda_stream: the producer's work up to the issue comes first. A failure here leaves
   * this rank out of a collective its peers entered: abort, as a failed enqueue does. */
  dtr_result rc =
      op->cuda_event ? DTR_CUDA(c, cudaStreamWaitEvent(m->stream, (cudaEvent_t)op->cuda_event, 0)) : DTR_OK;
  if (rc != DTR_OK) {
    kill_comm(m);
    return rc;
  }
  rc = enqueue(c, m, op, &scratch);
  if (rc == DTR_OK) {
    /* In nonblocking mode the enqueue itself may still be in progress. */
    rc = wait_ready(c, m->comm, deadline, what, 1);
    if (rc != DTR_OK) m->comm = NULL;
  } else if (m->comm) {
    kill_comm(m); /* a failed enqueue leaves the stream and the peers in an unknown state */
  }
  if (scratch) cudaFreeAsync(scratch, m->stream);
  for (long spins = 0; rc == DTR_OK; spins++) {
    cudaError_t q = cudaStreamQuery(m->stream);
    if (q == cudaSuccess) break;
    if (q != cudaErrorNotReady) {
      rc = cuda_result(c, q, "cudaStreamQuery");
      kill_comm(m);
      break;
    }
    ncclResult_t st = ncclSuccess;
    ncclCommGetAsyncError(m->comm, &st);
    if (st != ncclSuccess && st != ncclInProgress) {
      rc = nccl_result(c, st, what);
      kill_comm(m);
      break;
    }
    if (atomic_load(&c->aborted)) {
      kill_comm(m);
      rc = dtr__comm_fail(c, DTR_ERR_ABORTED, "nccl: %s on %s aborted while in progress", what, c->name);
      break;
    }
    if (deadline >= 0 && dtr__now_ms() >= deadline) {
      kill_comm(m);
      rc = dtr__comm_fail(
          c, DTR_ERR_TIMEOUT,
          "nccl: %s (%zu x %s) on %s (rank %d of %d) did not complete within %d ms; NCCL cannot tell "
          "which ranks had not arrived: look for the rank whose flight recorder stops before this "
          "sequence number; the NCCL communicator was aborted",
          what, op->count, dtr_dtype_name(op->dtype), c->name, c->rank, c->size, c->timeout_ms);
      break;
    }
    backoff(spins);
  }
  return rc;
}

/* dtr_comm_set_cuda_stream: an event on the caller's stream, recorded on the issuing thread, created on
 * the communicator's device (the stream's, by contract); the caller's current device is kept. */
static dtr_result nccl_stream_event(dtr_comm *c, void *stream, void **event) {
  nccl_impl *m = c->impl;
  *event = NULL;
  int prev = -1;
  DTR_CHECK(DTR_CUDA(c, cudaGetDevice(&prev)));
  if (prev != m->device) DTR_CHECK(DTR_CUDA(c, cudaSetDevice(m->device)));
  cudaEvent_t ev = NULL;
  dtr_result rc = DTR_CUDA(c, cudaEventCreateWithFlags(&ev, cudaEventDisableTiming));
  if (rc == DTR_OK) {
    rc = DTR_CUDA(c, cudaEventRecord(ev, (cudaStream_t)stream));
    if (rc != DTR_OK) cudaEventDestroy(ev);
  }
  if (prev != m->device) cudaSetDevice(prev);
  if (rc == DTR_OK) *event = ev;
  return rc;
}

/* cudaStreamWaitEvent captured the event when it was called: destroying it now is safe even if the
 * recorded work has not finished (CUDA releases it once it has). */
static void nccl_event_release(dtr_comm *c, void *event) {
  (void)c;
  cudaEventDestroy((cudaEvent_t)event);
}

const dtr__backend dtr__backend_nccl = {
    .name = "nccl",
    .init = nccl_init,
    .split = nccl_split,
    .run = nccl_run,
    .abort = NULL, /* run polls c->aborted and aborts the NCCL communicator itself, on its own thread */
    .destroy = nccl_destroy,
    .stream_event = nccl_stream_event,
    .event_release = nccl_event_release,
};

#endif /* DTRAIN_HAVE_CUDA */
