/* The communicator's operations: argument checks, sequence numbers, the inline fast path, the FIFO
 * queue and its progress thread, requests, deadlines and aborts, debug-mode signature checks, and the
 * size-1 short circuit. Backends see one operation at a time through be->run (comm_internal.h). */
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "collectives/comm_core.h"
#include "common/check.h"
#include "common/clock.h"
#include "common/fsutil.h"
#include "common/log.h"
#include "common/progress.h"

/* ---------------------------------------------------------------- errors */

dtr_result dtr__comm_fail(dtr_comm *c, dtr_result rc, const char *fmt, ...) {
  char buf[sizeof c->err];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  pthread_mutex_lock(&c->mu);
  memcpy(c->err, buf, sizeof buf);
  pthread_mutex_unlock(&c->mu);
  if (c->core) atomic_fetch_add(&dtr__core(c)->err_gen, 1u);
  DTR_DEBUG("comm %s rank %d: %s: %s", c->name, c->rank, dtr_strerror(rc), buf);
  return rc;
}

/* Append " (communicator X, op K seq N)" unless the backend already named them. */
static void add_context(dtr_comm *c, const dtr__op *op) {
  char ctx[256];
  snprintf(ctx, sizeof ctx, " (communicator %s, op %s seq %llu)", c->name, dtr__op_kind_name(op->kind),
           (unsigned long long)op->seq);
  pthread_mutex_lock(&c->mu);
  size_t len = strlen(c->err);
  if (!strstr(c->err, ctx + 1) && len + strlen(ctx) < sizeof c->err)
    memcpy(c->err + len, ctx, strlen(ctx) + 1);
  pthread_mutex_unlock(&c->mu);
}

void dtr__core_mark_aborted(dtr_comm *c, const char *reason) {
  dtr__comm_core *k = dtr__core(c);
  pthread_mutex_lock(&c->mu);
  if (!k->abort_reason[0]) snprintf(k->abort_reason, sizeof k->abort_reason, "%s", reason);
  pthread_mutex_unlock(&c->mu);
  atomic_store(&c->aborted, 1);
}

static dtr_result aborted_error(dtr_comm *c, const dtr__op *op) {
  char why[sizeof dtr__core(c)->abort_reason];
  pthread_mutex_lock(&c->mu);
  memcpy(why, dtr__core(c)->abort_reason, sizeof why);
  pthread_mutex_unlock(&c->mu);
  return dtr__comm_fail(c, DTR_ERR_ABORTED, "communicator %s is aborted, %s seq %llu not run (cause: %s)",
                        c->name, dtr__op_kind_name(op->kind), (unsigned long long)op->seq,
                        why[0] ? why : "unknown");
}

/* ---------------------------------------------------------------- requests */

static void req_init(dtr_request *r) {
  memset(r, 0, sizeof *r);
  pthread_mutex_init(&r->mu, NULL);
  pthread_cond_init(&r->cv, NULL);
}

static void req_complete(dtr_request *r, dtr_result rc) {
  pthread_mutex_lock(&r->mu);
  r->result = rc;
  r->done = 1;
  pthread_cond_broadcast(&r->cv);
  pthread_mutex_unlock(&r->mu);
}

static void req_release(dtr_request *r) {
  pthread_cond_destroy(&r->cv);
  pthread_mutex_destroy(&r->mu);
  free(r->p2p_heap);
}

/* Copy a p2p batch into storage the request owns. */
static dtr_result req_set_p2p(dtr_request *r, const dtr_p2p *ops, int nops) {
  dtr_p2p *dst = r->p2p_inline;
  if (nops > DTR__P2P_INLINE) {
    dst = r->p2p_heap = malloc(sizeof *dst * (size_t)nops);
    if (!dst) return DTR_ERR_NOMEM;
  }
  if (nops) memcpy(dst, ops, sizeof *dst * (size_t)nops);
  r->op.p2p = dst;
  r->op.np2p = nops;
  return DTR_OK;
}

dtr_result dtr_request_test(dtr_request *r, int *done) {
  if (!r || !done) return DTR_ERR_INVALID;
  pthread_mutex_lock(&r->mu);
  *done = r->done;
  dtr_result rc = r->done ? r->result : DTR_OK;
  pthread_mutex_unlock(&r->mu);
  return rc;
}

dtr_result dtr_request_wait(dtr_request *r) {
  if (!r) return DTR_ERR_INVALID;
  pthread_mutex_lock(&r->mu);
  if (!r->done) {
    dtr__progress_wait_begin(); /* waiting for other ranks: the agent does not blame this one */
    while (!r->done) pthread_cond_wait(&r->cv, &r->mu);
    dtr__progress_wait_end();
  }
  dtr_result rc = r->result;
  pthread_mutex_unlock(&r->mu);
  return rc;
}

void dtr_request_free(dtr_request *r) {
  if (!r) return;
  dtr_request_wait(r);
  req_release(r);
  free(r);
}

/* ---------------------------------------------------------------- size 1: the core does it */

static dtr_result local_p2p(dtr_comm *c, const dtr__op *op) {
  /* Only self-exchanges exist: the k-th send of the batch feeds its k-th receive. */
  int s = 0, r = 0;
  for (;;) {
    while (s < op->np2p && !op->p2p[s].is_send) s++;
    while (r < op->np2p && op->p2p[r].is_send) r++;
    if (s >= op->np2p || r >= op->np2p) break;
    const dtr_p2p *a = &op->p2p[s], *b = &op->p2p[r];
    if (a->count != b->count || a->dtype != b->dtype)
      return dtr__comm_fail(
          c, DTR_ERR_INVALID,
          "p2p with itself on communicator %s: send #%d has %zu %s but receive #%d expects %zu %s", c->name,
          s, a->count, dtr_dtype_name(a->dtype), r, b->count, dtr_dtype_name(b->dtype));
    if (a->count && a->buf != b->buf) memmove(b->buf, a->buf, a->count * dtr_dtype_size(a->dtype));
    s++, r++;
  }
  if (s < op->np2p || r < op->np2p)
    return dtr__comm_fail(
        c, DTR_ERR_INVALID,
        "p2p with itself on communicator %s (size 1): a %s without a matching %s in the same "
        "batch would never complete",
        c->name, s < op->np2p ? "send" : "receive", s < op->np2p ? "receive" : "send");
  return DTR_OK;
}

static dtr_result local_run(dtr_comm *c, const dtr__op *op) {
  size_t bytes = op->count * dtr_dtype_size(op->dtype);
  switch (op->kind) {
    case DTR__OP_ALL_REDUCE:
    case DTR__OP_REDUCE_SCATTER:
    case DTR__OP_ALL_GATHER:
    case DTR__OP_REDUCE:
    case DTR__OP_ALL_TO_ALL:
      /* One rank: a reduction over one input is that input (AVG divides by 1). */
      if (bytes && op->recv && op->send != op->recv) memmove(op->recv, op->send, bytes);
      return DTR_OK;
    case DTR__OP_BROADCAST:
    case DTR__OP_BARRIER:
      return DTR_OK;
    case DTR__OP_P2P:
      return local_p2p(c, op);
  }
  return dtr__comm_fail(c, DTR_ERR_INTERNAL, "unknown op kind %d", (int)op->kind);
}

/* ---------------------------------------------------------------- debug mode */

static int has_redop(dtr__op_kind k) {
  return k == DTR__OP_ALL_REDUCE || k == DTR__OP_REDUCE_SCATTER || k == DTR__OP_REDUCE;
}

static void signature(const dtr__op *op, char *out, size_t cap) {
  snprintf(out, cap, "seq %llu %s count %zu %s %s root %d", (unsigned long long)op->seq,
           dtr__op_kind_name(op->kind), op->count, dtr_dtype_name(op->dtype),
           has_redop(op->kind) ? dtr_redop_name(op->redop) : "-", op->root);
}

/* Every rank publishes its signature for this sequence number and reads everyone's; all compare
 * against rank 0's, so every rank reports the same mismatch. */
static dtr_result debug_check(dtr_comm *c, const dtr__op *op, int64_t deadline) {
  dtr__comm_core *k = dtr__core(c);
  char mine[192], key[512];
  signature(op, mine, sizeof mine);
  snprintf(key, sizeof key, "%sdbg/%llu/%d", c->prefix, (unsigned long long)op->seq, c->rank);
  dtr_result rc = dtr_store_set(k->dbg_store, key, mine, strlen(mine));
  if (rc)
    return dtr__comm_fail(c, rc, "debug check of %s seq %llu: cannot publish %s: %s",
                          dtr__op_kind_name(op->kind), (unsigned long long)op->seq, key,
                          dtr_store_last_error(k->dbg_store));
  char *sig0 = NULL;
  for (int r = 0; r < c->size && rc == DTR_OK; r++) {
    void *v = NULL;
    size_t len = 0;
    snprintf(key, sizeof key, "%sdbg/%llu/%d", c->prefix, (unsigned long long)op->seq, r);
    int left = dtr__ms_left(deadline);
    rc = dtr_store_get(k->dbg_store, key, left > 0 ? left : 1, &v, &len);
    if (rc == DTR_ERR_TIMEOUT) {
      /* Name every rank that had not arrived, not just the first. */
      char missing[512];
      int m = snprintf(missing, sizeof missing, "%d", r);
      for (int q = r + 1; q < c->size && m < (int)sizeof missing - 16; q++) {
        void *w = NULL;
        size_t wl;
        snprintf(key, sizeof key, "%sdbg/%llu/%d", c->prefix, (unsigned long long)op->seq, q);
        if (dtr_store_try_get(k->dbg_store, key, &w, &wl) == DTR_ERR_NOT_FOUND)
          m += snprintf(missing + m, sizeof missing - (size_t)m, ",%d", q);
        free(w);
      }
      dtr__comm_fail(c, rc, "timed out after %d ms in the debug check of %s: rank(s) %s had not issued it",
                     c->timeout_ms, mine, missing);
    } else if (rc) {
      dtr__comm_fail(c, rc, "debug check of %s: reading rank %d's signature: %s", mine, r,
                     dtr_store_last_error(k->dbg_store));
    } else if (r == 0) {
      sig0 = v;
      v = NULL;
    } else if (strcmp(sig0, (char *)v) != 0) {
      rc = dtr__comm_fail(
          c, DTR_ERR_INVALID,
          "collective mismatch on communicator %s: rank 0 issued \"%s\" but rank %d issued \"%s\"", c->name,
          sig0, r, (char *)v);
    }
    free(v);
  }
  free(sig0);
  if (rc == DTR_OK) {
    /* Everyone has published this seq, so everyone is done reading the previous one: drop ours. */
    if (k->dbg_prev_seq) {
      snprintf(key, sizeof key, "%sdbg/%llu/%d", c->prefix, (unsigned long long)(k->dbg_prev_seq - 1),
               c->rank);
      dtr_store_delete(k->dbg_store, key, NULL);
    }
    k->dbg_prev_seq = op->seq + 1;
  }
  return rc;
}

/* ---------------------------------------------------------------- running one operation */

/* dtr_comm_set_cuda_stream: the event that orders op after the caller's stream, recorded now (on the
 * issuing thread, which is what "at the moment of issue" means), and its release once op is over. */
static dtr_result mark_stream(dtr_comm *c, dtr__op *op) {
  dtr_result rc = c->be->stream_event(c, c->cuda_stream, &op->cuda_event);
  if (rc != DTR_OK) op->cuda_event = NULL;
  return rc;
}

static void drop_event(dtr_comm *c, dtr__op *op) {
  if (op->cuda_event) c->be->event_release(c, op->cuda_event);
  op->cuda_event = NULL;
}

/* Run op on this thread (the only one inside the backend now), started at `now`. An expired deadline
 * or a broken transport aborts the communicator. */
static dtr_result run_op(dtr_comm *c, const dtr__op *op, int64_t now) {
  dtr__comm_core *k = dtr__core(c);
  if (atomic_load_explicit(&c->aborted, memory_order_acquire)) return aborted_error(c, op);
  unsigned gen0 = atomic_load_explicit(&k->err_gen, memory_order_relaxed);
  int64_t deadline = now + c->timeout_ms;
  dtr_result rc = DTR_OK;
  if (c->debug && k->dbg_store && op->kind != DTR__OP_P2P && c->size > 1) rc = debug_check(c, op, deadline);
  if (rc == DTR_OK) rc = k->local ? local_run(c, op) : c->be->run(c, op, deadline);
  if (rc == DTR_OK) return DTR_OK;
  if (atomic_load(&k->err_gen) == gen0)
    dtr__comm_fail(c, rc, "%s backend: %s failed: %s", c->be->name, dtr__op_kind_name(op->kind),
                   dtr_strerror(rc));
  add_context(c, op);
  if (rc == DTR_ERR_TIMEOUT || rc == DTR_ERR_CONNECTION || rc == DTR_ERR_PROTOCOL) {
    char why[sizeof c->err];
    pthread_mutex_lock(&c->mu);
    memcpy(why, c->err, sizeof why);
    pthread_mutex_unlock(&c->mu);
    dtr__core_mark_aborted(c, why);
  }
  return rc;
}

/* With k->mu held, after run_op: record the outcome and leave the backend to the next one. */
static void finish_locked(dtr__comm_core *k, uint64_t fr_id, dtr_result rc) {
  dtr__fr_set(k, fr_id, rc ? DTR__FR_FAILED : DTR__FR_DONE, dtr__coarse_ms(), rc);
  k->busy = 0;
  if (k->head) pthread_cond_signal(&k->work);
  pthread_cond_broadcast(&k->idle);
}

/* After the recorder is up to date: a timeout, or a peer that died (which comm.h promises surfaces
 * the same way), is loud: the error and the flight recorder go to stderr. */
static void report_timeout(dtr_comm *c, dtr_result rc) {
  if (rc != DTR_ERR_TIMEOUT && rc != DTR_ERR_CONNECTION) return;
  DTR_ERROR("rank %d: %s", c->rank, c->err);
  dtr_comm_dump_flight_recorder(c, STDERR_FILENO);
  if (!c->diag_dir[0]) return;
  /* and a file of its own in the launcher's log directory (DTRAIN_DIAG_DIR), one per process */
  char path[512];
  snprintf(path, sizeof path, "%s/rank_%d.flight_recorder.txt", c->diag_dir, c->world_ranks[c->rank]);
  int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) return;
  char head[1200];
  int n = snprintf(head, sizeof head, "rank %d of communicator %s: %s\n", c->rank, c->name, c->err);
  if (n > 0) (void)dtr__write_all(fd, head, (size_t)(n < (int)sizeof head ? n : (int)sizeof head - 1));
  dtr_comm_dump_flight_recorder(c, fd);
  close(fd);
  DTR_ERROR("rank %d: flight recorder written to %s", c->rank, path);
}

static void *progress_main(void *arg) {
  dtr_comm *c = arg;
  dtr__comm_core *k = dtr__core(c);
  pthread_mutex_lock(&k->mu);
  for (;;) {
    while (!k->stop && (!k->head || k->busy)) pthread_cond_wait(&k->work, &k->mu);
    if (!k->head || k->busy) break; /* stopping, and nothing left */
    dtr_request *r = k->head;
    k->head = r->next;
    if (!k->head) k->tail = NULL;
    k->busy = 1;
    int64_t now = dtr__coarse_ms();
    dtr__fr_set(k, r->fr_id, DTR__FR_RUNNING, now, DTR_OK);
    pthread_mutex_unlock(&k->mu);
    dtr_result rc = run_op(c, &r->op, now);
    drop_event(c, &r->op); /* an op failed as aborted never reached the backend: released all the same */
    pthread_mutex_lock(&k->mu);
    dtr__fr_set(k, r->fr_id, rc ? DTR__FR_FAILED : DTR__FR_DONE, dtr__coarse_ms(), rc);
    pthread_mutex_unlock(&k->mu);
    report_timeout(c, rc);
    /* Complete the request before the communicator reads as idle: whoever waits for idle (split,
     * destroy) must find every earlier request done. */
    req_complete(r, rc); /* r may be freed by its owner from here on */
    pthread_mutex_lock(&k->mu);
    k->busy = 0;
    if (k->head) pthread_cond_signal(&k->work);
    pthread_cond_broadcast(&k->idle);
  }
  pthread_mutex_unlock(&k->mu);
  return NULL;
}

dtr_result dtr__core_start(dtr_comm *c) {
  dtr__comm_core *k = dtr__core(c);
  int e = pthread_create(&k->thread, NULL, progress_main, c);
  if (e) return dtr__comm_fail(c, DTR_ERR_SYSTEM, "cannot start the progress thread: %s", strerror(e));
  k->thread_started = 1;
  return DTR_OK;
}

void dtr__core_hold(dtr_comm *c) {
  dtr__comm_core *k = dtr__core(c);
  pthread_mutex_lock(&k->mu);
  while (k->head || k->busy) pthread_cond_wait(&k->idle, &k->mu);
  k->busy = 1;
  pthread_mutex_unlock(&k->mu);
}

void dtr__core_release(dtr_comm *c) {
  dtr__comm_core *k = dtr__core(c);
  pthread_mutex_lock(&k->mu);
  k->busy = 0;
  if (k->head) pthread_cond_signal(&k->work);
  pthread_cond_broadcast(&k->idle);
  pthread_mutex_unlock(&k->mu);
}

void dtr__core_stop(dtr_comm *c) {
  dtr__comm_core *k = dtr__core(c);
  if (!k->thread_started) return;
  pthread_mutex_lock(&k->mu);
  while (k->head || k->busy) pthread_cond_wait(&k->idle, &k->mu);
  k->stop = 1;
  pthread_cond_broadcast(&k->work);
  pthread_mutex_unlock(&k->mu);
  pthread_join(k->thread, NULL);
  k->thread_started = 0;
}

/* Issue op: inline on the caller's thread when it blocks and nothing is queued or running (the
 * latency path: two uncontended lock pairs and two coarse clock reads around be->run); otherwise
 * queued in FIFO order for the progress thread, and waited for when req is NULL. */
static dtr_result submit(dtr_comm *c, dtr__op *op, const dtr_p2p *p2p, int np2p, dtr_request **req) {
  dtr__comm_core *k = dtr__core(c);
  op->seq = op->kind == DTR__OP_P2P ? k->next_p2p_seq++ : c->next_seq++;
  if (atomic_load_explicit(&c->aborted, memory_order_acquire)) return aborted_error(c, op);
  if (c->cuda_stream) DTR_CHECK(mark_stream(c, op)); /* host and mpi: this pointer test is all it costs */
  if (!req) {
    dtr_p2p small[DTR__P2P_INLINE], *copy = small;
    if (np2p > DTR__P2P_INLINE && !(copy = malloc(sizeof *copy * (size_t)np2p))) {
      drop_event(c, op);
      return dtr__comm_fail(c, DTR_ERR_NOMEM, "out of memory copying a p2p batch of %d ops", np2p);
    }
    if (np2p) {
      memcpy(copy, p2p, sizeof *copy * (size_t)np2p);
      op->p2p = copy;
    }
    pthread_mutex_lock(&k->mu);
    if (!k->head && !k->busy) {
      k->busy = 1;
      int64_t now = dtr__coarse_ms();
      uint64_t id = dtr__fr_add(k, op, DTR__FR_RUNNING, now);
      pthread_mutex_unlock(&k->mu);
      dtr__progress_wait_begin();
      dtr_result rc = run_op(c, op, now);
      dtr__progress_wait_end();
      drop_event(c, op);
      pthread_mutex_lock(&k->mu);
      finish_locked(k, id, rc);
      pthread_mutex_unlock(&k->mu);
      report_timeout(c, rc);
      if (copy != small) free(copy);
      return rc;
    }
    pthread_mutex_unlock(&k->mu);
    if (copy != small) free(copy);
  }

  dtr_request stack_req, *r = req ? malloc(sizeof *r) : &stack_req;
  if (!r) {
    drop_event(c, op);
    return dtr__comm_fail(c, DTR_ERR_NOMEM, "out of memory for a request");
  }
  req_init(r);
  r->op = *op;
  if (np2p && req_set_p2p(r, p2p, np2p) != DTR_OK) {
    drop_event(c, op);
    req_release(r);
    if (r != &stack_req) free(r);
    return dtr__comm_fail(c, DTR_ERR_NOMEM, "out of memory copying a p2p batch of %d ops", np2p);
  }
  pthread_mutex_lock(&k->mu);
  r->fr_id = dtr__fr_add(k, &r->op, DTR__FR_QUEUED, dtr__coarse_ms());
  if (k->tail)
    k->tail->next = r;
  else
    k->head = r;
  k->tail = r;
  if (!k->busy) pthread_cond_signal(&k->work);
  pthread_mutex_unlock(&k->mu);
  if (req) {
    *req = r;
    return DTR_OK;
  }
  dtr_result rc = dtr_request_wait(r);
  req_release(r);
  return rc;
}

/* ---------------------------------------------------------------- argument checks */

static const char *const api_names[] = {"dtr_all_reduce", "dtr_reduce_scatter", "dtr_all_gather",
                                        "dtr_broadcast",  "dtr_reduce",         "dtr_all_to_all",
                                        "dtr_barrier",    "dtr_p2p_batch"};

static dtr_result bad(dtr_comm *c, const dtr__op *op, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static dtr_result bad(dtr_comm *c, const dtr__op *op, const char *fmt, ...) {
  char detail[256];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(detail, sizeof detail, fmt, ap);
  va_end(ap);
  return dtr__comm_fail(c, DTR_ERR_INVALID, "%s on communicator %s (rank %d of %d): %s", api_names[op->kind],
                        c->name, c->rank, c->size, detail);
}

static dtr_result check_dtype(dtr_comm *c, const dtr__op *op, dtr_dtype t) {
  if (dtr_dtype_size(t) == 0) return bad(c, op, "unknown dtype %d", (int)t);
  return DTR_OK;
}

static dtr_result check_op(dtr_comm *c, const dtr__op *op) {
  if (op->kind == DTR__OP_BARRIER) return DTR_OK;
  DTR_CHECK(check_dtype(c, op, op->dtype));
  if (has_redop(op->kind) && (unsigned)op->redop > (unsigned)DTR_PROD)
    return bad(c, op, "unknown reduction %d", (int)op->redop);
  if ((op->kind == DTR__OP_BROADCAST || op->kind == DTR__OP_REDUCE) && (op->root < 0 || op->root >= c->size))
    return bad(c, op, "root %d is not a rank of this communicator", op->root);
  size_t es = dtr_dtype_size(op->dtype);
  size_t blocks =
      (op->kind == DTR__OP_REDUCE_SCATTER || op->kind == DTR__OP_ALL_GATHER || op->kind == DTR__OP_ALL_TO_ALL)
          ? (size_t)c->size
          : 1;
  if (op->count > SIZE_MAX / es / blocks) return bad(c, op, "count %zu overflows the buffer size", op->count);
  if (op->count == 0) return DTR_OK;
  int need_send = op->kind != DTR__OP_BROADCAST;
  int need_recv = op->kind != DTR__OP_REDUCE || c->rank == op->root;
  if (need_send && !op->send)
    return bad(c, op, "%s is NULL with count %zu", op->kind == DTR__OP_BROADCAST ? "buf" : "send", op->count);
  if (need_recv && !op->recv)
    return bad(c, op, "%s is NULL with count %zu", op->kind == DTR__OP_BROADCAST ? "buf" : "recv", op->count);
  return DTR_OK;
}

/* The common path of every collective. */
static dtr_result collective(dtr_comm *c, dtr__op *op, dtr_request **req) {
  if (req) *req = NULL;
  if (!c) return DTR_ERR_INVALID;
  DTR_CHECK(check_op(c, op));
  return submit(c, op, NULL, 0, req);
}

dtr_result dtr_all_reduce(dtr_comm *c, const void *send, void *recv, size_t count, dtr_dtype t, dtr_redop op,
                          dtr_request **req) {
  dtr__op o = {.kind = DTR__OP_ALL_REDUCE,
               .send = send,
               .recv = recv,
               .count = count,
               .dtype = t,
               .redop = op,
               .root = -1};
  return collective(c, &o, req);
}

dtr_result dtr_reduce_scatter(dtr_comm *c, const void *send, void *recv, size_t recv_count, dtr_dtype t,
                              dtr_redop op, dtr_request **req) {
  dtr__op o = {.kind = DTR__OP_REDUCE_SCATTER,
               .send = send,
               .recv = recv,
               .count = recv_count,
               .dtype = t,
               .redop = op,
               .root = -1};
  return collective(c, &o, req);
}

dtr_result dtr_all_gather(dtr_comm *c, const void *send, void *recv, size_t send_count, dtr_dtype t,
                          dtr_request **req) {
  dtr__op o = {.kind = DTR__OP_ALL_GATHER,
               .send = send,
               .recv = recv,
               .count = send_count,
               .dtype = t,
               .redop = DTR_SUM,
               .root = -1};
  return collective(c, &o, req);
}

dtr_result dtr_broadcast(dtr_comm *c, void *buf, size_t count, dtr_dtype t, int root, dtr_request **req) {
  dtr__op o = {.kind = DTR__OP_BROADCAST,
               .send = buf,
               .recv = buf,
               .count = count,
               .dtype = t,
               .redop = DTR_SUM,
               .root = root};
  return collective(c, &o, req);
}

dtr_result dtr_reduce(dtr_comm *c, const void *send, void *recv, size_t count, dtr_dtype t, dtr_redop op,
                      int root, dtr_request **req) {
  dtr__op o = {.kind = DTR__OP_REDUCE,
               .send = send,
               .recv = recv,
               .count = count,
               .dtype = t,
               .redop = op,
               .root = root};
  return collective(c, &o, req);
}

dtr_result dtr_all_to_all(dtr_comm *c, const void *send, void *recv, size_t count, dtr_dtype t,
                          dtr_request **req) {
  dtr__op o = {.kind = DTR__OP_ALL_TO_ALL,
               .send = send,
               .recv = recv,
               .count = count,
               .dtype = t,
               .redop = DTR_SUM,
               .root = -1};
  return collective(c, &o, req);
}

dtr_result dtr_barrier(dtr_comm *c, dtr_request **req) {
  dtr__op o = {.kind = DTR__OP_BARRIER, .count = 0, .dtype = DTR_U8, .redop = DTR_SUM, .root = -1};
  return collective(c, &o, req);
}

dtr_result dtr_p2p_batch(dtr_comm *c, const dtr_p2p *ops, int nops, dtr_request **req) {
  if (req) *req = NULL;
  if (!c) return DTR_ERR_INVALID;
  dtr__op o = {.kind = DTR__OP_P2P, .dtype = DTR_U8, .redop = DTR_SUM, .root = -1, .np2p = nops};
  if (nops < 0 || (nops > 0 && !ops))
    return bad(c, &o, "%sbad batch of %d ops", ops ? "" : "ops is NULL: ", nops);
  for (int i = 0; i < nops; i++) {
    const dtr_p2p *p = &ops[i];
    DTR_CHECK(check_dtype(c, &o, p->dtype));
    if (p->peer < 0 || p->peer >= c->size)
      return bad(c, &o, "op #%d: peer %d is not a rank of this communicator", i, p->peer);
    if (p->count && !p->buf) return bad(c, &o, "op #%d: buf is NULL with count %zu", i, p->count);
    if (p->count > SIZE_MAX / dtr_dtype_size(p->dtype))
      return bad(c, &o, "op #%d: count %zu overflows", i, p->count);
    o.count += p->count;
  }
  if (nops > 0) {
    o.dtype = ops[0].dtype;
    o.root = ops[0].peer;
  }
  return submit(c, &o, ops, nops, req);
}

dtr_result dtr_send(dtr_comm *c, const void *buf, size_t count, dtr_dtype t, int peer, dtr_request **req) {
  dtr_p2p p = {.is_send = 1, .peer = peer, .buf = (void *)(uintptr_t)buf, .count = count, .dtype = t};
  return dtr_p2p_batch(c, &p, 1, req);
}

dtr_result dtr_recv(dtr_comm *c, void *buf, size_t count, dtr_dtype t, int peer, dtr_request **req) {
  dtr_p2p p = {.is_send = 0, .peer = peer, .buf = buf, .count = count, .dtype = t};
  return dtr_p2p_batch(c, &p, 1, req);
}
