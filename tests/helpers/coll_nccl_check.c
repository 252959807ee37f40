/* coll_nccl_check — the nccl backend on real GPUs, run as each rank under
 *   dtrain launch --nproc-per-node <gpus> -- coll_nccl_check [--count N]
 * Inputs are small integers written to device buffers, so sums are exact in every type; AVG of floats is
 * compared within a relative tolerance (NCCL pre-multiplies by 1/n), everything else bit for bit. Covers
 * every collective, in-place forms, a p2p batch, send/recv, two requests in flight, split, and ordering
 * after a caller's stream (dtr_comm_set_cuda_stream).
 * Helpers are compiled without the CUDA headers, so the few CUDA runtime calls needed (malloc, memcpy,
 * free, set device) are looked up in the libcudart that libdtrain already loaded.
 * Prints "coll_nccl_check rank R: N checks, F failed"; exit 0 when F == 0, 1 otherwise, 2 for setup
 * problems (no CUDA runtime or device: the calling test decides whether that is a skip). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dtrain/comm.h"
#include "dtrain/store.h"

typedef int (*cuda_malloc_fn)(void **, size_t);
typedef int (*cuda_free_fn)(void *);
typedef int (*cuda_memcpy_fn)(void *, const void *, size_t, int);
typedef int (*cuda_int_fn)(int);
typedef int (*cuda_count_fn)(int *);
typedef int (*cuda_stream_create_fn)(void **);
typedef int (*cuda_stream_fn)(void *);
typedef int (*cuda_host_func_fn)(void *, void (*)(void *), void *);
typedef int (*cuda_memcpy_async_fn)(void *, const void *, size_t, int, void *);
typedef int (*cuda_malloc_host_fn)(void **, size_t);
enum { H2D = 1, D2H = 2 }; /* cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost */

static struct {
  cuda_malloc_fn malloc_;
  cuda_free_fn free_;
  cuda_memcpy_fn memcpy_;
  cuda_int_fn set_device;
  cuda_count_fn device_count;
  cuda_stream_create_fn stream_create;
  cuda_stream_fn stream_sync, stream_destroy, free_host;
  cuda_host_func_fn launch_host_func;
  cuda_memcpy_async_fn memcpy_async;
  cuda_malloc_host_fn malloc_host;
} cu;

static int g_rank, g_size;
static long g_checks, g_failed;

static int load_cuda(void) {
  static const char *names[] = {"libcudart.so.13", "libcudart.so.12", "libcudart.so"};
  void *h = NULL;
  for (size_t i = 0; i < sizeof names / sizeof names[0] && !h; i++) h = dlopen(names[i], RTLD_NOW);
  if (!h) return 0;
  cu.malloc_ = (cuda_malloc_fn)dlsym(h, "cudaMalloc");
  cu.free_ = (cuda_free_fn)dlsym(h, "cudaFree");
  cu.memcpy_ = (cuda_memcpy_fn)dlsym(h, "cudaMemcpy");
  cu.set_device = (cuda_int_fn)dlsym(h, "cudaSetDevice");
  cu.device_count = (cuda_count_fn)dlsym(h, "cudaGetDeviceCount");
  cu.stream_create = (cuda_stream_create_fn)dlsym(h, "cudaStreamCreate");
  cu.stream_sync = (cuda_stream_fn)dlsym(h, "cudaStreamSynchronize");
  cu.stream_destroy = (cuda_stream_fn)dlsym(h, "cudaStreamDestroy");
  cu.free_host = (cuda_stream_fn)dlsym(h, "cudaFreeHost");
  cu.launch_host_func = (cuda_host_func_fn)dlsym(h, "cudaLaunchHostFunc");
  cu.memcpy_async = (cuda_memcpy_async_fn)dlsym(h, "cudaMemcpyAsync");
  cu.malloc_host = (cuda_malloc_host_fn)dlsym(h, "cudaMallocHost");
  return cu.malloc_ && cu.free_ && cu.memcpy_ && cu.set_device && cu.device_count && cu.stream_create &&
         cu.stream_sync && cu.stream_destroy && cu.free_host && cu.launch_host_func && cu.memcpy_async &&
         cu.malloc_host;
}

static void *dalloc(size_t bytes) {
  void *p = NULL;
  if (cu.malloc_(&p, bytes ? bytes : 8) != 0) {
    fprintf(stderr, "coll_nccl_check rank %d: cudaMalloc(%zu) failed\n", g_rank, bytes);
    exit(2);
  }
  return p;
}
static void to_dev(void *d, const void *h, size_t bytes) {
  if (bytes && cu.memcpy_(d, h, bytes, H2D) != 0) exit(2);
}
static void to_host(void *h, const void *d, size_t bytes) {
  if (bytes && cu.memcpy_(h, d, bytes, D2H) != 0) exit(2);
}

/* ---- values */

static uint16_t f32_to_bf16(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
static float bf16_to_f32(uint16_t h) {
  uint32_t u = (uint32_t)h << 16;
  float f;
  memcpy(&f, &u, 4);
  return f;
}

static int val(int r, size_t i) {
  return (int)((r + 1) * ((i % 5) + 1)) - (int)(i % 3);
}

static void put(void *b, size_t i, dtr_dtype t, double v) {
  switch (t) {
    case DTR_F32:
      ((float *)b)[i] = (float)v;
      break;
    case DTR_F64:
      ((double *)b)[i] = v;
      break;
    case DTR_BF16:
      ((uint16_t *)b)[i] = f32_to_bf16((float)v);
      break;
    case DTR_I32:
      ((int32_t *)b)[i] = (int32_t)v;
      break;
    case DTR_I64:
      ((int64_t *)b)[i] = (int64_t)v;
      break;
    default:
      ((uint8_t *)b)[i] = (uint8_t)v;
      break;
  }
}
static double get(const void *b, size_t i, dtr_dtype t) {
  switch (t) {
    case DTR_F32:
      return ((const float *)b)[i];
    case DTR_F64:
      return ((const double *)b)[i];
    case DTR_BF16:
      return bf16_to_f32(((const uint16_t *)b)[i]);
    case DTR_I32:
      return ((const int32_t *)b)[i];
    case DTR_I64:
      return (double)((const int64_t *)b)[i];
    default:
      return ((const uint8_t *)b)[i];
  }
}

static double ref_reduce(size_t i, dtr_dtype t, dtr_redop op, int n) {
  double acc = val(0, i);
  int64_t isum = val(0, i);
  for (int r = 1; r < n; r++) {
    double v = val(r, i);
    isum += val(r, i);
    if (op == DTR_SUM || op == DTR_AVG)
      acc += v;
    else if (op == DTR_MAX)
      acc = v > acc ? v : acc;
    else if (op == DTR_MIN)
      acc = v < acc ? v : acc;
    else
      acc *= v;
  }
  if (op == DTR_AVG) return (t == DTR_I32 || t == DTR_I64) ? (double)(isum / n) : acc / n;
  return acc;
}

static double tol(dtr_dtype t, dtr_redop op) {
  if (op != DTR_AVG) return 0;
  return t == DTR_F32 ? 1e-6 : t == DTR_F64 ? 1e-12 : t == DTR_BF16 ? 1e-2 : 0;
}

/* Compare n host elements against want(i); count one check. */
typedef double (*ref_fn)(size_t i, const void *ctx);
static void verdict(const char *what, const void *got, size_t n, dtr_dtype t, double rel, ref_fn want,
                    const void *ctx) {
  g_checks++;
  for (size_t i = 0; i < n; i++) {
    unsigned char tmp[8];
    put(tmp, 0, t, want(i, ctx)); /* the reference as stored in the type (bf16 rounds above 256) */
    double w = get(tmp, 0, t), g = get(got, i, t);
    double diff = g > w ? g - w : w - g, mag = w < 0 ? -w : w; /* no libm: helpers link only libdtrain */
    if (diff > rel * (mag > 1.0 ? mag : 1.0)) {
      fprintf(stderr, "coll_nccl_check rank %d: MISMATCH %s (%s, %zu elements): element %zu is %g, want %g\n",
              g_rank, what, dtr_dtype_name(t), n, i, g, w);
      g_failed++;
      return;
    }
  }
}

static int ok(dtr_comm *c, dtr_result rc, const char *what) {
  if (rc == DTR_OK) return 1;
  fprintf(stderr, "coll_nccl_check rank %d: %s returned %s: %s\n", g_rank, what, dtr_strerror(rc),
          dtr_comm_last_error(c));
  g_checks++;
  g_failed++;
  return 0;
}

typedef struct {
  dtr_dtype t;
  dtr_redop op;
  int n;
  size_t off, blk;
  int root, rank;
} rctx;
static double want_reduce(size_t i, const void *p) {
  const rctx *x = p;
  return ref_reduce(x->off + i, x->t, x->op, x->n);
}
static double want_gather(size_t i, const void *p) {
  const rctx *x = p;
  return val((int)(i / x->blk), i % x->blk);
}
static double want_bcast(size_t i, const void *p) {
  const rctx *x = p;
  return val(x->root, i);
}
static double want_a2a(size_t i, const void *p) { /* block j of rank s's input: 100*s + j + k%7 */
  const rctx *x = p;
  return 100.0 * (double)(i / x->blk) + x->rank + (double)((i % x->blk) % 7);
}

/* Host input of rank r, n elements (plus room); the caller frees. */
static void *host_input(size_t n, dtr_dtype t, int r) {
  void *h = calloc(n + 1, 8);
  for (size_t i = 0; i < n; i++) put(h, i, t, val(r, i));
  return h;
}

static void suite(dtr_comm *c, size_t n) {
  const int rank = dtr_comm_rank(c), size = dtr_comm_size(c);
  static const dtr_dtype types[] = {DTR_F32, DTR_BF16, DTR_I32, DTR_F64, DTR_I64};
  int sr = g_rank;
  g_rank = rank;
  for (size_t k = 0; k < sizeof types / sizeof types[0]; k++) {
    const dtr_dtype t = types[k];
    const size_t es = dtr_dtype_size(t), bytes = n * es, all = (size_t)size * bytes;
    void *h = host_input((size_t)size * n, t, rank), *back = calloc((size_t)size * n + 1, 8);
    void *d_in = dalloc(all), *d_out = dalloc(all);
    char what[96];

    for (int op = DTR_SUM; op <= DTR_PROD; op++) {
      if (op == DTR_PROD && (t == DTR_BF16 || size > 4)) continue; /* exact and without overflow */
      for (int inplace = 0; inplace < 2; inplace++) {
        to_dev(d_in, h, bytes);
        void *dst = inplace ? d_in : d_out;
        snprintf(what, sizeof what, "all_reduce %s%s", dtr_redop_name((dtr_redop)op),
                 inplace ? " in-place" : "");
        if (!ok(c, dtr_all_reduce(c, d_in, dst, n, t, (dtr_redop)op, NULL), what)) continue;
        to_host(back, dst, bytes);
        rctx x = {t, (dtr_redop)op, size, 0, 0, 0, rank};
        verdict(what, back, n, t, tol(t, (dtr_redop)op), want_reduce, &x);
      }
    }
    /* reduce-scatter: input is size blocks of this rank's pattern shifted per block */
    void *hs = host_input((size_t)size * n, t, rank);
    for (int inplace = 0; inplace < 2; inplace++) {
      to_dev(d_in, hs, all);
      void *dst = inplace ? (char *)d_in + (size_t)rank * bytes : d_out;
      snprintf(what, sizeof what, "reduce_scatter sum%s", inplace ? " in-place" : "");
      if (ok(c, dtr_reduce_scatter(c, d_in, dst, n, t, DTR_SUM, NULL), what)) {
        to_host(back, dst, bytes);
        rctx x = {t, DTR_SUM, size, (size_t)rank * n, 0, 0, rank};
        verdict(what, back, n, t, 0, want_reduce, &x);
      }
    }
    free(hs);
    /* all-gather */
    for (int inplace = 0; inplace < 2; inplace++) {
      void *src = inplace ? (char *)d_out + (size_t)rank * bytes : d_in;
      to_dev(src, h, bytes);
      snprintf(what, sizeof what, "all_gather%s", inplace ? " in-place" : "");
      if (ok(c, dtr_all_gather(c, src, d_out, n, t, NULL), what)) {
        to_host(back, d_out, all);
        rctx x = {t, DTR_SUM, size, 0, n, 0, rank};
        verdict(what, back, (size_t)size * n, t, 0, want_gather, &x);
      }
    }
    /* broadcast from the last rank; reduce (max) to rank 0 */
    if (rank == size - 1)
      to_dev(d_in, h, bytes);
    else
      to_dev(d_in, back, 0);
    if (ok(c, dtr_broadcast(c, d_in, n, t, size - 1, NULL), "broadcast")) {
      to_host(back, d_in, bytes);
      rctx x = {t, DTR_SUM, size, 0, 0, size - 1, rank};
      verdict("broadcast", back, n, t, 0, want_bcast, &x);
    }
    to_dev(d_in, h, bytes);
    if (ok(c, dtr_reduce(c, d_in, rank == 0 ? d_out : NULL, n, t, DTR_MAX, 0, NULL), "reduce max") &&
        rank == 0) {
      to_host(back, d_out, bytes);
      rctx x = {t, DTR_MAX, size, 0, 0, 0, rank};
      verdict("reduce max", back, n, t, 0, want_reduce, &x);
    }
    /* all-to-all */
    for (int inplace = 0; inplace < 2; inplace++) {
      void *a = calloc((size_t)size * n + 1, 8);
      for (int j = 0; j < size; j++)
        for (size_t q = 0; q < n; q++) put(a, (size_t)j * n + q, t, 100.0 * rank + j + (double)(q % 7));
      to_dev(d_in, a, all);
      void *dst = inplace ? d_in : d_out;
      snprintf(what, sizeof what, "all_to_all%s", inplace ? " in-place" : "");
      if (ok(c, dtr_all_to_all(c, d_in, dst, n, t, NULL), what)) {
        to_host(back, dst, all);
        rctx x = {t, DTR_SUM, size, 0, n, 0, rank};
        verdict(what, back, (size_t)size * n, t, 0, want_a2a, &x);
      }
      free(a);
    }
    /* p2p batch around the ring, both directions at once */
    {
      int left = (rank + size - 1) % size, right = (rank + 1) % size;
      void *d_l = dalloc(bytes), *d_r = dalloc(bytes);
      to_dev(d_in, h, bytes);
      dtr_p2p ops[4] = {
          {1, right, d_in, n, t}, {1, left, d_in, n, t}, {0, left, d_l, n, t}, {0, right, d_r, n, t}};
      if (ok(c, dtr_p2p_batch(c, ops, 4, NULL), "p2p batch")) {
        rctx xl = {t, DTR_SUM, size, 0, 0, left, rank}, xr = {t, DTR_SUM, size, 0, 0, right, rank};
        to_host(back, d_l, bytes);
        verdict("p2p batch from left", back, n, t, 0, want_bcast, &xl);
        to_host(back, d_r, bytes);
        verdict("p2p batch from right", back, n, t, 0, want_bcast, &xr);
      }
      cu.free_(d_l);
      cu.free_(d_r);
    }
    cu.free_(d_in);
    cu.free_(d_out);
    free(h);
    free(back);
  }
  /* two requests in flight, then a barrier */
  {
    size_t bytes = n * 4;
    float *h = host_input(n, DTR_F32, rank), *back = calloc(n + 1, 4);
    void *a = dalloc(bytes), *b = dalloc(bytes);
    to_dev(a, h, bytes);
    to_dev(b, h, bytes);
    dtr_request *ra = NULL, *rb = NULL;
    dtr_result rc = dtr_all_reduce(c, a, a, n, DTR_F32, DTR_SUM, &ra);
    if (rc == DTR_OK) rc = dtr_all_reduce(c, b, b, n, DTR_F32, DTR_MIN, &rb);
    if (rc == DTR_OK) rc = dtr_request_wait(rb);
    if (rc == DTR_OK) rc = dtr_request_wait(ra);
    dtr_request_free(ra);
    dtr_request_free(rb);
    if (ok(c, rc, "two all_reduces in flight")) {
      rctx xs = {DTR_F32, DTR_SUM, size, 0, 0, 0, rank}, xm = {DTR_F32, DTR_MIN, size, 0, 0, 0, rank};
      to_host(back, a, bytes);
      verdict("async sum", back, n, DTR_F32, 0, want_reduce, &xs);
      to_host(back, b, bytes);
      verdict("async min", back, n, DTR_F32, 0, want_reduce, &xm);
    }
    ok(c, dtr_barrier(c, NULL), "barrier");
    cu.free_(a);
    cu.free_(b);
    free(h);
    free(back);
  }
  g_rank = sr;
}

/* Holds the caller's stream back, so that an all-reduce NOT ordered after it would read stale data. */
static void sleep_50ms(void *arg) {
  (void)arg;
  struct timespec ts = {0, 50 * 1000 * 1000};
  nanosleep(&ts, NULL);
}

/* dtr_comm_set_cuda_stream: the input reaches the device on the caller's stream only after a 50 ms host
 * function; an all-reduce issued right after must still see it (size x pattern), not the zeros before. */
static void stream_ordering(dtr_comm *c, size_t n) {
  int size = dtr_comm_size(c);
  size_t bytes = n * 4;
  float *pinned = NULL, *zero = calloc(n + 1, 4), *back = calloc(n + 1, 4);
  void *s = NULL, *d = dalloc(bytes);
  if (!zero || !back || cu.malloc_host((void **)&pinned, bytes + 4) != 0 || cu.stream_create(&s) != 0)
    exit(2);
  for (size_t i = 0; i < n; i++) pinned[i] = (float)(i % 13 + 1);
  to_dev(d, zero, bytes);
  int setup = cu.launch_host_func(s, sleep_50ms, NULL) == 0 && cu.memcpy_async(d, pinned, bytes, H2D, s) == 0;
  dtr_request *r = NULL;
  dtr_result rc = setup ? dtr_comm_set_cuda_stream(c, s) : DTR_ERR_SYSTEM;
  if (rc == DTR_OK) rc = dtr_all_reduce(c, d, d, n, DTR_F32, DTR_SUM, &r);
  if (rc == DTR_OK) rc = dtr_request_wait(r);
  dtr_request_free(r);
  if (dtr_comm_set_cuda_stream(c, NULL) != DTR_OK && rc == DTR_OK) rc = DTR_ERR_INTERNAL;
  if (ok(c, rc, "all_reduce ordered after the caller's stream")) {
    to_host(back, d, bytes);
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) bad += back[i] != (float)size * (float)(i % 13 + 1);
    g_checks++;
    if (bad) {
      fprintf(stderr, "coll_nccl_check rank %d: stream ordering: %zu of %zu values wrong (first %g)\n",
              g_rank, bad, n, (double)back[0]);
      g_failed++;
    }
  }
  cu.stream_sync(s);
  cu.stream_destroy(s);
  cu.free_host(pinned);
  cu.free_(d);
  free(zero);
  free(back);
}

static int env_int(const char *k, int d) {
  const char *v = getenv(k);
  return v && *v ? atoi(v) : d;
}

int main(int argc, char **argv) {
  size_t n = 65537;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--count") && i + 1 < argc) {
      n = (size_t)strtoull(argv[++i], NULL, 10);
    } else {
      fprintf(stderr, "usage: coll_nccl_check [--count N]\n");
      return 2;
    }
  }
  g_rank = env_int("RANK", -1);
  g_size = env_int("WORLD_SIZE", -1);
  if (g_rank < 0 || g_size < 1 || g_rank >= g_size) {
    fprintf(stderr, "coll_nccl_check: no RANK/WORLD_SIZE in the environment (run under dtrain launch)\n");
    return 2;
  }
  int ndev = 0;
  if (!load_cuda() || cu.device_count(&ndev) != 0 || ndev < 1) {
    fprintf(stderr, "coll_nccl_check rank %d: no CUDA runtime or device\n", g_rank);
    return 2;
  }
  int dev = env_int("LOCAL_RANK", 0);
  if (dev >= ndev || cu.set_device(dev) != 0) {
    fprintf(stderr, "coll_nccl_check rank %d: cannot use CUDA device %d of %d\n", g_rank, dev, ndev);
    return 2;
  }
  char err[512];
  dtr_store *store = NULL;
  if (dtr_store_connect_env(30000, &store, err, sizeof err) != DTR_OK) {
    fprintf(stderr, "coll_nccl_check rank %d: cannot connect to the store: %s\n", g_rank, err);
    return 2;
  }
  dtr_comm_config cfg = dtr_comm_config_default();
  cfg.backend = DTR_BACKEND_NCCL;
  cfg.timeout_ms = 60000;
  cfg.cuda_device = dev;
  dtr_comm *c = NULL;
  dtr_result rc = dtr_comm_create(store, g_rank, g_size, &cfg, &c, err, sizeof err);
  if (rc != DTR_OK) {
    fprintf(stderr, "coll_nccl_check rank %d: dtr_comm_create(nccl): %s: %s\n", g_rank, dtr_strerror(rc),
            err);
    dtr_store_close(store);
    return 1;
  }
  suite(c, n);
  suite(c, 7);
  suite(c, 0);
  stream_ordering(c, n);
  /* split: even and odd ranks, reversed by key */
  dtr_comm *sub = NULL;
  if (ok(c, dtr_comm_split(c, g_rank % 2, g_size - g_rank, &sub), "split") && sub) {
    int members = (g_size + 1 - g_rank % 2) / 2, before = 0;
    for (int r = g_rank + 2; r < g_size; r += 2) before++;
    g_checks++;
    if (dtr_comm_size(sub) != members || dtr_comm_rank(sub) != before) {
      fprintf(stderr, "coll_nccl_check rank %d: split gave rank %d of %d, want %d of %d\n", g_rank,
              dtr_comm_rank(sub), dtr_comm_size(sub), before, members);
      g_failed++;
    } else {
      suite(sub, 1023);
    }
    dtr_comm_destroy(sub);
  }
  ok(c, dtr_barrier(c, NULL), "final barrier");
  dtr_comm_destroy(c);
  dtr_store_close(store);
  printf("coll_nccl_check rank %d: %ld checks, %ld failed (nccl, %d ranks)\n", g_rank, g_checks, g_failed,
         g_size);
  return g_failed ? 1 : 0;
}
