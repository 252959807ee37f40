/* coll_check — correctness of every collective in include/dtrain/comm.h, run as each rank of a job:
 *   dtrain launch --nproc-per-node N -- coll_check [--backend host] [--quick|--full] [--big] [--seed S]
 *   mpirun -np N coll_check --backend mpi
 * Every rank can generate every other rank's input (coll_ref.h), so each result is checked against a
 * serial reference reduced in rank order 0..n-1 (f16/bf16 accumulated in f32, rounded once). The host
 * backend promises that order: its results must be BIT-IDENTICAL. The mpi backend reduces in the same
 * order and must match bit for bit too (cref_tolerance in coll_ref.h is for backends that do not).
 * Beyond op x type x reduction x size x in/out-of-place: barrier ordering (through the store), split
 * groups (color rank%2, key -rank; a color -1 rank; nested splits; 20 split/destroy cycles without fd
 * leaks), two communicators interleaved, 4 async all-reduces overlapping compute, 64 operations in
 * flight, determinism (twice the same bits, every rank the same bits), and bad arguments (invalid,
 * communicator still in step afterwards).
 * The nccl backend needs device buffers; this helper is compiled without CUDA and refuses it (exit 2).
 * Prints "coll_check rank R: N checks, F failed"; exit 0 when F == 0, 1 otherwise, 2 for bad usage or
 * setup. A time limit (--max-seconds, default 240) bounds the whole run. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "dtrain/comm.h"
#include "dtrain/store.h"
#include "tests/helpers/coll_ref.h"
#include "tests/helpers/time_limit.h"

enum { K_AR = 1, K_RS, K_AG, K_BC, K_RED, K_A2A, K_P2P, K_BATCH, K_SPLIT, K_TWO, K_ASYNC, K_DET };

typedef struct ctx {
  dtr_comm *c;
  int rank, size;
  int exact; /* 1: floats must match bit for bit */
  uint64_t seed;
  long checks, failed;
  int printed;
  int *world; /* 0..size-1 */
} ctx;

static const dtr_dtype ALL_TYPES[] = {DTR_F32, DTR_F64, DTR_F16, DTR_BF16, DTR_I32, DTR_I64, DTR_U8};
static const dtr_redop ALL_OPS[] = {DTR_SUM, DTR_AVG, DTR_MAX, DTR_MIN, DTR_PROD};
#define NTYPES 7
#define NOPS 5
#define MAX_PRINT 10

static const char *tname(dtr_dtype t) {
  static const char *n[] = {"f32", "f64", "f16", "bf16", "i32", "i64", "u8"};
  return (unsigned)t < 7 ? n[t] : "?";
}
static const char *oname(dtr_redop o) {
  static const char *n[] = {"sum", "avg", "max", "min", "prod"};
  return (unsigned)o < 5 ? n[o] : "?";
}

static void failf(ctx *x, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void failf(ctx *x, const char *fmt, ...) {
  if (x->printed++ >= MAX_PRINT) return;
  va_list ap;
  va_start(ap, fmt);
  char line[1024];
  vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  fprintf(stderr, "coll_check rank %d: MISMATCH %s\n", x->rank, line);
}

/* One check finished: count it; `bad` says whether it failed (its detail already printed). */
static void tally(ctx *x, int bad) {
  x->checks++;
  if (bad) x->failed++;
}

static int rc_ok(ctx *x, dtr_comm *c, dtr_result rc, const char *what) {
  if (rc == DTR_OK) return 1;
  failf(x, "%s returned %s: %s", what, dtr_strerror(rc), c ? dtr_comm_last_error(c) : "");
  return 0;
}

static void fmt_elem(char *buf, size_t cap, const void *p, dtr_dtype t) {
  size_t es = cref_esz(t);
  uint64_t bits = 0;
  memcpy(&bits, p, es);
  if (cref_is_float(t))
    snprintf(buf, cap, "%.9g (0x%0*llx)", cref_as_double(p, t), (int)(2 * es), (unsigned long long)bits);
  else
    snprintf(buf, cap, "%.0f", cref_as_double(p, t));
}

/* Compare got against want; float reductions under a non-exact backend get cref_tolerance. Returns the
 * number of mismatching elements and prints the first ones. */
static size_t compare(ctx *x, const char *what, const void *got, const void *want, size_t n, dtr_dtype t,
                      dtr_redop op, int is_reduction, uint64_t tag, const int *members, int m, size_t gbase) {
  size_t es = cref_esz(t), bad = 0;
  for (size_t i = 0; i < n; i++) {
    const char *g = (const char *)got + i * es, *w = (const char *)want + i * es;
    if (memcmp(g, w, es) == 0) continue;
    if (!x->exact && is_reduction && cref_is_float(t)) {
      double tol = cref_tolerance(t, op, tag, members, m, gbase + i);
      double d = cref_as_double(g, t) - cref_as_double(w, t);
      if (d <= tol && -d <= tol) continue;
    }
    if (bad++ < 3) {
      char gs[64], ws[64];
      fmt_elem(gs, sizeof gs, g, t);
      fmt_elem(ws, sizeof ws, w, t);
      failf(x, "%s: index %zu expected %s got %s", what, i, ws, gs);
    }
  }
  if (bad > 3) failf(x, "%s: %zu of %zu elements wrong", what, bad, n);
  return bad;
}

static void fill_sentinel(void *p, size_t bytes) {
  memset(p, 0xa5, bytes);
}
static int is_sentinel(const void *p, size_t bytes) {
  for (size_t i = 0; i < bytes; i++)
    if (((const unsigned char *)p)[i] != 0xa5) return 0;
  return 1;
}

static void *xmalloc(size_t n) {
  void *p = malloc(n ? n : 1);
  if (!p) {
    fprintf(stderr, "coll_check: out of memory (%zu bytes)\n", n);
    exit(2);
  }
  return p;
}

/* ---------------------------------------------------------------- reductions */

static void check_all_reduce(ctx *x, dtr_dtype t, dtr_redop op, size_t n, const void *ref, uint64_t tag) {
  size_t es = cref_esz(t), bytes = n * es;
  char *send = xmalloc(bytes), *recv = xmalloc(bytes), *orig = xmalloc(bytes), what[160];
  cref_fill(orig, t, op, tag, x->rank, 0, n);
  for (int inplace = 0; inplace < 2; inplace++) {
    snprintf(what, sizeof what, "all_reduce %s %s count=%zu %s", tname(t), oname(op), n,
             inplace ? "in-place" : "out-of-place");
    memcpy(send, orig, bytes);
    fill_sentinel(recv, bytes);
    void *dst = inplace ? send : recv;
    int bad = !rc_ok(x, x->c, dtr_all_reduce(x->c, send, dst, n, t, op, NULL), what);
    if (!bad) bad = compare(x, what, dst, ref, n, t, op, 1, tag, x->world, x->size, 0) != 0;
    if (!bad && !inplace && memcmp(send, orig, bytes) != 0) {
      failf(x, "%s: the send buffer was modified", what);
      bad = 1;
    }
    tally(x, bad);
  }
  free(send), free(recv), free(orig);
}

static void check_reduce(ctx *x, dtr_dtype t, dtr_redop op, size_t n, const void *ref, uint64_t tag,
                         int root) {
  size_t es = cref_esz(t), bytes = n * es;
  char *send = xmalloc(bytes), *recv = xmalloc(bytes), *orig = xmalloc(bytes), what[160];
  cref_fill(orig, t, op, tag, x->rank, 0, n);
  for (int inplace = 0; inplace < 2; inplace++) {
    snprintf(what, sizeof what, "reduce %s %s count=%zu root=%d %s", tname(t), oname(op), n, root,
             inplace ? "in-place" : "out-of-place");
    memcpy(send, orig, bytes);
    fill_sentinel(recv, bytes);
    /* Out of place, odd non-roots pass recv NULL (allowed); others a sentinel buffer that must stay. */
    void *dst = inplace ? send : (x->rank != root && (x->rank & 1)) ? NULL : recv;
    int bad = !rc_ok(x, x->c, dtr_reduce(x->c, send, dst, n, t, op, root, NULL), what);
    if (!bad && x->rank == root)
      bad = compare(x, what, dst, ref, n, t, op, 1, tag, x->world, x->size, 0) != 0;
    if (!bad && x->rank != root && dst && !inplace && !is_sentinel(recv, bytes)) {
      failf(x, "%s: non-root rank's recv buffer was written (it must be ignored)", what);
      bad = 1;
    }
    if (!bad && (x->rank != root || !inplace) && memcmp(send, orig, bytes) != 0) {
      failf(x, "%s: the send buffer was modified on a rank that receives nothing there", what);
      bad = 1;
    }
    tally(x, bad);
  }
  free(send), free(recv), free(orig);
}

static void check_reduce_scatter(ctx *x, dtr_dtype t, dtr_redop op, size_t n, uint64_t tag) {
  size_t es = cref_esz(t), bytes = n * es, all = bytes * (size_t)x->size;
  char *send = xmalloc(all), *recv = xmalloc(bytes), *orig = xmalloc(all), *ref = xmalloc(bytes), what[160];
  size_t gbase = (size_t)x->rank * n;
  cref_fill(orig, t, op, tag, x->rank, 0, n * (size_t)x->size);
  cref_reduce(ref, t, op, tag, x->world, x->size, gbase, n);
  for (int inplace = 0; inplace < 2; inplace++) {
    snprintf(what, sizeof what, "reduce_scatter %s %s count=%zu %s", tname(t), oname(op), n,
             inplace ? "in-place" : "out-of-place");
    memcpy(send, orig, all);
    fill_sentinel(recv, bytes);
    void *dst = inplace ? send + gbase * es : recv;
    int bad = !rc_ok(x, x->c, dtr_reduce_scatter(x->c, send, dst, n, t, op, NULL), what);
    if (!bad) bad = compare(x, what, dst, ref, n, t, op, 1, tag, x->world, x->size, gbase) != 0;
    if (!bad && !inplace && memcmp(send, orig, all) != 0) {
      failf(x, "%s: the send buffer was modified", what);
      bad = 1;
    }
    tally(x, bad);
  }
  free(send), free(recv), free(orig), free(ref);
}

/* ---------------------------------------------------------------- data movement */

static void check_all_gather(ctx *x, dtr_dtype t, size_t n, uint64_t tag) {
  size_t es = cref_esz(t), bytes = n * es, all = bytes * (size_t)x->size;
  char *send = xmalloc(bytes), *recv = xmalloc(all), *want = xmalloc(all), what[160];
  for (int r = 0; r < x->size; r++) cref_fill(want + (size_t)r * bytes, t, DTR_SUM, tag, r, 0, n);
  for (int inplace = 0; inplace < 2; inplace++) {
    snprintf(what, sizeof what, "all_gather %s count=%zu %s", tname(t), n,
             inplace ? "in-place" : "out-of-place");
    fill_sentinel(recv, all);
    cref_fill(send, t, DTR_SUM, tag, x->rank, 0, n);
    const void *src = send;
    if (inplace) {
      memcpy(recv + (size_t)x->rank * bytes, send, bytes);
      src = recv + (size_t)x->rank * bytes;
    }
    int bad = !rc_ok(x, x->c, dtr_all_gather(x->c, src, recv, n, t, NULL), what);
    if (!bad) bad = compare(x, what, recv, want, n * (size_t)x->size, t, DTR_SUM, 0, tag, NULL, 0, 0) != 0;
    tally(x, bad);
  }
  free(send), free(recv), free(want);
}

static void check_broadcast(ctx *x, dtr_dtype t, size_t n, uint64_t tag, int root) {
  size_t es = cref_esz(t), bytes = n * es;
  char *buf = xmalloc(bytes), *want = xmalloc(bytes), what[160];
  snprintf(what, sizeof what, "broadcast %s count=%zu root=%d", tname(t), n, root);
  cref_fill(want, t, DTR_SUM, tag, root, 0, n);
  if (x->rank == root)
    memcpy(buf, want, bytes);
  else
    fill_sentinel(buf, bytes);
  int bad = !rc_ok(x, x->c, dtr_broadcast(x->c, buf, n, t, root, NULL), what);
  if (!bad) bad = compare(x, what, buf, want, n, t, DTR_SUM, 0, tag, NULL, 0, 0) != 0;
  tally(x, bad);
  free(buf), free(want);
}

/* Small broadcasts back to back while the last rank starts late: the first 24 calls, all from root 0
 * and all at most 16 KiB (the host backend's eager limit), let it run ahead of that rank by as many
 * calls as the backend allows (the host backend's 8 eager entries, three times over), and it must not
 * overwrite what that rank has yet to read. Then roots take turns, sizes cross the eager limit, and
 * every 5th call is a small all-reduce, which shares the step counters. */
static void check_broadcast_burst(ctx *x) {
  enum { Q = 48, AHEAD = 24 };
  static const size_t counts[] = {1, 7, 257, 4096, 4097};
  int bad = 0;
  if (x->rank == x->size - 1) nanosleep(&(struct timespec){0, 30 * 1000 * 1000}, NULL);
  for (int k = 0; k < Q; k++) { /* every call on every rank, even after a mismatch: ranks stay in step */
    size_t n = counts[k < AHEAD ? k % 4 : k % 5];
    uint64_t tag = cref_tag(x->seed, K_BC, DTR_I32, DTR_SUM, 5000 + (size_t)k);
    int32_t *buf = xmalloc(n * sizeof *buf), *want = xmalloc(n * sizeof *want);
    char what[160];
    if (k >= AHEAD && k % 5 == 0) {
      snprintf(what, sizeof what, "broadcast burst: all_reduce %d of %zu", k, n);
      cref_fill(buf, DTR_I32, DTR_SUM, tag, x->rank, 0, n);
      cref_reduce(want, DTR_I32, DTR_SUM, tag, x->world, x->size, 0, n);
      if (!rc_ok(x, x->c, dtr_all_reduce(x->c, buf, buf, n, DTR_I32, DTR_SUM, NULL), what))
        bad = 1;
      else
        bad |= compare(x, what, buf, want, n, DTR_I32, DTR_SUM, 1, tag, x->world, x->size, 0) != 0;
    } else {
      int root = k < AHEAD ? 0 : k % x->size;
      snprintf(what, sizeof what, "broadcast burst: call %d of %zu from root %d", k, n, root);
      cref_fill(want, DTR_I32, DTR_SUM, tag, root, 0, n);
      if (x->rank == root)
        memcpy(buf, want, n * sizeof *buf);
      else
        fill_sentinel(buf, n * sizeof *buf);
      if (!rc_ok(x, x->c, dtr_broadcast(x->c, buf, n, DTR_I32, root, NULL), what))
        bad = 1;
      else
        bad |= compare(x, what, buf, want, n, DTR_I32, DTR_SUM, 0, tag, NULL, 0, 0) != 0;
    }
    free(buf), free(want);
  }
  tally(x, bad);
}

static void check_all_to_all(ctx *x, dtr_dtype t, size_t n, uint64_t tag) {
  size_t es = cref_esz(t), bytes = n * es, all = bytes * (size_t)x->size;
  char *send = xmalloc(all), *recv = xmalloc(all), *orig = xmalloc(all), *want = xmalloc(all), what[160];
  cref_fill(orig, t, DTR_SUM, tag, x->rank, 0, n * (size_t)x->size);
  /* block i of my recv = block `rank` of rank i's send */
  for (int i = 0; i < x->size; i++)
    cref_fill(want + (size_t)i * bytes, t, DTR_SUM, tag, i, (size_t)x->rank * n, n);
  for (int inplace = 0; inplace < 2; inplace++) {
    snprintf(what, sizeof what, "all_to_all %s count=%zu %s", tname(t), n,
             inplace ? "in-place" : "out-of-place");
    memcpy(send, orig, all);
    fill_sentinel(recv, all);
    void *dst = inplace ? send : recv;
    int bad = !rc_ok(x, x->c, dtr_all_to_all(x->c, send, dst, n, t, NULL), what);
    if (!bad) bad = compare(x, what, dst, want, n * (size_t)x->size, t, DTR_SUM, 0, tag, NULL, 0, 0) != 0;
    if (!bad && !inplace && memcmp(send, orig, all) != 0) {
      failf(x, "%s: the send buffer was modified", what);
      bad = 1;
    }
    tally(x, bad);
  }
  free(send), free(recv), free(orig), free(want);
}

/* ---------------------------------------------------------------- point to point */

/* Ring: rank r sends to r+1 and receives from r-1; even ranks send first, odd ranks receive first, so
 * blocking calls cannot deadlock whatever the buffering. */
static void check_send_recv(ctx *x, dtr_dtype t, size_t n, uint64_t tag) {
  if (x->size < 2) return;
  size_t es = cref_esz(t), bytes = n * es;
  int next = (x->rank + 1) % x->size, prev = (x->rank + x->size - 1) % x->size;
  char *sbuf = xmalloc(bytes), *rbuf = xmalloc(bytes), *want = xmalloc(bytes), what[160];
  snprintf(what, sizeof what, "send/recv %s count=%zu (to %d, from %d)", tname(t), n, next, prev);
  cref_fill(sbuf, t, DTR_SUM, tag, x->rank, 0, n);
  cref_fill(want, t, DTR_SUM, tag, prev, 0, n);
  fill_sentinel(rbuf, bytes);
  int ok;
  if ((x->rank & 1) == 0) {
    ok = rc_ok(x, x->c, dtr_send(x->c, sbuf, n, t, next, NULL), what) &&
         rc_ok(x, x->c, dtr_recv(x->c, rbuf, n, t, prev, NULL), what);
  } else {
    ok = rc_ok(x, x->c, dtr_recv(x->c, rbuf, n, t, prev, NULL), what) &&
         rc_ok(x, x->c, dtr_send(x->c, sbuf, n, t, next, NULL), what);
  }
  int bad = !ok;
  if (!bad) bad = compare(x, what, rbuf, want, n, t, DTR_SUM, 0, tag, NULL, 0, 0) != 0;
  tally(x, bad);
  free(sbuf), free(rbuf), free(want);
}

/* One batch per rank: send A to next, receive from prev, send B to prev, receive from next — both
 * directions at once (with 2 ranks next == prev and the pair's messages match in issue order). */
static void check_p2p_batch(ctx *x, dtr_dtype t, size_t n, uint64_t tag) {
  if (x->size < 2) return;
  size_t es = cref_esz(t), bytes = n * es;
  int next = (x->rank + 1) % x->size, prev = (x->rank + x->size - 1) % x->size;
  char *sa = xmalloc(bytes), *sb = xmalloc(bytes), *ra = xmalloc(bytes), *rb = xmalloc(bytes);
  char *wa = xmalloc(bytes), *wb = xmalloc(bytes), what[160];
  cref_fill(sa, t, DTR_SUM, tag, x->rank, 0, n);
  cref_fill(sb, t, DTR_SUM, tag ^ 0x55, x->rank, 0, n);
  cref_fill(wa, t, DTR_SUM, tag, prev, 0, n);        /* prev's send-to-its-next */
  cref_fill(wb, t, DTR_SUM, tag ^ 0x55, next, 0, n); /* next's send-to-its-prev */
  fill_sentinel(ra, bytes);
  fill_sentinel(rb, bytes);
  dtr_p2p ops[4] = {
      {1, next, sa, n, t},
      {0, prev, ra, n, t},
      {1, prev, sb, n, t},
      {0, next, rb, n, t},
  };
  dtr_request *req = NULL;
  snprintf(what, sizeof what, "p2p_batch %s count=%zu (exchange with %d and %d)", tname(t), n, prev, next);
  int bad = !rc_ok(x, x->c, dtr_p2p_batch(x->c, ops, 4, &req), what);
  /* ops was copied: scribbling on our array must not matter */
  memset(ops, 0, sizeof ops);
  if (!bad) bad = !rc_ok(x, x->c, dtr_request_wait(req), what);
  dtr_request_free(req);
  if (!bad) {
    bad = compare(x, what, ra, wa, n, t, DTR_SUM, 0, tag, NULL, 0, 0) != 0;
    bad |= compare(x, what, rb, wb, n, t, DTR_SUM, 0, tag, NULL, 0, 0) != 0;
  }
  tally(x, bad);
  free(sa), free(sb), free(ra), free(rb), free(wa), free(wb);
}

/* ---------------------------------------------------------------- barrier */

static void check_barrier(ctx *x, dtr_store *store, int rounds) {
  char key[256], what[128];
  const char *run = getenv("DTRAIN_RUN_ID"), *att = getenv("DTRAIN_ATTEMPT");
  for (int k = 0; k < rounds; k++) {
    snprintf(what, sizeof what, "barrier round %d", k);
    if (store) {
      /* late arrivals: rank r waits (size-1-r)*10 ms, then announces itself; after the barrier every
       * rank must see all announcements */
      struct timespec ts = {0, (long)(x->size - 1 - x->rank) * 10 * 1000 * 1000};
      nanosleep(&ts, NULL);
      snprintf(key, sizeof key, "coll_check/%s/%s/%llu/barrier/%d", run ? run : "-", att ? att : "0",
               (unsigned long long)x->seed, k);
      int64_t v = 0;
      if (dtr_store_add(store, key, 1, &v) != DTR_OK) {
        failf(x, "%s: store add failed: %s", what, dtr_store_last_error(store));
        tally(x, 1);
        continue;
      }
    }
    dtr_request *req = NULL;
    int bad = !rc_ok(x, x->c, dtr_barrier(x->c, k & 1 ? &req : NULL), what);
    if (!bad && req) bad = !rc_ok(x, x->c, dtr_request_wait(req), what);
    dtr_request_free(req);
    if (!bad && store) {
      int64_t v = -1;
      if (dtr_store_add(store, key, 0, &v) != DTR_OK || v != x->size) {
        failf(x, "%s: returned before every rank arrived (%lld of %d announced)", what, (long long)v,
              x->size);
        bad = 1;
      }
    }
    tally(x, bad);
  }
}

/* ---------------------------------------------------------------- split, two comms, async, determinism */

static void check_split(ctx *x) {
  dtr_comm *sub = NULL;
  int color = x->rank % 2;
  int bad = !rc_ok(x, x->c, dtr_comm_split(x->c, color, -x->rank, &sub), "split(color=rank%2, key=-rank)");
  if (!bad && !sub) {
    failf(x, "split returned no communicator for color %d", color);
    bad = 1;
  }
  /* members ordered by key = -rank: highest world rank first */
  int members[256], m = 0;
  for (int r = x->size - 1; r >= 0 && m < 256; r--)
    if (r % 2 == color) members[m++] = r;
  int myrank = -1;
  for (int k = 0; k < m; k++)
    if (members[k] == x->rank) myrank = k;
  if (!bad && (dtr_comm_size(sub) != m || dtr_comm_rank(sub) != myrank)) {
    failf(x, "split: sub-communicator rank/size %d/%d, expected %d/%d", dtr_comm_rank(sub),
          dtr_comm_size(sub), myrank, m);
    bad = 1;
  }
  tally(x, bad);
  static const struct {
    dtr_dtype t;
    dtr_redop op;
  } cases[] = {{DTR_F32, DTR_SUM}, {DTR_BF16, DTR_SUM}, {DTR_F64, DTR_AVG}, {DTR_I32, DTR_MAX}};
  size_t n = 4099;
  for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
    dtr_dtype t = cases[k].t;
    dtr_redop op = cases[k].op;
    uint64_t tag = cref_tag(x->seed, K_SPLIT, t, op, n);
    size_t bytes = n * cref_esz(t);
    char *buf = xmalloc(bytes), *ref = xmalloc(bytes), what[160];
    snprintf(what, sizeof what, "split(color %d) all_reduce %s %s count=%zu", color, tname(t), oname(op), n);
    cref_fill(buf, t, op, tag, x->rank, 0, n);
    cref_reduce(ref, t, op, tag, members, m, 0, n);
    int b = bad || !rc_ok(x, sub, dtr_all_reduce(sub, buf, buf, n, t, op, NULL), what);
    if (!b) b = compare(x, what, buf, ref, n, t, op, 1, tag, members, m, 0) != 0;
    tally(x, b);
    free(buf), free(ref);
  }
  dtr_comm_destroy(sub);

  /* color < 0: rank 0 joins nothing; the others form one communicator in parent order */
  sub = NULL;
  int c2 = x->rank == 0 ? -1 : 0;
  bad = !rc_ok(x, x->c, dtr_comm_split(x->c, c2, 0, &sub), "split(rank 0 color -1)");
  if (!bad && x->rank == 0 && sub) {
    failf(x, "split with color -1 returned a communicator");
    bad = 1;
  }
  if (!bad && x->rank != 0 &&
      (!sub || dtr_comm_size(sub) != x->size - 1 || dtr_comm_rank(sub) != x->rank - 1)) {
    failf(x, "split(rank 0 color -1): got rank/size %d/%d, expected %d/%d", sub ? dtr_comm_rank(sub) : -1,
          sub ? dtr_comm_size(sub) : -1, x->rank - 1, x->size - 1);
    bad = 1;
  }
  if (!bad && sub) {
    int mem[256];
    for (int r = 1; r < x->size && r <= 256; r++) mem[r - 1] = r;
    size_t n2 = 1023;
    uint64_t tag = cref_tag(x->seed, K_SPLIT, DTR_F16, DTR_SUM, n2);
    uint16_t buf[1023], ref[1023];
    cref_fill(buf, DTR_F16, DTR_SUM, tag, x->rank, 0, n2);
    cref_reduce(ref, DTR_F16, DTR_SUM, tag, mem, x->size - 1, 0, n2);
    bad = !rc_ok(x, sub, dtr_all_reduce(sub, buf, buf, n2, DTR_F16, DTR_SUM, NULL), "split(-1) all_reduce");
    if (!bad)
      bad = compare(x, "split(-1) all_reduce f16 sum", buf, ref, n2, DTR_F16, DTR_SUM, 1, tag, mem,
                    x->size - 1, 0) != 0;
  }
  tally(x, bad);
  dtr_comm_destroy(sub);
}

/* Interleaved asynchronous all-reduces on two communicators at once. */
static void check_two_comms(ctx *x, dtr_comm *b) {
  enum { R = 3, N = 4099 };
  float *fa[R];
  int32_t *ib[R];
  dtr_request *qa[R] = {0}, *qb[R] = {0};
  int bad = 0;
  for (int k = 0; k < R; k++) {
    fa[k] = xmalloc(N * 4);
    ib[k] = xmalloc(N * 4);
    cref_fill(fa[k], DTR_F32, DTR_SUM, cref_tag(x->seed, K_TWO, DTR_F32, DTR_SUM, (size_t)k), x->rank, 0, N);
    cref_fill(ib[k], DTR_I32, DTR_SUM, cref_tag(x->seed, K_TWO, DTR_I32, DTR_SUM, (size_t)k), x->rank, 0, N);
  }
  for (int k = 0; k < R; k++) {
    bad |= !rc_ok(x, x->c, dtr_all_reduce(x->c, fa[k], fa[k], N, DTR_F32, DTR_SUM, &qa[k]),
                  "two comms: A issue");
    bad |= !rc_ok(x, b, dtr_all_reduce(b, ib[k], ib[k], N, DTR_I32, DTR_SUM, &qb[k]), "two comms: B issue");
  }
  for (int k = 0; k < R; k++) {
    if (qb[k]) bad |= !rc_ok(x, b, dtr_request_wait(qb[k]), "two comms: B wait");
    if (qa[k]) bad |= !rc_ok(x, x->c, dtr_request_wait(qa[k]), "two comms: A wait");
    dtr_request_free(qa[k]);
    dtr_request_free(qb[k]);
  }
  for (int k = 0; k < R && !bad; k++) {
    float rf[N];
    int32_t ri[N];
    uint64_t ta = cref_tag(x->seed, K_TWO, DTR_F32, DTR_SUM, (size_t)k);
    uint64_t tb = cref_tag(x->seed, K_TWO, DTR_I32, DTR_SUM, (size_t)k);
    cref_reduce(rf, DTR_F32, DTR_SUM, ta, x->world, x->size, 0, N);
    cref_reduce(ri, DTR_I32, DTR_SUM, tb, x->world, x->size, 0, N);
    bad |= compare(x, "two comms: A all_reduce f32 sum", fa[k], rf, N, DTR_F32, DTR_SUM, 1, ta, x->world,
                   x->size, 0) != 0;
    bad |= compare(x, "two comms: B all_reduce i32 sum", ib[k], ri, N, DTR_I32, DTR_SUM, 1, tb, x->world,
                   x->size, 0) != 0;
  }
  for (int k = 0; k < R; k++) free(fa[k]), free(ib[k]);
  tally(x, bad);
}

/* Four all-reduces in flight while this thread computes; then wait for all of them. */
static void check_async(ctx *x) {
  static const dtr_dtype types[4] = {DTR_F32, DTR_BF16, DTR_I64, DTR_F64};
  static const dtr_redop ops[4] = {DTR_SUM, DTR_SUM, DTR_MIN, DTR_PROD};
  size_t n = 65537;
  void *buf[4], *ref[4];
  dtr_request *req[4] = {0};
  int bad = 0;
  for (int k = 0; k < 4; k++) {
    buf[k] = xmalloc(n * cref_esz(types[k]));
    ref[k] = xmalloc(n * cref_esz(types[k]));
    cref_fill(buf[k], types[k], ops[k], cref_tag(x->seed, K_ASYNC, types[k], ops[k], n), x->rank, 0, n);
  }
  for (int k = 0; k < 4; k++)
    bad |= !rc_ok(x, x->c, dtr_all_reduce(x->c, buf[k], buf[k], n, types[k], ops[k], &req[k]), "async issue");
  /* overlap: the references are the "compute" */
  for (int k = 0; k < 4; k++)
    cref_reduce(ref[k], types[k], ops[k], cref_tag(x->seed, K_ASYNC, types[k], ops[k], n), x->world, x->size,
                0, n);
  int done = 0;
  if (req[3]) bad |= !rc_ok(x, x->c, dtr_request_test(req[3], &done), "async test");
  for (int k = 0; k < 4; k++)
    if (req[k]) bad |= !rc_ok(x, x->c, dtr_request_wait(req[k]), "async wait");
  if (!bad && req[0]) {
    /* after wait, test must report done */
    done = 0;
    bad |= !rc_ok(x, x->c, dtr_request_test(req[0], &done), "async test after wait");
    if (!done) {
      failf(x, "async: dtr_request_test says not done after dtr_request_wait returned");
      bad = 1;
    }
  }
  for (int k = 0; k < 4; k++) {
    char what[96];
    snprintf(what, sizeof what, "async all_reduce #%d %s %s", k, tname(types[k]), oname(ops[k]));
    if (!bad)
      bad |= compare(x, what, buf[k], ref[k], n, types[k], ops[k], 1,
                     cref_tag(x->seed, K_ASYNC, types[k], ops[k], n), x->world, x->size, 0) != 0;
    dtr_request_free(req[k]);
    free(buf[k]), free(ref[k]);
  }
  tally(x, bad);
}

static int count_fds(void) {
  int n = 0;
  for (int fd = 0; fd < 4096; fd++)
    if (fcntl(fd, F_GETFD) != -1) n++;
  return n;
}

/* Split of a split, a "dup" (one color, equal keys: parent order), and 20 create/destroy cycles that
 * must not leak descriptors. */
static void check_split_nested(ctx *x) {
  dtr_comm *dup = NULL, *half = NULL, *quarter = NULL;
  int bad = !rc_ok(x, x->c, dtr_comm_split(x->c, 7, 0, &dup), "split(all one color, key 0)");
  if (!bad && (!dup || dtr_comm_rank(dup) != x->rank || dtr_comm_size(dup) != x->size)) {
    failf(x, "dup split: rank/size %d/%d, expected %d/%d", dup ? dtr_comm_rank(dup) : -1,
          dup ? dtr_comm_size(dup) : -1, x->rank, x->size);
    bad = 1;
  }
  tally(x, bad);
  /* halves by rank < size/2, then each half split by parity: members in world order */
  int c1 = x->rank < x->size / 2;
  bad = !rc_ok(x, dup, dtr_comm_split(dup, c1, x->rank, &half), "split(dup, low/high half)");
  int hr = half ? dtr_comm_rank(half) : -1;
  if (!bad) bad = !rc_ok(x, half, dtr_comm_split(half, hr % 2, hr, &quarter), "split(half, parity)");
  int members[256], m = 0;
  for (int r = 0; r < x->size && m < 256; r++) {
    int rc1 = r < x->size / 2, rhr = rc1 ? r : r - x->size / 2;
    if (rc1 == c1 && (rhr % 2) == (hr % 2)) members[m++] = r;
  }
  if (!bad && (!quarter || dtr_comm_size(quarter) != m)) {
    failf(x, "nested split: size %d, expected %d", quarter ? dtr_comm_size(quarter) : -1, m);
    bad = 1;
  }
  if (!bad) {
    size_t n = 1023;
    uint64_t tag = cref_tag(x->seed, K_SPLIT, DTR_F32, DTR_SUM, 77);
    float buf[1023], ref[1023];
    cref_fill(buf, DTR_F32, DTR_SUM, tag, x->rank, 0, n);
    cref_reduce(ref, DTR_F32, DTR_SUM, tag, members, m, 0, n);
    bad = !rc_ok(x, quarter, dtr_all_reduce(quarter, buf, buf, n, DTR_F32, DTR_SUM, NULL),
                 "nested split all_reduce");
    if (!bad)
      bad = compare(x, "nested split all_reduce f32 sum", buf, ref, n, DTR_F32, DTR_SUM, 1, tag, members, m,
                    0) != 0;
  }
  tally(x, bad);
  dtr_comm_destroy(quarter);
  dtr_comm_destroy(half);

  /* churn: create, use, destroy; descriptors must come back */
  int fds0 = count_fds(), churn_bad = 0;
  for (int k = 0; k < 20 && !churn_bad; k++) {
    dtr_comm *s = NULL;
    churn_bad = !rc_ok(x, dup, dtr_comm_split(dup, 0, 0, &s), "churn split");
    int32_t v = 1;
    if (!churn_bad)
      churn_bad = !rc_ok(x, s, dtr_all_reduce(s, &v, &v, 1, DTR_I32, DTR_SUM, NULL), "churn all_reduce");
    if (!churn_bad && v != x->size) {
      failf(x, "churn all_reduce gave %d, expected %d", v, x->size);
      churn_bad = 1;
    }
    dtr_comm_destroy(s);
  }
  int fds1 = count_fds();
  if (!churn_bad && fds1 > fds0) {
    failf(x, "20 split/destroy cycles leaked %d file descriptors (%d -> %d)", fds1 - fds0, fds0, fds1);
    churn_bad = 1;
  }
  tally(x, churn_bad);
  dtr_comm_destroy(dup);
}

/* Many operations queued at once (they complete in issue order); some requests freed without a wait. */
static void check_many_in_flight(ctx *x) {
  enum { Q = 64, N = 257 };
  int32_t *buf = xmalloc(sizeof(int32_t) * Q * N), *ref = xmalloc(sizeof(int32_t) * N);
  dtr_request *req[Q] = {0};
  int bad = 0;
  for (int k = 0; k < Q; k++)
    cref_fill(buf + (size_t)k * N, DTR_I32, DTR_SUM,
              cref_tag(x->seed, K_ASYNC, DTR_I32, DTR_SUM, 1000 + (size_t)k), x->rank, 0, N);
  for (int k = 0; k < Q; k++)
    bad |= !rc_ok(
        x, x->c, dtr_all_reduce(x->c, buf + (size_t)k * N, buf + (size_t)k * N, N, DTR_I32, DTR_SUM, &req[k]),
        "64 in flight: issue");
  /* the last one first: when it is done, all earlier ones must be done too (issue order) */
  if (req[Q - 1]) bad |= !rc_ok(x, x->c, dtr_request_wait(req[Q - 1]), "64 in flight: wait last");
  for (int k = 0; k < Q - 1 && !bad; k++) {
    int done = 0;
    bad |= !rc_ok(x, x->c, dtr_request_test(req[k], &done), "64 in flight: test");
    if (!done) {
      failf(x, "64 in flight: operation %d not done although the later operation %d completed", k, Q - 1);
      bad = 1;
    }
  }
  for (int k = 0; k < Q; k++) {
    if (k % 2 == 0 && req[k]) bad |= !rc_ok(x, x->c, dtr_request_wait(req[k]), "64 in flight: wait");
    dtr_request_free(req[k]); /* odd ones: freed without an explicit wait */
  }
  for (int k = 0; k < Q && !bad; k++) {
    uint64_t tag = cref_tag(x->seed, K_ASYNC, DTR_I32, DTR_SUM, 1000 + (size_t)k);
    cref_reduce(ref, DTR_I32, DTR_SUM, tag, x->world, x->size, 0, N);
    bad |= compare(x, "64 in flight: all_reduce i32 sum", buf + (size_t)k * N, ref, N, DTR_I32, DTR_SUM, 1,
                   tag, x->world, x->size, 0) != 0;
  }
  free(buf), free(ref);
  tally(x, bad);
}

/* Bad arguments, issued identically by every rank, fail with DTR_ERR_INVALID and leave the
 * communicator usable (they must not consume a sequence number on some ranks only). */
static void check_invalid(ctx *x) {
  float f[8] = {0};
  struct {
    const char *what;
    dtr_result rc;
  } cases[6];
  int nc = 0;
  cases[nc].what = "all_reduce with dtype 99";
  cases[nc++].rc = dtr_all_reduce(x->c, f, f, 8, (dtr_dtype)99, DTR_SUM, NULL);
  cases[nc].what = "all_reduce with redop 99";
  cases[nc++].rc = dtr_all_reduce(x->c, f, f, 8, DTR_F32, (dtr_redop)99, NULL);
  cases[nc].what = "broadcast with root == size";
  cases[nc++].rc = dtr_broadcast(x->c, f, 8, DTR_F32, x->size, NULL);
  cases[nc].what = "reduce with root -1";
  cases[nc++].rc = dtr_reduce(x->c, f, f, 8, DTR_F32, DTR_SUM, -1, NULL);
  cases[nc].what = "send to peer == size";
  cases[nc++].rc = dtr_send(x->c, f, 8, DTR_F32, x->size, NULL);
  cases[nc].what = "all_reduce of 8 elements from NULL";
  cases[nc++].rc = dtr_all_reduce(x->c, NULL, NULL, 8, DTR_F32, DTR_SUM, NULL);
  for (int k = 0; k < nc; k++) {
    int bad = cases[k].rc != DTR_ERR_INVALID;
    if (bad) failf(x, "%s returned %s, expected invalid argument", cases[k].what, dtr_strerror(cases[k].rc));
    tally(x, bad);
  }
  /* still usable, and still in step */
  for (int k = 0; k < 8; k++) f[k] = (float)(x->rank + 1);
  int bad = !rc_ok(x, x->c, dtr_all_reduce(x->c, f, f, 8, DTR_F32, DTR_SUM, NULL),
                   "all_reduce after bad arguments");
  if (!bad && f[0] != (float)(x->size * (x->size + 1) / 2)) {
    failf(x, "all_reduce after bad arguments gave %g, expected %d", f[0], x->size * (x->size + 1) / 2);
    bad = 1;
  }
  tally(x, bad);
}

static uint64_t fnv(const void *p, size_t n) {
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; i++) h = (h ^ ((const unsigned char *)p)[i]) * 1099511628211ull;
  return h;
}

/* Same inputs twice: same bits; and every rank holds the same bits (compared through an all-gather). */
static void check_determinism(ctx *x) {
  static const dtr_dtype types[3] = {DTR_F32, DTR_BF16, DTR_F16};
  size_t n = 65537;
  for (int k = 0; k < 3; k++) {
    dtr_dtype t = types[k];
    size_t bytes = n * cref_esz(t);
    uint64_t tag = cref_tag(x->seed, K_DET, t, DTR_SUM, n);
    char *a = xmalloc(bytes), *b = xmalloc(bytes), what[96];
    snprintf(what, sizeof what, "determinism all_reduce %s sum count=%zu", tname(t), n);
    cref_fill(a, t, DTR_SUM, tag, x->rank, 0, n);
    memcpy(b, a, bytes);
    int bad = !rc_ok(x, x->c, dtr_all_reduce(x->c, a, a, n, t, DTR_SUM, NULL), what);
    bad |= !rc_ok(x, x->c, dtr_all_reduce(x->c, b, b, n, t, DTR_SUM, NULL), what);
    if (!bad && memcmp(a, b, bytes) != 0) {
      failf(x, "%s: two runs on the same inputs gave different bits", what);
      bad = 1;
    }
    int64_t h = (int64_t)fnv(a, bytes), *all = xmalloc(sizeof(int64_t) * (size_t)x->size);
    bad |= !rc_ok(x, x->c, dtr_all_gather(x->c, &h, all, 1, DTR_I64, NULL), what);
    for (int r = 0; r < x->size && !bad; r++)
      if (all[r] != h) {
        failf(x, "%s: rank %d holds different bits than rank %d", what, r, x->rank);
        bad = 1;
      }
    tally(x, bad);
    free(a), free(b), free(all);
  }
}

/* ---------------------------------------------------------------- main */

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int env_int(const char *k, int d) {
  const char *v = getenv(k);
  return v && *v ? atoi(v) : d;
}

static void usage(void) {
  fprintf(stderr,
          "usage: coll_check [--backend host|mpi] [--quick|--full] [--big] [--seed S] [--timeout-ms MS] "
          "[--max-seconds S]\n");
}

int main(int argc, char **argv) {
  const char *backend_s = "host";
  int quick = 0, full = 0, big_ar = 0, timeout_ms = 60000, max_seconds = 240;
  uint64_t seed = 12345;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--backend") && i + 1 < argc)
      backend_s = argv[++i];
    else if (!strcmp(argv[i], "--quick"))
      quick = 1;
    else if (!strcmp(argv[i], "--full"))
      full = 1;
    else if (!strcmp(argv[i], "--big"))
      big_ar = 1;
    else if (!strcmp(argv[i], "--seed") && i + 1 < argc)
      seed = strtoull(argv[++i], NULL, 0);
    else if (!strcmp(argv[i], "--timeout-ms") && i + 1 < argc)
      timeout_ms = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--max-seconds") && i + 1 < argc)
      max_seconds = atoi(argv[++i]);
    else {
      usage();
      return 2;
    }
  }
  dtr_backend be;
  if (dtr_backend_parse(backend_s, &be) != DTR_OK) {
    fprintf(stderr, "coll_check: unknown backend '%s'\n", backend_s);
    return 2;
  }
  if (be == DTR_BACKEND_NCCL) {
    fprintf(stderr,
            "coll_check: the nccl backend needs device buffers; this helper is built without CUDA "
            "(tests/helpers are not compiled with DTRAIN_HAVE_CUDA)\n");
    return 2;
  }
  ctx x = {0};
  x.seed = seed;
  x.exact = be == DTR_BACKEND_HOST || be == DTR_BACKEND_MPI;
  dtr_store *store = NULL;
  char err[512] = "";
  if (be == DTR_BACKEND_MPI) {
    x.rank = env_int("OMPI_COMM_WORLD_RANK", env_int("RANK", -1));
    x.size = env_int("OMPI_COMM_WORLD_SIZE", env_int("WORLD_SIZE", -1));
  } else {
    x.rank = env_int("RANK", -1);
    x.size = env_int("WORLD_SIZE", -1);
  }
  if (x.rank < 0 || x.size < 1 || x.rank >= x.size || x.size > 256) {
    fprintf(stderr, "coll_check: no rank/size in the environment (run under dtrain launch or mpirun)\n");
    return 2;
  }
  char who[48];
  snprintf(who, sizeof who, "coll_check rank %d", x.rank);
  time_limit_start(who, (unsigned)max_seconds);
  if (be == DTR_BACKEND_HOST && dtr_store_connect_env(30000, &store, err, sizeof err) != DTR_OK) {
    fprintf(stderr, "coll_check rank %d: cannot connect to the store: %s\n", x.rank, err);
    return 2;
  }
  dtr_comm_config cfg = dtr_comm_config_default();
  cfg.backend = be;
  cfg.timeout_ms = timeout_ms;
  dtr_result rc = dtr_comm_create(store, x.rank, x.size, &cfg, &x.c, err, sizeof err);
  if (rc != DTR_OK) {
    fprintf(stderr, "coll_check rank %d: dtr_comm_create(%s) failed: %s: %s\n", x.rank, backend_s,
            dtr_strerror(rc), err);
    dtr_store_close(store);
    return 1;
  }
  if (dtr_comm_rank(x.c) != x.rank || dtr_comm_size(x.c) != x.size || dtr_comm_backend(x.c) != be) {
    failf(&x, "communicator says rank %d size %d backend %d; expected %d %d %d", dtr_comm_rank(x.c),
          dtr_comm_size(x.c), (int)dtr_comm_backend(x.c), x.rank, x.size, (int)be);
    tally(&x, 1);
  }
  x.world = xmalloc(sizeof(int) * (size_t)x.size);
  for (int r = 0; r < x.size; r++) x.world[r] = r;

  static const size_t normal_sizes[] = {0, 1, 2, 7, 1023, 4099, 65537};
  static const size_t quick_sizes[] = {0, 1, 7, 4099};
  static const size_t full_sizes[] = {0, 1, 2, 7, 1023, 4099, 65537, 1048579, 16777219};
  const size_t *sizes = quick ? quick_sizes : full ? full_sizes : normal_sizes;
  int nsizes = quick ? 4 : full ? 9 : 7;
  double t0 = now_s();
  int root_turn = 0;

  for (int si = 0; si < nsizes; si++) {
    size_t n = sizes[si];
    int big = n > 65537;
    for (int ti = 0; ti < NTYPES; ti++) {
      dtr_dtype t = ALL_TYPES[ti];
      /* beyond 64Ki elements: f32, bf16 and i32 only, to bound memory and time */
      if (big && t != DTR_F32 && t != DTR_BF16 && t != DTR_I32) continue;
      for (int oi = 0; oi < NOPS; oi++) {
        dtr_redop op = ALL_OPS[oi];
        if (big && op != DTR_SUM && op != DTR_MAX) continue;
        uint64_t tag = cref_tag(seed, K_AR, t, op, n);
        void *ref = xmalloc(n * cref_esz(t));
        cref_reduce(ref, t, op, tag, x.world, x.size, 0, n);
        check_all_reduce(&x, t, op, n, ref, tag);
        check_reduce(&x, t, op, n, ref, tag, root_turn++ % x.size);
        free(ref);
        if (!big || n <= 1048579) check_reduce_scatter(&x, t, op, n, cref_tag(seed, K_RS, t, op, n));
      }
      if (!big || n <= 1048579) {
        check_all_gather(&x, t, n, cref_tag(seed, K_AG, t, DTR_SUM, n));
        check_all_to_all(&x, t, n, cref_tag(seed, K_A2A, t, DTR_SUM, n));
      }
      check_broadcast(&x, t, n, cref_tag(seed, K_BC, t, DTR_SUM, n), root_turn++ % x.size);
      check_send_recv(&x, t, n, cref_tag(seed, K_P2P, t, DTR_SUM, n));
      check_p2p_batch(&x, t, n, cref_tag(seed, K_BATCH, t, DTR_SUM, n));
    }
    if (x.rank == 0)
      fprintf(stderr, "coll_check: count %zu done (%.1f s, %ld checks so far)\n", n, now_s() - t0, x.checks);
  }
  /* --big: all-reduces of a few MiB, beyond the chunk sizes of every path (the hierarchical one's
   * outer chunks, its chain's inner chunks, ragged ends), in the types whose accumulators differ; at
   * the first size also reduce-scatters and all-gathers of that count per rank (per block). */
  static const size_t big_sizes[] = {1048579, 3145739};
  static const dtr_dtype big_types[] = {DTR_F32, DTR_BF16, DTR_F16, DTR_I32};
  static const dtr_redop big_ops[] = {DTR_SUM, DTR_AVG, DTR_MAX};
  for (size_t si = 0; big_ar && si < sizeof big_sizes / sizeof big_sizes[0]; si++) {
    for (size_t ti = 0; ti < sizeof big_types / sizeof big_types[0]; ti++) {
      for (size_t oi = 0; oi < sizeof big_ops / sizeof big_ops[0]; oi++) {
        size_t n = big_sizes[si];
        dtr_dtype t = big_types[ti];
        dtr_redop op = big_ops[oi];
        if (si > 0 && op == DTR_MAX) continue;
        uint64_t tag = cref_tag(seed, K_AR, t, op, n);
        void *ref = xmalloc(n * cref_esz(t));
        cref_reduce(ref, t, op, tag, x.world, x.size, 0, n);
        check_all_reduce(&x, t, op, n, ref, tag);
        free(ref);
        /* reduce-scatter blocks of 1 Mi elements: n MiB-blocks cross the hierarchical outer chunks
         * (sum and avg: the accumulators that differ; max would add time, not paths) */
        if (si == 0 && op != DTR_MAX) check_reduce_scatter(&x, t, op, n, cref_tag(seed, K_RS, t, op, n));
      }
      if (si == 0 && (big_types[ti] == DTR_F32 || big_types[ti] == DTR_F16)) { /* 4- and 2-byte elements */
        const dtr_dtype t = big_types[ti];
        const size_t n = big_sizes[si];
        check_all_gather(&x, t, n, cref_tag(seed, K_AG, t, DTR_SUM, n));
      }
    }
    if (x.rank == 0)
      fprintf(stderr, "coll_check: big count %zu done (%.1f s, %ld checks so far)\n", big_sizes[si],
              now_s() - t0, x.checks);
  }
  check_barrier(&x, store, 4);
  check_split(&x);
  check_split_nested(&x);
  check_async(&x);
  check_many_in_flight(&x);
  check_broadcast_burst(&x);
  check_determinism(&x);
  check_invalid(&x);

  /* a second communicator used at the same time as the first */
  dtr_comm *second = NULL;
  dtr_comm_config cfg2 = cfg;
  cfg2.name = "coll_check_second";
  rc = dtr_comm_create(store, x.rank, x.size, &cfg2, &second, err, sizeof err);
  if (rc != DTR_OK) {
    failf(&x, "second dtr_comm_create failed: %s: %s", dtr_strerror(rc), err);
    tally(&x, 1);
  } else {
    check_two_comms(&x, second);
  }
  /* destroy only after every rank is done with it */
  if (second) rc_ok(&x, x.c, dtr_barrier(x.c, NULL), "final barrier");
  dtr_comm_destroy(second);

  printf("coll_check rank %d: %ld checks, %ld failed (%s, %d ranks, %.1f s)\n", x.rank, x.checks, x.failed,
         backend_s, x.size, now_s() - t0);
  fflush(stdout);
  dtr_comm_destroy(x.c);
  dtr_store_close(store);
  free(x.world);
  return x.failed ? 1 : 0;
}
