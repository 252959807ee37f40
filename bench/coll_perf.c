/* coll_perf — nccl-tests-style bandwidth of one collective over a range of sizes, run as every rank:
 *   dtrain launch --nproc-per-node 4 -- coll_perf --op allreduce -b 8 -e 256M -f 2 [--check]
 *   mpirun -np 4 coll_perf --backend mpi ...      (dtrain's mpi backend)
 *   mpirun -np 4 coll_perf --anchor-mpi ...       (raw MPI_Allreduce & co., the anchor; MPI builds only)
 * Rank 0 prints one row per size: size count type redop time(us) algbw(GB/s) busbw(GB/s) #wrong, where
 * time is the slowest rank's average per iteration, algbw = size / time and busbw = algbw times
 * 2(n-1)/n (allreduce), (n-1)/n (reducescatter, allgather, alltoall) or 1 (broadcast, reduce, and
 * sendrecv: every rank sends size bytes to the next rank and receives as many from the previous), so a
 * busbw is comparable with the hardware's bandwidth whatever the rank count (nccl-tests' PERFORMANCE.md).
 * size is the total buffer: for reducescatter the send buffer, for allgather the receive buffer, for
 * alltoall either one. --check verifies one extra run per size against a serial reference (exact for
 * host; cref_tolerance for mpi/nccl floats) and counts wrong elements across ranks. --threshold-busbw
 * exits 1 when the best busbw is below it; any #wrong also exits 1. --inplace (allreduce only) passes the
 * receive buffer as the send buffer (MPI_IN_PLACE for --anchor-mpi), the way gradients are reduced. */
#define _GNU_SOURCE
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench/bench_args.h"
#include "dtrain/comm.h"
#include "dtrain/store.h"
#include "tests/helpers/coll_ref.h"

#ifdef DTRAIN_HAVE_MPI
#include <mpi.h>
#endif
#ifdef DTRAIN_HAVE_CUDA
#include <cuda_runtime.h>
#endif

typedef enum { OP_AR, OP_RS, OP_AG, OP_BC, OP_RED, OP_A2A, OP_SR, OP_COUNT } bench_op;
static const char *OP_NAMES[] = {"allreduce", "reducescatter", "allgather", "broadcast",
                                 "reduce",    "alltoall",      "sendrecv"};

typedef struct opts {
  bench_op op;
  dtr_backend backend;
  dtr_dtype dtype;
  dtr_redop redop;
  size_t min_bytes, max_bytes;
  double step;
  int iters, warmup; /* 0: automatic by size */
  int check, anchor_mpi, timeout_ms;
  int inplace; /* allreduce: send == recv */
  const char *json;
  double threshold;
} opts;

typedef struct bench {
  opts o;
  int rank, size;
  dtr_comm *c;
  int device; /* nccl: buffers live on the GPU */
} bench;

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void usage(FILE *f) {
  fprintf(f,
          "usage: coll_perf [--op allreduce|reducescatter|allgather|broadcast|reduce|alltoall|sendrecv]\n"
          "                 [--backend host|mpi|nccl] [--anchor-mpi] [--dtype f32|f64|f16|bf16|i32|i64|u8]\n"
          "                 [--redop sum|avg|max|min|prod] [-b|--min-bytes 8] [-e|--max-bytes 256M]\n"
          "                 [-f|--step-factor 2] [-n|--iters N] [-w|--warmup N] [-c|--check]\n"
          "                 [--json FILE] [--threshold-busbw GB/s] [--timeout-ms MS] [--inplace]\n");
}

static int parse_args(int argc, char **argv, opts *o) {
  *o = (opts){.op = OP_AR,
              .backend = DTR_BACKEND_HOST,
              .dtype = DTR_F32,
              .redop = DTR_SUM,
              .min_bytes = 8,
              .max_bytes = 256u << 20,
              .step = 2,
              .timeout_ms = 600000};
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
#define ARG(s1, s2) ((!strcmp(a, s1) || !strcmp(a, s2)) && v && (i++, 1))
    if (ARG("--op", "-o")) {
      int k;
      for (k = 0; k < OP_COUNT && strcmp(v, OP_NAMES[k]); k++) {
      }
      if (k == OP_COUNT) return fprintf(stderr, "coll_perf: unknown --op %s\n", v), -1;
      o->op = (bench_op)k;
    } else if (ARG("--backend", "-B")) {
      if (dtr_backend_parse(v, &o->backend) != DTR_OK)
        return fprintf(stderr, "coll_perf: bad --backend %s\n", v), -1;
    } else if (ARG("--dtype", "-d")) {
      if (dtr_dtype_parse(v, &o->dtype) != DTR_OK)
        return fprintf(stderr, "coll_perf: bad --dtype %s\n", v), -1;
    } else if (ARG("--redop", "-r")) {
      if (dtr_redop_parse(v, &o->redop) != DTR_OK)
        return fprintf(stderr, "coll_perf: bad --redop %s\n", v), -1;
    } else if (ARG("--min-bytes", "-b")) {
      if (bench_parse_bytes(v, &o->min_bytes))
        return fprintf(stderr, "coll_perf: bad --min-bytes %s\n", v), -1;
    } else if (ARG("--max-bytes", "-e")) {
      if (bench_parse_bytes(v, &o->max_bytes))
        return fprintf(stderr, "coll_perf: bad --max-bytes %s\n", v), -1;
    } else if (ARG("--step-factor", "-f")) {
      o->step = atof(v);
    } else if (ARG("--iters", "-n")) {
      o->iters = atoi(v);
    } else if (ARG("--warmup", "-w")) {
      o->warmup = atoi(v);
    } else if (ARG("--json", "-J")) {
      o->json = v;
    } else if (ARG("--threshold-busbw", "-T")) {
      o->threshold = atof(v);
    } else if (ARG("--timeout-ms", "-t")) {
      o->timeout_ms = atoi(v);
    } else if (!strcmp(a, "--check") || !strcmp(a, "-c")) {
      o->check = 1;
    } else if (!strcmp(a, "--anchor-mpi")) {
      o->anchor_mpi = 1;
    } else if (!strcmp(a, "--inplace")) {
      o->inplace = 1;
    } else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
      usage(stdout);
      exit(0);
    } else {
      fprintf(stderr, "coll_perf: unknown or incomplete argument %s\n", a);
      return -1;
    }
#undef ARG
  }
  if (o->step <= 1.0) return fprintf(stderr, "coll_perf: --step-factor must be > 1\n"), -1;
  if (o->min_bytes > o->max_bytes) return fprintf(stderr, "coll_perf: --min-bytes > --max-bytes\n"), -1;
  if (o->iters < 0 || o->warmup < 0) return fprintf(stderr, "coll_perf: negative --iters/--warmup\n"), -1;
  if (o->inplace && o->op != OP_AR)
    return fprintf(stderr, "coll_perf: --inplace is for --op allreduce only\n"), -1;
  return 0;
}

static double bus_factor(bench_op op, int n) {
  switch (op) {
    case OP_AR:
      return 2.0 * (n - 1) / n;
    case OP_RS:
    case OP_AG:
    case OP_A2A:
      return (double)(n - 1) / n;
    default:
      return 1.0;
  }
}

/* ---------------------------------------------------------------- buffers (host or device) */

static void *buf_alloc(bench *b, size_t bytes) {
  if (bytes == 0) bytes = 1;
#ifdef DTRAIN_HAVE_CUDA
  if (b->device) {
    void *p = NULL;
    return cudaMalloc(&p, bytes) == cudaSuccess ? p : NULL;
  }
#endif
  return malloc(bytes);
}
static void buf_free(bench *b, void *p) {
#ifdef DTRAIN_HAVE_CUDA
  if (b->device) {
    cudaFree(p);
    return;
  }
#endif
  free(p);
}
static void buf_put(bench *b, void *dst, const void *src, size_t bytes) {
  if (!bytes) return;
#ifdef DTRAIN_HAVE_CUDA
  if (b->device) {
    cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice);
    return;
  }
#endif
  memcpy(dst, src, bytes);
}
static void buf_get(bench *b, void *dst, const void *src, size_t bytes) {
  if (!bytes) return;
#ifdef DTRAIN_HAVE_CUDA
  if (b->device) {
    cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost);
    return;
  }
#endif
  memcpy(dst, src, bytes);
}
static void dev_sync(bench *b) {
#ifdef DTRAIN_HAVE_CUDA
  if (b->device) cudaDeviceSynchronize();
#endif
}

/* ---------------------------------------------------------------- one operation */

#ifdef DTRAIN_HAVE_MPI
static MPI_Datatype mpi_type(dtr_dtype t) {
  switch (t) {
    case DTR_F32:
      return MPI_FLOAT;
    case DTR_F64:
      return MPI_DOUBLE;
    case DTR_I32:
      return MPI_INT32_T;
    case DTR_I64:
      return MPI_INT64_T;
    case DTR_U8:
      return MPI_UINT8_T;
    default:
      return MPI_DATATYPE_NULL;
  }
}
static MPI_Op mpi_op(dtr_redop op) {
  switch (op) {
    case DTR_SUM:
      return MPI_SUM;
    case DTR_MAX:
      return MPI_MAX;
    case DTR_MIN:
      return MPI_MIN;
    case DTR_PROD:
      return MPI_PROD;
    default:
      return MPI_OP_NULL;
  }
}
#endif

/* count: elements per rank block (allreduce, broadcast, reduce: the whole buffer) */
static dtr_result run_op(bench *b, const void *send, void *recv, size_t count) {
  const opts *o = &b->o;
  if (o->inplace) send = recv;
#ifdef DTRAIN_HAVE_MPI
  if (o->anchor_mpi) {
    MPI_Datatype t = mpi_type(o->dtype);
    MPI_Op op = mpi_op(o->redop);
    int n = (int)count, e;
    switch (o->op) {
      case OP_AR:
        e = MPI_Allreduce(send == recv ? MPI_IN_PLACE : send, recv, n, t, op, MPI_COMM_WORLD);
        break;
      case OP_RS:
        e = MPI_Reduce_scatter_block(send, recv, n, t, op, MPI_COMM_WORLD);
        break;
      case OP_AG:
        e = MPI_Allgather(send, n, t, recv, n, t, MPI_COMM_WORLD);
        break;
      case OP_BC:
        e = MPI_Bcast(recv, n, t, 0, MPI_COMM_WORLD);
        break;
      case OP_RED:
        e = MPI_Reduce(send, recv, n, t, op, 0, MPI_COMM_WORLD);
        break;
      case OP_SR:
        e = MPI_Sendrecv(send, n, t, (b->rank + 1) % b->size, 0, recv, n, t,
                         (b->rank + b->size - 1) % b->size, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        break;
      default:
        e = MPI_Alltoall(send, n, t, recv, n, t, MPI_COMM_WORLD);
        break;
    }
    return e == MPI_SUCCESS ? DTR_OK : DTR_ERR_CONNECTION;
  }
#endif
  switch (o->op) {
    case OP_AR:
      return dtr_all_reduce(b->c, send, recv, count, o->dtype, o->redop, NULL);
    case OP_RS:
      return dtr_reduce_scatter(b->c, send, recv, count, o->dtype, o->redop, NULL);
    case OP_AG:
      return dtr_all_gather(b->c, send, recv, count, o->dtype, NULL);
    case OP_BC:
      return dtr_broadcast(b->c, recv, count, o->dtype, 0, NULL);
    case OP_RED:
      return dtr_reduce(b->c, send, recv, count, o->dtype, o->redop, 0, NULL);
    case OP_SR: { /* a pipeline's exchange: send to the next rank, receive from the previous, at once */
      dtr_p2p ops[2] = {{1, (b->rank + 1) % b->size, (void *)send, count, o->dtype},
                        {0, (b->rank + b->size - 1) % b->size, recv, count, o->dtype}};
      return dtr_p2p_batch(b->c, ops, 2, NULL);
    }
    default:
      return dtr_all_to_all(b->c, send, recv, count, o->dtype, NULL);
  }
}

static dtr_result reduce_max_f64(bench *b, double *v) {
#ifdef DTRAIN_HAVE_MPI
  if (b->o.anchor_mpi)
    return MPI_Allreduce(MPI_IN_PLACE, v, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD) ? DTR_ERR_CONNECTION
                                                                                  : DTR_OK;
#endif
  /* a host scalar: on nccl this would need device memory, so the scalar travels through a buffer */
  double *d = buf_alloc(b, sizeof *v);
  if (!d) return DTR_ERR_NOMEM;
  buf_put(b, d, v, sizeof *v);
  dtr_result rc = dtr_all_reduce(b->c, d, d, 1, DTR_F64, DTR_MAX, NULL);
  dev_sync(b);
  buf_get(b, v, d, sizeof *v);
  buf_free(b, d);
  return rc;
}

static dtr_result sum_i64(bench *b, int64_t *v) {
#ifdef DTRAIN_HAVE_MPI
  if (b->o.anchor_mpi)
    return MPI_Allreduce(MPI_IN_PLACE, v, 1, MPI_INT64_T, MPI_SUM, MPI_COMM_WORLD) ? DTR_ERR_CONNECTION
                                                                                   : DTR_OK;
#endif
  int64_t *d = buf_alloc(b, sizeof *v);
  if (!d) return DTR_ERR_NOMEM;
  buf_put(b, d, v, sizeof *v);
  dtr_result rc = dtr_all_reduce(b->c, d, d, 1, DTR_I64, DTR_SUM, NULL);
  dev_sync(b);
  buf_get(b, v, d, sizeof *v);
  buf_free(b, d);
  return rc;
}

static dtr_result barrier(bench *b) {
#ifdef DTRAIN_HAVE_MPI
  if (b->o.anchor_mpi) return MPI_Barrier(MPI_COMM_WORLD) ? DTR_ERR_CONNECTION : DTR_OK;
#endif
  return dtr_barrier(b->c, NULL);
}

/* ---------------------------------------------------------------- checking */

/* Fill this rank's send (and for broadcast root's buffer), run once, compare; wrong elements here. */
static int64_t check_once(bench *b, void *send, void *recv, size_t count, size_t send_elems,
                          size_t recv_elems, dtr_result *rcp) {
  const opts *o = &b->o;
  size_t es = cref_esz(o->dtype);
  int n = b->size, me = b->rank;
  uint64_t tag = cref_tag(0xc011, (int)o->op, o->dtype, o->redop, count);
  char *hs = malloc(send_elems * es + 1), *hr = malloc(recv_elems * es + 1),
       *want = malloc(recv_elems * es + 1);
  int *world = malloc(sizeof(int) * (size_t)n);
  if (!hs || !hr || !want || !world) {
    free(hs), free(hr), free(want), free(world);
    *rcp = DTR_ERR_NOMEM;
    return 0;
  }
  for (int r = 0; r < n; r++) world[r] = r;
  dtr_redop rop = o->op == OP_AR || o->op == OP_RS || o->op == OP_RED ? o->redop : DTR_SUM;
  int is_red = rop == o->redop && (o->op == OP_AR || o->op == OP_RS || o->op == OP_RED);
  size_t gbase = 0, ncmp = recv_elems;
  cref_fill(hs, o->dtype, rop, tag, me, 0, send_elems);
  memset(hr, 0xa5, recv_elems * es);
  switch (o->op) {
    case OP_AR:
      cref_reduce(want, o->dtype, rop, tag, world, n, 0, count);
      break;
    case OP_RED:
      cref_reduce(want, o->dtype, rop, tag, world, n, 0, count);
      if (me != 0) ncmp = 0;
      break;
    case OP_RS:
      gbase = (size_t)me * count;
      cref_reduce(want, o->dtype, rop, tag, world, n, gbase, count);
      break;
    case OP_AG:
      for (int r = 0; r < n; r++) cref_fill(want + (size_t)r * count * es, o->dtype, rop, tag, r, 0, count);
      break;
    case OP_BC:
      cref_fill(want, o->dtype, rop, tag, 0, 0, count);
      if (me == 0) memcpy(hr, want, count * es);
      break;
    case OP_A2A:
      for (int r = 0; r < n; r++)
        cref_fill(want + (size_t)r * count * es, o->dtype, rop, tag, r, (size_t)me * count, count);
      break;
    case OP_SR:
      cref_fill(want, o->dtype, rop, tag, (me + n - 1) % n, 0, count);
      break;
    case OP_COUNT:
      break;
  }
  buf_put(b, send, hs, send_elems * es);
  buf_put(b, recv, o->inplace ? hs : hr, recv_elems * es); /* in place: the input is in recv */
  *rcp = run_op(b, send, recv, count);
  dev_sync(b);
  buf_get(b, hr, recv, recv_elems * es);
  int64_t wrong = 0;
  int exact = b->o.backend == DTR_BACKEND_HOST && !b->o.anchor_mpi;
  for (size_t i = 0; i < ncmp && *rcp == DTR_OK; i++) {
    const char *g = hr + i * es, *w = want + i * es;
    if (memcmp(g, w, es) == 0) continue;
    if (!exact && is_red && cref_is_float(o->dtype)) {
      double d = cref_as_double(g, o->dtype) - cref_as_double(w, o->dtype);
      double tol = cref_tolerance(o->dtype, rop, tag, world, n, gbase + i);
      if (d <= tol && -d <= tol) continue;
    }
    if (wrong++ < 3)
      fprintf(stderr, "coll_perf rank %d: %s count %zu: index %zu expected %.9g got %.9g\n", me,
              OP_NAMES[o->op], count, i, cref_as_double(w, o->dtype), cref_as_double(g, o->dtype));
  }
  free(hs), free(hr), free(want), free(world);
  return wrong;
}

/* ---------------------------------------------------------------- main */

static int env_int(const char *k, int d) {
  const char *v = getenv(k);
  return v && *v ? atoi(v) : d;
}

int main(int argc, char **argv) {
  bench b = {0};
  if (parse_args(argc, argv, &b.o)) {
    usage(stderr);
    return 2;
  }
  opts *o = &b.o;
  int use_mpi_env = o->anchor_mpi || o->backend == DTR_BACKEND_MPI;
  b.rank = use_mpi_env ? env_int("OMPI_COMM_WORLD_RANK", env_int("RANK", 0)) : env_int("RANK", 0);
  b.size = use_mpi_env ? env_int("OMPI_COMM_WORLD_SIZE", env_int("WORLD_SIZE", 1)) : env_int("WORLD_SIZE", 1);
  size_t es = dtr_dtype_size(o->dtype);
  dtr_store *store = NULL;
  char err[512] = "";

  if (o->anchor_mpi) {
#ifdef DTRAIN_HAVE_MPI
    if (mpi_type(o->dtype) == MPI_DATATYPE_NULL ||
        ((o->op == OP_AR || o->op == OP_RS || o->op == OP_RED) && mpi_op(o->redop) == MPI_OP_NULL)) {
      fprintf(stderr, "coll_perf: --anchor-mpi has no MPI equivalent for %s/%s\n", dtr_dtype_name(o->dtype),
              dtr_redop_name(o->redop));
      return 2;
    }
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &b.rank);
    MPI_Comm_size(MPI_COMM_WORLD, &b.size);
#else
    fprintf(stderr, "coll_perf: --anchor-mpi needs a build with MPI (DTRAIN_HAVE_MPI)\n");
    return 2;
#endif
  } else {
    if (o->backend == DTR_BACKEND_NCCL) {
#ifdef DTRAIN_HAVE_CUDA
      b.device = 1;
      int dev = env_int("LOCAL_RANK", env_int("OMPI_COMM_WORLD_LOCAL_RANK", 0)), ndev = 0;
      if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev == 0) {
        fprintf(stderr, "coll_perf: --backend nccl but no CUDA device is visible\n");
        return 2;
      }
      cudaSetDevice(dev % ndev);
#else
      fprintf(stderr, "coll_perf: --backend nccl needs a build with CUDA (DTRAIN_HAVE_CUDA)\n");
      return 2;
#endif
    }
    if (o->backend != DTR_BACKEND_MPI && dtr_store_connect_env(30000, &store, err, sizeof err) != DTR_OK) {
      fprintf(stderr, "coll_perf rank %d: cannot reach the store (run under dtrain launch): %s\n", b.rank,
              err);
      return 2;
    }
    dtr_comm_config cfg = dtr_comm_config_default();
    cfg.backend = o->backend;
    cfg.timeout_ms = o->timeout_ms;
    cfg.name = "coll_perf";
    dtr_result rc = dtr_comm_create(store, b.rank, b.size, &cfg, &b.c, err, sizeof err);
    if (rc != DTR_OK) {
      fprintf(stderr, "coll_perf rank %d: dtr_comm_create: %s: %s\n", b.rank, dtr_strerror(rc), err);
      dtr_store_close(store);
      return 1;
    }
  }

  int n = b.size;
  const char *backend_name = o->anchor_mpi ? "mpi-raw" : dtr_backend_name(o->backend);
  int reduces = o->op == OP_AR || o->op == OP_RS || o->op == OP_RED;
  FILE *js = NULL;
  if (b.rank == 0) {
    printf(
        "# coll_perf: op %s, backend %s, %d ranks, dtype %s, redop %s, bytes %zu..%zu x%g, iters %s, check "
        "%s\n",
        OP_NAMES[o->op], backend_name, n, dtr_dtype_name(o->dtype),
        reduces ? dtr_redop_name(o->redop) : "none", o->min_bytes, o->max_bytes, o->step,
        o->iters ? "fixed" : "auto", o->check ? "on" : "off");
    printf("# busbw = algbw x %s; time = slowest rank's mean per iteration\n",
           o->op == OP_AR                                          ? "2(n-1)/n"
           : (o->op == OP_BC || o->op == OP_RED || o->op == OP_SR) ? "1"
                                                                   : "(n-1)/n");
    printf("%12s %12s %6s %6s %12s %12s %12s %7s\n", "size", "count", "type", "redop", "time(us)",
           "algbw(GB/s)", "busbw(GB/s)", "#wrong");
    fflush(stdout);
    if (o->json && !(js = fopen(o->json, "w"))) fprintf(stderr, "coll_perf: cannot write %s\n", o->json);
    if (js)
      fprintf(js,
              "{\"bench\": \"coll_perf\", \"op\": \"%s\", \"backend\": \"%s\", \"nranks\": %d, \"dtype\": "
              "\"%s\", "
              "\"redop\": \"%s\", \"results\": [",
              OP_NAMES[o->op], backend_name, n, dtr_dtype_name(o->dtype),
              reduces ? dtr_redop_name(o->redop) : "none");
  }

  int status = 0, first = 1;
  double best_busbw = 0, sum_busbw = 0;
  int nrows = 0;
  int64_t total_wrong = 0;
  size_t unit = es * ((o->op == OP_RS || o->op == OP_AG || o->op == OP_A2A) ? (size_t)n : 1);
  /* buffers for the largest size, reused */
  size_t max_total = (o->max_bytes / unit) * unit;
  size_t max_send = (o->op == OP_AG) ? max_total / n : max_total;
  size_t max_recv = (o->op == OP_RS) ? max_total / n : max_total;
  void *send = buf_alloc(&b, max_send), *recv = buf_alloc(&b, max_recv);
  if (!send || !recv) {
    fprintf(stderr, "coll_perf rank %d: cannot allocate %zu + %zu bytes\n", b.rank, max_send, max_recv);
    return 1;
  }
  {
    /* touch the buffers once so page faults are not timed */
    char *h = calloc(1, max_send > max_recv ? max_send : max_recv);
    if (h) {
      buf_put(&b, send, h, max_send);
      buf_put(&b, recv, h, max_recv);
      free(h);
    }
  }
  double last = -1;
  for (double sz = (double)o->min_bytes; sz <= (double)o->max_bytes * 1.0000001 && nrows < 200;
       sz *= o->step) {
    size_t total = ((size_t)sz / unit) * unit; /* bytes */
    if (total == 0 || (double)total == last) continue;
    last = (double)total;
    size_t elems = total / es, count = unit == es ? elems : elems / n;
    size_t send_elems = o->op == OP_AG ? count : elems, recv_elems = o->op == OP_RS ? count : elems;
    int iters = o->iters, warmup = o->warmup;
    if (!iters) {
      /* automatic: about 512 MiB moved per size, between 3 and 100 iterations */
      double k = (double)(512u << 20) / (double)total;
      iters = k > 100 ? 100 : k < 3 ? 3 : (int)k;
    }
    if (!o->warmup) warmup = iters / 5 < 1 ? 1 : iters / 5 > 5 ? 5 : iters / 5;
    dtr_result rc = DTR_OK;
    for (int i = 0; i < warmup && rc == DTR_OK; i++) rc = run_op(&b, send, recv, count);
    dev_sync(&b);
    if (rc == DTR_OK) rc = barrier(&b);
    double t0 = now_s();
    for (int i = 0; i < iters && rc == DTR_OK; i++) rc = run_op(&b, send, recv, count);
    dev_sync(&b);
    double per = (now_s() - t0) / iters;
    if (rc != DTR_OK) {
      fprintf(stderr, "coll_perf rank %d: %s of %zu bytes failed: %s: %s\n", b.rank, OP_NAMES[o->op], total,
              dtr_strerror(rc), b.c ? dtr_comm_last_error(b.c) : "MPI error");
      status = 1;
      break;
    }
    int64_t wrong = -1;
    if (o->check) {
      wrong = check_once(&b, send, recv, count, send_elems, recv_elems, &rc);
      if (rc == DTR_OK) rc = sum_i64(&b, &wrong);
      if (rc != DTR_OK) {
        fprintf(stderr, "coll_perf rank %d: check run failed: %s\n", b.rank, dtr_strerror(rc));
        status = 1;
        break;
      }
      total_wrong += wrong;
    }
    if (reduce_max_f64(&b, &per) != DTR_OK) {
      fprintf(stderr, "coll_perf rank %d: the timing all-reduce failed\n", b.rank);
      status = 1;
      break;
    }
    double algbw = (double)total / per / 1e9, busbw = algbw * bus_factor(o->op, n);
    if (busbw > best_busbw) best_busbw = busbw;
    sum_busbw += busbw;
    nrows++;
    if (b.rank == 0) {
      char ws[32];
      if (wrong < 0)
        snprintf(ws, sizeof ws, "N/A");
      else
        snprintf(ws, sizeof ws, "%lld", (long long)wrong);
      printf("%12zu %12zu %6s %6s %12.2f %12.3f %12.3f %7s\n", total, elems, dtr_dtype_name(o->dtype),
             reduces ? dtr_redop_name(o->redop) : "none", per * 1e6, algbw, busbw, ws);
      fflush(stdout);
      if (js)
        fprintf(js,
                "%s\n  {\"size\": %zu, \"count\": %zu, \"iters\": %d, \"time_us\": %.3f, \"algbw\": %.6f, "
                "\"busbw\": %.6f, \"wrong\": %lld}",
                first ? "" : ",", total, elems, iters, per * 1e6, algbw, busbw, (long long)wrong);
      first = 0;
    }
  }
  if (total_wrong > 0) status = 1;
  if (o->threshold > 0 && best_busbw < o->threshold) status = 1;
  if (b.rank == 0) {
    printf("# Out of bounds values : %lld %s\n", (long long)total_wrong, total_wrong ? "FAILED" : "OK");
    printf("# Avg bus bandwidth    : %.3f GB/s (max %.3f)\n", nrows ? sum_busbw / nrows : 0.0, best_busbw);
    if (o->threshold > 0)
      printf("# threshold %.3f GB/s: %s\n", o->threshold,
             best_busbw < o->threshold ? "BELOW (exit 1)" : "met");
    if (js) {
      fprintf(js,
              "\n], \"max_busbw\": %.6f, \"avg_busbw\": %.6f, \"wrong\": %lld, \"threshold_busbw\": %.6f, "
              "\"status\": %d}\n",
              best_busbw, nrows ? sum_busbw / nrows : 0.0, (long long)total_wrong, o->threshold, status);
      fclose(js);
    }
  }
  buf_free(&b, send);
  buf_free(&b, recv);
#ifdef DTRAIN_HAVE_MPI
  if (o->anchor_mpi) MPI_Finalize();
#endif
  dtr_comm_destroy(b.c);
  dtr_store_close(store);
  return status;
}
