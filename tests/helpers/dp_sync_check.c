/* dp_sync_check — the data-parallel gradient buckets (dtr_dp_sync_*) on every rank of a job:
 *   dtrain launch --nproc-per-node N -- dp_sync_check [--max-seconds S]
 * For buffers of several sizes and bucket sizes that do and do not divide them (first bucket smaller),
 * "parameters" of pseudo-random sizes are marked ready in backward order (end of the buffer first), with
 * overlap on and off, over two steps; the result must equal, BIT FOR BIT, a serial average (sum in rank
 * order 0..N-1 in float, divided by N: the host backend's fixed order). With overlap, before the last range
 * is marked, exactly the buckets lying wholly in the marked tail must have started (bucket 0 among them);
 * without overlap none. Also: the bucket layout, wait-time accounting, gradient accumulation (inner
 * micro-steps mark nothing and start nothing), and bad ranges (out of bounds, marked twice).
 * Prints "dp_sync_check rank R: N checks, F failed"; exit 0 when F == 0.
 * ZeRO-1 (dtr_dp_sync_create_zero1) on the same layouts: each rank's parts bit-identical to the serial
 * average, the parts of all ranks covering the buffer exactly once, the parameters all-gathered.
 * --bench MS instead times finish's wait with overlap off and on (figures only). */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "dtrain/runtime.h"
#include "runtime/runtime_internal.h"
#include "tests/helpers/mix64.h"
#include "tests/helpers/time_limit.h"

static int g_rank = -1, g_world = 1;
static long checks, failed;

#define EXPECT(cond, ...)                                            \
  do {                                                               \
    checks++;                                                        \
    if (!(cond)) {                                                   \
      if (failed++ < 20) {                                           \
        fprintf(stderr, "dp_sync_check rank %d: MISMATCH ", g_rank); \
        fprintf(stderr, __VA_ARGS__);                                \
        fprintf(stderr, "\n");                                       \
      }                                                              \
    }                                                                \
  } while (0)

/* Rank r's gradient i at step s: a float in [-4, 4) with a full mantissa, so rounding order matters. */
static float grad_value(int r, size_t i, int s, uint64_t tag) {
  uint64_t h = mix(tag * 1000003ULL + (uint64_t)r * 7919ULL + (uint64_t)i * 104729ULL + (uint64_t)s);
  return (float)((double)(h >> 11) / (double)(1ULL << 53) * 8.0 - 4.0);
}

static void fill(float *g, size_t n, int r, int s, uint64_t tag) {
  for (size_t i = 0; i < n; i++) g[i] = grad_value(r, i, s, tag);
}

static void reference(float *ref, size_t n, int s, uint64_t tag) {
  for (size_t i = 0; i < n; i++) {
    float acc = grad_value(0, i, s, tag);
    for (int r = 1; r < g_world; r++) acc = acc + grad_value(r, i, s, tag);
    ref[i] = acc / (float)g_world;
  }
}

/* Cut [0, n) into ranges of pseudo-random sizes 1..maxlen; returns their count; starts in off[]. */
static int partition(size_t n, size_t maxlen, uint64_t seed, size_t *off, size_t *len, int cap) {
  int k = 0;
  size_t at = 0;
  while (at < n && k < cap) {
    size_t l = 1 + (size_t)(mix(seed + (uint64_t)k) % maxlen);
    if (k == cap - 1 || l > n - at) l = n - at;
    off[k] = at;
    len[k] = l;
    at += l;
    k++;
  }
  return k;
}

static void run_case(dtr_comm *dp, size_t n, size_t bucket_bytes, size_t first_bytes, int overlap,
                     uint64_t tag) {
  char what[160];
  snprintf(what, sizeof what, "n=%zu bucket=%zuB first=%zuB overlap=%d", n, bucket_bytes, first_bytes,
           overlap);
  float *g = malloc((n ? n : 1) * sizeof *g), *ref = malloc((n ? n : 1) * sizeof *ref);
  enum { CAP = 4096 };
  size_t *off = malloc(CAP * sizeof *off), *len = malloc(CAP * sizeof *len);
  dtr_dp_sync *s = NULL;
  dtr_result rc = dtr_dp_sync_create(dp, g, n, bucket_bytes, first_bytes, overlap, &s);
  EXPECT(rc == DTR_OK && s, "%s: create: %s", what, dtr_strerror(rc));
  if (!s) goto out;

  /* layout: bucket 0 at the end holding first_bytes/4 floats, then bucket_bytes/4 each towards 0 */
  /* defaults: 25 MiB buckets; a first bucket of 1 MiB, or bucket_bytes when that is smaller */
  size_t eff_bucket = bucket_bytes ? bucket_bytes : (25u << 20);
  size_t eff_first =
      first_bytes ? first_bytes : (bucket_bytes && bucket_bytes < (1u << 20) ? bucket_bytes : (1u << 20));
  size_t fe = eff_first / 4 ? eff_first / 4 : 1, be = eff_bucket / 4 ? eff_bucket / 4 : 1;
  int nb = dtr_dp_sync_num_buckets(s);
  int want_nb = n == 0 ? 0 : 1 + (int)((n - (fe < n ? fe : n) + be - 1) / be);
  EXPECT(nb == want_nb, "%s: %d buckets, expected %d", what, nb, want_nb);
  size_t end = n;
  for (int b = 0; b < nb; b++) {
    size_t o = 0, c = 0;
    dtr__dp_sync_bucket(s, b, &o, &c);
    size_t want_c = b == 0 ? (fe < n ? fe : n) : (be < end ? be : end);
    EXPECT(o + c == end && c == want_c, "%s: bucket %d is [%zu, +%zu), expected [%zu, +%zu)", what, b, o, c,
           end - want_c, want_c);
    end = o;
  }
  EXPECT(end == 0, "%s: buckets leave [0, %zu) uncovered", what, end);

  double wait_sum = 0;
  for (int step = 0; step < 2; step++) {
    fill(g, n, g_rank, step, tag);
    reference(ref, n, step, tag);
    int k = partition(n, n / 7 + 1, tag * 31 + (uint64_t)step, off, len, CAP);
    /* backward order: the last range first */
    for (int j = k - 1; j >= 1; j--) {
      rc = dtr_dp_sync_ready(s, off[j], len[j]);
      EXPECT(rc == DTR_OK, "%s: ready [%zu, +%zu): %s", what, off[j], len[j], dtr_strerror(rc));
    }
    if (k >= 1) {
      /* before the last range: exactly the buckets inside [len[0], n) have started (overlap) */
      int want_started = 0;
      for (int b = 0; overlap && b < nb; b++) {
        size_t o = 0, c = 0;
        dtr__dp_sync_bucket(s, b, &o, &c);
        if (o >= len[0]) want_started++;
      }
      EXPECT(dtr__dp_sync_started(s) == want_started,
             "%s step %d: %d buckets started before the last range, "
             "expected %d",
             what, step, dtr__dp_sync_started(s), want_started);
      if (overlap && fe < n && len[0] <= n - fe)
        EXPECT(dtr__dp_sync_started(s) >= 1, "%s: bucket 0 had not started before the last range", what);
      rc = dtr_dp_sync_ready(s, off[0], len[0]);
      EXPECT(rc == DTR_OK, "%s: ready [%zu, +%zu): %s", what, off[0], len[0], dtr_strerror(rc));
      if (overlap)
        EXPECT(dtr__dp_sync_started(s) == nb, "%s: not every bucket started once all was ready", what);
    }
    rc = dtr_dp_sync_finish(s);
    EXPECT(rc == DTR_OK, "%s: finish: %s: %s", what, dtr_strerror(rc), dtr_comm_last_error(dp));
    EXPECT(dtr__dp_sync_started(s) == 0, "%s: started count not reset by finish", what);
    size_t bad = 0, first_bad = 0;
    for (size_t i = 0; i < n; i++)
      if (memcmp(&g[i], &ref[i], sizeof(float)) != 0 && bad++ == 0) first_bad = i;
    EXPECT(bad == 0, "%s step %d: %zu of %zu differ from the serial average; first at %zu: %.9g vs %.9g",
           what, step, bad, n, first_bad, bad ? g[first_bad] : 0.0, bad ? ref[first_bad] : 0.0);
    double lw = dtr_dp_sync_last_wait(s);
    EXPECT(lw >= 0 && lw < 120, "%s: last wait %g s", what, lw);
    wait_sum += lw;
    EXPECT(dtr__dp_sync_total_wait(s) > wait_sum - 1e-9 && dtr__dp_sync_total_wait(s) < wait_sum + 1e-9,
           "%s: total wait %g, sum of last waits %g", what, dtr__dp_sync_total_wait(s), wait_sum);
  }
out:
  dtr_dp_sync_destroy(s);
  free(g);
  free(ref);
  free(off);
  free(len);
}

/* ZeRO-1: the same marking; after finish this rank's parts hold the serial average bit for bit, the
 * parts of all ranks cover the buffer exactly once, and gather_params gives every rank every owner's
 * parameters. */
static void run_zero(dtr_comm *dp, size_t n, size_t bucket_bytes, size_t first_bytes, int overlap,
                     uint64_t tag) {
  char what[160];
  snprintf(what, sizeof what, "zero-1 n=%zu bucket=%zuB first=%zuB overlap=%d", n, bucket_bytes, first_bytes,
           overlap);
  size_t cap = n ? n : 1;
  float *g = malloc(cap * sizeof *g), *ref = malloc(cap * sizeof *ref), *p = malloc(cap * sizeof *p);
  int32_t *owner = calloc(cap, sizeof *owner), *times = calloc(cap, sizeof *times);
  enum { CAP = 4096 };
  size_t *off = malloc(CAP * sizeof *off), *len = malloc(CAP * sizeof *len);
  dtr_dp_sync *s = NULL;
  dtr_result rc = dtr_dp_sync_create_zero1(dp, g, n, bucket_bytes, first_bytes, overlap, &s);
  EXPECT(rc == DTR_OK && s, "%s: create: %s", what, dtr_strerror(rc));
  if (!s) goto out;
  fill(g, n, g_rank, 0, tag);
  reference(ref, n, 0, tag);
  int k = partition(n, n / 7 + 1, tag * 31, off, len, CAP);
  for (int j = k - 1; j >= 0; j--) EXPECT(dtr_dp_sync_ready(s, off[j], len[j]) == DTR_OK, "%s: ready", what);
  rc = dtr_dp_sync_finish(s);
  EXPECT(rc == DTR_OK, "%s: finish: %s: %s", what, dtr_strerror(rc), dtr_comm_last_error(dp));
  int ns = 0;
  const dtr_range *sh = dtr_dp_sync_shards(s, &ns);
  size_t bad = 0, prev_end = 0;
  for (int i = 0; i < ns; i++) {
    EXPECT(sh[i].count > 0 && sh[i].offset >= prev_end && sh[i].offset + sh[i].count <= n,
           "%s: shard %d [%zu, +%zu) out of order or bounds", what, i, sh[i].offset, sh[i].count);
    prev_end = sh[i].offset + sh[i].count;
    for (size_t e = sh[i].offset; e < prev_end && e < n; e++) {
      bad += memcmp(&g[e], &ref[e], sizeof(float)) != 0;
      times[e] = 1;
      owner[e] = g_rank;
    }
  }
  EXPECT(bad == 0, "%s: %zu elements of this rank's parts differ from the serial average", what, bad);
  if (n) {
    EXPECT(dtr_all_reduce(dp, times, times, n, DTR_I32, DTR_SUM, NULL) == DTR_OK, "%s: count", what);
    EXPECT(dtr_all_reduce(dp, owner, owner, n, DTR_I32, DTR_SUM, NULL) == DTR_OK, "%s: owners", what);
  }
  size_t uncovered = 0, wrong = 0;
  for (size_t e = 0; e < n; e++) {
    uncovered += times[e] != 1;
    p[e] = owner[e] == g_rank ? grad_value(g_rank, e, 7, tag) : -99.0f;
  }
  EXPECT(uncovered == 0, "%s: %zu elements owned by no rank or by several", what, uncovered);
  rc = dtr_dp_sync_gather_params(s, p);
  EXPECT(rc == DTR_OK, "%s: gather: %s", what, dtr_strerror(rc));
  for (size_t e = 0; e < n; e++) wrong += p[e] != grad_value(owner[e], e, 7, tag);
  EXPECT(wrong == 0, "%s: %zu parameters differ from their owner's after the all-gather", what, wrong);
out:
  dtr_dp_sync_destroy(s);
  free(g), free(ref), free(p), free(owner), free(times), free(off), free(len);
}

/* Gradient accumulation: 3 micro-steps add into the buffer; only the last one marks and finishes. */
static void run_accumulation(dtr_comm *dp) {
  const size_t n = 10007;
  float *g = calloc(n, sizeof *g), *ref = calloc(n, sizeof *ref);
  dtr_dp_sync *s = NULL;
  EXPECT(dtr_dp_sync_create(dp, g, n, 4096, 1024, 1, &s) == DTR_OK, "accumulation: create");
  if (!s) goto out;
  for (int micro = 0; micro < 3; micro++) {
    for (size_t i = 0; i < n; i++) g[i] += grad_value(g_rank, i, micro, 99);
    EXPECT(dtr__dp_sync_started(s) == 0, "accumulation: micro-step %d started an all-reduce", micro);
    if (micro == 2)
      for (size_t at = n; at > 0;) {
        size_t l = at < 333 ? at : 333;
        at -= l;
        EXPECT(dtr_dp_sync_ready(s, at, l) == DTR_OK, "accumulation: ready");
      }
  }
  EXPECT(dtr_dp_sync_finish(s) == DTR_OK, "accumulation: finish");
  for (size_t i = 0; i < n; i++) {
    float acc = 0;
    for (int r = 0; r < g_world; r++) {
      float own = 0;
      for (int m = 0; m < 3; m++) own += grad_value(r, i, m, 99);
      acc = r == 0 ? own : acc + own;
    }
    ref[i] = acc / (float)g_world;
  }
  EXPECT(memcmp(g, ref, n * sizeof *g) == 0, "accumulation: result differs from the average of the sums");
out:
  dtr_dp_sync_destroy(s);
  free(g);
  free(ref);
}

/* --bench: 16 Mi floats (64 MiB), 4 MiB buckets, "backward" as 32 ranges each preceded by `ms`
 * milliseconds of simulated compute (a sleep, as if a GPU were busy), overlap off then on: the time
 * dtr_dp_sync_finish waits, per step. Prints figures only; the checks above are the test. */
static void run_bench(dtr_comm *dp, int ms) {
  const size_t n = (size_t)16 << 20;
  const int parts = 32;
  float *g = malloc(n * sizeof *g);
  if (!g) return;
  for (int overlap = 0; overlap < 2; overlap++) {
    dtr_dp_sync *s = NULL;
    if (dtr_dp_sync_create(dp, g, n, 4u << 20, 1u << 20, overlap, &s) != DTR_OK) break;
    double wsum = 0;
    const int steps = 3;
    for (int step = 0; step < steps; step++) {
      for (size_t i = 0; i < n; i++) g[i] = (float)(i % 1000) * 1e-3f;
      for (int j = parts - 1; j >= 0; j--) {
        struct timespec ts = {0, (long)ms * 1000000L};
        nanosleep(&ts, NULL);
        dtr_dp_sync_ready(s, n / parts * (size_t)j, n / parts);
      }
      dtr_dp_sync_finish(s);
      wsum += dtr_dp_sync_last_wait(s);
    }
    if (g_rank == 0)
      printf(
          "dp_sync_check bench: %d ranks, %zu MiB, %d buckets, compute %d ms x %d ranges, overlap %d: "
          "finish waits %.1f ms per step\n",
          g_world, n * 4 >> 20, dtr_dp_sync_num_buckets(s), ms, parts, overlap, wsum / steps * 1e3);
    dtr_dp_sync_destroy(s);
  }
  free(g);
}

static void run_errors(dtr_comm *dp) {
  float g[100] = {0};
  dtr_dp_sync *s = NULL;
  EXPECT(dtr_dp_sync_create(dp, g, 100, 64, 32, 1, &s) == DTR_OK, "errors: create");
  if (!s) return;
  EXPECT(dtr_dp_sync_ready(s, 90, 11) == DTR_ERR_INVALID, "errors: range past the end accepted");
  EXPECT(dtr_dp_sync_ready(s, 101, 0) == DTR_ERR_INVALID, "errors: offset past the end accepted");
  EXPECT(dtr_dp_sync_ready(s, SIZE_MAX, 2) == DTR_ERR_INVALID, "errors: overflowing range accepted");
  EXPECT(dtr_dp_sync_ready(s, 50, 10) == DTR_OK, "errors: ready [50, 60)");
  EXPECT(dtr_dp_sync_ready(s, 55, 10) == DTR_ERR_INVALID, "errors: overlapping range accepted");
  EXPECT(dtr_dp_sync_ready(s, 40, 11) == DTR_ERR_INVALID, "errors: overlapping range accepted (left)");
  EXPECT(dtr_dp_sync_ready(s, 40, 10) == DTR_OK, "errors: adjacent range refused");
  EXPECT(dtr_dp_sync_ready(s, 60, 0) == DTR_OK, "errors: empty range refused");
  EXPECT(dtr_dp_sync_finish(s) == DTR_OK, "errors: finish (unmarked ranges still reduced)");
  EXPECT(dtr_dp_sync_ready(s, 50, 10) == DTR_OK, "errors: marks not reset by finish");
  EXPECT(dtr_dp_sync_finish(s) == DTR_OK, "errors: second finish");
  dtr_dp_sync_destroy(s);
  dtr_dp_sync *z = NULL;
  EXPECT(dtr_dp_sync_create(NULL, g, 100, 64, 32, 1, &z) == DTR_ERR_INVALID && !z,
         "errors: NULL comm accepted");
  dtr_dp_sync_destroy(NULL);
}

int main(int argc, char **argv) {
  int max_seconds = 200, bench_ms = -1;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--max-seconds") && i + 1 < argc) {
      max_seconds = atoi(argv[++i]);
    } else if (!strcmp(argv[i], "--bench") && i + 1 < argc) {
      bench_ms = atoi(argv[++i]);
    } else {
      fprintf(stderr, "usage: dp_sync_check [--max-seconds S] [--bench COMPUTE_MS]\n");
      return 2;
    }
  }
  time_limit_start("dp_sync_check", (unsigned)max_seconds);
  dtr_runtime_config cfg = dtr_runtime_config_default();
  cfg.timeout_ms = 60000;
  dtr_runtime *rt = NULL;
  char err[1024] = "";
  dtr_result rc = dtr_init(&cfg, &rt, err, sizeof err);
  if (rc) {
    fprintf(stderr, "dp_sync_check: dtr_init failed: %s: %s\n", dtr_strerror(rc), err);
    return 1;
  }
  g_rank = dtr_runtime_identity(rt)->rank;
  g_world = dtr_runtime_identity(rt)->world_size;
  dtr_comm *dp = dtr_runtime_dp(rt);

  if (bench_ms >= 0) {
    run_bench(dp, bench_ms);
    dtr_barrier(dtr_runtime_world(rt), NULL);
    dtr_finalize(rt);
    return 0;
  }
  static const size_t sizes[] = {0, 1, 7, 1000, 4096, 65537, 300007};
  /* bucket bytes: divides 1000 and 4096 floats (4000 B, 4096 B), divides none (28 B, 3000 B), bigger than all
   */
  static const size_t buckets[][2] = {
      {4000, 1000},    {4096, 4096}, {28, 12},       {3000, 400},
      {1 << 20, 2000}, {4, 4},       {25u << 20, 0}, {0, 0}}; /* 0: the defaults, 25 MiB and 1 MiB */
  uint64_t tag = 1;
  for (size_t si = 0; si < sizeof sizes / sizeof *sizes; si++)
    for (size_t bi = 0; bi < sizeof buckets / sizeof *buckets; bi++) {
      size_t n = sizes[si];
      if (buckets[bi][0] == 4 && n > 4096) continue; /* one float per bucket: keep the op count bounded */
      for (int overlap = 0; overlap < 2; overlap++)
        run_case(dp, n, buckets[bi][0], buckets[bi][1], overlap, tag++);
    }
  for (size_t si = 0; si < sizeof sizes / sizeof *sizes; si++)
    for (size_t bi = 0; bi < sizeof buckets / sizeof *buckets; bi++) {
      if (buckets[bi][0] == 4 && sizes[si] > 4096) continue;
      run_zero(dp, sizes[si], buckets[bi][0], buckets[bi][1], (int)(bi % 2), tag++);
    }
  run_accumulation(dp);
  run_errors(dp);
  dtr_barrier(dtr_runtime_world(rt), NULL);
  printf("dp_sync_check rank %d: %ld checks, %ld failed (%d ranks)\n", g_rank, checks, failed, g_world);
  fflush(stdout);
  dtr_finalize(rt);
  return failed ? 1 : 0;
}
