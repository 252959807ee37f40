/* CPU kernels of the reference GPT: CBLAS sgemm for the linear layers, vectorisable loops for the rest.
 * Hot loops live in small per-row / per-head helpers compiled twice (x86-64-v3: AVX2+FMA, and baseline
 * x86-64, picked at load time) because the project builds without -march; OpenMP splits rows or (batch, head)
 * statically over threads, and every reduction runs in a fixed order, so results repeat exactly. */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/model/kernels.h"

#define DTR_INLINE static inline __attribute__((always_inline))

static int nthreads(int threads) {
  return threads > 0 ? threads : 1;
}

/* Threads for a kernel of `work` units: below `grain` units per thread it stays on the calling thread.
 * A parallel region costs microseconds on an idle machine but a scheduler time slice on a busy one,
 * and the small model's kernels are shorter than either. */
static int team(int threads, double work, double grain) {
  int t = nthreads(threads);
  return work >= grain * t ? t : 1;
}
#define GRAIN_MAC (1 << 20)  /* multiply-adds per thread in products */
#define GRAIN_ELEM (1 << 15) /* elements per thread in loop kernels */

/* OpenBLAS itself stays single-threaded: the matmuls split their work over OpenMP threads instead. */
void dtr__kernels_set_threads(int threads) {
  (void)threads;
  openblas_set_num_threads(1);
}

/* exp with plain arithmetic (Cephes' polynomial, ~1 ulp on the reduced range) so that loops calling it
 * vectorise; libm's expf would not without -ffast-math. The exponent is clamped as an integer (a float
 * clamp would stop the vectoriser, and lets NaN through unchanged): valid for x in [-1e6, 88], where
 * results below 2^-126 come out as tiny numbers rather than 0. Callers pass x - max <= 0, or a tanh
 * argument already clamped to [-10, 10]. */
DTR_INLINE float vexpf(float x) {
  float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f; /* round to nearest */
  float r = x - n * 0.693359375f + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  int32_t ni = (int32_t)n;
  ni = ni < -126 ? -126 : ni;
  ni = ni > 127 ? 127 : ni;
  int32_t bits = (ni + 127) << 23;
  float scale;
  memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

/* tanh(u) = 1 - 2 / (exp(2u) + 1) on u clamped to [-10, 10] (tanh is +-1 in fp32 beyond 9.01). The
 * float clamp vectorises only as a max/min, which GCC emits under finite-math: GELU's callers carry
 * that attribute (NaN still propagates, as x multiplies the result). */
DTR_INLINE float vtanhf(float u) {
  u = u < -10.0f ? -10.0f : u;
  u = u > 10.0f ? 10.0f : u;
  return 1.0f - 2.0f / (vexpf(2.0f * u) + 1.0f);
}
#if defined(__GNUC__) && !defined(__clang__)
#define DTR_FINITE __attribute__((optimize("finite-math-only", "no-signed-zeros")))
#else
#define DTR_FINITE
#endif

#define GELU_K 0.7978845608028654f /* sqrt(2/pi) */
#define GELU_C 0.044715f

/* ---- matmul: OpenBLAS runs single-threaded inside our OpenMP threads, each on a fixed slice of the
 * output. Two thread pools (OpenBLAS's pthreads and OpenMP's) spinning against each other cost 10x on
 * a busy machine; one pool, static slices, and the results do not depend on scheduling. */

static void slice(int n, int parts, int k, int *lo, int *hi) {
  *lo = (int)((int64_t)n * k / parts);
  *hi = (int)((int64_t)n * (k + 1) / parts);
}

/* parts for a dimension of n rows: no slice thinner than 16 rows */
static int nparts(int n, int threads) {
  int p = nthreads(threads);
  while (p > 1 && n / p < 16) p--;
  return p;
}

void dtr__matmul_fwd_cpu(float *out, const float *inp, const float *w, const float *bias, int N, int C,
                         int OC, int threads) {
  int parts = nparts(N, team(threads, (double)N * C * OC, GRAIN_MAC));
#pragma omp parallel for schedule(static, 1) num_threads(parts) if (parts > 1)
  for (int k = 0; k < parts; k++) {
    int lo, hi;
    slice(N, parts, k, &lo, &hi);
    if (hi <= lo) continue;
    float beta = 0.0f;
    if (bias) {
      for (int n = lo; n < hi; n++) memcpy(out + (size_t)n * OC, bias, (size_t)OC * sizeof(float));
      beta = 1.0f;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, hi - lo, OC, C, 1.0f, inp + (size_t)lo * C, C, w, C,
                beta, out + (size_t)lo * OC, OC);
  }
}

DTR_VEC static void colsum_block(float *dbias, const float *dout, int N, int OC, int c0, int c1) {
  for (int n = 0; n < N; n++) {
    const float *row = dout + (size_t)n * OC;
#pragma omp simd
    for (int c = c0; c < c1; c++) dbias[c] += row[c];
  }
}

void dtr__matmul_bwd_cpu(float *dinp, float *dw, float *dbias, const float *dout, const float *inp,
                         const float *w, int N, int C, int OC, int threads) {
  int th = team(threads, (double)N * C * OC, GRAIN_MAC);
  int pn = nparts(N, th), pw = nparts(OC >= C ? OC : C, th);
  int nblk = (OC + 63) / 64;
#pragma omp parallel num_threads(th) if (th > 1)
  {
    if (dinp) {
#pragma omp for schedule(static, 1) nowait
      for (int k = 0; k < pn; k++) {
        int lo, hi;
        slice(N, pn, k, &lo, &hi);
        if (hi > lo)
          cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, hi - lo, C, OC, 1.0f, dout + (size_t)lo * OC,
                      OC, w, C, 1.0f, dinp + (size_t)lo * C, C);
      }
    }
    /* dw slices along its longer side: rows (outputs) or columns (inputs) */
#pragma omp for schedule(static, 1) nowait
    for (int k = 0; k < pw; k++) {
      int lo, hi;
      if (OC >= C) {
        slice(OC, pw, k, &lo, &hi);
        if (hi > lo)
          cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, hi - lo, C, N, 1.0f, dout + lo, OC, inp, C,
                      1.0f, dw + (size_t)lo * C, C);
      } else {
        slice(C, pw, k, &lo, &hi);
        if (hi > lo)
          cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, OC, hi - lo, N, 1.0f, dout, OC, inp + lo, C,
                      1.0f, dw + lo, C);
      }
    }
    /* bias: column blocks, each column summed over rows in order whatever the thread count */
    if (dbias) {
#pragma omp for schedule(static)
      for (int b = 0; b < nblk; b++) {
        int c1 = (b + 1) * 64 < OC ? (b + 1) * 64 : OC;
        colsum_block(dbias, dout, N, OC, b * 64, c1);
      }
    }
  }
}

/* ---- layer norm */

DTR_VEC static void ln_row_fwd(float *out, float *mean_out, float *rstd_out, const float *x, const float *w,
                               const float *b, int C) {
  float s = 0.0f;
#pragma omp simd reduction(+ : s)
  for (int i = 0; i < C; i++) s += x[i];
  float m = s / (float)C;
  float v = 0.0f;
#pragma omp simd reduction(+ : v)
  for (int i = 0; i < C; i++) v += (x[i] - m) * (x[i] - m);
  float rs = 1.0f / sqrtf(v / (float)C + DTR_LN_EPS);
#pragma omp simd
  for (int i = 0; i < C; i++) out[i] = (x[i] - m) * rs * w[i] + b[i];
  *mean_out = m;
  *rstd_out = rs;
}

void dtr__layernorm_fwd_cpu(float *out, float *mean, float *rstd, const float *inp, const float *w,
                            const float *b, int N, int C, int threads) {
  int th = team(threads, (double)N * C, GRAIN_ELEM);
#pragma omp parallel for schedule(static) num_threads(th) if (th > 1)
  for (int n = 0; n < N; n++)
    ln_row_fwd(out + (size_t)n * C, mean + n, rstd + n, inp + (size_t)n * C, w, b, C);
}

DTR_VEC static void ln_row_bwd(float *dx, const float *dy, const float *x, const float *w, float m, float rs,
                               int C) {
  float dmean = 0.0f, dnmean = 0.0f;
#pragma omp simd reduction(+ : dmean, dnmean)
  for (int i = 0; i < C; i++) {
    float dn = w[i] * dy[i];
    dmean += dn;
    dnmean += dn * (x[i] - m) * rs;
  }
  dmean /= (float)C;
  dnmean /= (float)C;
#pragma omp simd
  for (int i = 0; i < C; i++) {
    float norm = (x[i] - m) * rs;
    dx[i] += (w[i] * dy[i] - dmean - norm * dnmean) * rs;
  }
}

DTR_VEC static void ln_param_block(float *dw, float *db, const float *dout, const float *inp,
                                   const float *mean, const float *rstd, int N, int C, int c0, int c1) {
  for (int n = 0; n < N; n++) {
    const float *dy = dout + (size_t)n * C, *x = inp + (size_t)n * C;
    float m = mean[n], rs = rstd[n];
#pragma omp simd
    for (int c = c0; c < c1; c++) {
      dw[c] += (x[c] - m) * rs * dy[c];
      db[c] += dy[c];
    }
  }
}

void dtr__layernorm_bwd_cpu(float *dinp, float *dw, float *db, const float *dout, const float *inp,
                            const float *w, const float *mean, const float *rstd, int N, int C, int threads) {
  int nblk = (C + 31) / 32;
  int th = team(threads, (double)N * C, GRAIN_ELEM);
#pragma omp parallel num_threads(th) if (th > 1)
  {
#pragma omp for schedule(static) nowait
    for (int n = 0; n < N; n++)
      ln_row_bwd(dinp + (size_t)n * C, dout + (size_t)n * C, inp + (size_t)n * C, w, mean[n], rstd[n], C);
#pragma omp for schedule(static)
    for (int b = 0; b < nblk; b++) {
      int c1 = (b + 1) * 32 < C ? (b + 1) * 32 : C;
      ln_param_block(dw, db, dout, inp, mean, rstd, N, C, b * 32, c1);
    }
  }
}

/* ---- GELU */

DTR_VEC DTR_FINITE static void gelu_fwd_chunk(float *out, const float *inp, size_t n) {
#pragma omp simd
  for (size_t i = 0; i < n; i++) {
    float x = inp[i];
    float u = GELU_K * (x + GELU_C * x * x * x);
    out[i] = 0.5f * x * (1.0f + vtanhf(u));
  }
}

DTR_VEC DTR_FINITE static void gelu_bwd_chunk(float *dinp, const float *inp, const float *dout, size_t n) {
#pragma omp simd
  for (size_t i = 0; i < n; i++) {
    float x = inp[i];
    float u = GELU_K * (x + GELU_C * x * x * x);
    float t = vtanhf(u);
    float sech2 = 1.0f - t * t;
    float g = 0.5f * (1.0f + t) + 0.5f * x * sech2 * GELU_K * (1.0f + 3.0f * GELU_C * x * x);
    dinp[i] = g * dout[i];
  }
}

#define CHUNK 4096

void dtr__gelu_fwd_cpu(float *out, const float *inp, size_t n, int threads) {
  long nchunks = (long)((n + CHUNK - 1) / CHUNK);
  int th = team(threads, (double)n, GRAIN_ELEM);
#pragma omp parallel for schedule(static) num_threads(th) if (th > 1)
  for (long c = 0; c < nchunks; c++) {
    size_t off = (size_t)c * CHUNK, len = n - off < CHUNK ? n - off : CHUNK;
    gelu_fwd_chunk(out + off, inp + off, len);
  }
}

void dtr__gelu_bwd_cpu(float *dinp, const float *inp, const float *dout, size_t n, int threads) {
  long nchunks = (long)((n + CHUNK - 1) / CHUNK);
  int th = team(threads, (double)n, GRAIN_ELEM);
#pragma omp parallel for schedule(static) num_threads(th) if (th > 1)
  for (long c = 0; c < nchunks; c++) {
    size_t off = (size_t)c * CHUNK, len = n - off < CHUNK ? n - off : CHUNK;
    gelu_bwd_chunk(dinp + off, inp + off, dout + off, len);
  }
}

/* ---- residual */

DTR_VEC static void add_chunk(float *out, const float *a, const float *b, size_t n) {
#pragma omp simd
  for (size_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}

void dtr__residual_fwd_cpu(float *out, const float *a, const float *b, size_t n, int threads) {
  long nchunks = (long)((n + CHUNK - 1) / CHUNK);
  int th = team(threads, (double)n, GRAIN_ELEM);
#pragma omp parallel for schedule(static) num_threads(th) if (th > 1)
  for (long c = 0; c < nchunks; c++) {
    size_t off = (size_t)c * CHUNK, len = n - off < CHUNK ? n - off : CHUNK;
    add_chunk(out + off, a + off, b + off, len);
  }
}

/* ---- attention: one (batch, head) per OpenMP iteration. The four products per head run through a
 * single-threaded sgemm over the full T x T square (the upper triangle is computed and discarded: at
 * these sizes sgemm's speed beats skipping half the work by hand); masking and softmax are loops.
 * q, k, v rows have stride C3 = 3C; out rows stride C. */

/* row i of scores s (scaled) -> causal softmax probabilities, zero above the diagonal */
DTR_VEC static void causal_softmax(float *att, int T) {
  for (int i = 0; i < T; i++) {
    float *s = att + (size_t)i * T;
    int n = i + 1;
    float mx = s[0];
    for (int j = 1; j < n; j++) mx = s[j] > mx ? s[j] : mx;
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int j = 0; j < n; j++) {
      s[j] = vexpf(s[j] - mx);
      sum += s[j];
    }
    float inv = 1.0f / sum;
#pragma omp simd
    for (int j = 0; j < n; j++) s[j] *= inv;
    for (int j = n; j < T; j++) s[j] = 0.0f;
  }
}

/* dp (= dout V^T) -> ds = p * (dp - rowsum(p * dp)) * scale, in place; zero above the diagonal as p is */
DTR_VEC static void softmax_bwd_rows(float *dp, const float *att, int T, float scale) {
  for (int i = 0; i < T; i++) {
    const float *p = att + (size_t)i * T;
    float *g = dp + (size_t)i * T;
    int n = i + 1;
    float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
    for (int j = 0; j < n; j++) dot += p[j] * g[j];
#pragma omp simd
    for (int j = 0; j < n; j++) g[j] = p[j] * (g[j] - dot) * scale;
    for (int j = n; j < T; j++) g[j] = 0.0f;
  }
}

dtr_result dtr__attention_fwd_cpu(float *out, float *att, const float *qkv, int B, int T, int C, int NH,
                                  int threads) {
  int hs = C / NH, C3 = 3 * C;
  float scale = 1.0f / sqrtf((float)hs);
  int th = team(threads, 2.0 * B * NH * T * T * hs, GRAIN_MAC);
#pragma omp parallel for schedule(static) num_threads(th) if (th > 1)
  for (int bh = 0; bh < B * NH; bh++) {
    int b = bh / NH, h = bh % NH;
    const float *q = qkv + (size_t)b * T * C3 + (size_t)h * hs, *k = q + C, *v = q + 2 * C;
    float *a = att + (size_t)bh * T * T;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, hs, scale, q, C3, k, C3, 0.0f, a, T);
    causal_softmax(a, T);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, hs, T, 1.0f, a, T, v, C3, 0.0f,
                out + (size_t)b * T * C + (size_t)h * hs, C);
  }
  return DTR_OK;
}

dtr_result dtr__attention_bwd_cpu(float *dqkv, const float *dout, const float *att, const float *qkv, int B,
                                  int T, int C, int NH, int threads) {
  int hs = C / NH, C3 = 3 * C;
  float scale = 1.0f / sqrtf((float)hs);
  int failed = 0;
  int th = team(threads, 4.0 * B * NH * T * T * hs, GRAIN_MAC);
#pragma omp parallel num_threads(th) if (th > 1) reduction(| : failed)
  {
    float *dp = malloc((size_t)T * T * sizeof(float));
    if (!dp) failed = 1;
#pragma omp for schedule(static)
    for (int bh = 0; bh < B * NH; bh++) {
      if (!dp) continue;
      int b = bh / NH, h = bh % NH;
      size_t off = (size_t)b * T * C3 + (size_t)h * hs;
      const float *q = qkv + off, *k = q + C, *v = q + 2 * C;
      float *dq = dqkv + off, *dk = dq + C, *dv = dq + 2 * C;
      const float *a = att + (size_t)bh * T * T, *g = dout + (size_t)b * T * C + (size_t)h * hs;
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, hs, 1.0f, g, C, v, C3, 0.0f, dp, T);
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, hs, T, 1.0f, a, T, g, C, 0.0f, dv, C3);
      softmax_bwd_rows(dp, a, T, scale);
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, hs, T, 1.0f, dp, T, k, C3, 0.0f, dq, C3);
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, hs, T, 1.0f, dp, T, q, C3, 0.0f, dk, C3);
    }
    free(dp);
  }
  return failed ? DTR_ERR_NOMEM : DTR_OK;
}

/* ---- embeddings */

void dtr__embedding_fwd_cpu(float *out, const int32_t *inp, const float *wte, const float *wpe, int B, int T,
                            int C, int threads) {
  int th = team(threads, (double)B * T * C, GRAIN_ELEM);
#pragma omp parallel for schedule(static) num_threads(th) if (th > 1)
  for (int bt = 0; bt < B * T; bt++) {
    int t = bt % T;
    add_chunk(out + (size_t)bt * C, wte + (size_t)inp[bt] * C, wpe + (size_t)t * C, (size_t)C);
  }
}

DTR_VEC static void emb_bwd_block(float *dwte, float *dwpe, const float *dout, const int32_t *inp, int B,
                                  int T, int C, int c0, int c1) {
  for (int bt = 0; bt < B * T; bt++) {
    const float *g = dout + (size_t)bt * C;
    float *we = dwte + (size_t)inp[bt] * C;
    float *pe = dwpe ? dwpe + (size_t)(bt % T) * C : NULL;
#pragma omp simd
    for (int c = c0; c < c1; c++) we[c] += g[c];
    if (pe) {
#pragma omp simd
      for (int c = c0; c < c1; c++) pe[c] += g[c];
    }
  }
}

void dtr__embedding_bwd_cpu(float *dwte, float *dwpe, const float *dout, const int32_t *inp, int B, int T,
                            int C, int threads) {
  /* rows sharing a token add into one dwte row: split over columns, not rows, so no two threads meet */
  int nblk = (C + 31) / 32;
  int th = team(threads, (double)B * T * C, GRAIN_ELEM);
#pragma omp parallel for schedule(static) num_threads(th) if (th > 1)
  for (int b = 0; b < nblk; b++) {
    int c1 = (b + 1) * 32 < C ? (b + 1) * 32 : C;
    emb_bwd_block(dwte, dwpe, dout, inp, B, T, C, b * 32, c1);
  }
}

/* ---- softmax cross-entropy */

DTR_VEC static float xent_row_fwd(float *p, const float *z, int target, int V) {
  float mx = z[0];
  for (int i = 1; i < V; i++) mx = z[i] > mx ? z[i] : mx;
  float zt = target >= 0 ? z[target] : 0.0f; /* read before p (which may alias z) is written */
  float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
  for (int i = 0; i < V; i++) {
    p[i] = vexpf(z[i] - mx);
    sum += p[i];
  }
  float inv = 1.0f / sum;
#pragma omp simd
  for (int i = 0; i < V; i++) p[i] *= inv;
  return target >= 0 ? -(zt - mx - logf(sum)) : 0.0f;
}

void dtr__softmax_xent_fwd_cpu(float *probs, float *losses, const float *logits, const int32_t *targets,
                               int N, int V, int threads) {
  int th = team(threads, (double)N * V, GRAIN_ELEM);
#pragma omp parallel for schedule(static) num_threads(th) if (th > 1)
  for (int n = 0; n < N; n++) {
    int t = targets ? targets[n] : -1;
    float l = xent_row_fwd(probs + (size_t)n * V, logits + (size_t)n * V, t, V);
    if (losses) losses[n] = l;
  }
}

DTR_VEC static void xent_row_bwd(float *dz, const float *p, int target, float dloss, int V) {
  if (target < 0) {
    memset(dz, 0, (size_t)V * sizeof(float));
    return;
  }
#pragma omp simd
  for (int i = 0; i < V; i++) dz[i] = p[i] * dloss;
  dz[target] -= dloss;
}

void dtr__softmax_xent_bwd_cpu(float *dlogits, const float *probs, const int32_t *targets, float dloss, int N,
                               int V, int threads) {
  int th = team(threads, (double)N * V, GRAIN_ELEM);
#pragma omp parallel for schedule(static) num_threads(th) if (th > 1)
  for (int n = 0; n < N; n++)
    xent_row_bwd(dlogits + (size_t)n * V, probs + (size_t)n * V, targets[n], dloss, V);
}

/* ---- tensor-parallel pieces (kernels.h): vocabulary slices, positions and biases added apart */

void dtr__vocab_embedding_fwd_cpu(float *out, const int32_t *inp, const float *wte, int v0, int V, int N,
                                  int C, int threads) {
  int th = team(threads, (double)N * C, GRAIN_ELEM);
#pragma omp parallel for schedule(static) num_threads(th) if (th > 1)
  for (int n = 0; n < N; n++) {
    int id = inp[n] - v0;
    if (id >= 0 && id < V)
      memcpy(out + (size_t)n * C, wte + (size_t)id * C, (size_t)C * sizeof(float));
    else
      memset(out + (size_t)n * C, 0, (size_t)C * sizeof(float));
  }
}

DTR_VEC static void vocab_emb_bwd_block(float *dwte, const float *dout, const int32_t *inp, int v0, int V,
                                        int N, int C, int c0, int c1) {
  for (int n = 0; n < N; n++) {
    int id = inp[n] - v0;
    if (id < 0 || id >= V) continue;
    const float *g = dout + (size_t)n * C;
    float *we = dwte + (size_t)id * C;
#pragma omp simd
    for (int c = c0; c < c1; c++) we[c] += g[c];
  }
}

void dtr__vocab_embedding_bwd_cpu(float *dwte, const float *dout, const int32_t *inp, int v0, int V, int N,
                                  int C, int threads) {
  /* as dtr__embedding_bwd_cpu: column blocks per thread, rows in order, so sums repeat exactly */
  int nblk = (C + 31) / 32;
  int th = team(threads, (double)N * C, GRAIN_ELEM);
#pragma omp parallel for schedule(static) num_threads(th) if (th > 1)
  for (int b = 0; b < nblk; b++) {
    int c1 = (b + 1) * 32 < C ? (b + 1) * 32 : C;
    vocab_emb_bwd_block(dwte, dout, inp, v0, V, N, C, b * 32, c1);
  }
}

void dtr__position_add_fwd_cpu(float *out, const float *wpe, int B, int T, int C, int threads) {
  int th = team(threads, (double)B * T * C, GRAIN_ELEM);
#pragma omp parallel for schedule(static) num_threads(th) if (th > 1)
  for (int bt = 0; bt < B * T; bt++)
    add_chunk(out + (size_t)bt * C, out + (size_t)bt * C, wpe + (size_t)(bt % T) * C, (size_t)C);
}

void dtr__position_add_bwd_cpu(float *dwpe, const float *dout, int B, int T, int C, int threads) {
  int th = team(threads, (double)B * T * C, GRAIN_ELEM);
  /* one position per iteration, the batch summed in order */
#pragma omp parallel for schedule(static) num_threads(th) if (th > 1)
  for (int t = 0; t < T; t++)
    for (int b = 0; b < B; b++)
      add_chunk(dwpe + (size_t)t * C, dwpe + (size_t)t * C, dout + ((size_t)b * T + t) * C, (size_t)C);
}

void dtr__bias_add_cpu(float *out, const float *bias, int N, int C, int threads) {
  int th = team(threads, (double)N * C, GRAIN_ELEM);
#pragma omp parallel for schedule(static) num_threads(th) if (th > 1)
  for (int n = 0; n < N; n++) add_chunk(out + (size_t)n * C, out + (size_t)n * C, bias, (size_t)C);
}

DTR_VEC static float row_max(const float *z, int V) {
  float mx = z[0];
  for (int i = 1; i < V; i++) mx = z[i] > mx ? z[i] : mx;
  return mx;
}

void dtr__vocab_xent_max_cpu(float *rowmax, const float *logits, int N, int V, int threads) {
  int th = team(threads, (double)N * V, GRAIN_ELEM);
#pragma omp parallel for schedule(static) num_threads(th) if (th > 1)
  for (int n = 0; n < N; n++) rowmax[n] = row_max(logits + (size_t)n * V, V);
}

DTR_VEC static float row_sumexp(const float *z, float mx, int V) {
  float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
  for (int i = 0; i < V; i++) sum += vexpf(z[i] - mx);
  return sum;
}

void dtr__vocab_xent_sum_cpu(float *sumexp, float *zt, const float *logits, const float *rowmax,
                             const int32_t *targets, int v0, int N, int V, int threads) {
  int th = team(threads, (double)N * V, GRAIN_ELEM);
#pragma omp parallel for schedule(static) num_threads(th) if (th > 1)
  for (int n = 0; n < N; n++) {
    const float *z = logits + (size_t)n * V;
    sumexp[n] = row_sumexp(z, rowmax[n], V);
    int t = targets ? targets[n] - v0 : -1;
    zt[n] = targets && targets[n] >= 0 && t >= 0 && t < V ? z[t] : 0.0f;
  }
}

DTR_VEC static void row_probs(float *p, const float *z, float mx, float inv, int V) {
#pragma omp simd
  for (int i = 0; i < V; i++) p[i] = vexpf(z[i] - mx) * inv;
}

void dtr__vocab_xent_finish_cpu(float *probs, float *losses, const float *logits, const float *rowmax,
                                const float *sumexp, const float *zt, const int32_t *targets, int N, int V,
                                int threads) {
  int th = team(threads, (double)N * V, GRAIN_ELEM);
#pragma omp parallel for schedule(static) num_threads(th) if (th > 1)
  for (int n = 0; n < N; n++) {
    row_probs(probs + (size_t)n * V, logits + (size_t)n * V, rowmax[n], 1.0f / sumexp[n], V);
    if (losses) losses[n] = targets && targets[n] >= 0 ? -(zt[n] - rowmax[n] - logf(sumexp[n])) : 0.0f;
  }
}

void dtr__vocab_xent_bwd_cpu(float *dlogits, const float *probs, const int32_t *targets, int v0, float dloss,
                             int N, int V, int threads) {
  int th = team(threads, (double)N * V, GRAIN_ELEM);
#pragma omp parallel for schedule(static) num_threads(th) if (th > 1)
  for (int n = 0; n < N; n++) {
    float *dz = dlogits + (size_t)n * V;
    int t = targets[n];
    if (t < 0) {
      memset(dz, 0, (size_t)V * sizeof(float));
      continue;
    }
#pragma omp simd
    for (int i = 0; i < V; i++) dz[i] = probs[(size_t)n * V + i] * dloss;
    if (t - v0 >= 0 && t - v0 < V) dz[t - v0] -= dloss;
  }
}
