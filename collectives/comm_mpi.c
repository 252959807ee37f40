/* The mpi backend: MPI's lifecycle, the request set every operation waits on, and the data-movement
 * operations. Used when mpirun started the job; host buffers. Reductions are in comm_mpi_reduce.c.
 *
 * Everything except barrier and broadcast runs over MPI_Isend/MPI_Irecv of bytes that we schedule
 * ourselves, then waits in an MPI_Testall loop that honours the core's deadline and the abort flag.
 * Why not MPI's nonblocking collectives: Open MPI's come from libnbc, whose MPI_Iallreduce (4.1)
 * reduces the whole buffer up a binomial tree to rank 0 and broadcasts it back, unsegmented, whenever
 * there are fewer than 4 ranks, the buffer is under 64 KiB or the call is in place (the usual gradient
 * case), and otherwise runs a ring of one unsegmented block per rank; either advances only inside
 * MPI_Test. MPI also reduces floats in an order of its own choosing, and f16/bf16 only through user
 * ops that round at every step. Our reductions combine ranks 0..n-1 in that order with dtr__reduce_n,
 * so every rank gets the host backend's bits. Measured with bench/coll_perf on 2 cores shared with other
 * jobs (ranges over interleaved runs): f32 sum 16-256 MiB busbw, 2 ranks 2.4-5.1 GB/s against 0.8-3.2
 * for MPI_Allreduce and 1.4-2.7 for the libnbc path; 4 ranks 0.6-2.9 against 0.4-1.1 and 0.6-1.0;
 * f16 16 MiB on 2 ranks 5.3-6.3 ms against 11.1-12.4 ms through user ops. Every message is cut into
 * pieces of at most DTRAIN_MPI_MAX_COUNT bytes (default INT_MAX, MPI's int count), so any size_t
 * count works.
 *
 * Lifecycle: MPI is started by the first mpi communicator (unless the program started it) and
 * finalized when the last one is destroyed, on that thread; MPI cannot start twice, so a later
 * dtr_comm_create with the mpi backend fails. An operation that times out or is aborted cannot be
 * cancelled inside MPI: it stays pending (MPI may still write its receive buffers if the peers ever
 * arrive), the communicator is aborted by the core, and MPI_Finalize is skipped so exit cannot hang. */
#ifdef DTRAIN_HAVE_MPI

#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "collectives/comm_mpi_internal.h"
#include "common/check.h"
#include "common/clock.h"
#include "common/log.h"
#include "common/param.h"

/* Defaults of DTRAIN_MPI_CHUNK_BYTES and DTRAIN_MPI_SMALL_BYTES. Chunks of 32-64 KiB were slower on 2
 * ranks from 256 KiB to 4 MiB (1 MiB all-reduce: 160-220 us against 120-140 us), and 128 KiB to 1 MiB
 * could not be told apart at 16-256 MiB under this machine's noise. */
#define DEFAULT_CHUNK_BYTES (256 << 10)
#define DEFAULT_SMALL_BYTES (16 << 10)

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

/* `call` is the stringified call; its argument list is left out of the message. */
dtr_result dtr__mpi_result(dtr_comm *c, int code, const char *call) {
  if (code == MPI_SUCCESS) return DTR_OK;
  char msg[MPI_MAX_ERROR_STRING] = "unknown MPI error";
  int len = 0, cls = MPI_ERR_UNKNOWN;
  if (MPI_Error_string(code, msg, &len) != MPI_SUCCESS) snprintf(msg, sizeof msg, "MPI error %d", code);
  if (MPI_Error_class(code, &cls) != MPI_SUCCESS) cls = MPI_ERR_UNKNOWN;
  int namelen = (int)strcspn(call, "(");
  return dtr__comm_fail(c, class_to_result(cls), "mpi: %.*s failed on rank %d of %s: %s", namelen, call,
                        c->rank, c->name, msg);
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
  char why[1024];
  /* the first mpi communicator of the process opens MPI (common/mpi_dl.h) */
  if (dtr__mpi_load(why, sizeof why) != DTR_OK)
    return dtr__comm_fail(c, DTR_ERR_UNSUPPORTED, "mpi: communicator %s: %s", c->name, why);
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

/* Give a fresh MPI communicator to c (errors returned instead of aborting the job; our settings). */
static dtr_result adopt(dtr_comm *c, MPI_Comm comm) {
  dtr__mpi *m = calloc(1, sizeof *m);
  if (!m) {
    MPI_Comm_free(&comm);
    return dtr__comm_fail(c, DTR_ERR_NOMEM, "mpi: out of memory creating communicator %s", c->name);
  }
  m->comm = comm;
  c->impl = m;
  g_live_comms++;
  /* At least 8 bytes, so that one element of every type fits in a message. */
  m->max_bytes = (size_t)dtr__param_range("DTRAIN_MPI_MAX_COUNT", INT_MAX, 8, INT_MAX);
  m->chunk_bytes =
      (size_t)dtr__param_range("DTRAIN_MPI_CHUNK_BYTES", DEFAULT_CHUNK_BYTES, 64, (int64_t)1 << 30);
  if (m->chunk_bytes > m->max_bytes) m->chunk_bytes = m->max_bytes;
  m->small_bytes =
      (size_t)dtr__param_range("DTRAIN_MPI_SMALL_BYTES", DEFAULT_SMALL_BYTES, 0, (int64_t)1 << 30);
  m->nap_us = (int)dtr__param_range("DTRAIN_MPI_NAP_US", 0, 0, 100000);
  if (m->max_bytes != INT_MAX) /* a test setting: say it took effect */
    DTR_INFO(
        "mpi: communicator %s: at most %zu bytes per MPI call (DTRAIN_MPI_MAX_COUNT), reduction chunks of "
        "%zu",
        c->name, m->max_bytes, m->chunk_bytes);
  DTR_CHECK(DTR_MPI(c, MPI_Comm_set_errhandler(m->comm, MPI_ERRORS_RETURN)));
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
  dtr__mpi *pm = parent->impl;
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
  dtr__mpi *m = c->impl;
  if (!m) return;
  pthread_mutex_lock(&g_lifecycle);
  call_lock();
  /* Freeing a communicator that an abandoned operation still uses is allowed: MPI frees it when the
   * operation ends. */
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

/* ---------------------------------------------------------------- the request set */

static dtr_result reqs_grow(dtr_comm *c, dtr__mpi_reqs *q) {
  if (q->n < q->cap) return DTR_OK;
  int cap = q->cap ? 2 * q->cap : 16;
  MPI_Request *r = realloc(q->r, (size_t)cap * sizeof *r);
  if (r) q->r = r;
  int *peer = r ? realloc(q->peer, (size_t)cap * sizeof *peer) : NULL;
  if (peer) q->peer = peer;
  char *is_recv = peer ? realloc(q->is_recv, (size_t)cap) : NULL;
  if (!is_recv) return dtr__comm_fail(c, DTR_ERR_NOMEM, "mpi: out of memory for %d requests", cap);
  q->is_recv = is_recv;
  q->cap = cap;
  return DTR_OK;
}

/* A slot for one more request; *out is set to MPI_REQUEST_NULL until the caller posts into it. */
static dtr_result reqs_add(dtr_comm *c, dtr__mpi_reqs *q, int peer, int is_recv, MPI_Request **out) {
  DTR_CHECK(reqs_grow(c, q));
  q->r[q->n] = MPI_REQUEST_NULL;
  q->peer[q->n] = peer;
  q->is_recv[q->n] = (char)is_recv;
  *out = &q->r[q->n++];
  return DTR_OK;
}

void dtr__mpi_reqs_free(dtr__mpi_reqs *q) {
  free(q->r);
  free(q->peer);
  free(q->is_recv);
  q->r = NULL, q->peer = NULL, q->is_recv = NULL;
  q->n = q->cap = 0;
}

static dtr_result post_bytes(dtr_comm *c, dtr__mpi_reqs *q, void *buf, size_t bytes, int peer, int tag,
                             int recv) {
  dtr__mpi *m = c->impl;
  for (size_t off = 0; off < bytes; off += m->max_bytes) {
    int len = (int)(bytes - off < m->max_bytes ? bytes - off : m->max_bytes);
    MPI_Request *r;
    DTR_CHECK(reqs_add(c, q, peer, recv, &r));
    call_lock();
    int code = recv ? MPI_Irecv((char *)buf + off, len, MPI_BYTE, peer, tag, m->comm, r)
                    : MPI_Isend((char *)buf + off, len, MPI_BYTE, peer, tag, m->comm, r);
    call_unlock();
    if (code != MPI_SUCCESS) return dtr__mpi_result(c, code, recv ? "MPI_Irecv" : "MPI_Isend");
  }
  return DTR_OK;
}

dtr_result dtr__mpi_isend(dtr_comm *c, dtr__mpi_reqs *q, const void *buf, size_t bytes, int peer, int tag) {
  return post_bytes(c, q, (void *)buf, bytes, peer, tag, 0);
}

dtr_result dtr__mpi_irecv(dtr_comm *c, dtr__mpi_reqs *q, void *buf, size_t bytes, int peer, int tag) {
  return post_bytes(c, q, buf, bytes, peer, tag, 1);
}

/* Stop waiting on requests that will not complete in time. MPI cannot cancel collectives, nor sends
 * reliably, so they stay pending, and MPI may still write into their buffers if the peers ever arrive;
 * their owners must leak those buffers. The communicator is aborted by the core after this. */
static void abandon(dtr__mpi *m, dtr__mpi_reqs *q) {
  for (int i = 0; i < q->n; i++) {
    if (q->r[i] == MPI_REQUEST_NULL) continue;
    int done = 0;
    MPI_Request_get_status(q->r[i], &done, MPI_STATUS_IGNORE);
    if (!done) {
      q->abandoned = 1;
      m->abandoned = 1;
      atomic_store(&g_abandoned, 1);
    }
  }
}

int dtr__mpi_settle(dtr_comm *c, dtr__mpi_reqs *q) {
  if (q->n > 0 && !q->abandoned) {
    call_lock();
    abandon(c->impl, q);
    call_unlock();
  }
  return q->abandoned;
}

/* Which peers still owed us a message or had not taken ours, e.g. "recv from 2, send to 2". */
static void describe_pending_peers(const dtr__mpi_reqs *q, char *out, size_t cap) {
  size_t len = 0;
  int last_peer = -2, last_recv = -1;
  out[0] = '\0';
  for (int i = 0; i < q->n && len + 32 < cap; i++) {
    int done = 1;
    if (q->r[i] != MPI_REQUEST_NULL) MPI_Request_get_status(q->r[i], &done, MPI_STATUS_IGNORE);
    if (done || q->peer[i] < 0 || (q->peer[i] == last_peer && q->is_recv[i] == last_recv)) continue;
    len += (size_t)snprintf(out + len, cap - len, "%s%s %d", len ? ", " : "",
                            q->is_recv[i] ? "recv from" : "send to", q->peer[i]);
    last_peer = q->peer[i], last_recv = q->is_recv[i];
  }
}

/* One MPI_Testall; *flag = 1 when everything in q completed. An MPI error abandons q. */
static dtr_result test_once(dtr_comm *c, dtr__mpi_reqs *q, int *flag) {
  *flag = 1;
  if (q->n == 0) return DTR_OK;
  call_lock();
  int code = MPI_Testall(q->n, q->r, flag, MPI_STATUSES_IGNORE);
  if (code != MPI_SUCCESS) abandon(c->impl, q);
  call_unlock();
  return dtr__mpi_result(c, code, "MPI_Testall");
}

dtr_result dtr__mpi_poke(dtr_comm *c, const dtr__op *op, dtr__mpi_reqs *q) {
  int flag = 0;
  (void)op;
  return test_once(c, q, &flag);
}

/* Open MPI progresses a nonblocking operation only inside MPI calls (no progress thread), so sleeping
 * between tests stalls transfers. A wait polls, then polls yielding the CPU to whoever else is runnable
 * (as MPI_Wait does when oversubscribed); a wait still going after a second most likely waits for a late
 * peer, and then 100 us sleeps spare the core. DTRAIN_MPI_NAP_US > 0 sleeps that long between polls
 * already after a few yields: on 2 cores, 4 ranks, f32 all-reduce 16-256 MiB under heavy background
 * load (load average 10) it measured 1.1-1.6 GB/s busbw against 0.6-1.0 yielding, but under lighter
 * load no better, and a nap costs mid-size operations a timer tick per wait (2 ranks, 256 KiB:
 * 90-650 us against 70-110 us), so it is off by default. */
static void backoff(const dtr__mpi *m, long spins, int64_t waited_ms) {
  enum { SPINS = 16, YIELDS = 10 };
  if (spins < SPINS) return;
  if (waited_ms < 1000 && (m->nap_us == 0 || spins < SPINS + YIELDS)) {
    sched_yield();
    return;
  }
  struct timespec ts = {0, (waited_ms < 1000 ? m->nap_us : 100) * 1000L};
  nanosleep(&ts, NULL);
}

dtr_result dtr__mpi_wait(dtr_comm *c, const dtr__op *op, dtr__mpi_reqs *q, int64_t deadline) {
  dtr__mpi *m = c->impl;
  const int64_t started = dtr__now_ms();
  for (long spins = 0;; spins++) {
    int flag = 0;
    DTR_CHECK(test_once(c, q, &flag));
    if (flag) {
      q->n = 0;
      return DTR_OK;
    }
    if (atomic_load(&c->aborted)) {
      call_lock();
      abandon(m, q);
      call_unlock();
      return dtr__comm_fail(c, DTR_ERR_ABORTED, "mpi: %s #%llu on %s aborted while in progress",
                            dtr__op_kind_name(op->kind), (unsigned long long)op->seq, c->name);
    }
    int64_t now = dtr__now_ms();
    if (deadline >= 0 && now >= deadline) {
      char who[512];
      call_lock();
      describe_pending_peers(q, who, sizeof who);
      abandon(m, q);
      call_unlock();
      if (op->kind == DTR__OP_P2P)
        return dtr__comm_fail(
            c, DTR_ERR_TIMEOUT,
            "mpi: p2p #%llu on %s (rank %d) did not complete within %d ms; still pending: %s",
            (unsigned long long)op->seq, c->name, c->rank, c->timeout_ms, who);
      /* Our own algorithms know whom they wait for: a rank that never sent is the likely culprit.
       * MPI's collectives (barrier, broadcast) cannot tell. */
      if (who[0])
        return dtr__comm_fail(c, DTR_ERR_TIMEOUT,
                              "mpi: %s #%llu (%zu x %s) on %s (rank %d of %d) did not complete within %d ms; "
                              "still waiting on: %s (a rank that never sent had most likely not arrived; its "
                              "flight recorder stops before this sequence number)",
                              dtr__op_kind_name(op->kind), (unsigned long long)op->seq, op->count,
                              dtr_dtype_name(op->dtype), c->name, c->rank, c->size, c->timeout_ms, who);
      return dtr__comm_fail(
          c, DTR_ERR_TIMEOUT,
          "mpi: %s #%llu (%zu x %s) on %s (rank %d of %d) did not complete within %d ms; MPI "
          "cannot tell which ranks had not arrived: look for the rank whose flight recorder "
          "stops before this sequence number",
          dtr__op_kind_name(op->kind), (unsigned long long)op->seq, op->count, dtr_dtype_name(op->dtype),
          c->name, c->rank, c->size, c->timeout_ms);
    }
    backoff(m, spins, now - started);
  }
}

/* ---------------------------------------------------------------- data movement */

/* Block j of a buffer of blocks of `bytes` bytes. */
#define BLOCK(p, j, bytes) ((char *)(p) + (size_t)(j) * (bytes))

/* Direct all-gather: this rank's block goes to every peer (its pieces in order), theirs come straight
 * into recv. Peers are visited from rank+1 upward so that not everyone sends to rank 0 first. */
static dtr_result run_all_gather(dtr_comm *c, const dtr__op *op, dtr__mpi_reqs *q, int64_t deadline) {
  const size_t bytes = op->count * dtr_dtype_size(op->dtype);
  char *mine = BLOCK(op->recv, c->rank, bytes);
  if ((const char *)op->send != mine) memmove(mine, op->send, bytes); /* send may overlap recv */
  for (int k = 1; k < c->size; k++) {
    int to = (c->rank + k) % c->size, from = (c->rank - k + c->size) % c->size;
    DTR_CHECK(dtr__mpi_irecv(c, q, BLOCK(op->recv, from, bytes), bytes, from, DTR__MPI_TAG_MOVE));
    DTR_CHECK(dtr__mpi_isend(c, q, mine, bytes, to, DTR__MPI_TAG_MOVE));
  }
  return dtr__mpi_wait(c, op, q, deadline);
}

/* All-to-all. Out of place: every block straight to its rank. In place, a block must leave before its
 * replacement lands: rounds pair each rank with one peer (round r pairs a and b with a + b = r mod n,
 * so both sides agree), and the outgoing block goes through a bounded scratch piece by piece. */
static dtr_result run_all_to_all(dtr_comm *c, const dtr__op *op, dtr__mpi_reqs *q, int64_t deadline) {
  dtr__mpi *m = c->impl;
  const size_t bytes = op->count * dtr_dtype_size(op->dtype);
  const int n = c->size, me = c->rank;
  if (op->send != op->recv) {
    memcpy(BLOCK(op->recv, me, bytes), BLOCK(op->send, me, bytes), bytes);
    for (int k = 1; k < n; k++) {
      int to = (me + k) % n, from = (me - k + n) % n;
      DTR_CHECK(dtr__mpi_irecv(c, q, BLOCK(op->recv, from, bytes), bytes, from, DTR__MPI_TAG_MOVE));
      DTR_CHECK(dtr__mpi_isend(c, q, BLOCK(op->send, to, bytes), bytes, to, DTR__MPI_TAG_MOVE));
    }
    return dtr__mpi_wait(c, op, q, deadline);
  }
  size_t piece = m->chunk_bytes;
  char *tmp = malloc(piece);
  if (!tmp)
    return dtr__comm_fail(c, DTR_ERR_NOMEM, "mpi: out of memory for all_to_all scratch (%zu bytes)", piece);
  dtr_result rc = DTR_OK;
  for (int r = 0; r < n && rc == DTR_OK; r++) {
    int peer = (r - me + n) % n;
    if (peer == me) continue;
    char *blk = BLOCK(op->recv, peer, bytes);
    for (size_t off = 0; off < bytes && rc == DTR_OK; off += piece) {
      size_t len = bytes - off < piece ? bytes - off : piece;
      memcpy(tmp, blk + off, len);
      rc = dtr__mpi_irecv(c, q, blk + off, len, peer, DTR__MPI_TAG_MOVE);
      if (rc == DTR_OK) rc = dtr__mpi_isend(c, q, tmp, len, peer, DTR__MPI_TAG_MOVE);
      if (rc == DTR_OK) rc = dtr__mpi_wait(c, op, q, deadline);
    }
  }
  if (rc == DTR_OK || !dtr__mpi_settle(c, q)) free(tmp); /* else a pending send may still read it */
  return rc;
}

/* MPI's own broadcast (its trees beat direct sends beyond a few ranks), in pieces of at most
 * max_bytes, a few in flight at a time (nonblocking collectives match in the order they are posted). */
static dtr_result run_broadcast(dtr_comm *c, const dtr__op *op, dtr__mpi_reqs *q, int64_t deadline) {
  dtr__mpi *m = c->impl;
  const size_t bytes = op->count * dtr_dtype_size(op->dtype);
  char *buf = op->recv ? op->recv : (char *)op->send;
  enum { WINDOW = 4 };
  for (size_t off = 0; off < bytes;) {
    for (int w = 0; w < WINDOW && off < bytes; w++) {
      int len = (int)(bytes - off < m->max_bytes ? bytes - off : m->max_bytes);
      MPI_Request *r;
      DTR_CHECK(reqs_add(c, q, -1, 0, &r));
      call_lock();
      int code = MPI_Ibcast(buf + off, len, MPI_BYTE, op->root, m->comm, r);
      call_unlock();
      if (code != MPI_SUCCESS) return dtr__mpi_result(c, code, "MPI_Ibcast");
      off += (size_t)len;
    }
    DTR_CHECK(dtr__mpi_wait(c, op, q, deadline));
  }
  return DTR_OK;
}

static dtr_result run_barrier(dtr_comm *c, const dtr__op *op, dtr__mpi_reqs *q, int64_t deadline) {
  dtr__mpi *m = c->impl;
  MPI_Request *r;
  DTR_CHECK(reqs_add(c, q, -1, 0, &r));
  call_lock();
  int code = MPI_Ibarrier(m->comm, r);
  call_unlock();
  DTR_CHECK(dtr__mpi_result(c, code, "MPI_Ibarrier"));
  return dtr__mpi_wait(c, op, q, deadline);
}

/* A batch: every message posted at once, in issue order, each cut into pieces the same way on both
 * sides; one tag, so MPI keeps each pair's messages in order, which is the ordering comm.h promises. */
static dtr_result run_p2p(dtr_comm *c, const dtr__op *op, dtr__mpi_reqs *q, int64_t deadline) {
  for (int i = 0; i < op->np2p; i++) {
    const dtr_p2p *p = &op->p2p[i];
    size_t es = dtr_dtype_size(p->dtype);
    if (es == 0) return dtr__comm_fail(c, DTR_ERR_INVALID, "mpi: p2p: unknown dtype %d", (int)p->dtype);
    if (p->peer < 0 || p->peer >= c->size)
      return dtr__comm_fail(c, DTR_ERR_INVALID,
                            "mpi: p2p peer %d out of range (communicator %s has %d ranks)", p->peer, c->name,
                            c->size);
    if (p->count > SIZE_MAX / es)
      return dtr__comm_fail(c, DTR_ERR_INVALID, "mpi: p2p count %zu overflows", p->count);
    if (p->is_send)
      DTR_CHECK(dtr__mpi_isend(c, q, p->buf, p->count * es, p->peer, DTR__MPI_TAG_P2P));
    else
      DTR_CHECK(dtr__mpi_irecv(c, q, p->buf, p->count * es, p->peer, DTR__MPI_TAG_P2P));
  }
  return dtr__mpi_wait(c, op, q, deadline);
}

/* ---------------------------------------------------------------- running one operation */

static dtr_result mpi_run(dtr_comm *c, const dtr__op *op, int64_t deadline) {
  if (atomic_load(&c->aborted))
    return dtr__comm_fail(c, DTR_ERR_ABORTED, "mpi: %s #%llu on %s: communicator was aborted",
                          dtr__op_kind_name(op->kind), (unsigned long long)op->seq, c->name);
  if (op->kind != DTR__OP_BARRIER && op->kind != DTR__OP_P2P) {
    size_t es = dtr_dtype_size(op->dtype);
    /* the largest buffer an operation touches is size * count elements */
    if (es == 0 || op->count > SIZE_MAX / es / (size_t)c->size)
      return dtr__comm_fail(c, DTR_ERR_INVALID, "mpi: %s #%llu on %s: %s count %zu",
                            dtr__op_kind_name(op->kind), (unsigned long long)op->seq, c->name,
                            es ? "overflowing" : "unknown dtype,", op->count);
  }
  dtr__mpi_reqs q = {0};
  dtr_result rc;
  switch (op->kind) {
    case DTR__OP_ALL_REDUCE:
    case DTR__OP_REDUCE_SCATTER:
    case DTR__OP_REDUCE:
      rc = dtr__mpi_reduction(c, op, deadline);
      break;
    case DTR__OP_ALL_GATHER:
      rc = run_all_gather(c, op, &q, deadline);
      break;
    case DTR__OP_ALL_TO_ALL:
      rc = run_all_to_all(c, op, &q, deadline);
      break;
    case DTR__OP_BROADCAST:
      rc = run_broadcast(c, op, &q, deadline);
      break;
    case DTR__OP_BARRIER:
      rc = run_barrier(c, op, &q, deadline);
      break;
    case DTR__OP_P2P:
      rc = run_p2p(c, op, &q, deadline);
      break;
    default:
      rc = dtr__comm_fail(c, DTR_ERR_INVALID, "mpi: unknown operation kind %d", (int)op->kind);
      break;
  }
  /* A post that failed halfway leaves its earlier part pending: it must not touch buffers silently. */
  if (rc != DTR_OK) dtr__mpi_settle(c, &q);
  dtr__mpi_reqs_free(&q);
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
