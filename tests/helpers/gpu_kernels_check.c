/* Checks every GPU kernel of runtime/model/kernels_cuda.h against a plain C reference computed here in
 * double, in fp32 (tolerance 1e-4) and bf16 mixed precision (2e-2), on two shapes (small and odd,
 * medium). Backward ops start from non-zero gradients so "adds into" and "overwrites" are both checked.
 * The weight-gradient reductions and sumsq also run twice at many-block shapes and must give the same
 * bits both times (and embedding gradients the bits of the CPU's fp32 order).
 * The tensor-parallel pieces (vocabulary slices, positions and biases apart) are checked the same way.
 * Exits 77 with a reason when there is no CUDA device (or the build has no CUDA), 1 on any failure. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/device.h"
#include "dtrain/common.h"
#include "runtime/model/kernels_cuda.h"

#define TOL_F32 1e-4
#define TOL_BF16 2e-2

typedef struct shape {
  int B, T, C, NH, V;
} shape;

/* Test helpers are not linked with libm (tests/CMakeLists.txt links only libdtrain), so the reference
 * brings the few functions it needs, accurate to ~1e-15 relative, far below any tolerance here. */
#define REF_LN2 0.69314718055994530942
static double ref_exp(double x) {
  if (x < -700.0) return 0.0;
  if (x > 700.0) return INFINITY;
  long k = (long)(x / REF_LN2 + (x >= 0 ? 0.5 : -0.5));
  double r = x - (double)k * REF_LN2, term = 1.0, sum = 1.0; /* |r| <= ln2/2: Taylor converges fast */
  for (int i = 1; i < 24; i++) sum += (term *= r / i);
  uint64_t bits = (uint64_t)(k + 1023) << 52; /* 2^k; k in [-1010, 1010] */
  double scale;
  memcpy(&scale, &bits, 8);
  return sum * scale;
}
static double ref_log(double x) { /* x > 0, normal */
  uint64_t bits;
  memcpy(&bits, &x, 8);
  int e = (int)((bits >> 52) & 0x7ff) - 1023;
  bits = (bits & ((1ull << 52) - 1)) | (1023ull << 52);
  double m;
  memcpy(&m, &bits, 8); /* x = m 2^e, m in [1, 2) */
  if (m > 1.4142135623730951) {
    m *= 0.5;
    e++;
  }
  double s = (m - 1.0) / (m + 1.0), s2 = s * s, term = s, sum = 0.0; /* log m = 2 atanh(s) */
  for (int i = 1; i < 40; i += 2, term *= s2) sum += term / i;
  return 2.0 * sum + e * REF_LN2;
}
static double ref_sqrt(double a) {
  if (!(a > 0.0)) return 0.0;
  uint64_t bits;
  memcpy(&bits, &a, 8);
  bits = (bits >> 1) + (1023ull << 51); /* halve the exponent: within 6% of the root */
  double x;
  memcpy(&x, &bits, 8);
  for (int i = 0; i < 6; i++) x = 0.5 * (x + a / x);
  return x;
}
static double ref_tanh(double x) {
  double ax = fabs(x), t = ax > 20.0 ? 1.0 : (1.0 - ref_exp(-2.0 * ax)) / (1.0 + ref_exp(-2.0 * ax));
  return x < 0 ? -t : t;
}

static dtr_cuda_ctx *g_ctx;
static int g_checks, g_failed;
static uint64_t g_rng = 0x9e3779b97f4a7c15ull;

/* Every allocation of one check goes into these lists and is released by release_all(), so a check
 * that stops half-way on an API error leaks nothing. */
#define MAX_ALLOCS 64
static void *g_dev[MAX_ALLOCS], *g_host[MAX_ALLOCS];
static int g_ndev, g_nhost;

static void release_all(void) {
  for (int i = 0; i < g_ndev; i++) dtr__cuda_free(g_ctx, g_dev[i]);
  for (int i = 0; i < g_nhost; i++) free(g_host[i]);
  g_ndev = g_nhost = 0;
}

static void *hmalloc(size_t bytes) {
  if (g_nhost == MAX_ALLOCS) return NULL;
  void *p = calloc(1, bytes ? bytes : 1);
  if (p) g_host[g_nhost++] = p;
  return p;
}

/* An API failure is a failed check with the context's detail; the caller abandons its check. */
static int api(dtr_result rc, const char *what) {
  if (rc == DTR_OK) return 0;
  printf("FAIL %s: %s (%s)\n", what, dtr_strerror(rc), dtr__cuda_ctx_error(g_ctx));
  g_checks++;
  g_failed++;
  return 1;
}
#define API(call)                   \
  do {                              \
    if (api((call), #call)) return; \
  } while (0)

static float frand(void) { /* uniform in [-1, 1): splitmix64 */
  uint64_t z = (g_rng += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  z ^= z >> 31;
  return (float)((double)(z >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

static uint16_t f2bf(float f) { /* round to nearest even, as __float2bfloat16_rn */
  uint32_t u;
  memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fc0;
  u += 0x7fffu + ((u >> 16) & 1u);
  return (uint16_t)(u >> 16);
}
static float bf2f(uint16_t h) {
  uint32_t u = (uint32_t)h << 16;
  float f;
  memcpy(&f, &u, 4);
  return f;
}
static float round_dt(float x, dtr_dtype dt) {
  return dt == DTR_BF16 ? bf2f(f2bf(x)) : x;
}

/* n values uniform in [offset - scale, offset + scale), representable in dt, so the reference and the
 * GPU see identical inputs. */
static float *rand_host(size_t n, float scale, float offset, dtr_dtype dt) {
  float *h = hmalloc(n * sizeof(float));
  if (h)
    for (size_t i = 0; i < n; i++) h[i] = round_dt(offset + scale * frand(), dt);
  return h;
}

/* A device copy of h[n] stored as dt (NULL on failure, reported). */
static void *to_dev(const float *h, size_t n, dtr_dtype dt) {
  size_t es = dtr__cuda_dtype_size(dt);
  void *d = NULL;
  if (!h || g_ndev == MAX_ALLOCS || api(dtr__cuda_alloc(g_ctx, n * es, &d), "cuda_alloc")) return NULL;
  g_dev[g_ndev++] = d;
  const void *src = h;
  if (dt == DTR_BF16) {
    uint16_t *b = hmalloc(n * 2);
    if (!b) return NULL;
    for (size_t i = 0; i < n; i++) b[i] = f2bf(h[i]);
    src = b;
  }
  if (api(dtr__cuda_upload(g_ctx, d, src, n * es), "cuda_upload")) return NULL;
  return d;
}
static void *ids_to_dev(const int32_t *h, size_t n) {
  void *d = NULL;
  if (g_ndev == MAX_ALLOCS || api(dtr__cuda_alloc(g_ctx, n * 4, &d), "cuda_alloc")) return NULL;
  g_dev[g_ndev++] = d;
  if (api(dtr__cuda_upload(g_ctx, d, h, n * 4), "cuda_upload")) return NULL;
  return d;
}

/* The device buffer d[n] of type dt as host floats (NULL on failure, reported). */
static float *from_dev(const void *d, size_t n, dtr_dtype dt) {
  float *h = hmalloc(n * sizeof(float));
  if (!h) return NULL;
  if (dt == DTR_BF16) {
    uint16_t *b = hmalloc(n * 2);
    if (!b || api(dtr__cuda_download(g_ctx, b, d, n * 2), "cuda_download")) return NULL;
    for (size_t i = 0; i < n; i++) h[i] = bf2f(b[i]);
  } else if (api(dtr__cuda_download(g_ctx, h, d, n * 4), "cuda_download")) {
    return NULL;
  }
  return h;
}

/* Element-wise relative error with the reference's RMS as a floor, so elements near zero are judged
 * against the tensor's scale rather than by relative error alone. NaN fails. */
static void compare(const char *op, const char *what, dtr_dtype dt, const shape *s, const float *got,
                    const double *ref, size_t n, double tol) {
  g_checks++;
  double ss = 0.0, worst = 0.0;
  size_t at = 0;
  for (size_t i = 0; i < n; i++) ss += ref[i] * ref[i];
  double floor_ = n ? ref_sqrt(ss / (double)n) : 0.0;
  if (floor_ < 1e-30) floor_ = 1e-30;
  int ok = got != NULL;
  for (size_t i = 0; ok && i < n; i++) {
    double e = fabs((double)got[i] - ref[i]) / (fabs(ref[i]) + floor_);
    if (!(e <= worst)) { /* also catches NaN */
      worst = isnan(e) ? INFINITY : e;
      at = i;
    }
  }
  ok = ok && worst <= tol;
  if (!ok) g_failed++;
  printf("%s %-20s %-8s %-4s B=%d T=%d C=%d NH=%d V=%d  worst rel err %.2e (tol %.0e)", ok ? "ok  " : "FAIL",
         op, what, dt == DTR_BF16 ? "bf16" : "f32", s->B, s->T, s->C, s->NH, s->V, worst, tol);
  if (!ok && got) printf(" at [%zu]: got %.8g, want %.8g", at, (double)got[at], ref[at]);
  printf("\n");
}

static double *ref_alloc(size_t n) {
  return hmalloc(n * sizeof(double));
}
static double *ref_from(const float *h, size_t n) {
  double *r = ref_alloc(n);
  if (r && h)
    for (size_t i = 0; i < n; i++) r[i] = h[i];
  return r;
}
static double tol_of(dtr_dtype dt) {
  return dt == DTR_BF16 ? TOL_BF16 : TOL_F32;
}

/* ---------------------------------------------------------------- matmul */

static void check_matmul(dtr_dtype dt, const shape *s) {
  int N = s->B * s->T, C = s->C, OC = 4 * s->C;
  double tol = tol_of(dt);
  float *inp = rand_host((size_t)N * C, 1.0f, 0.0f, dt), *w = rand_host((size_t)OC * C, 0.1f, 0.0f, dt);
  float *bias = rand_host(OC, 0.5f, 0.0f, dt), *dout = rand_host((size_t)N * OC, 1.0f, 0.0f, dt);
  float *dinp0 = rand_host((size_t)N * C, 1.0f, 0.0f, dt),
        *dw0 = rand_host((size_t)OC * C, 1.0f, 0.0f, DTR_F32);
  float *db0 = rand_host(OC, 1.0f, 0.0f, DTR_F32);
  void *d_inp = to_dev(inp, (size_t)N * C, dt), *d_w = to_dev(w, (size_t)OC * C, dt),
       *d_b = to_dev(bias, OC, dt);
  void *d_out = to_dev(dout, (size_t)N * OC, dt); /* overwritten */
  void *d_dout = to_dev(dout, (size_t)N * OC, dt), *d_dinp = to_dev(dinp0, (size_t)N * C, dt);
  void *d_dw = to_dev(dw0, (size_t)OC * C, DTR_F32), *d_db = to_dev(db0, OC, DTR_F32);
  if (!d_inp || !d_w || !d_b || !d_out || !d_dout || !d_dinp || !d_dw || !d_db) return;

  API(dtr__matmul_fwd_cuda(g_ctx, dt, d_out, d_inp, d_w, d_b, N, C, OC));
  double *ref = ref_alloc((size_t)N * OC);
  if (!ref) return;
  for (int n = 0; n < N; n++)
    for (int o = 0; o < OC; o++) {
      double a = bias[o];
      for (int c = 0; c < C; c++) a += (double)inp[(size_t)n * C + c] * w[(size_t)o * C + c];
      ref[(size_t)n * OC + o] = a;
    }
  compare("matmul_fwd", "out", dt, s, from_dev(d_out, (size_t)N * OC, dt), ref, (size_t)N * OC, tol);

  API(dtr__matmul_bwd_cuda(g_ctx, dt, d_dinp, d_dw, d_db, d_dout, d_inp, d_w, N, C, OC));
  double *rdi = ref_from(dinp0, (size_t)N * C), *rdw = ref_from(dw0, (size_t)OC * C),
         *rdb = ref_from(db0, OC);
  if (!rdi || !rdw || !rdb) return;
  for (int n = 0; n < N; n++)
    for (int o = 0; o < OC; o++) {
      double g = dout[(size_t)n * OC + o];
      rdb[o] += g;
      for (int c = 0; c < C; c++) {
        rdi[(size_t)n * C + c] += g * w[(size_t)o * C + c];
        rdw[(size_t)o * C + c] += g * inp[(size_t)n * C + c];
      }
    }
  compare("matmul_bwd", "dinp", dt, s, from_dev(d_dinp, (size_t)N * C, dt), rdi, (size_t)N * C, tol);
  /* Parameter gradients are fp32 sums of dt products: fp32 tolerance unless the operands were bf16. */
  compare("matmul_bwd", "dw", dt, s, from_dev(d_dw, (size_t)OC * C, DTR_F32), rdw, (size_t)OC * C, tol);
  compare("matmul_bwd", "dbias", dt, s, from_dev(d_db, OC, DTR_F32), rdb, OC, tol);
}

/* ---------------------------------------------------------------- layernorm */

static void check_layernorm(dtr_dtype dt, const shape *s) {
  int N = s->B * s->T, C = s->C;
  size_t nc = (size_t)N * C;
  double tol = tol_of(dt);
  /* An offset mean makes a one-pass variance visibly wrong. */
  float *x = rand_host(nc, 2.0f, 3.0f, dt), *w = rand_host(C, 0.5f, 1.0f, dt),
        *b = rand_host(C, 0.5f, 0.0f, dt);
  float *dout = rand_host(nc, 1.0f, 0.0f, dt), *dinp0 = rand_host(nc, 1.0f, 0.0f, dt);
  float *dw0 = rand_host(C, 1.0f, 0.0f, DTR_F32), *db0 = rand_host(C, 1.0f, 0.0f, DTR_F32);
  double *ref = ref_alloc(nc), *rm = ref_alloc(N), *rr = ref_alloc(N);
  float *fm = hmalloc(N * sizeof(float)), *fr = hmalloc(N * sizeof(float));
  if (!ref || !rm || !rr || !fm || !fr) return;
  for (int n = 0; n < N; n++) {
    const float *xr = x + (size_t)n * C;
    double m = 0.0, v = 0.0;
    for (int c = 0; c < C; c++) m += xr[c];
    m /= C;
    for (int c = 0; c < C; c++) v += (xr[c] - m) * (xr[c] - m);
    double r = 1.0 / ref_sqrt(v / C + 1e-5);
    rm[n] = m;
    rr[n] = r;
    fm[n] = (float)m;
    fr[n] = (float)r;
    for (int c = 0; c < C; c++) ref[(size_t)n * C + c] = (xr[c] - m) * r * w[c] + b[c];
  }
  void *d_x = to_dev(x, nc, dt), *d_w = to_dev(w, C, dt), *d_b = to_dev(b, C, dt),
       *d_out = to_dev(dout, nc, dt);
  void *d_m = to_dev(fm, N, DTR_F32), *d_r = to_dev(fr, N, DTR_F32);
  void *d_dout = to_dev(dout, nc, dt), *d_dinp = to_dev(dinp0, nc, dt);
  void *d_dw = to_dev(dw0, C, DTR_F32), *d_db = to_dev(db0, C, DTR_F32);
  if (!d_x || !d_w || !d_b || !d_out || !d_m || !d_r || !d_dout || !d_dinp || !d_dw || !d_db) return;
  API(dtr__layernorm_fwd_cuda(g_ctx, dt, d_out, d_m, d_r, d_x, d_w, d_b, N, C));
  compare("layernorm_fwd", "out", dt, s, from_dev(d_out, nc, dt), ref, nc, tol);
  compare("layernorm_fwd", "mean", dt, s, from_dev(d_m, N, DTR_F32), rm, N, TOL_F32);
  compare("layernorm_fwd", "rstd", dt, s, from_dev(d_r, N, DTR_F32), rr, N, TOL_F32);

  /* Backward from the reference statistics, so it is checked on its own. */
  API(dtr__cuda_upload(g_ctx, d_m, fm, N * sizeof(float)));
  API(dtr__cuda_upload(g_ctx, d_r, fr, N * sizeof(float)));
  API(dtr__layernorm_bwd_cuda(g_ctx, dt, d_dinp, d_dw, d_db, d_dout, d_x, d_w, d_m, d_r, N, C));
  double *rdi = ref_from(dinp0, nc), *rdw = ref_from(dw0, C), *rdb = ref_from(db0, C);
  if (!rdi || !rdw || !rdb) return;
  for (int n = 0; n < N; n++) {
    const float *xr = x + (size_t)n * C, *g = dout + (size_t)n * C;
    double a = 0.0, bb = 0.0;
    for (int c = 0; c < C; c++) {
      double norm = (xr[c] - rm[n]) * rr[n], dn = (double)g[c] * w[c];
      a += dn;
      bb += dn * norm;
    }
    a /= C;
    bb /= C;
    for (int c = 0; c < C; c++) {
      double norm = (xr[c] - rm[n]) * rr[n], dn = (double)g[c] * w[c];
      rdi[(size_t)n * C + c] += (dn - a - norm * bb) * rr[n];
      rdw[c] += g[c] * norm;
      rdb[c] += g[c];
    }
  }
  compare("layernorm_bwd", "dinp", dt, s, from_dev(d_dinp, nc, dt), rdi, nc, tol);
  compare("layernorm_bwd", "dw", dt, s, from_dev(d_dw, C, DTR_F32), rdw, C, tol);
  compare("layernorm_bwd", "db", dt, s, from_dev(d_db, C, DTR_F32), rdb, C, tol);
}

/* ---------------------------------------------------------------- GELU, residual */

static double gelu_ref(double x) {
  return 0.5 * x * (1.0 + ref_tanh(ref_sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
}
static double gelu_grad_ref(double x) {
  double k = ref_sqrt(2.0 / M_PI), u = k * (x + 0.044715 * x * x * x), th = ref_tanh(u);
  return 0.5 * (1.0 + th) + 0.5 * x * (1.0 - th * th) * k * (1.0 + 3.0 * 0.044715 * x * x);
}

static void check_elementwise(dtr_dtype dt, const shape *s) {
  size_t n = (size_t)s->B * s->T * 4 * s->C;
  double tol = tol_of(dt);
  float *x = rand_host(n, 4.0f, 0.0f, dt), *g = rand_host(n, 1.0f, 0.0f, dt),
        *y = rand_host(n, 1.0f, 0.0f, dt);
  double *ref = ref_alloc(n);
  void *d_x = to_dev(x, n, dt), *d_out = to_dev(y, n, dt), *d_g = to_dev(g, n, dt), *d_y = to_dev(y, n, dt);
  if (!ref || !d_x || !d_out || !d_g || !d_y) return;
  API(dtr__gelu_fwd_cuda(g_ctx, dt, d_out, d_x, n));
  for (size_t i = 0; i < n; i++) ref[i] = gelu_ref(x[i]);
  compare("gelu_fwd", "out", dt, s, from_dev(d_out, n, dt), ref, n, tol);
  /* In place (dinp aliases dout), as the model uses it; overwrites. */
  API(dtr__gelu_bwd_cuda(g_ctx, dt, d_g, d_x, d_g, n));
  for (size_t i = 0; i < n; i++) ref[i] = gelu_grad_ref(x[i]) * g[i];
  compare("gelu_bwd", "dinp", dt, s, from_dev(d_g, n, dt), ref, n, tol);

  API(dtr__residual_fwd_cuda(g_ctx, dt, d_out, d_x, d_y, n));
  for (size_t i = 0; i < n; i++) ref[i] = (double)x[i] + y[i];
  compare("residual_fwd", "out", dt, s, from_dev(d_out, n, dt), ref, n, tol);
  API(dtr__add_cuda(g_ctx, dt, d_y, d_x, n));
  compare("add", "y", dt, s, from_dev(d_y, n, dt), ref, n, tol);
}

/* ---------------------------------------------------------------- embeddings */

static void check_embedding(dtr_dtype dt, const shape *s) {
  int B = s->B, T = s->T, C = s->C, V = s->V;
  size_t btc = (size_t)B * T * C;
  double tol = tol_of(dt);
  int32_t *ids = hmalloc((size_t)B * T * sizeof(int32_t));
  float *wte = rand_host((size_t)V * C, 1.0f, 0.0f, dt), *wpe = rand_host((size_t)T * C, 1.0f, 0.0f, dt);
  float *dout = rand_host(btc, 1.0f, 0.0f, dt);
  float *dwte0 = rand_host((size_t)V * C, 1.0f, 0.0f, DTR_F32),
        *dwpe0 = rand_host((size_t)T * C, 1.0f, 0.0f, DTR_F32);
  if (!ids) return;
  for (int i = 0; i < B * T; i++) ids[i] = (int32_t)((frand() + 1.0f) * 0.5f * (V - 1) + 0.5f);
  ids[0] = ids[1] = (int32_t)(V - 1); /* a repeated id: its gradient rows must add up */
  void *d_ids = ids_to_dev(ids, (size_t)B * T), *d_wte = to_dev(wte, (size_t)V * C, dt);
  void *d_wpe = to_dev(wpe, (size_t)T * C, dt), *d_out = to_dev(dout, btc, dt),
       *d_dout = to_dev(dout, btc, dt);
  void *d_dwte = to_dev(dwte0, (size_t)V * C, DTR_F32), *d_dwpe = to_dev(dwpe0, (size_t)T * C, DTR_F32);
  double *ref = ref_alloc(btc), *rte = ref_from(dwte0, (size_t)V * C), *rpe = ref_from(dwpe0, (size_t)T * C);
  if (!d_ids || !d_wte || !d_wpe || !d_out || !d_dout || !d_dwte || !d_dwpe || !ref || !rte || !rpe) return;
  API(dtr__embedding_fwd_cuda(g_ctx, dt, d_out, d_ids, d_wte, d_wpe, B, T, C, V));
  for (int bt = 0; bt < B * T; bt++)
    for (int c = 0; c < C; c++)
      ref[(size_t)bt * C + c] = (double)wte[(size_t)ids[bt] * C + c] + wpe[(size_t)(bt % T) * C + c];
  compare("embedding_fwd", "out", dt, s, from_dev(d_out, btc, dt), ref, btc, tol);
  API(dtr__embedding_bwd_cuda(g_ctx, dt, d_dwte, d_dwpe, d_dout, d_ids, B, T, C, V));
  for (int bt = 0; bt < B * T; bt++)
    for (int c = 0; c < C; c++) {
      rte[(size_t)ids[bt] * C + c] += dout[(size_t)bt * C + c];
      rpe[(size_t)(bt % T) * C + c] += dout[(size_t)bt * C + c];
    }
  compare("embedding_bwd", "dwte", dt, s, from_dev(d_dwte, (size_t)V * C, DTR_F32), rte, (size_t)V * C, tol);
  compare("embedding_bwd", "dwpe", dt, s, from_dev(d_dwpe, (size_t)T * C, DTR_F32), rpe, (size_t)T * C, tol);
}

/* ---------------------------------------------------------------- attention */

static void check_attention(dtr_dtype dt, const shape *s) {
  int B = s->B, T = s->T, C = s->C, NH = s->NH, hs = C / NH;
  size_t btc = (size_t)B * T * C, natt = (size_t)B * NH * T * T;
  double tol = tol_of(dt), scale = 1.0 / ref_sqrt((double)hs);
  float *qkv = rand_host(3 * btc, 1.0f, 0.0f, dt), *dout = rand_host(btc, 1.0f, 0.0f, dt);
  float *junk = rand_host(3 * btc, 1.0f, 0.0f, dt); /* initial contents of outputs: must be overwritten */
  double *ro = ref_alloc(btc), *ra = ref_alloc(natt), *rd = ref_alloc(3 * btc), *datt = ref_alloc(T);
  float *fa = hmalloc(natt * sizeof(float));
  if (!qkv || !dout || !junk || !ro || !ra || !rd || !datt || !fa) return;
  for (int b = 0; b < B; b++)
    for (int h = 0; h < NH; h++)
      for (int t = 0; t < T; t++) {
        const float *q = qkv + ((size_t)b * T + t) * 3 * C + h * hs;
        double *a = ra + (((size_t)b * NH + h) * T + t) * T, mx = -INFINITY, sum = 0.0;
        for (int j = 0; j < T; j++) {
          a[j] = 0.0;
          if (j > t) continue;
          const float *k = qkv + ((size_t)b * T + j) * 3 * C + C + h * hs;
          double d = 0.0;
          for (int i = 0; i < hs; i++) d += (double)q[i] * k[i];
          a[j] = d * scale;
          if (a[j] > mx) mx = a[j];
        }
        for (int j = 0; j <= t; j++) sum += (a[j] = ref_exp(a[j] - mx));
        for (int j = 0; j <= t; j++) a[j] /= sum;
        double *o = ro + ((size_t)b * T + t) * C + h * hs;
        for (int i = 0; i < hs; i++) {
          double acc = 0.0;
          for (int j = 0; j <= t; j++) acc += a[j] * qkv[((size_t)b * T + j) * 3 * C + 2 * C + h * hs + i];
          o[i] = acc;
        }
      }
  for (size_t i = 0; i < natt; i++) fa[i] = round_dt((float)ra[i], dt);
  void *d_qkv = to_dev(qkv, 3 * btc, dt), *d_out = to_dev(junk, btc, dt), *d_att = to_dev(fa, natt, dt);
  void *d_dout = to_dev(dout, btc, dt), *d_dqkv = to_dev(junk, 3 * btc, dt);
  if (!d_qkv || !d_out || !d_att || !d_dout || !d_dqkv) return;
  API(dtr__cuda_zero(g_ctx, d_att, natt * dtr__cuda_dtype_size(dt))); /* the forward must write it all */
  API(dtr__attention_fwd_cuda(g_ctx, dt, d_out, d_att, d_qkv, B, T, C, NH));
  compare("attention_fwd", "out", dt, s, from_dev(d_out, btc, dt), ro, btc, tol);
  compare("attention_fwd", "att", dt, s, from_dev(d_att, natt, dt), ra, natt, tol);

  /* Backward from the reference probabilities rounded to dt, and its reference from the same rounded
   * values, so it is checked on its own and not against the forward's storage error. */
  void *d_ref_att = to_dev(fa, natt, dt);
  if (!d_ref_att) return;
  API(dtr__attention_bwd_cuda(g_ctx, dt, d_dqkv, d_dout, d_ref_att, d_qkv, B, T, C, NH));
  memset(rd, 0, 3 * btc * sizeof(double));
  for (int b = 0; b < B; b++)
    for (int h = 0; h < NH; h++)
      for (int t = 0; t < T; t++) {
        const float *a = fa + (((size_t)b * NH + h) * T + t) * T;
        const float *g = dout + ((size_t)b * T + t) * C + h * hs;
        double dsum = 0.0;
        for (int j = 0; j <= t; j++) {
          const float *v = qkv + ((size_t)b * T + j) * 3 * C + 2 * C + h * hs;
          double *dv = rd + ((size_t)b * T + j) * 3 * C + 2 * C + h * hs;
          double d = 0.0;
          for (int i = 0; i < hs; i++) {
            d += (double)g[i] * v[i];
            dv[i] += (double)a[j] * g[i];
          }
          datt[j] = d;
          dsum += (double)a[j] * d;
        }
        const float *q = qkv + ((size_t)b * T + t) * 3 * C + h * hs;
        double *dq = rd + ((size_t)b * T + t) * 3 * C + h * hs;
        for (int j = 0; j <= t; j++) {
          double dp = (double)a[j] * (datt[j] - dsum) * scale;
          const float *k = qkv + ((size_t)b * T + j) * 3 * C + C + h * hs;
          double *dk = rd + ((size_t)b * T + j) * 3 * C + C + h * hs;
          for (int i = 0; i < hs; i++) {
            dq[i] += dp * k[i];
            dk[i] += dp * q[i];
          }
        }
      }
  compare("attention_bwd", "dqkv", dt, s, from_dev(d_dqkv, 3 * btc, dt), rd, 3 * btc, tol);
}

/* ---------------------------------------------------------------- softmax + cross-entropy */

static void check_softmax_xent(dtr_dtype dt, const shape *s) {
  int N = s->B * s->T, V = s->V;
  size_t nv = (size_t)N * V;
  double tol = tol_of(dt);
  float *logits = rand_host(nv, 4.0f, 0.0f, dt);
  int32_t *tg = hmalloc((size_t)N * sizeof(int32_t));
  double *rp = ref_alloc(nv), *rl = ref_alloc(N), *rg = ref_alloc(nv);
  float *fp = hmalloc(nv * sizeof(float));
  if (!logits || !tg || !rp || !rl || !rg || !fp) return;
  int scored = 0;
  for (int n = 0; n < N; n++) {
    tg[n] = (n % 5 == 3) ? -1 : (int32_t)((frand() + 1.0f) * 0.5f * (V - 1) + 0.5f);
    scored += tg[n] >= 0;
  }
  float dloss = 1.0f / (float)scored;
  for (int n = 0; n < N; n++) {
    const float *x = logits + (size_t)n * V;
    double mx = -INFINITY, sum = 0.0;
    for (int v = 0; v < V; v++) mx = x[v] > mx ? x[v] : mx;
    for (int v = 0; v < V; v++) sum += ref_exp(x[v] - mx);
    for (int v = 0; v < V; v++) {
      double p = ref_exp(x[v] - mx) / sum;
      rp[(size_t)n * V + v] = p;
      fp[(size_t)n * V + v] = round_dt((float)p, dt);
    }
    rl[n] = tg[n] < 0 ? 0.0 : ref_log(sum) + mx - x[tg[n]];
    for (int v = 0; v < V; v++)
      rg[(size_t)n * V + v] = tg[n] < 0 ? 0.0 : ((double)fp[(size_t)n * V + v] - (v == tg[n])) * dloss;
  }
  void *d_logits = to_dev(logits, nv, dt), *d_tg = ids_to_dev(tg, N), *d_loss = to_dev(logits, N, DTR_F32);
  void *d_probs = to_dev(fp, nv, dt);
  if (!d_logits || !d_tg || !d_loss || !d_probs) return;
  /* probs aliasing logits, as the model calls it */
  API(dtr__softmax_xent_fwd_cuda(g_ctx, dt, d_logits, d_loss, d_logits, d_tg, N, V));
  compare("softmax_xent_fwd", "probs", dt, s, from_dev(d_logits, nv, dt), rp, nv, tol);
  compare("softmax_xent_fwd", "losses", dt, s, from_dev(d_loss, N, DTR_F32), rl, N, tol);
  /* dlogits aliasing the (reference) probabilities; overwrites, 0 on unscored rows. */
  API(dtr__softmax_xent_bwd_cuda(g_ctx, dt, d_probs, d_probs, d_tg, dloss, N, V));
  compare("softmax_xent_bwd", "dlogits", dt, s, from_dev(d_probs, nv, dt), rg, nv, tol);
}

/* ---------------------------------------------------------------- optimizer, norms, conversions */

/* The tensor-parallel pieces (kernels_cuda_tp.cu), as rank 1 of 2 would run them: the upper half of the
 * vocabulary (v0 = V/2), ids and targets of the whole vocabulary (some in this slice, some not), positions
 * and biases added apart. The slice's sum-exp and target logit are checked before an all-reduce would add
 * the other slice's; finish takes the whole-vocabulary maxima and sums (computed here) as its input. */
static void check_tp_pieces(dtr_dtype dt, const shape *s) {
  int B = s->B, T = s->T, C = s->C, N = B * T, Vw = s->V & ~1, V = Vw / 2, v0 = V;
  size_t nc = (size_t)N * C, nv = (size_t)N * V;
  double tol = tol_of(dt);
  int32_t *ids = hmalloc((size_t)N * sizeof(int32_t)), *tg = hmalloc((size_t)N * sizeof(int32_t));
  float *wte = rand_host((size_t)V * C, 1.0f, 0.0f, dt), *wpe = rand_host((size_t)T * C, 1.0f, 0.0f, dt);
  float *dout = rand_host(nc, 1.0f, 0.0f, dt), *bias = rand_host((size_t)C, 1.0f, 0.0f, dt);
  float *dwte0 = rand_host((size_t)V * C, 1.0f, 0.0f, DTR_F32),
        *dwpe0 = rand_host((size_t)T * C, 1.0f, 0.0f, DTR_F32);
  float *logits = rand_host(nv, 4.0f, 0.0f, dt);
  double *ref = ref_alloc(nc), *rte = ref_from(dwte0, (size_t)V * C), *rpe = ref_from(dwpe0, (size_t)T * C);
  double *rmax = ref_alloc(N), *rsum = ref_alloc(N), *rzt = ref_alloc(N), *rp = ref_alloc(nv),
         *rl = ref_alloc(N), *rg = ref_alloc(nv);
  float *gmax = hmalloc((size_t)N * sizeof(float)), *gsum = hmalloc((size_t)N * sizeof(float)),
        *gzt = hmalloc((size_t)N * sizeof(float)), *fp = hmalloc(nv * sizeof(float));
  if (!ids || !tg || !ref || !rte || !rpe || !rmax || !rsum || !rzt || !rp || !rl || !rg || !gmax || !gsum ||
      !gzt || !fp)
    return;
  for (int n = 0; n < N; n++) {
    ids[n] = (int32_t)((frand() + 1.0f) * 0.5f * (Vw - 1) + 0.5f);
    tg[n] = n % 5 == 3 ? -1 : (int32_t)((frand() + 1.0f) * 0.5f * (Vw - 1) + 0.5f);
  }
  ids[0] = ids[1] = (int32_t)(Vw - 1), ids[2] = 0; /* a repeated id of this slice, one of the other's */
  void *d_ids = ids_to_dev(ids, N), *d_tg = ids_to_dev(tg, N), *d_wte = to_dev(wte, (size_t)V * C, dt),
       *d_wpe = to_dev(wpe, (size_t)T * C, dt), *d_out = to_dev(dout, nc, dt), *d_dout = to_dev(dout, nc, dt),
       *d_dwte = to_dev(dwte0, (size_t)V * C, DTR_F32), *d_dwpe = to_dev(dwpe0, (size_t)T * C, DTR_F32),
       *d_bias = to_dev(bias, (size_t)C, dt), *d_logits = to_dev(logits, nv, dt),
       *d_max = to_dev(dwpe0, N, DTR_F32), *d_sum = to_dev(dwpe0, N, DTR_F32),
       *d_zt = to_dev(dwpe0, N, DTR_F32), *d_loss = to_dev(dwpe0, N, DTR_F32);
  if (!d_ids || !d_tg || !d_wte || !d_wpe || !d_out || !d_dout || !d_dwte || !d_dwpe || !d_bias ||
      !d_logits || !d_max || !d_sum || !d_zt || !d_loss)
    return;
  /* embedding: this slice's rows (zeros elsewhere), then positions, then a bias */
  API(dtr__vocab_embedding_fwd_cuda(g_ctx, dt, d_out, d_ids, d_wte, v0, V, N, C));
  API(dtr__position_add_fwd_cuda(g_ctx, dt, d_out, d_wpe, B, T, C));
  API(dtr__bias_add_cuda(g_ctx, dt, d_out, d_bias, N, C));
  for (int n = 0; n < N; n++)
    for (int c = 0; c < C; c++) {
      int id = ids[n] - v0;
      double e = id >= 0 && id < V ? round_dt(wte[(size_t)id * C + c], dt) : 0.0;
      ref[(size_t)n * C + c] = e + wpe[(size_t)(n % T) * C + c] + bias[c];
    }
  compare("vocab_embedding_fwd + position_add + bias_add", "out", dt, s, from_dev(d_out, nc, dt), ref, nc,
          tol);
  API(dtr__vocab_embedding_bwd_cuda(g_ctx, dt, d_dwte, d_dout, d_ids, v0, V, N, C));
  API(dtr__position_add_bwd_cuda(g_ctx, dt, d_dwpe, d_dout, B, T, C));
  for (int n = 0; n < N; n++)
    for (int c = 0; c < C; c++) {
      int id = ids[n] - v0;
      if (id >= 0 && id < V) rte[(size_t)id * C + c] += dout[(size_t)n * C + c];
      rpe[(size_t)(n % T) * C + c] += dout[(size_t)n * C + c];
    }
  compare("vocab_embedding_bwd", "dwte", dt, s, from_dev(d_dwte, (size_t)V * C, DTR_F32), rte, (size_t)V * C,
          tol);
  compare("position_add_bwd", "dwpe", dt, s, from_dev(d_dwpe, (size_t)T * C, DTR_F32), rpe, (size_t)T * C,
          tol);
  /* cross-entropy over the slice: row maxima and sums of the slice; finish from whole-row statistics
   * that this test makes up (an all-reduce would bring the other slice's in) */
  API(dtr__vocab_xent_max_cuda(g_ctx, dt, d_max, d_logits, N, V));
  for (int n = 0; n < N; n++) {
    const float *x = logits + (size_t)n * V;
    double mx = -INFINITY;
    for (int v = 0; v < V; v++) mx = x[v] > mx ? x[v] : mx;
    rmax[n] = mx;
  }
  compare("vocab_xent_max", "rowmax", dt, s, from_dev(d_max, N, DTR_F32), rmax, N, tol);
  API(dtr__vocab_xent_sum_cuda(g_ctx, dt, d_sum, d_zt, d_logits, d_max, d_tg, v0, N, V));
  for (int n = 0; n < N; n++) {
    const float *x = logits + (size_t)n * V;
    double sum = 0;
    for (int v = 0; v < V; v++) sum += ref_exp(x[v] - rmax[n]);
    rsum[n] = sum;
    int t = tg[n] - v0;
    rzt[n] = tg[n] >= 0 && t >= 0 && t < V ? x[t] : 0.0;
    /* the whole row's statistics: the other slice adds 1.5 to the sum, its max is below ours */
    gmax[n] = (float)rmax[n];
    gsum[n] = (float)(sum + 1.5);
    gzt[n] = (float)rzt[n];
  }
  compare("vocab_xent_sum", "sumexp", dt, s, from_dev(d_sum, N, DTR_F32), rsum, N, tol);
  compare("vocab_xent_sum", "target logit", dt, s, from_dev(d_zt, N, DTR_F32), rzt, N, tol);
  void *d_gsum = to_dev(gsum, N, DTR_F32), *d_gmax = to_dev(gmax, N, DTR_F32),
       *d_gzt = to_dev(gzt, N, DTR_F32);
  if (!d_gsum || !d_gmax || !d_gzt) return;
  API(dtr__vocab_xent_finish_cuda(g_ctx, dt, d_logits, d_loss, d_logits, d_gmax, d_gsum, d_gzt, d_tg, N, V));
  int scored = 0;
  for (int n = 0; n < N; n++) scored += tg[n] >= 0;
  float dloss = 1.0f / (float)scored;
  for (int n = 0; n < N; n++) {
    for (int v = 0; v < V; v++) {
      double p = ref_exp((double)logits[(size_t)n * V + v] - gmax[n]) / gsum[n];
      rp[(size_t)n * V + v] = p;
      fp[(size_t)n * V + v] = round_dt((float)p, dt);
    }
    rl[n] = tg[n] < 0 ? 0.0 : ref_log(gsum[n]) + gmax[n] - gzt[n];
    for (int v = 0; v < V; v++)
      rg[(size_t)n * V + v] =
          tg[n] < 0 ? 0.0 : ((double)fp[(size_t)n * V + v] - (v + v0 == tg[n] ? 1.0 : 0.0)) * dloss;
  }
  compare("vocab_xent_finish", "probs", dt, s, from_dev(d_logits, nv, dt), rp, nv, tol);
  compare("vocab_xent_finish", "losses", dt, s, from_dev(d_loss, N, DTR_F32), rl, N, tol);
  void *d_probs = to_dev(fp, nv, dt);
  if (!d_probs) return;
  API(dtr__vocab_xent_bwd_cuda(g_ctx, dt, d_probs, d_probs, d_tg, v0, dloss, N, V));
  compare("vocab_xent_bwd", "dlogits", dt, s, from_dev(d_probs, nv, dt), rg, nv, tol);
}

static void check_adamw(const shape *s) {
  size_t n = (size_t)s->V * s->C + 17;
  float *p = rand_host(n, 1.0f, 0.0f, DTR_F32), *g = rand_host(n, 1.0f, 0.0f, DTR_F32);
  float *m = rand_host(n, 0.1f, 0.0f, DTR_F32), *v = rand_host(n, 0.005f, 0.01f, DTR_F32);
  double *rp = ref_alloc(n), *rm = ref_alloc(n), *rv = ref_alloc(n);
  void *d_p = to_dev(p, n, DTR_F32), *d_g = to_dev(g, n, DTR_F32), *d_m = to_dev(m, n, DTR_F32);
  void *d_v = to_dev(v, n, DTR_F32), *d_p16 = to_dev(p, n, DTR_BF16);
  if (!rp || !rm || !rv || !d_p || !d_g || !d_m || !d_v || !d_p16) return;
  dtr_cuda_adamw_hp hp = {.lr = 1e-2f,
                          .beta1 = 0.9f,
                          .beta2 = 0.999f,
                          .eps = 1e-8f,
                          .weight_decay = 0.1f,
                          .grad_scale = 0.5f,
                          .step = 3};
  uint8_t *mask = hmalloc(n);
  if (!mask) return;
  for (size_t i = 0; i < n; i++) mask[i] = i % 3 != 0; /* every third weight is not decayed */
  void *d_mask = NULL;
  if (g_ndev == MAX_ALLOCS || api(dtr__cuda_alloc(g_ctx, n, &d_mask), "cuda_alloc")) return;
  g_dev[g_ndev++] = d_mask;
  API(dtr__cuda_upload(g_ctx, d_mask, mask, n));
  API(dtr__adamw_cuda(g_ctx, d_p, d_p16, d_g, d_m, d_v, d_mask, n, &hp));
  double b1 = hp.beta1, b2 = hp.beta2, bc1 = 1.0 - b1 * b1 * b1, bc2 = 1.0 - b2 * b2 * b2; /* step 3 */
  for (size_t i = 0; i < n; i++) {
    double gi = (double)g[i] * hp.grad_scale;
    rm[i] = b1 * m[i] + (1.0 - b1) * gi;
    rv[i] = b2 * v[i] + (1.0 - b2) * gi * gi;
    rp[i] = p[i] - (double)hp.lr * ((rm[i] / bc1) / (ref_sqrt(rv[i] / bc2) + hp.eps) +
                                    (mask[i] ? (double)hp.weight_decay : 0.0) * p[i]);
  }
  compare("adamw", "params", DTR_F32, s, from_dev(d_p, n, DTR_F32), rp, n, TOL_F32);
  compare("adamw", "m", DTR_F32, s, from_dev(d_m, n, DTR_F32), rm, n, TOL_F32);
  compare("adamw", "v", DTR_F32, s, from_dev(d_v, n, DTR_F32), rv, n, TOL_F32);
  compare("adamw", "p_bf16", DTR_BF16, s, from_dev(d_p16, n, DTR_BF16), rp, n, TOL_BF16);

  float *sq = hmalloc(sizeof(float));
  double rs = 0.0;
  for (size_t i = 0; i < n; i++) rs += (double)g[i] * g[i];
  if (!sq) return;
  API(dtr__sumsq_cuda(g_ctx, d_m, d_g, n)); /* into m[0] */
  API(dtr__cuda_download(g_ctx, sq, d_m, sizeof(float)));
  compare("sumsq", "out", DTR_F32, s, sq, &rs, 1, TOL_F32);

  /* fp32 -> bf16 on the device rounds exactly as f2bf does: tolerance 0 */
  void *d_b = NULL;
  float *back = hmalloc(n * sizeof(float));
  double *rb = ref_alloc(n);
  if (!back || !rb) return;
  for (size_t i = 0; i < n; i++) rb[i] = bf2f(f2bf(g[i] * 1.001f));
  for (size_t i = 0; i < n; i++) back[i] = g[i] * 1.001f;
  if (!(d_b = to_dev(back, n, DTR_F32))) return;
  API(dtr__cuda_convert(g_ctx, DTR_BF16, d_p16, DTR_F32, d_b, n));
  API(dtr__cuda_convert(g_ctx, DTR_F32, d_b, DTR_BF16, d_p16, n));
  compare("convert", "f32>bf16", DTR_BF16, s, from_dev(d_b, n, DTR_F32), rb, n, 0.0);
}

/* ---------------------------------------------------------------- determinism */

/* The reductions that once added with float atomics (matmul dbias, layernorm dw/db, embedding
 * dwte/dwpe, sumsq) at shapes that spread them over many blocks (8192 rows) with odd sizes: each op runs
 * twice from the same starting buffers and both results must be bit-identical (memcmp), besides
 * matching the double reference within the usual tolerance. The GEMM outputs of the same calls (dinp,
 * dw: cuBLAS) are held to the same bits too. */
static void same_bits(const char *op, const char *what, dtr_dtype dt, const shape *s, const float *a,
                      const float *b, size_t n) {
  g_checks++;
  int ok = a && b && memcmp(a, b, n * sizeof(float)) == 0;
  size_t at = 0;
  while (!ok && a && b && at < n && memcmp(a + at, b + at, sizeof(float)) == 0) at++;
  if (!ok) g_failed++;
  printf("%s %-20s %-8s %-4s B=%d T=%d C=%d NH=%d V=%d  two runs bit-identical", ok ? "ok  " : "FAIL", op,
         what, dt == DTR_BF16 ? "bf16" : "f32", s->B, s->T, s->C, s->NH, s->V);
  if (!ok && a && b && at < n)
    printf(" (first difference at [%zu]: %.9g vs %.9g)", at, (double)a[at], (double)b[at]);
  printf("\n");
}

/* s->B * s->T rows, s->C inputs, s->V outputs (the bias length). */
static void repeat_matmul(dtr_dtype dt, const shape *s) {
  int N = s->B * s->T, C = s->C, OC = s->V;
  size_t nc = (size_t)N * C, noc = (size_t)N * OC, ow = (size_t)OC * C;
  double tol = tol_of(dt);
  float *inp = rand_host(nc, 1.0f, 0.0f, dt), *w = rand_host(ow, 0.1f, 0.0f, dt);
  float *dout = rand_host(noc, 1.0f, 0.0f, dt), *dinp0 = rand_host(nc, 1.0f, 0.0f, dt);
  float *dw0 = rand_host(ow, 1.0f, 0.0f, DTR_F32), *db0 = rand_host(OC, 1.0f, 0.0f, DTR_F32);
  void *d_inp = to_dev(inp, nc, dt), *d_w = to_dev(w, ow, dt), *d_dout = to_dev(dout, noc, dt);
  if (!d_inp || !d_w || !d_dout || !dinp0 || !dw0 || !db0) return;
  float *gi[2], *gw[2], *gb[2];
  for (int run = 0; run < 2; run++) {
    void *d_dinp = to_dev(dinp0, nc, dt), *d_dw = to_dev(dw0, ow, DTR_F32), *d_db = to_dev(db0, OC, DTR_F32);
    if (!d_dinp || !d_dw || !d_db) return;
    API(dtr__matmul_bwd_cuda(g_ctx, dt, d_dinp, d_dw, d_db, d_dout, d_inp, d_w, N, C, OC));
    gi[run] = from_dev(d_dinp, nc, dt);
    gw[run] = from_dev(d_dw, ow, DTR_F32);
    gb[run] = from_dev(d_db, OC, DTR_F32);
  }
  double *rdb = ref_from(db0, OC), *rdw = ref_from(dw0, ow);
  if (!rdb || !rdw) return;
  for (int n = 0; n < N; n++)
    for (int o = 0; o < OC; o++) {
      double g = dout[(size_t)n * OC + o];
      rdb[o] += g;
      for (int c = 0; c < C; c++) rdw[(size_t)o * C + c] += g * inp[(size_t)n * C + c];
    }
  compare("matmul_bwd x2", "dbias", dt, s, gb[0], rdb, OC, tol);
  compare("matmul_bwd x2", "dw", dt, s, gw[0], rdw, ow, tol);
  same_bits("matmul_bwd x2", "dbias", dt, s, gb[0], gb[1], OC);
  same_bits("matmul_bwd x2", "dw", dt, s, gw[0], gw[1], ow);
  same_bits("matmul_bwd x2", "dinp", dt, s, gi[0], gi[1], nc);
}

/* s->B * s->T rows of s->C: C above 4096 takes the kernel's global-memory partials. */
static void repeat_layernorm(dtr_dtype dt, const shape *s) {
  int N = s->B * s->T, C = s->C;
  size_t nc = (size_t)N * C;
  double tol = tol_of(dt);
  float *x = rand_host(nc, 2.0f, 3.0f, dt), *w = rand_host(C, 0.5f, 1.0f, dt),
        *dout = rand_host(nc, 1.0f, 0.0f, dt);
  float *dinp0 = rand_host(nc, 1.0f, 0.0f, dt), *dw0 = rand_host(C, 1.0f, 0.0f, DTR_F32),
        *db0 = rand_host(C, 1.0f, 0.0f, DTR_F32);
  float *fm = hmalloc(N * sizeof(float)), *fr = hmalloc(N * sizeof(float));
  double *rm = ref_alloc(N), *rr = ref_alloc(N);
  if (!x || !w || !dout || !dinp0 || !dw0 || !db0 || !fm || !fr || !rm || !rr) return;
  for (int n = 0; n < N; n++) {
    const float *xr = x + (size_t)n * C;
    double m = 0.0, v = 0.0;
    for (int c = 0; c < C; c++) m += xr[c];
    m /= C;
    for (int c = 0; c < C; c++) v += (xr[c] - m) * (xr[c] - m);
    rm[n] = m;
    rr[n] = 1.0 / ref_sqrt(v / C + 1e-5);
    fm[n] = (float)rm[n];
    fr[n] = (float)rr[n];
  }
  void *d_x = to_dev(x, nc, dt), *d_w = to_dev(w, C, dt), *d_dout = to_dev(dout, nc, dt);
  void *d_m = to_dev(fm, N, DTR_F32), *d_r = to_dev(fr, N, DTR_F32);
  if (!d_x || !d_w || !d_dout || !d_m || !d_r) return;
  float *gi[2], *gw[2], *gb[2];
  for (int run = 0; run < 2; run++) {
    void *d_dinp = to_dev(dinp0, nc, dt), *d_dw = to_dev(dw0, C, DTR_F32), *d_db = to_dev(db0, C, DTR_F32);
    if (!d_dinp || !d_dw || !d_db) return;
    API(dtr__layernorm_bwd_cuda(g_ctx, dt, d_dinp, d_dw, d_db, d_dout, d_x, d_w, d_m, d_r, N, C));
    gi[run] = from_dev(d_dinp, nc, dt);
    gw[run] = from_dev(d_dw, C, DTR_F32);
    gb[run] = from_dev(d_db, C, DTR_F32);
  }
  double *rdw = ref_from(dw0, C), *rdb = ref_from(db0, C);
  if (!rdw || !rdb) return;
  for (int n = 0; n < N; n++)
    for (int c = 0; c < C; c++) {
      double g = dout[(size_t)n * C + c];
      rdw[c] += g * (x[(size_t)n * C + c] - rm[n]) * rr[n];
      rdb[c] += g;
    }
  compare("layernorm_bwd x2", "dw", dt, s, gw[0], rdw, C, tol);
  compare("layernorm_bwd x2", "db", dt, s, gb[0], rdb, C, tol);
  same_bits("layernorm_bwd x2", "dw", dt, s, gw[0], gw[1], C);
  same_bits("layernorm_bwd x2", "db", dt, s, gb[0], gb[1], C);
  same_bits("layernorm_bwd x2", "dinp", dt, s, gi[0], gi[1], nc);
}

/* Few distinct ids (V small) so every dwte row sums hundreds of positions, plus two ids outside [0,V)
 * that dwte ignores (dwpe still takes their rows). Besides the double reference, the result must equal
 * bit for bit the fp32 sum in the CPU's order (dout rows added for bt = 0, 1, ... onto the old value). */
static void repeat_embedding(dtr_dtype dt, const shape *s) {
  int B = s->B, T = s->T, C = s->C, V = s->V, BT = B * T;
  size_t btc = (size_t)BT * C, vc = (size_t)V * C, tc = (size_t)T * C;
  double tol = tol_of(dt);
  int32_t *ids = hmalloc((size_t)BT * sizeof(int32_t));
  float *dout = rand_host(btc, 1.0f, 0.0f, dt), *dwte0 = rand_host(vc, 1.0f, 0.0f, DTR_F32),
        *dwpe0 = rand_host(tc, 1.0f, 0.0f, DTR_F32);
  float *fte = hmalloc(vc * sizeof(float)), *fpe = hmalloc(tc * sizeof(float));
  double *rte = ref_from(dwte0, vc), *rpe = ref_from(dwpe0, tc);
  if (!ids || !dout || !dwte0 || !dwpe0 || !fte || !fpe || !rte || !rpe) return;
  for (int i = 0; i < BT; i++) ids[i] = (int32_t)((frand() + 1.0f) * 0.5f * (V - 1) + 0.5f);
  ids[BT / 3] = -1;
  ids[BT - 2] = V;
  memcpy(fte, dwte0, vc * sizeof(float));
  memcpy(fpe, dwpe0, tc * sizeof(float));
  for (int bt = 0; bt < BT; bt++)
    for (int c = 0; c < C; c++) {
      float g = dout[(size_t)bt * C + c];
      if (ids[bt] >= 0 && ids[bt] < V) {
        rte[(size_t)ids[bt] * C + c] += g;
        fte[(size_t)ids[bt] * C + c] += g;
      }
      rpe[(size_t)(bt % T) * C + c] += g;
      fpe[(size_t)(bt % T) * C + c] += g;
    }
  void *d_ids = ids_to_dev(ids, BT), *d_dout = to_dev(dout, btc, dt);
  if (!d_ids || !d_dout) return;
  float *gte[2], *gpe[2];
  for (int run = 0; run < 2; run++) {
    void *d_dwte = to_dev(dwte0, vc, DTR_F32), *d_dwpe = to_dev(dwpe0, tc, DTR_F32);
    if (!d_dwte || !d_dwpe) return;
    API(dtr__embedding_bwd_cuda(g_ctx, dt, d_dwte, d_dwpe, d_dout, d_ids, B, T, C, V));
    gte[run] = from_dev(d_dwte, vc, DTR_F32);
    gpe[run] = from_dev(d_dwpe, tc, DTR_F32);
  }
  compare("embedding_bwd x2", "dwte", dt, s, gte[0], rte, vc, tol);
  compare("embedding_bwd x2", "dwpe", dt, s, gpe[0], rpe, tc, tol);
  same_bits("embedding_bwd x2", "dwte", dt, s, gte[0], gte[1], vc);
  same_bits("embedding_bwd x2", "dwpe", dt, s, gpe[0], gpe[1], tc);
  same_bits("embedding_bwd cpu", "dwte", dt, s, gte[0], fte, vc);
  same_bits("embedding_bwd cpu", "dwpe", dt, s, gpe[0], fpe, tc);
}

static void repeat_sumsq(size_t n) {
  shape s = {1, (int)n, 1, 1, 1};
  float *x = rand_host(n, 1.0f, 0.0f, DTR_F32), *got = hmalloc(2 * sizeof(float));
  void *d_x = to_dev(x, n, DTR_F32), *d_out = to_dev(x, 1, DTR_F32);
  if (!d_x || !d_out || !got) return;
  double rs = 0.0;
  for (size_t i = 0; i < n; i++) rs += (double)x[i] * x[i];
  for (int run = 0; run < 2; run++) {
    API(dtr__sumsq_cuda(g_ctx, d_out, d_x, n));
    API(dtr__cuda_download(g_ctx, got + run, d_out, sizeof(float)));
  }
  compare("sumsq x2", "out", DTR_F32, &s, got, &rs, 1, TOL_F32);
  same_bits("sumsq x2", "out", DTR_F32, &s, got, got + 1, 1);
}

static void check_repeats(void) {
  const dtr_dtype dts[] = {DTR_F32, DTR_BF16};
  const shape mm = {4, 2048, 24, 1, 77};          /* N 8192, OC 77: 64 row splits of dbias */
  const shape mm_odd = {1, 8191, 13, 1, 33};      /* odd everything */
  const shape ln = {4, 2048, 99, 1, 1};           /* 256 blocks of 32 rows, shared-memory partials */
  const shape ln_wide = {1, 37, 4099, 1, 1};      /* 2C floats beyond 32 KiB: global partials */
  const shape emb = {4, 2048, 37, 1, 11};         /* each id at ~745 positions */
  const shape emb_wide = {2, 1000, 24, 1, 50257}; /* GPT-2's vocabulary: mostly empty rows */
  for (int d = 0; d < 2; d++) {
    const shape *sm[] = {&mm, &mm_odd}, *sl[] = {&ln, &ln_wide}, *se[] = {&emb, &emb_wide};
    for (int k = 0; k < 2; k++) {
      repeat_matmul(dts[d], sm[k]);
      release_all();
      repeat_layernorm(dts[d], sl[k]);
      release_all();
      repeat_embedding(dts[d], se[k]);
      release_all();
    }
  }
  repeat_sumsq(3000017); /* 1024 blocks */
  release_all();
  repeat_sumsq(1000); /* 4 blocks */
  release_all();
}

/* Timings at GPT-2 small sizes (B=8, T=1024, C=768, NH=12), printed for information only: the
 * reference above decides pass or fail. Each op runs once to warm up, then `iters` times. */
static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
static void time_ops(void) {
  const int B = 8, T = 1024, C = 768, NH = 12, N = B * T, OC = 4 * C, iters = 10;
  const dtr_dtype dts[] = {DTR_F32, DTR_BF16};
  for (int di = 0; di < 2; di++) {
    dtr_dtype dt = dts[di];
    size_t es = dtr__cuda_dtype_size(dt), btc = (size_t)N * C;
    void *bufs[6] = {0};
    size_t sizes[6] = {btc * 4 * es, (size_t)OC * C * es,         (size_t)N * OC * es,
                       3 * btc * es, (size_t)B * NH * T * T * es, 3 * btc * es};
    int ok = 1;
    for (int i = 0; i < 6 && ok; i++) {
      ok = !api(dtr__cuda_alloc(g_ctx, sizes[i], &bufs[i]), "cuda_alloc (timing)");
      if (ok) g_dev[g_ndev++] = bufs[i];
      ok = ok && !api(dtr__cuda_zero(g_ctx, bufs[i], sizes[i]), "cuda_zero (timing)");
    }
    if (!ok) return;
    const char *name = dt == DTR_BF16 ? "bf16" : "f32";
    for (int op = 0; op < 3; op++) {
      double t0 = 0.0;
      for (int it = 0; it <= iters; it++) {
        if (it == 1) {
          if (api(dtr__cuda_sync(g_ctx), "sync")) return;
          t0 = now_s();
        }
        dtr_result rc =
            op == 0   ? dtr__matmul_fwd_cuda(g_ctx, dt, bufs[2], bufs[0], bufs[1], NULL, N, C, OC)
            : op == 1 ? dtr__attention_fwd_cuda(g_ctx, dt, bufs[0], bufs[4], bufs[3], B, T, C, NH)
                      : dtr__attention_bwd_cuda(g_ctx, dt, bufs[5], bufs[0], bufs[4], bufs[3], B, T, C, NH);
        if (api(rc, "timed op")) return;
      }
      if (api(dtr__cuda_sync(g_ctx), "sync")) return;
      double ms = (now_s() - t0) * 1e3 / iters;
      if (op == 0)
        printf("time matmul_fwd    %-4s N=%d C=%d OC=%d: %.3f ms, %.1f TFLOP/s\n", name, N, C, OC, ms,
               2.0 * N * C * OC / (ms * 1e-3) / 1e12);
      else
        printf("time attention_%s %-4s B=%d T=%d C=%d NH=%d: %.3f ms\n", op == 1 ? "fwd" : "bwd", name, B, T,
               C, NH, ms);
    }
    release_all();
  }
}

/* Bad arguments are refused with a message naming the op, before anything is launched. */
static void check_invalid(void) {
  g_checks++;
  dtr_result rc = dtr__matmul_fwd_cuda(g_ctx, DTR_F32, NULL, NULL, NULL, NULL, 0, 4, 4);
  const char *e = dtr__cuda_ctx_error(g_ctx);
  int ok = rc == DTR_ERR_INVALID && strstr(e, "matmul_fwd_cuda");
  rc = dtr__attention_fwd_cuda(g_ctx, DTR_BF16, (void *)1, (void *)1, (void *)1, 1, 4, 10, 3);
  ok = ok && rc == DTR_ERR_INVALID && strstr(dtr__cuda_ctx_error(g_ctx), "C % NH");
  printf("%s invalid arguments refused (last: %s)\n", ok ? "ok  " : "FAIL", dtr__cuda_ctx_error(g_ctx));
  if (!ok) g_failed++;
}

int main(void) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  const char *features = dtr_build_features();
  int has_cuda = strstr(features, "cuda") != NULL;
  int ndev = dtr__cuda_device_count();
  if (!has_cuda || ndev < 1) {
    /* Even then the entry points must exist and refuse cleanly. */
    char err[256] = "";
    dtr_cuda_ctx *c = NULL;
    dtr_result rc = dtr__cuda_ctx_create(0, &c, err, sizeof err);
    if (rc != DTR_ERR_UNSUPPORTED || c != NULL || !err[0]) {
      printf("FAIL gpu_kernels_check: without a usable GPU dtr__cuda_ctx_create returned %s (%s)\n",
             dtr_strerror(rc), err);
      dtr__cuda_ctx_destroy(c);
      return 1;
    }
    printf("gpu_kernels_check: skipped: %s (ctx_create: %s)\n",
           has_cuda ? "no CUDA device visible" : "this build has no CUDA", err);
    return 77;
  }
  char err[512] = "";
  dtr_result rc = dtr__cuda_ctx_create(0, &g_ctx, err, sizeof err);
  if (rc != DTR_OK) {
    printf("FAIL gpu_kernels_check: %d device(s) visible but the kernel context failed: %s\n", ndev, err);
    return 1;
  }
  const shape shapes[] = {{2, 37, 48, 4, 97}, {4, 128, 256, 8, 1031}};
  const dtr_dtype dts[] = {DTR_F32, DTR_BF16};
  for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
    for (size_t di = 0; di < 2; di++) {
      void (*checks[])(dtr_dtype, const shape *) = {check_matmul,    check_layernorm, check_elementwise,
                                                    check_embedding, check_attention, check_softmax_xent,
                                                    check_tp_pieces};
      for (size_t k = 0; k < sizeof checks / sizeof checks[0]; k++) {
        checks[k](dts[di], &shapes[si]);
        release_all();
      }
    }
    check_adamw(&shapes[si]);
    release_all();
  }
  check_repeats();
  check_invalid();
  if (!g_failed) time_ops();
  release_all();
  rc = dtr__cuda_sync(g_ctx);
  if (rc != DTR_OK) {
    printf("FAIL final sync: %s\n", dtr__cuda_ctx_error(g_ctx));
    g_failed++;
  }
  dtr__cuda_ctx_destroy(g_ctx);
  printf("gpu_kernels_check: %d checks, %d failed\n", g_checks, g_failed);
  return g_failed ? 1 : 0;
}
