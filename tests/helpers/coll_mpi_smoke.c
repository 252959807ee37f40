/* coll_mpi_smoke: a quick check of the mpi backend under mpirun (rank and size from OMPI_COMM_WORLD_*):
 * each operation on a few types, in-place forms, asynchronous requests, p2p batches and split, against
 * a serial reference computed from the same deterministic inputs. Exact comparison: the inputs are
 * small integers, so every sum is exact in every type (AVG: one f32 division, then rounding). Then the
 * reductions (all-reduce in and out of place, reduce-scatter, reduce) on random floats for every type and
 * reduction, compared BIT FOR BIT with coll_ref.h's serial reference in rank order: the mpi backend
 * reduces in that order, like the host backend. Exit 0 when all pass; prints each failure. Usage: mpirun -np
 * N coll_mpi_smoke [--backend mpi|host] [--count N] [--fault deadline|dead|abort]
 *   --fault deadline  rank size-1 never joins an all-reduce; the others must get DTR_ERR_TIMEOUT after the
 *                     1500 ms timeout (naming rank size-1 as the one they still wait on), then
 * DTR_ERR_ABORTED
 *   --fault dead      rank size-1 SIGKILLs itself after one all-reduce while the others keep all-reducing
 *                     (run with mpirun --mca orte_abort_on_non_zero_status 0, or mpirun kills them first):
 * they must fail within the 1500 ms timeout naming it, then get DTR_ERR_ABORTED
 *   --fault abort     rank 0 waits on an all-reduce nobody joins (timeout 60 s); dtr_comm_abort from
 *                     another thread must end it with DTR_ERR_ABORTED at once
 *   Fault modes print "coll_mpi_smoke rank R: MODE ok" or "... FAILED: why" and leave with _exit (MPI
 *   cannot finalize with an abandoned operation), all ranks at the same moment. */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "dtrain/comm.h"
#include "tests/helpers/coll_ref.h"

static int g_rank, g_size, g_fail;

#define FAILF(...)                              \
  do {                                          \
    fprintf(stderr, "rank %d: FAIL: ", g_rank); \
    fprintf(stderr, __VA_ARGS__);               \
    fprintf(stderr, "\n");                      \
    g_fail++;                                   \
  } while (0)

#define CHECK_OK(comm, call)                                                                  \
  do {                                                                                        \
    dtr_result rc_ = (call);                                                                  \
    if (rc_ != DTR_OK) {                                                                      \
      FAILF("%s: %s: %s", #call, dtr_strerror(rc_), (comm) ? dtr_comm_last_error(comm) : ""); \
      return;                                                                                 \
    }                                                                                         \
  } while (0)

/* Round to nearest even, like every dtrain backend (coll_ref.h's conversions, which every compiler takes:
 * clang 14 has no _Float16 on x86-64). */
static uint16_t to_f16(double v) {
  return cref_f32_to_f16((float)v);
}
static uint16_t to_bf16(double v) {
  return cref_f32_to_bf16((float)v);
}

/* Element i of rank r's input: small, varied, sometimes negative (not for u8). */
static int val(int r, size_t i, dtr_dtype t) {
  int v = (int)((r + 1) * ((i % 5) + 1)) - (int)(i % 3);
  if (t == DTR_U8)
    v = (int)(((unsigned)r * 37u + (unsigned)i * 11u) % 200u); /* sums exceed 255: AVG must widen */
  return v;
}

static void put(void *buf, size_t i, dtr_dtype t, double v) {
  switch (t) {
    case DTR_F32:
      ((float *)buf)[i] = (float)v;
      break;
    case DTR_F64:
      ((double *)buf)[i] = v;
      break;
    case DTR_F16:
      ((uint16_t *)buf)[i] = to_f16(v);
      break;
    case DTR_BF16:
      ((uint16_t *)buf)[i] = to_bf16(v);
      break;
    case DTR_I32:
      ((int32_t *)buf)[i] = (int32_t)v;
      break;
    case DTR_I64:
      ((int64_t *)buf)[i] = (int64_t)v;
      break;
    case DTR_U8:
      ((uint8_t *)buf)[i] = (uint8_t)v;
      break;
  }
}

static int same(const void *buf, size_t i, dtr_dtype t, double want) {
  uint8_t tmp[8];
  put(tmp, 0, t, want);
  size_t es = dtr_dtype_size(t);
  return memcmp((const uint8_t *)buf + i * es, tmp, es) == 0;
}

/* The reference reduction over ranks 0..n-1 of element i. */
static double ref_reduce(size_t i, dtr_dtype t, dtr_redop op, int n) {
  double acc = val(0, i, t);
  int64_t isum = val(0, i, t);
  for (int r = 1; r < n; r++) {
    double v = val(r, i, t);
    isum += val(r, i, t);
    switch (op) {
      case DTR_SUM:
      case DTR_AVG:
        acc += v;
        break;
      case DTR_MAX:
        acc = v > acc ? v : acc;
        break;
      case DTR_MIN:
        acc = v < acc ? v : acc;
        break;
      case DTR_PROD:
        acc *= v;
        break;
    }
  }
  if (op == DTR_AVG) {
    if (t == DTR_F64) return acc / n;
    if (t == DTR_F32 || t == DTR_F16 || t == DTR_BF16) return (double)((float)acc / (float)n);
    return (double)(isum / n); /* integers: truncated toward zero */
  }
  if (op == DTR_SUM && t == DTR_U8) return (double)(uint8_t)isum; /* wraps */
  return acc;
}

static void check_buf(const char *what, const void *buf, size_t n, dtr_dtype t, double (*ref)(size_t, void *),
                      void *ctx) {
  for (size_t i = 0; i < n; i++) {
    double want = ref(i, ctx);
    if (!same(buf, i, t, want)) {
      FAILF("%s (%s): element %zu differs from the reference %g", what, dtr_dtype_name(t), i, want);
      return;
    }
  }
}

typedef struct {
  dtr_dtype t;
  dtr_redop op;
  int n;
  size_t off;
} rctx;
static double ref_rctx(size_t i, void *p) {
  rctx *c = p;
  return ref_reduce(c->off + i, c->t, c->op, c->n);
}

static void *fill(size_t n, dtr_dtype t, int r) {
  void *b = calloc(n ? n : 1, 8);
  for (size_t i = 0; i < n; i++) put(b, i, t, val(r, i, t));
  return b;
}

static void test_all_reduce(dtr_comm *c, size_t n, dtr_dtype t, dtr_redop op, int inplace, int async) {
  void *s = fill(n, t, g_rank), *r = inplace ? s : calloc(n ? n : 1, 8);
  char what[96];
  snprintf(what, sizeof what, "all_reduce %s%s%s", dtr_redop_name(op), inplace ? " in-place" : "",
           async ? " async" : "");
  dtr_request *req = NULL;
  dtr_result rc = dtr_all_reduce(c, s, r, n, t, op, async ? &req : NULL);
  if (rc == DTR_OK && req) rc = dtr_request_wait(req);
  dtr_request_free(req);
  if (rc != DTR_OK)
    FAILF("%s: %s: %s", what, dtr_strerror(rc), dtr_comm_last_error(c));
  else {
    rctx x = {t, op, g_size, 0};
    check_buf(what, r, n, t, ref_rctx, &x);
  }
  if (r != s) free(r);
  free(s);
}

static void test_reduce_scatter(dtr_comm *c, size_t n, dtr_dtype t, dtr_redop op, int inplace) {
  size_t es = dtr_dtype_size(t);
  void *s = fill(n * (size_t)g_size, t, g_rank);
  void *r = inplace ? (char *)s + (size_t)g_rank * n * es : calloc(n ? n : 1, 8);
  dtr_result rc = dtr_reduce_scatter(c, s, r, n, t, op, NULL);
  if (rc != DTR_OK)
    FAILF("reduce_scatter: %s: %s", dtr_strerror(rc), dtr_comm_last_error(c));
  else {
    rctx x = {t, op, g_size, (size_t)g_rank * n};
    check_buf(inplace ? "reduce_scatter in-place" : "reduce_scatter", r, n, t, ref_rctx, &x);
  }
  if (!inplace) free(r);
  free(s);
}

typedef struct {
  dtr_dtype t;
  size_t n;
} gctx;
static double ref_gather(size_t i, void *p) {
  gctx *g = p;
  return val((int)(i / g->n), i % g->n, g->t); /* block r is rank r's input */
}

static void test_all_gather(dtr_comm *c, size_t n, dtr_dtype t, int inplace) {
  size_t es = dtr_dtype_size(t);
  void *r = calloc(n * (size_t)g_size + 1, 8);
  void *s;
  if (inplace) {
    s = (char *)r + (size_t)g_rank * n * es;
    void *mine = fill(n, t, g_rank);
    memcpy(s, mine, n * es);
    free(mine);
  } else {
    s = fill(n, t, g_rank);
  }
  dtr_result rc = dtr_all_gather(c, s, r, n, t, NULL);
  if (rc != DTR_OK)
    FAILF("all_gather: %s: %s", dtr_strerror(rc), dtr_comm_last_error(c));
  else {
    gctx g = {t, n};
    check_buf(inplace ? "all_gather in-place" : "all_gather", r, n * (size_t)g_size, t, ref_gather, &g);
  }
  if (!inplace) free(s);
  free(r);
}

typedef struct {
  dtr_dtype t;
  int root;
} bctx;
static double ref_bcast(size_t i, void *p) {
  bctx *b = p;
  return val(b->root, i, b->t);
}

static void test_broadcast(dtr_comm *c, size_t n, dtr_dtype t, int root) {
  void *b = g_rank == root ? fill(n, t, g_rank) : calloc(n ? n : 1, 8);
  dtr_result rc = dtr_broadcast(c, b, n, t, root, NULL);
  if (rc != DTR_OK)
    FAILF("broadcast: %s: %s", dtr_strerror(rc), dtr_comm_last_error(c));
  else {
    bctx x = {t, root};
    check_buf("broadcast", b, n, t, ref_bcast, &x);
  }
  free(b);
}

static void test_reduce(dtr_comm *c, size_t n, dtr_dtype t, dtr_redop op, int root, int inplace) {
  void *s = fill(n, t, g_rank);
  void *r = g_rank == root ? (inplace ? s : calloc(n ? n : 1, 8)) : NULL;
  dtr_result rc = dtr_reduce(c, s, r, n, t, op, root, NULL);
  if (rc != DTR_OK)
    FAILF("reduce: %s: %s", dtr_strerror(rc), dtr_comm_last_error(c));
  else if (g_rank == root) {
    rctx x = {t, op, g_size, 0};
    check_buf(inplace ? "reduce in-place" : "reduce", r, n, t, ref_rctx, &x);
  }
  if (r && r != s) free(r);
  free(s);
}

/* all-to-all input: rank r's block j element k = 1000*r + 10*j + k%10 (small enough for i32/f32) */
typedef struct {
  size_t n;
} actx;
static double ref_a2a(size_t i, void *p) {
  actx *a = p;
  size_t src = i / a->n, k = i % a->n;
  return 1000.0 * (double)src + 10.0 * g_rank + (double)(k % 10);
}

static void test_all_to_all(dtr_comm *c, size_t n, dtr_dtype t, int inplace) {
  size_t tot = n * (size_t)g_size;
  void *s = calloc(tot + 1, 8);
  for (int j = 0; j < g_size; j++)
    for (size_t k = 0; k < n; k++)
      put(s, (size_t)j * n + k, t, 1000.0 * g_rank + 10.0 * j + (double)(k % 10));
  void *r = inplace ? s : calloc(tot + 1, 8);
  dtr_result rc = dtr_all_to_all(c, s, r, n, t, NULL);
  if (rc != DTR_OK)
    FAILF("all_to_all: %s: %s", dtr_strerror(rc), dtr_comm_last_error(c));
  else {
    actx a = {n};
    check_buf(inplace ? "all_to_all in-place" : "all_to_all", r, tot, t, ref_a2a, &a);
  }
  if (r != s) free(r);
  free(s);
}

/* Ring exchange both ways in one batch: send to left and right, receive from both. */
static void test_p2p(dtr_comm *c, size_t n) {
  int left = (g_rank + g_size - 1) % g_size, right = (g_rank + 1) % g_size;
  int32_t *out = malloc((n + 1) * 4), *from_left = calloc(n + 1, 4), *from_right = calloc(n + 1, 4);
  for (size_t i = 0; i < n; i++) out[i] = (int32_t)(g_rank * 100000 + (int)i);
  dtr_p2p ops[4] = {
      {1, right, out, n, DTR_I32},
      {1, left, out, n, DTR_I32},
      {0, left, from_left, n, DTR_I32},
      {0, right, from_right, n, DTR_I32},
  };
  dtr_request *req = NULL;
  dtr_result rc = dtr_p2p_batch(c, ops, 4, &req);
  if (rc == DTR_OK) rc = dtr_request_wait(req);
  dtr_request_free(req);
  if (rc != DTR_OK) {
    FAILF("p2p batch: %s: %s", dtr_strerror(rc), dtr_comm_last_error(c));
  } else {
    for (size_t i = 0; i < n; i++) {
      if (from_left[i] != left * 100000 + (int)i || from_right[i] != right * 100000 + (int)i) {
        FAILF("p2p batch: element %zu: from left %d (want %d), from right %d (want %d)", i, from_left[i],
              left * 100000 + (int)i, from_right[i], right * 100000 + (int)i);
        break;
      }
    }
  }
  /* send/recv along the ring. Operations of one communicator run one at a time in issue order, so
   * even ranks send first and odd ranks receive first (a receive queued before its rank's own send
   * would otherwise wait forever). */
  if (g_size > 1 && rc == DTR_OK) {
    int64_t got = -1, mine = 7000 + g_rank;
    if (g_rank % 2 == 0) {
      rc = dtr_send(c, &mine, 1, DTR_I64, right, NULL);
      if (rc == DTR_OK) rc = dtr_recv(c, &got, 1, DTR_I64, left, NULL);
    } else {
      dtr_request *rr = NULL;
      rc = dtr_recv(c, &got, 1, DTR_I64, left, &rr);
      if (rc == DTR_OK) rc = dtr_request_wait(rr);
      dtr_request_free(rr);
      if (rc == DTR_OK) rc = dtr_send(c, &mine, 1, DTR_I64, right, NULL);
    }
    if (rc != DTR_OK)
      FAILF("send/recv: %s: %s", dtr_strerror(rc), dtr_comm_last_error(c));
    else if (got != 7000 + left)
      FAILF("send/recv: got %lld from %d, want %d", (long long)got, left, 7000 + left);
  }
  free(out);
  free(from_left);
  free(from_right);
}

static void run_suite(dtr_comm *c, size_t n) {
  static const dtr_dtype types[] = {DTR_F32, DTR_F64, DTR_F16, DTR_BF16, DTR_I32, DTR_I64, DTR_U8};
  int rank = dtr_comm_rank(c), size = dtr_comm_size(c);
  int save_r = g_rank, save_s = g_size;
  g_rank = rank, g_size = size;
  for (size_t k = 0; k < sizeof types / sizeof types[0]; k++) {
    dtr_dtype t = types[k];
    for (int op = DTR_SUM; op <= DTR_PROD; op++) {
      if (op == DTR_PROD && (t == DTR_F16 || t == DTR_BF16 || t == DTR_U8)) continue; /* exactness */
      test_all_reduce(c, n, t, (dtr_redop)op, 0, 0);
    }
    test_all_reduce(c, n, t, DTR_SUM, 1, 1);
    test_reduce_scatter(c, n, t, DTR_SUM, 0);
    test_reduce_scatter(c, n, t, DTR_AVG, 1);
    test_all_gather(c, n, t, 0);
    test_all_gather(c, n, t, 1);
    test_broadcast(c, n, t, size - 1);
    test_reduce(c, n, t, DTR_MAX, 0, 0);
    test_reduce(c, n, t, DTR_AVG, size - 1, 1);
    if (t != DTR_U8 && t != DTR_F16 && t != DTR_BF16) { /* values up to 1000*size */
      test_all_to_all(c, n, t, 0);
      test_all_to_all(c, n, t, 1);
    }
  }
  /* Several requests in flight at once, completing in issue order. */
  float *a = fill(n, DTR_F32, rank), *b = fill(n, DTR_F32, rank);
  dtr_request *ra = NULL, *rb = NULL, *rz = NULL;
  dtr_result rc = dtr_all_reduce(c, a, a, n, DTR_F32, DTR_SUM, &ra);
  if (rc == DTR_OK) rc = dtr_barrier(c, &rz);
  if (rc == DTR_OK) rc = dtr_all_reduce(c, b, b, n, DTR_F32, DTR_MAX, &rb);
  if (rc == DTR_OK) rc = dtr_request_wait(rb);
  if (rc == DTR_OK) rc = dtr_request_wait(ra);
  if (rc == DTR_OK) rc = dtr_request_wait(rz);
  dtr_request_free(ra), dtr_request_free(rb), dtr_request_free(rz);
  if (rc != DTR_OK)
    FAILF("async requests: %s: %s", dtr_strerror(rc), dtr_comm_last_error(c));
  else {
    rctx xs = {DTR_F32, DTR_SUM, size, 0}, xm = {DTR_F32, DTR_MAX, size, 0};
    check_buf("async all_reduce sum", a, n, DTR_F32, ref_rctx, &xs);
    check_buf("async all_reduce max", b, n, DTR_F32, ref_rctx, &xm);
  }
  free(a), free(b);
  test_p2p(c, n);
  rc = dtr_barrier(c, NULL);
  if (rc != DTR_OK) FAILF("barrier: %s: %s", dtr_strerror(rc), dtr_comm_last_error(c));
  g_rank = save_r, g_size = save_s;
}

/* ---- bit-exact reductions against the serial reference (random inputs, rounding everywhere) */

static void exact_compare(const char *what, const void *got, const void *want, size_t n, dtr_dtype t) {
  size_t es = dtr_dtype_size(t);
  for (size_t i = 0; i < n; i++) {
    if (memcmp((const char *)got + i * es, (const char *)want + i * es, es) != 0) {
      FAILF("%s (%s) count %zu: element %zu is %.9g, the serial reference %.9g (bits differ)", what,
            dtr_dtype_name(t), n, i, cref_as_double((const char *)got + i * es, t),
            cref_as_double((const char *)want + i * es, t));
      return;
    }
  }
}

static void run_exact(dtr_comm *c, size_t n) {
  int rank = dtr_comm_rank(c), size = dtr_comm_size(c), root = size - 1;
  int *members = malloc(sizeof(int) * (size_t)size);
  for (int r = 0; r < size; r++) members[r] = r;
  for (int t = DTR_F32; t <= DTR_U8; t++) {
    size_t es = dtr_dtype_size((dtr_dtype)t), tot = n * (size_t)size;
    char *in = malloc(tot * es + 1), *out = malloc(tot * es + 1), *want = malloc(tot * es + 1);
    for (int op = DTR_SUM; op <= DTR_PROD; op++) {
      dtr_dtype dt = (dtr_dtype)t;
      dtr_redop ro = (dtr_redop)op;
      uint64_t tag = cref_tag(0x5eed, 1, dt, ro, n);
      cref_reduce(want, dt, ro, tag, members, size, 0, tot);
      for (int inplace = 0; inplace < 2; inplace++) { /* all-reduce over the first n elements */
        cref_fill(in, dt, ro, tag, rank, 0, n);
        dtr_result rc = dtr_all_reduce(c, in, inplace ? in : out, n, dt, ro, NULL);
        if (rc != DTR_OK)
          FAILF("exact all_reduce: %s: %s", dtr_strerror(rc), dtr_comm_last_error(c));
        else
          exact_compare(inplace ? "exact all_reduce in-place" : "exact all_reduce", inplace ? in : out, want,
                        n, dt);
      }
      cref_fill(in, dt, ro, tag, rank, 0, tot); /* reduce-scatter: block r of the reference */
      dtr_result rc = dtr_reduce_scatter(c, in, out, n, dt, ro, NULL);
      if (rc != DTR_OK)
        FAILF("exact reduce_scatter: %s: %s", dtr_strerror(rc), dtr_comm_last_error(c));
      else
        exact_compare("exact reduce_scatter", out, want + (size_t)rank * n * es, n, dt);
      cref_fill(in, dt, ro, tag, rank, 0, n);
      rc = dtr_reduce(c, in, rank == root ? out : NULL, n, dt, ro, root, NULL);
      if (rc != DTR_OK)
        FAILF("exact reduce: %s: %s", dtr_strerror(rc), dtr_comm_last_error(c));
      else if (rank == root)
        exact_compare("exact reduce", out, want, n, dt);
    }
    free(in), free(out), free(want);
  }
  free(members);
}

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void *abort_later(void *arg) {
  usleep(300 * 1000);
  dtr_comm_abort(arg);
  return NULL;
}

/* Every rank leaves at t0 + 4 s, after all have printed: the first MPI process to exit without
 * MPI_Finalize makes mpirun kill the rest. */
static void fault_exit(double t0, int ok) {
  fflush(stdout);
  fflush(stderr);
  double left = t0 + 4000 - now_ms();
  if (left > 0) usleep((useconds_t)(left * 1000));
  _exit(ok ? 0 : 1);
}

static void run_fault(const char *mode, dtr_comm_config cfg, double t0) {
  char err[512], why[1024] = "";
  dtr_comm *c = NULL;
  cfg.timeout_ms = !strcmp(mode, "deadline") || !strcmp(mode, "dead") ? 1500 : 60000;
  dtr_result rc = dtr_comm_create(NULL, g_rank, g_size, &cfg, &c, err, sizeof err);
  if (rc != DTR_OK) {
    printf("coll_mpi_smoke rank %d: %s FAILED: create: %s: %s\n", g_rank, mode, dtr_strerror(rc), err);
    fault_exit(t0, 0);
  }
  float v[64] = {0};
  int ok = 1;
  if (!strcmp(mode, "deadline")) {
    if (g_rank == g_size - 1) {
      printf("coll_mpi_smoke rank %d: deadline ok (stayed away)\n", g_rank);
      fault_exit(t0, 1);
    }
    double t = now_ms();
    rc = dtr_all_reduce(c, v, v, 64, DTR_F32, DTR_SUM, NULL);
    double el = now_ms() - t;
    const char *e = dtr_comm_last_error(c);
    char missing[64];
    snprintf(missing, sizeof missing, "still waiting on: recv from %d", g_size - 1);
    if (rc != DTR_ERR_TIMEOUT)
      snprintf(why, sizeof why, "all_reduce returned %s, want timed out", dtr_strerror(rc));
    else if (el < 1400 || el > 3500)
      snprintf(why, sizeof why, "timed out after %.0f ms, want about 1500", el);
    else if (!strstr(e, missing)) /* our all-reduce knows whom it waited for */
      snprintf(why, sizeof why, "error text lacks the reason: %s", e);
    else if ((rc = dtr_barrier(c, NULL)) != DTR_ERR_ABORTED)
      snprintf(why, sizeof why, "barrier after the timeout returned %s, want aborted", dtr_strerror(rc));
    ok = !why[0];
    printf("coll_mpi_smoke rank %d: deadline %s%s (%.0f ms: %s)\n", g_rank, ok ? "ok" : "FAILED: ", why, el,
           e);
  } else if (!strcmp(mode, "dead")) {
    /* 4 MiB all-reduces, so rank size-1 dies with transfers in flight on the others */
    size_t n = 1u << 20;
    float *b = calloc(n, sizeof *b);
    rc = dtr_all_reduce(c, b, b, n, DTR_F32, DTR_SUM, NULL);
    if (g_rank == g_size - 1) {
      printf("coll_mpi_smoke rank %d: dead ok (killing itself)\n", g_rank);
      fflush(stdout);
      raise(SIGKILL);
    }
    double t = now_ms();
    for (int i = 0; i < 1000 && rc == DTR_OK; i++) rc = dtr_all_reduce(c, b, b, n, DTR_F32, DTR_SUM, NULL);
    double el = now_ms() - t;
    const char *e = dtr_comm_last_error(c);
    char missing[64];
    snprintf(missing, sizeof missing, "recv from %d", g_size - 1);
    if (rc != DTR_ERR_TIMEOUT && rc != DTR_ERR_CONNECTION)
      snprintf(why, sizeof why, "all_reduce returned %s, want timed out or connection", dtr_strerror(rc));
    else if (el > 3500)
      snprintf(why, sizeof why, "the error took %.0f ms, want at most the 1500 ms timeout", el);
    else if (rc == DTR_ERR_TIMEOUT && !strstr(e, missing))
      snprintf(why, sizeof why, "error text does not name rank %d: %s", g_size - 1, e);
    else if ((rc = dtr_barrier(c, NULL)) != DTR_ERR_ABORTED)
      snprintf(why, sizeof why, "barrier after the failure returned %s, want aborted", dtr_strerror(rc));
    ok = !why[0];
    printf("coll_mpi_smoke rank %d: dead %s%s (%.0f ms: %s)\n", g_rank, ok ? "ok" : "FAILED: ", why, el, e);
    free(b);
  } else if (!strcmp(mode, "abort")) {
    if (g_rank == 0) {
      dtr_request *req = NULL;
      pthread_t th;
      double t = now_ms();
      rc = dtr_all_reduce(c, v, v, 64, DTR_F32, DTR_SUM, &req);
      if (rc == DTR_OK) {
        pthread_create(&th, NULL, abort_later, c);
        rc = dtr_request_wait(req);
        pthread_join(th, NULL);
      }
      dtr_request_free(req);
      double el = now_ms() - t;
      if (rc != DTR_ERR_ABORTED)
        snprintf(why, sizeof why, "wait returned %s, want aborted", dtr_strerror(rc));
      else if (el > 1500)
        snprintf(why, sizeof why, "abort took %.0f ms", el);
      ok = !why[0];
      printf("coll_mpi_smoke rank %d: abort %s%s (%.0f ms: %s)\n", g_rank, ok ? "ok" : "FAILED: ", why, el,
             dtr_comm_last_error(c));
    } else {
      printf("coll_mpi_smoke rank %d: abort ok (stayed away)\n", g_rank);
    }
  } else {
    printf("coll_mpi_smoke: unknown fault mode %s\n", mode);
    ok = 0;
  }
  fault_exit(t0, ok);
}

static int env_int(const char *a, const char *b, int def) {
  const char *v = getenv(a);
  if (!v || !*v) v = getenv(b);
  return v && *v ? atoi(v) : def;
}

int main(int argc, char **argv) {
  dtr_comm_config cfg = dtr_comm_config_default();
  cfg.backend = DTR_BACKEND_MPI;
  cfg.timeout_ms = 30000;
  size_t n = 1000;
  const char *fault = NULL;
  double t0 = now_ms();
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--backend") && i + 1 < argc) {
      if (dtr_backend_parse(argv[++i], &cfg.backend) != DTR_OK) {
        fprintf(stderr, "coll_mpi_smoke: unknown backend %s\n", argv[i]);
        return 2;
      }
    } else if (!strcmp(argv[i], "--fault") && i + 1 < argc) {
      fault = argv[++i];
    } else if (!strcmp(argv[i], "--count") && i + 1 < argc) {
      n = (size_t)strtoull(argv[++i], NULL, 10);
    } else {
      fprintf(stderr,
              "usage: coll_mpi_smoke [--backend mpi|host] [--count N] [--fault deadline|dead|abort]\n");
      return 2;
    }
  }
  g_rank = env_int("OMPI_COMM_WORLD_RANK", "RANK", 0);
  g_size = env_int("OMPI_COMM_WORLD_SIZE", "WORLD_SIZE", 1);

  if (fault) run_fault(fault, cfg, t0); /* does not return */

  dtr_store *store = NULL;
  char err[512];
  if (cfg.backend != DTR_BACKEND_MPI && dtr_store_connect_env(30000, &store, err, sizeof err) != DTR_OK) {
    fprintf(stderr, "coll_mpi_smoke: %s\n", err);
    return 1;
  }
  dtr_comm *world = NULL;
  dtr_result rc = dtr_comm_create(store, g_rank, g_size, &cfg, &world, err, sizeof err);
  if (rc != DTR_OK) {
    fprintf(stderr, "rank %d: FAIL: dtr_comm_create: %s: %s\n", g_rank, dtr_strerror(rc), err);
    dtr_store_close(store);
    return 1;
  }
  int wrank = g_rank, wsize = g_size;
  run_suite(world, n);
  run_suite(world, 1); /* tiny */
  run_suite(world, 0); /* empty */
  static const size_t exact_sizes[] = {
      1, 5, 1000, 70001}; /* 70001: past the one-round path; many chunks under a small DTRAIN_MPI_MAX_COUNT */
  for (size_t k = 0; k < sizeof exact_sizes / sizeof exact_sizes[0]; k++) run_exact(world, exact_sizes[k]);

  /* split: even and odd ranks, reversed order by key; the last rank (when size > 2) joins none. */
  int color = (wsize > 2 && wrank == wsize - 1) ? -1 : wrank % 2;
  dtr_comm *sub = NULL;
  rc = dtr_comm_split(world, color, wsize - wrank, &sub);
  if (rc != DTR_OK) {
    FAILF("split: %s: %s", dtr_strerror(rc), dtr_comm_last_error(world));
  } else if (color < 0) {
    if (sub) FAILF("split with color -1 returned a communicator");
  } else if (!sub) {
    FAILF("split with color %d returned no communicator", color);
  } else {
    int members = 0, before = 0; /* ranks with my color, and those with a larger key (smaller world rank) */
    for (int r = 0; r < wsize; r++) {
      int cr = (wsize > 2 && r == wsize - 1) ? -1 : r % 2;
      if (cr != color) continue;
      members++;
      if (r > wrank) before++;
    }
    if (dtr_comm_size(sub) != members || dtr_comm_rank(sub) != before)
      FAILF("split: rank %d of %d, want %d of %d", dtr_comm_rank(sub), dtr_comm_size(sub), before, members);
    else
      run_suite(sub, 257);
    dtr_comm_destroy(sub);
  }
  rc = dtr_barrier(world, NULL);
  if (rc != DTR_OK) FAILF("final barrier: %s: %s", dtr_strerror(rc), dtr_comm_last_error(world));
  dtr_comm_destroy(world);
  dtr_store_close(store);
  if (g_fail) {
    fprintf(stderr, "rank %d: %d check(s) failed\n", wrank, g_fail);
    return 1;
  }
  if (wrank == 0)
    printf("coll_mpi_smoke: %d rank(s), backend %s: all checks passed\n", wsize,
           dtr_backend_name(cfg.backend));
  return 0;
}
