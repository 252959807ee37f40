/* The mpi backend: each operation is posted as one nonblocking MPI call (or a batch of Isend/Irecv)
 * on a duplicate of MPI_COMM_WORLD or a split of it, then driven by an MPI_Test loop that honours the
 * core's deadline and the communicator's abort flag. Used when mpirun started the job; host buffers.
 *
 * f16/bf16: a 2-byte MPI datatype with user reductions that widen to f32, combine two vectors and
 * round back (through dtr__reduce_n). MPI combines partial results pairwise along its own tree or
 * ring, so these types are rounded at every step rather than once as on the host backend: the result
 * is the same bits on every rank and in every run (Open MPI picks its algorithm from sizes alone),
 * but may differ in the last place from the host backend. DTR_AVG is MPI_SUM followed by a local
 * division; u8 and i32 are summed in 64 bits first so the average is exact (truncated toward zero).
 * Floating MAX/MIN are MPI's, which do not promise the host backend's NaN propagation.
 *
 * Lifecycle: MPI is started by the first mpi communicator (unless the program started it) and
 * finalized when the last one is destroyed, on that thread; MPI cannot start twice, so a later
 * dtr_comm_create with the mpi backend fails. An operation that times out or is aborted cannot be
 * cancelled inside MPI: it stays pending (MPI may still write its receive buffers if the peers ever
 * arrive), the communicator is aborted by the core, and MPI_Finalize is skipped so exit cannot hang. */
#ifdef DTRAIN_HAVE_MPI

#include <limits.h>
#include <mpi.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "check.h"
#include "collectives/comm_internal.h"
#include "log.h"
#include "sock.h"

/* MPI is one per process, so its lifecycle is process-global state that no dtrain context can own
 * (the one exception to "no global mutable state"): whether dtrain started MPI (and therefore must
 * finalize it), how many mpi communicators are alive (MPI_Finalize runs when the last one goes), and
 * whether an operation was ever abandoned inside MPI (then finalizing could hang on it, so we don't).
 * g_lifecycle serializes MPI_Init/MPI_Finalize against concurrent creates and destroys. */
static pthread_mutex_t g_lifecycle = PTHREAD_MUTEX_INITIALIZER;
static int g_we_initialized;   /* guarded by g_lifecycle */
static int g_live_comms;       /* guarded by g_lifecycle */
static atomic_int g_abandoned; /* an operation was left pending in MPI */
/* MPI granted only MPI_THREAD_SERIALIZED (a program that called MPI_Init_thread itself): then the
 * progress threads of different communicators must not enter MPI at the same time. */
static atomic_int g_serialize;
static pthread_mutex_t g_call_lock = PTHREAD_MUTEX_INITIALIZER;

static void call_lock(void) {
  if (atomic_load_explicit(&g_serialize, memory_order_relaxed)) pthread_mutex_lock(&g_call_lock);
}
static void call_unlock(void) {
  if (atomic_load_explicit(&g_serialize, memory_order_relaxed)) pthread_mutex_unlock(&g_call_lock);
}

enum { HALF_F16 = 0, HALF_BF16 = 1, NHALF = 2 };
enum { HOP_SUM = 0, HOP_MAX, HOP_MIN, HOP_PROD, NHOP };

typedef struct mpi_impl {
  MPI_Comm comm;
  MPI_Datatype half; /* two contiguous bytes: one f16 or bf16 element */
  MPI_Op half_ops[NHALF][NHOP];
  MPI_Op u8_sum, u8_prod; /* see u8_sum_fn */
  int types_ready;
  int abandoned; /* an operation of this communicator is still pending inside MPI */
} mpi_impl;

/* ---------------------------------------------------------------- errors */

static dtr_result class_to_result(int cls) {
  switch (cls) {
    case MPI_ERR_NO_MEM:
      return DTR_ERR_NOMEM;
    case MPI_ERR_BUFFER:
    case MPI_ERR_COUNT:
    case MPI_ERR_TYPE:
    case MPI_ERR_TAG:
    case MPI_ERR_COMM:
    case MPI_ERR_RANK:
    case MPI_ERR_ROOT:
    case MPI_ERR_OP:
    case MPI_ERR_ARG:
      return DTR_ERR_INVALID;
    case MPI_ERR_TRUNCATE:
      return DTR_ERR_PROTOCOL;
    case MPI_ERR_UNSUPPORTED_OPERATION:
      return DTR_ERR_UNSUPPORTED;
    default:
      return DTR_ERR_CONNECTION; /* transport and peer failures: the usual runtime errors */
  }
}

/* The one converter for MPI error codes (CONVENTIONS 4): DTR_OK, or the mapped result with the MPI
 * error string recorded in c->err. `call` is the stringified call; its argument list is left out. */
static dtr_result mpi_result(dtr_comm *c, int code, const char *call) {
  if (code == MPI_SUCCESS) return DTR_OK;
  char msg[MPI_MAX_ERROR_STRING] = "unknown MPI error";
  int len = 0, cls = MPI_ERR_UNKNOWN;
  if (MPI_Error_string(code, msg, &len) != MPI_SUCCESS) snprintf(msg, sizeof msg, "MPI error %d", code);
  if (MPI_Error_class(code, &cls) != MPI_SUCCESS) cls = MPI_ERR_UNKNOWN;
  int namelen = (int)strcspn(call, "(");
  return dtr__comm_fail(c, class_to_result(cls), "mpi: %.*s failed on rank %d of %s: %s", namelen, call,
                        c->rank, c->name, msg);
}
#define DTR_MPI(c, call) mpi_result((c), (call), #call)

/* ---------------------------------------------------------------- types and reductions */

/* MPI computes inout = in op inout; these ops are commutative, so the operand order only decides
 * which buffer dtr__reduce_n may overwrite (it allows out to alias its first input). */
#define DTR_USER_OP(fname, dtype, redop)                                 \
  static void fname(void *in, void *inout, int *len, MPI_Datatype *dt) { \
    (void)dt;                                                            \
    const void *src[2] = {inout, in};                                    \
    dtr__reduce_n(inout, src, 2, (size_t)*len, (dtype), (redop), 1);     \
  }
DTR_USER_OP(f16_sum, DTR_F16, DTR_SUM)
DTR_USER_OP(f16_max, DTR_F16, DTR_MAX)
DTR_USER_OP(f16_min, DTR_F16, DTR_MIN)
DTR_USER_OP(f16_prod, DTR_F16, DTR_PROD)
DTR_USER_OP(bf16_sum, DTR_BF16, DTR_SUM)
DTR_USER_OP(bf16_max, DTR_BF16, DTR_MAX)
DTR_USER_OP(bf16_min, DTR_BF16, DTR_MIN)
DTR_USER_OP(bf16_prod, DTR_BF16, DTR_PROD)

/* Open MPI 4.1's AVX reduction component saturates 8-bit sums (255 + 2 gives 255) instead of wrapping
 * as C and every other dtrain backend do, so u8 SUM and PROD use our kernel. */
DTR_USER_OP(u8_sum_fn, DTR_U8, DTR_SUM)
DTR_USER_OP(u8_prod_fn, DTR_U8, DTR_PROD)

static MPI_User_function *const half_fns[NHALF][NHOP] = {
    {f16_sum, f16_max, f16_min, f16_prod},
    {bf16_sum, bf16_max, bf16_min, bf16_prod},
};

static dtr_result types_create(dtr_comm *c, mpi_impl *m) {
  DTR_CHECK(DTR_MPI(c, MPI_Type_contiguous(2, MPI_BYTE, &m->half)));
  DTR_CHECK(DTR_MPI(c, MPI_Type_commit(&m->half)));
  m->types_ready = 1;
  for (int t = 0; t < NHALF; t++)
    for (int o = 0; o < NHOP; o++) m->half_ops[t][o] = MPI_OP_NULL;
  m->u8_sum = m->u8_prod = MPI_OP_NULL;
  DTR_CHECK(DTR_MPI(c, MPI_Op_create(u8_sum_fn, 1, &m->u8_sum)));
  DTR_CHECK(DTR_MPI(c, MPI_Op_create(u8_prod_fn, 1, &m->u8_prod)));
  for (int t = 0; t < NHALF; t++)
    for (int o = 0; o < NHOP; o++)
      DTR_CHECK(DTR_MPI(c, MPI_Op_create(half_fns[t][o], 1, &m->half_ops[t][o])));
  return DTR_OK;
}

static void types_free(mpi_impl *m) {
  if (!m->types_ready) return;
  for (int t = 0; t < NHALF; t++)
    for (int o = 0; o < NHOP; o++)
      if (m->half_ops[t][o] != MPI_OP_NULL) MPI_Op_free(&m->half_ops[t][o]);
  if (m->u8_sum != MPI_OP_NULL) MPI_Op_free(&m->u8_sum);
  if (m->u8_prod != MPI_OP_NULL) MPI_Op_free(&m->u8_prod);
  MPI_Type_free(&m->half);
  m->types_ready = 0;
}

static dtr_result mpi_type(dtr_comm *c, const mpi_impl *m, dtr_dtype t, MPI_Datatype *out) {
  switch (t) {
    case DTR_F32:
      *out = MPI_FLOAT;
      return DTR_OK;
    case DTR_F64:
      *out = MPI_DOUBLE;
      return DTR_OK;
    case DTR_I32:
      *out = MPI_INT32_T;
      return DTR_OK;
    case DTR_I64:
      *out = MPI_INT64_T;
      return DTR_OK;
    case DTR_U8:
      *out = MPI_UINT8_T;
      return DTR_OK;
    case DTR_F16:
    case DTR_BF16:
      *out = m->half;
      return DTR_OK;
  }
  return dtr__comm_fail(c, DTR_ERR_INVALID, "mpi: unknown dtype %d", (int)t);
}

static dtr_result mpi_op(dtr_comm *c, const mpi_impl *m, dtr_dtype t, dtr_redop op, MPI_Op *out) {
  int hop;
  switch (op) {
    case DTR_SUM:
    case DTR_AVG:
      hop = HOP_SUM;
      break; /* AVG: summed here, divided after completion */
    case DTR_MAX:
      hop = HOP_MAX;
      break;
    case DTR_MIN:
      hop = HOP_MIN;
      break;
    case DTR_PROD:
      hop = HOP_PROD;
      break;
    default:
      return dtr__comm_fail(c, DTR_ERR_INVALID, "mpi: unknown reduction %d", (int)op);
  }
  if (t == DTR_F16 || t == DTR_BF16) {
    *out = m->half_ops[t == DTR_F16 ? HALF_F16 : HALF_BF16][hop];
    return DTR_OK;
  }
  if (t == DTR_U8 && (hop == HOP_SUM || hop == HOP_PROD)) {
    *out = hop == HOP_SUM ? m->u8_sum : m->u8_prod;
    return DTR_OK;
  }
  static const MPI_Op native[NHOP] = {MPI_SUM, MPI_MAX, MPI_MIN, MPI_PROD};
  *out = native[hop];
  return DTR_OK;
}

/* ---------------------------------------------------------------- lifecycle */

static const char *thread_level_name(int level) {
  switch (level) {
    case MPI_THREAD_SINGLE:
      return "MPI_THREAD_SINGLE";
    case MPI_THREAD_FUNNELED:
      return "MPI_THREAD_FUNNELED";
    case MPI_THREAD_SERIALIZED:
      return "MPI_THREAD_SERIALIZED";
    case MPI_THREAD_MULTIPLE:
      return "MPI_THREAD_MULTIPLE";
  }
  return "an unknown MPI thread level";
}

/* Start MPI if nobody has (caller holds g_lifecycle). The core runs operations on its progress
 * thread, so MPI must accept calls from a thread other than the one that initialized it. */
static dtr_result ensure_mpi_started(dtr_comm *c) {
  int inited = 0, finalized = 0, provided = MPI_THREAD_SINGLE;
  MPI_Initialized(&inited);
  MPI_Finalized(&finalized);
  if (finalized)
    return dtr__comm_fail(
        c, DTR_ERR_UNSUPPORTED,
        "mpi: MPI was already finalized in this process (dtrain finalizes it when the last mpi "
        "communicator it started MPI for is destroyed); MPI cannot be started twice");
  if (!inited) {
    DTR_CHECK(DTR_MPI(c, MPI_Init_thread(NULL, NULL, MPI_THREAD_MULTIPLE, &provided)));
    g_we_initialized = 1;
  } else {
    DTR_CHECK(DTR_MPI(c, MPI_Query_thread(&provided)));
  }
  if (provided < MPI_THREAD_SERIALIZED)
    return dtr__comm_fail(
        c, DTR_ERR_UNSUPPORTED,
        "mpi: MPI provides only %s; the mpi backend calls MPI from its progress thread and needs "
        "MPI_THREAD_SERIALIZED or MPI_THREAD_MULTIPLE (initialize MPI with MPI_Init_thread, or "
        "let dtrain initialize it)",
        thread_level_name(provided));
  if (provided < MPI_THREAD_MULTIPLE) atomic_store(&g_serialize, 1);
  return DTR_OK;
}

/* Give a fresh MPI communicator to c (errors returned instead of aborting the job; our types). */
static dtr_result adopt(dtr_comm *c, MPI_Comm comm) {
  mpi_impl *m = calloc(1, sizeof *m);
  if (!m) {
    MPI_Comm_free(&comm);
    return dtr__comm_fail(c, DTR_ERR_NOMEM, "mpi: out of memory creating communicator %s", c->name);
  }
  m->comm = comm;
  c->impl = m;
  g_live_comms++;
  DTR_CHECK(DTR_MPI(c, MPI_Comm_set_errhandler(m->comm, MPI_ERRORS_RETURN)));
  DTR_CHECK(types_create(c, m));
  return DTR_OK;
}

static void mpi_destroy(dtr_comm *c);

static dtr_result mpi_init(dtr_comm *c) {
  dtr_result rc = DTR_OK;
  if (c->parent)
    return dtr__comm_fail(c, DTR_ERR_INTERNAL,
                          "mpi: init called for sub-communicator %s; the mpi backend builds children with "
                          "MPI_Comm_split (be->split)",
                          c->name);
  pthread_mutex_lock(&g_lifecycle);
  DTR_CHECK_GOTO(ensure_mpi_started(c), rc, out);
  int wrank = -1, wsize = 0;
  DTR_CHECK_GOTO(DTR_MPI(c, MPI_Comm_rank(MPI_COMM_WORLD, &wrank)), rc, out);
  DTR_CHECK_GOTO(DTR_MPI(c, MPI_Comm_size(MPI_COMM_WORLD, &wsize)), rc, out);
  if (wrank != c->rank || wsize != c->size) {
    rc = dtr__comm_fail(
        c, DTR_ERR_INVALID,
        "mpi: communicator %s was created as rank %d of %d, but MPI_COMM_WORLD says rank %d of %d; "
        "the mpi backend needs the job started by mpirun with rank/size from "
        "OMPI_COMM_WORLD_RANK/OMPI_COMM_WORLD_SIZE",
        c->name, c->rank, c->size, wrank, wsize);
    goto out;
  }
  MPI_Comm dup = MPI_COMM_NULL;
  DTR_CHECK_GOTO(DTR_MPI(c, MPI_Comm_dup(MPI_COMM_WORLD, &dup)), rc, out);
  rc = adopt(c, dup);
out:
  pthread_mutex_unlock(&g_lifecycle);
  if (rc != DTR_OK && c->impl) mpi_destroy(c);
  return rc;
}

/* MPI_Comm_split over the parent: every parent rank takes part, including those with color < 0 (they
 * pass MPI_UNDEFINED, get MPI_COMM_NULL, and leave child alone; child may be NULL for them). The core
 * must have drained the parent's queue first: MPI requires the same order of collectives on the parent
 * on every rank, and this runs on the caller's thread. */
static dtr_result mpi_split(dtr_comm *parent, dtr_comm *child, int color, int key) {
  mpi_impl *pm = parent->impl;
  dtr_result rc = DTR_OK;
  MPI_Comm nc = MPI_COMM_NULL;
  call_lock();
  rc = DTR_MPI(parent, MPI_Comm_split(pm->comm, color < 0 ? MPI_UNDEFINED : color, key, &nc));
  call_unlock();
  if (rc != DTR_OK || color < 0) {
    if (nc != MPI_COMM_NULL) MPI_Comm_free(&nc);
    return rc;
  }
  if (!child || nc == MPI_COMM_NULL) {
    if (nc != MPI_COMM_NULL) MPI_Comm_free(&nc);
    return dtr__comm_fail(parent, DTR_ERR_INTERNAL, "mpi: split of %s with color %d gave %s", parent->name,
                          color, child ? "no communicator" : "a communicator but the core passed no child");
  }
  int r = -1, n = 0;
  MPI_Comm_rank(nc, &r);
  MPI_Comm_size(nc, &n);
  if (child->size > 0 && (r != child->rank || n != child->size)) {
    MPI_Comm_free(&nc);
    return dtr__comm_fail(
        parent, DTR_ERR_INTERNAL,
        "mpi: split of %s (color %d key %d): MPI placed this process at rank %d of %d, the core "
        "expected rank %d of %d",
        parent->name, color, key, r, n, child->rank, child->size);
  }
  pthread_mutex_lock(&g_lifecycle);
  rc = adopt(child, nc);
  pthread_mutex_unlock(&g_lifecycle);
  if (rc != DTR_OK) {
    dtr__comm_fail(parent, rc, "%s", dtr_comm_last_error(child));
    mpi_destroy(child);
  }
  return rc;
}

static void mpi_destroy(dtr_comm *c) {
  mpi_impl *m = c->impl;
  if (!m) return;
  pthread_mutex_lock(&g_lifecycle);
  call_lock();
  /* Freeing handles that an abandoned operation still uses is allowed: MPI frees them when it ends. */
  types_free(m);
  if (m->comm != MPI_COMM_NULL) MPI_Comm_free(&m->comm);
  call_unlock();
  free(m);
  c->impl = NULL;
  if (--g_live_comms == 0 && g_we_initialized) {
    if (atomic_load(&g_abandoned)) {
      DTR_WARN(
          "mpi: not calling MPI_Finalize: an operation timed out or was aborted and is still pending "
          "inside MPI, so finalizing could hang");
    } else {
      int finalized = 0;
      MPI_Finalized(&finalized);
      if (!finalized) MPI_Finalize();
    }
    g_we_initialized = 0;
  }
  pthread_mutex_unlock(&g_lifecycle);
}

/* ---------------------------------------------------------------- running one operation */

static dtr_result check_count(dtr_comm *c, const dtr__op *op, size_t count) {
  if (count > (size_t)INT_MAX)
    return dtr__comm_fail(
        c, DTR_ERR_UNSUPPORTED,
        "mpi: %s #%llu on %s: count %zu exceeds MPI's int count limit (%d); split the buffer",
        dtr__op_kind_name(op->kind), (unsigned long long)op->seq, c->name, count, INT_MAX);
  return DTR_OK;
}

/* The MPI requests of one posted operation, and any scratch it needs. */
typedef struct posted {
  MPI_Request one;
  MPI_Request *reqs; /* &one or malloc'ed (p2p batches) */
  int n;
  void *tmp;         /* in-place reduce-scatter: the result, copied to op->recv afterwards */
  int64_t *wide;     /* integer AVG: the operands widened to i64 ... */
  int64_t *wide_out; /* ... and where the wide sums land (== wide except for reduce-scatter) */
  int abandoned;     /* left pending inside MPI: reqs, tmp and wide must outlive us (leaked on purpose) */
} posted;

/* Integer AVG must equal the exact sum divided (the host backend sums i32 in 64 bits and u8 in 32),
 * but MPI_SUM wraps in the element type: widen u8 and i32 to i64 for the reduction. i64 sums wrap
 * (an overflow of 2^63 in a sum of ranks is not a case worth 2x traffic). */
static int avg_widens(const dtr__op *op) {
  return op->redop == DTR_AVG && (op->dtype == DTR_U8 || op->dtype == DTR_I32) &&
         (op->kind == DTR__OP_ALL_REDUCE || op->kind == DTR__OP_REDUCE_SCATTER || op->kind == DTR__OP_REDUCE);
}

static void widen(int64_t *w, const void *src, size_t n, dtr_dtype t) {
  if (t == DTR_U8)
    for (size_t i = 0; i < n; i++) w[i] = ((const uint8_t *)src)[i];
  else
    for (size_t i = 0; i < n; i++) w[i] = ((const int32_t *)src)[i];
}

/* C division truncates toward zero, as comm.h specifies for integer AVG. */
static void narrow_avg(void *dst, const int64_t *w, size_t n, dtr_dtype t, int size) {
  if (t == DTR_U8)
    for (size_t i = 0; i < n; i++) ((uint8_t *)dst)[i] = (uint8_t)(w[i] / size);
  else
    for (size_t i = 0; i < n; i++) ((int32_t *)dst)[i] = (int32_t)(w[i] / size);
}

static dtr_result post(dtr_comm *c, mpi_impl *m, const dtr__op *op, posted *p) {
  MPI_Datatype dt = MPI_DATATYPE_NULL;
  MPI_Op mop = MPI_OP_NULL;
  const size_t es = dtr_dtype_size(op->dtype);
  p->reqs = &p->one;
  p->n = 1;
  p->one = MPI_REQUEST_NULL;
  if (op->kind != DTR__OP_BARRIER && op->kind != DTR__OP_P2P) {
    DTR_CHECK(mpi_type(c, m, op->dtype, &dt));
    DTR_CHECK(check_count(c, op, op->count));
  }
  const int n = (int)op->count;
  const void *send = op->send;

  if (avg_widens(op)) {
    size_t nin = op->kind == DTR__OP_REDUCE_SCATTER ? (size_t)c->size * op->count : op->count;
    size_t nout = op->kind == DTR__OP_REDUCE_SCATTER ? op->count : 0; /* else reduced in place */
    p->wide = malloc((nin + nout) * sizeof(int64_t) + 8);
    if (!p->wide)
      return dtr__comm_fail(c, DTR_ERR_NOMEM, "mpi: out of memory widening %s #%llu (%zu elements)",
                            dtr__op_kind_name(op->kind), (unsigned long long)op->seq, nin + nout);
    widen(p->wide, send, nin, op->dtype);
    p->wide_out = nout ? p->wide + nin : p->wide;
    p->n = 1;
    switch (op->kind) {
      case DTR__OP_ALL_REDUCE:
        return DTR_MPI(c, MPI_Iallreduce(MPI_IN_PLACE, p->wide, n, MPI_INT64_T, MPI_SUM, m->comm, &p->one));
      case DTR__OP_REDUCE_SCATTER:
        return DTR_MPI(
            c, MPI_Ireduce_scatter_block(p->wide, p->wide_out, n, MPI_INT64_T, MPI_SUM, m->comm, &p->one));
      default: /* DTR__OP_REDUCE */
        return DTR_MPI(c, MPI_Ireduce(c->rank == op->root ? MPI_IN_PLACE : (const void *)p->wide,
                                      c->rank == op->root ? p->wide : NULL, n, MPI_INT64_T, MPI_SUM, op->root,
                                      m->comm, &p->one));
    }
  }

  switch (op->kind) {
    case DTR__OP_ALL_REDUCE:
      DTR_CHECK(mpi_op(c, m, op->dtype, op->redop, &mop));
      if (send == op->recv) send = MPI_IN_PLACE;
      return DTR_MPI(c, MPI_Iallreduce(send, op->recv, n, dt, mop, m->comm, &p->one));

    case DTR__OP_REDUCE_SCATTER: {
      DTR_CHECK(mpi_op(c, m, op->dtype, op->redop, &mop));
      void *recv = op->recv;
      /* In place means recv is this rank's block of send; MPI's in-place form would instead leave the
       * result in block 0 (clobbering it), so reduce into scratch and copy. */
      if ((const char *)send + (size_t)c->rank * op->count * es == (const char *)recv) {
        p->tmp = malloc(op->count > 0 ? op->count * es : 1);
        if (!p->tmp)
          return dtr__comm_fail(c, DTR_ERR_NOMEM,
                                "mpi: out of memory for reduce_scatter #%llu scratch (%zu bytes)",
                                (unsigned long long)op->seq, op->count * es);
        recv = p->tmp;
      }
      return DTR_MPI(c, MPI_Ireduce_scatter_block(send, recv, n, dt, mop, m->comm, &p->one));
    }

    case DTR__OP_ALL_GATHER: {
      char *mine = (char *)op->recv + (size_t)c->rank * op->count * es;
      if (send == mine) {
        send = MPI_IN_PLACE;
      } else if ((const char *)send < (char *)op->recv + (size_t)c->size * op->count * es &&
                 (const char *)send + op->count * es > (const char *)op->recv) {
        /* send overlaps recv elsewhere (send == recv on rank > 0): move it into place first. */
        memmove(mine, send, op->count * es);
        send = MPI_IN_PLACE;
      }
      return DTR_MPI(c, MPI_Iallgather(send, n, dt, op->recv, n, dt, m->comm, &p->one));
    }

    case DTR__OP_BROADCAST:
      return DTR_MPI(c, MPI_Ibcast(op->recv ? op->recv : (void *)send, n, dt, op->root, m->comm, &p->one));

    case DTR__OP_REDUCE:
      DTR_CHECK(mpi_op(c, m, op->dtype, op->redop, &mop));
      if (c->rank == op->root && send == op->recv) send = MPI_IN_PLACE;
      return DTR_MPI(c, MPI_Ireduce(send, c->rank == op->root ? op->recv : NULL, n, dt, mop, op->root,
                                    m->comm, &p->one));

    case DTR__OP_ALL_TO_ALL:
      if (send == op->recv) send = MPI_IN_PLACE;
      return DTR_MPI(c, MPI_Ialltoall(send, n, dt, op->recv, n, dt, m->comm, &p->one));

    case DTR__OP_BARRIER:
      return DTR_MPI(c, MPI_Ibarrier(m->comm, &p->one));

    case DTR__OP_P2P: {
      if (op->np2p <= 0) {
        p->n = 0;
        return DTR_OK;
      }
      if (op->np2p > 1) {
        p->reqs = malloc((size_t)op->np2p * sizeof *p->reqs);
        if (!p->reqs) {
          p->reqs = &p->one;
          return dtr__comm_fail(c, DTR_ERR_NOMEM, "mpi: out of memory for a batch of %d p2p operations",
                                op->np2p);
        }
      }
      p->n = 0;
      for (int i = 0; i < op->np2p; i++) {
        const dtr_p2p *q = &op->p2p[i];
        DTR_CHECK(mpi_type(c, m, q->dtype, &dt));
        DTR_CHECK(check_count(c, op, q->count));
        if (q->peer < 0 || q->peer >= c->size)
          return dtr__comm_fail(c, DTR_ERR_INVALID,
                                "mpi: p2p peer %d out of range (communicator %s has %d ranks)", q->peer,
                                c->name, c->size);
        /* One tag: MPI keeps each (source, tag, communicator) stream in order, which is the pairwise
         * ordering comm.h promises. */
        dtr_result rc =
            q->is_send ? DTR_MPI(c, MPI_Isend(q->buf, (int)q->count, dt, q->peer, 0, m->comm, &p->reqs[i]))
                       : DTR_MPI(c, MPI_Irecv(q->buf, (int)q->count, dt, q->peer, 0, m->comm, &p->reqs[i]));
        if (rc != DTR_OK) return rc;
        p->n = i + 1;
      }
      return DTR_OK;
    }
  }
  return dtr__comm_fail(c, DTR_ERR_INVALID, "mpi: unknown operation kind %d", (int)op->kind);
}

/* Stop waiting on requests that will not complete in time. Receives can be cancelled; collectives
 * cannot (MPI has no way to), so they stay pending, and MPI may still write into their buffers if the
 * peers ever arrive. The communicator is aborted by the core after this. */
static void abandon(mpi_impl *m, posted *p) {
  for (int i = 0; i < p->n; i++) {
    if (p->reqs[i] == MPI_REQUEST_NULL) continue;
    int done = 0;
    MPI_Request_get_status(p->reqs[i], &done, MPI_STATUS_IGNORE);
    if (!done) {
      p->abandoned = 1;
      m->abandoned = 1;
      atomic_store(&g_abandoned, 1);
    }
  }
}

/* For a timed-out p2p batch: which peers still owed us a message or had not taken ours. */
static void describe_pending_peers(const dtr__op *op, const posted *p, char *out, size_t cap) {
  size_t len = 0;
  out[0] = '\0';
  for (int i = 0; i < p->n && i < op->np2p && len + 32 < cap; i++) {
    int done = 0;
    if (p->reqs[i] != MPI_REQUEST_NULL)
      MPI_Request_get_status(p->reqs[i], &done, MPI_STATUS_IGNORE);
    else
      done = 1;
    if (!done)
      len += (size_t)snprintf(out + len, cap - len, "%s%s %d", len ? ", " : "",
                              op->p2p[i].is_send ? "send to" : "recv from", op->p2p[i].peer);
  }
}

/* Open MPI progresses a nonblocking operation only inside MPI calls (no progress thread), so sleeping
 * between tests stalls large transfers fragment by fragment. For the first second of an operation we
 * spin, yielding the CPU to whoever else is runnable (as MPI_Wait does); an operation still waiting
 * after that is most likely waiting for a late peer, and then short sleeps spare the core. */
static void backoff(long spins, int64_t waited_ms) {
  if (spins < 64) return;
  if (waited_ms < 1000) {
    sched_yield();
    return;
  }
  struct timespec ts = {0, 100000};
  nanosleep(&ts, NULL);
}

static dtr_result wait_posted(dtr_comm *c, mpi_impl *m, const dtr__op *op, posted *p, int64_t deadline) {
  const int64_t started = dtr__now_ms();
  for (long spins = 0;; spins++) {
    int flag = 0;
    call_lock();
    int code = p->n ? MPI_Testall(p->n, p->reqs, &flag, MPI_STATUSES_IGNORE) : MPI_SUCCESS;
    call_unlock();
    if (p->n == 0) flag = 1;
    if (code != MPI_SUCCESS) {
      call_lock();
      abandon(m, p);
      call_unlock();
      return mpi_result(c, code, "MPI_Testall");
    }
    if (flag) return DTR_OK;
    if (atomic_load(&c->aborted)) {
      call_lock();
      abandon(m, p);
      call_unlock();
      return dtr__comm_fail(c, DTR_ERR_ABORTED, "mpi: %s #%llu on %s aborted while in progress",
                            dtr__op_kind_name(op->kind), (unsigned long long)op->seq, c->name);
    }
    if (deadline >= 0 && dtr__now_ms() >= deadline) {
      char who[512];
      call_lock();
      if (op->kind == DTR__OP_P2P) describe_pending_peers(op, p, who, sizeof who);
      abandon(m, p);
      call_unlock();
      if (op->kind == DTR__OP_P2P)
        return dtr__comm_fail(
            c, DTR_ERR_TIMEOUT,
            "mpi: p2p #%llu on %s (rank %d) did not complete within %d ms; still pending: %s",
            (unsigned long long)op->seq, c->name, c->rank, c->timeout_ms, who);
      return dtr__comm_fail(
          c, DTR_ERR_TIMEOUT,
          "mpi: %s #%llu (%zu x %s) on %s (rank %d of %d) did not complete within %d ms; MPI "
          "cannot tell which ranks had not arrived: look for the rank whose flight recorder "
          "stops before this sequence number",
          dtr__op_kind_name(op->kind), (unsigned long long)op->seq, op->count, dtr_dtype_name(op->dtype),
          c->name, c->rank, c->size, c->timeout_ms);
    }
    backoff(spins, dtr__now_ms() - started);
  }
}

static void divide_avg(dtr_comm *c, void *buf, size_t count, dtr_dtype t) {
  const void *src[1] = {buf};
  dtr__reduce_n(buf, src, 1, count, t, DTR_AVG, c->size);
}

static dtr_result mpi_run(dtr_comm *c, const dtr__op *op, int64_t deadline) {
  mpi_impl *m = c->impl;
  if (atomic_load(&c->aborted))
    return dtr__comm_fail(c, DTR_ERR_ABORTED, "mpi: %s #%llu on %s: communicator was aborted",
                          dtr__op_kind_name(op->kind), (unsigned long long)op->seq, c->name);
  posted p = {0};
  call_lock();
  dtr_result rc = post(c, m, op, &p);
  call_unlock();
  if (rc == DTR_OK) {
    rc = wait_posted(c, m, op, &p, deadline);
  } else if (p.n > 0) {
    /* A batch failed halfway: its posted part must not be left touching the buffers silently. */
    call_lock();
    abandon(m, &p);
    call_unlock();
  }
  if (rc == DTR_OK && p.wide) {
    if (op->kind != DTR__OP_REDUCE || c->rank == op->root)
      narrow_avg(op->recv, p.wide_out, op->count, op->dtype, c->size);
  } else if (rc == DTR_OK) {
    const size_t es = dtr_dtype_size(op->dtype);
    switch (op->kind) {
      case DTR__OP_ALL_REDUCE:
        if (op->redop == DTR_AVG) divide_avg(c, op->recv, op->count, op->dtype);
        break;
      case DTR__OP_REDUCE_SCATTER:
        if (p.tmp) memcpy(op->recv, p.tmp, op->count * es);
        if (op->redop == DTR_AVG) divide_avg(c, op->recv, op->count, op->dtype);
        break;
      case DTR__OP_REDUCE:
        if (op->redop == DTR_AVG && c->rank == op->root) divide_avg(c, op->recv, op->count, op->dtype);
        break;
      default:
        break;
    }
  }
  /* An abandoned operation may still write into tmp and its requests: leak them, never free under MPI. */
  if (!p.abandoned) {
    free(p.tmp);
    free(p.wide);
    if (p.reqs != &p.one) free(p.reqs);
  }
  return rc;
}

const dtr__backend dtr__backend_mpi = {
    .name = "mpi",
    .init = mpi_init,
    .split = mpi_split,
    .run = mpi_run,
    .abort = NULL, /* run polls c->aborted between MPI_Testall calls */
    .destroy = mpi_destroy,
};

#endif /* DTRAIN_HAVE_MPI */
